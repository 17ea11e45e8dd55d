//! Logging through `tracing`. `B4AE_PKCS11_LOG` = `LEVEL` (to stderr) or `LEVEL:/path/file`.
//! Nothing secret is ever passed to a log macro: PINs, keys and plaintexts stay out.

use std::sync::Once;
use tracing_subscriber::EnvFilter;

static INIT: Once = Once::new();

/// Installs the subscriber once per process. An application that already installed its own
/// global subscriber keeps it.
pub fn init() {
    INIT.call_once(|| {
        let setting = std::env::var("B4AE_PKCS11_LOG").unwrap_or_default();
        let (level, file) = match setting.split_once(':') {
            Some((level, file)) if !file.is_empty() => (level.to_owned(), Some(file.to_owned())),
            _ => (setting.clone(), None),
        };
        let level = if level.is_empty() {
            "warn".to_owned()
        } else {
            level
        };
        let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("warn"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_target(true);
        let opened = file.as_deref().map(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        });
        let _ = match opened {
            Some(Ok(f)) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
            Some(Err(e)) => {
                let r = builder.with_writer(std::io::stderr).try_init();
                tracing::warn!("B4AE_PKCS11_LOG: cannot open log file: {e}; logging to stderr");
                r
            }
            None => builder.with_writer(std::io::stderr).try_init(),
        };
    });
}
