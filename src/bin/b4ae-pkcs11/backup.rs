//! `rotate-stk`, `backup` and `restore`: the long work on a pkcs11 token's key records, with a
//! progress bar on a terminal and `--json` for scripts.

use b4ae_pkcs11::audit::AuditLog;
use b4ae_pkcs11::backend::pkcs11::backup::{self, Refusal};
use b4ae_pkcs11::backend::pkcs11::{ForwardToken, HsmSlot};
use b4ae_pkcs11::config::Config;
use b4ae_pkcs11::module;
use cryptoki_sys::{CKF_RW_SESSION, CKF_SERIAL_SESSION, CKU_USER, CK_SESSION_HANDLE};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

/// A progress bar on stderr (drawn only on a terminal), fed `(done, total)`.
fn bar(what: &'static str) -> (ProgressBar, impl FnMut(usize, usize)) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what);
    let feed = bar.clone();
    (bar, move |done, total| {
        feed.set_length(total as u64);
        feed.set_position(done as u64);
    })
}

/// The pkcs11 token of `slot` and a logged-in session of the HSM's on it.
fn logged_in(slot: u64, pin: &str) -> Result<(Arc<ForwardToken>, CK_SESSION_HANDLE), String> {
    module::initialize(None).map_err(|e| format!("C_Initialize: {e}"))?;
    let m = module::get().map_err(|e| e.to_string())?;
    let backend = m.slot(slot as _).map_err(|e| e.to_string())?;
    let Some(HsmSlot(token)) = backend.as_any().downcast_ref::<HsmSlot>() else {
        return Err(format!("slot {slot} is not a pkcs11 slot"));
    };
    let session = token
        .lib
        .open_session(token.real_slot(), CKF_SERIAL_SESSION | CKF_RW_SESSION)
        .map_err(|e| e.to_string())?;
    if let Err(e) = token.lib.login(session, CKU_USER, pin.as_bytes()) {
        let _ = token.lib.close_session(session);
        return Err(format!("C_Login: {e}"));
    }
    Ok((token.clone(), session))
}

fn finish(token: &ForwardToken, session: CK_SESSION_HANDLE) {
    token.keys.close();
    let _ = token.lib.logout(session);
    let _ = token.lib.close_session(session);
}

/// Writes an audit line when the configuration has a trail.
fn audit(event: &str, slot: u64, fields: serde_json::Value) {
    let Ok(config) = Config::load(None) else {
        return;
    };
    if let Some(a) = config.audit {
        let mut line = serde_json::Map::new();
        line.insert("slot".into(), slot.into());
        line.insert("uid".into(), nix::unistd::getuid().as_raw().into());
        if let serde_json::Value::Object(more) = fields {
            line.extend(more);
        }
        AuditLog::new(a.path).record(event, line);
    }
}

pub fn rotate_stk(slot: u64, pin: &str, json: bool) -> Result<(), String> {
    let (token, session) = logged_in(slot, pin)?;
    let (bar, mut progress) = bar("rotating");
    let epoch = token.keys.rotate_with_progress(true, &mut progress);
    bar.finish_and_clear();
    finish(&token, session);
    let epoch = epoch.map_err(|e| format!("rotation: {e}"))?;
    audit(
        "storage_key_rotated",
        slot,
        serde_json::json!({ "epoch": epoch }),
    );
    if json {
        println!("{}", serde_json::json!({ "slot": slot, "epoch": epoch }));
    } else {
        println!("slot {slot}: every key record is now sealed under storage key epoch {epoch}");
    }
    Ok(())
}

pub fn backup(slot: u64, pin: &str, file: &Path, json: bool) -> Result<(), String> {
    let (token, session) = logged_in(slot, pin)?;
    let (bar, mut progress) = bar("reading");
    let made = (|| {
        let info = token.lib.token_info(token.real_slot())?;
        let contents = backup::collect(&token.lib, session, &info, &mut progress)?;
        let key = backup::backup_key(&token.lib, session)?;
        let sealed = backup::seal(&token.lib, session, key, &contents)?;
        Ok::<_, b4ae_pkcs11::error::Error>((contents, sealed))
    })();
    bar.finish_and_clear();
    finish(&token, session);
    let (contents, sealed) = made.map_err(|e| format!("backup: {e}"))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(&sealed).and_then(|()| f.sync_all()))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let summary = serde_json::json!({
        "slot": slot,
        "file": file.display().to_string(),
        "records": contents.records.len(),
        "objects": contents.objects.len(),
        "bytes": sealed.len(),
    });
    audit("backup", slot, summary.clone());
    if json {
        println!("{summary}");
    } else {
        println!(
            "slot {slot}: {} key record(s) and {} public object(s) backed up to {} ({} bytes), \
             readable only with this HSM's backup key",
            contents.records.len(),
            contents.objects.len(),
            file.display(),
            sealed.len()
        );
    }
    Ok(())
}

pub fn restore(slot: u64, pin: &str, file: &Path, json: bool) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (token, session) = logged_in(slot, pin)?;
    let (bar, mut progress) = bar("restoring");
    let done = backup::open(&token.lib, session, &bytes)
        .and_then(|contents| backup::restore(&token.lib, session, &contents, &mut progress));
    bar.finish_and_clear();
    finish(&token, session);
    let restored = match done {
        Ok(r) => r,
        Err(refusal) => {
            let why = refusal.to_string();
            audit(
                "restore_refused",
                slot,
                serde_json::json!({ "file": file.display().to_string(), "error": why }),
            );
            return Err(match refusal {
                Refusal::Tampered(_) | Refusal::NotABackup => format!("{}: {why}", file.display()),
                _ => why,
            });
        }
    };
    let summary = serde_json::json!({
        "slot": slot,
        "file": file.display().to_string(),
        "records": restored.records,
        "objects": restored.objects,
        "already_present": restored.already_present,
    });
    audit("restore", slot, summary.clone());
    if json {
        println!("{summary}");
    } else {
        println!(
            "slot {slot}: {} key record(s) and {} public object(s) restored from {} ({} already there)",
            restored.records,
            restored.objects,
            file.display(),
            restored.already_present
        );
    }
    Ok(())
}
