//! Configuration (SPEC §3): where it is found, what it says.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One entry per slot, in slot-ID order.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    /// The audit trail (SPEC §6), if any.
    pub audit: Option<AuditConfig>,
    /// The metrics file (SPEC §6), if any.
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The Prometheus text file this process rewrites (every `interval_ms`, and at
    /// `C_Finalize`). Several processes: name one file each with `{pid}` in the path.
    pub path: PathBuf,
    #[serde(default = "default_metrics_interval_ms")]
    pub interval_ms: u64,
}

fn default_metrics_interval_ms() -> u64 {
    10_000
}

/// `[audit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines file every process using the module appends to.
    pub path: PathBuf,
}

/// One `[[token]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Slot description.
    #[serde(default = "default_label")]
    pub label: String,
    /// Which backend keeps this token.
    #[serde(default)]
    pub backend: BackendKind,
    /// Directory of the embedded store.
    pub path: Option<PathBuf>,
    /// Wrong PINs in a row before the PIN locks.
    #[serde(default = "default_max_pin_failures")]
    pub max_pin_failures: u32,
    /// Where a pkcs11 token's count of wrong PINs is kept (default: the user's XDG state
    /// directory); the module makes its own directory inside.
    pub state_dir: Option<PathBuf>,
    /// Cost of the PIN key-derivation function.
    #[serde(default)]
    pub pin_kdf: PinKdf,
    /// The real HSM's PKCS#11 library (pkcs11 backend).
    pub library: Option<PathBuf>,
    /// The real token, by label (pkcs11 backend).
    pub token_label: Option<String>,
    /// The real token, by serial number (pkcs11 backend).
    pub token_serial: Option<String>,
    /// A string handed to the real library's `C_Initialize` as `pReserved` (pkcs11 backend).
    pub init_reserved: Option<String>,
    /// The custody agent's socket (agent backend).
    pub socket: Option<PathBuf>,
    /// How long a call to the custody agent may take before it answers `CKR_DEVICE_ERROR`
    /// (agent backend).
    #[serde(default = "default_agent_timeout_ms")]
    pub timeout_ms: u64,
    /// More real tokens holding the same keys (pkcs11 backend): an HSM cluster, or tokens
    /// restored from one backup.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// How sessions are spread over the healthy replicas.
    #[serde(default)]
    pub balance: Balance,
    /// How often a failed replica is probed in the background.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
}

/// One entry of `replicas = [...]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    pub library: PathBuf,
    pub token_label: Option<String>,
    pub token_serial: Option<String>,
    pub init_reserved: Option<String>,
}

/// `balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Every session on the first healthy replica in the order configured.
    #[default]
    Failover,
    /// Each new session on the next healthy replica in turn.
    RoundRobin,
}

fn default_probe_interval_ms() -> u64 {
    1_000
}

/// The backend of a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Encrypted SQLite store, keys derived from the PINs.
    #[default]
    Embedded,
    /// Forwarding to a token of a real HSM's PKCS#11 library.
    Pkcs11,
    /// A token the custody agent serves (its `token_label` names which; default the first).
    Agent,
    /// Every token of a real library, one slot each (`PKCS11_LIBRARY_PATH`, no configuration).
    #[serde(skip)]
    ForwardAll,
}

/// PIN KDF cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum PinKdf {
    /// Argon2id, 64 MiB, 3 passes: the production setting.
    #[default]
    #[serde(rename = "argon2id")]
    Argon2id,
    /// Argon2id, 256 KiB, 1 pass. Insecure; only for test suites.
    #[serde(rename = "test-only-fast")]
    TestOnlyFast,
}

fn default_label() -> String {
    "B4AE-Token".to_owned()
}

/// Wrong PINs in a row before a PIN locks, unless configured (SPEC §4).
pub const DEFAULT_MAX_PIN_FAILURES: u32 = 10;

fn default_max_pin_failures() -> u32 {
    DEFAULT_MAX_PIN_FAILURES
}

/// A signature takes milliseconds; a PIN check with the production KDF under a second.
fn default_agent_timeout_ms() -> u64 {
    30_000
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Parses TOML text and checks it.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        config.check(origin)?;
        Ok(config)
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        if self.tokens.is_empty() {
            return Err(ConfigError(format!("{origin}: no [[token]] is configured")));
        }
        for (slot, token) in self.tokens.iter().enumerate() {
            match token.backend {
                BackendKind::Embedded if token.path.is_none() => {
                    return Err(ConfigError(format!(
                        "{origin}: token {slot} (\"{}\"): an embedded token needs `path`",
                        token.label
                    )))
                }
                BackendKind::Pkcs11 if token.library.is_none() => {
                    return Err(ConfigError(format!(
                        "{origin}: token {slot} (\"{}\"): a pkcs11 token needs `library`",
                        token.label
                    )))
                }
                BackendKind::Agent if token.socket.is_none() => {
                    return Err(ConfigError(format!(
                        "{origin}: token {slot} (\"{}\"): an agent token needs `socket`",
                        token.label
                    )))
                }
                _ => {}
            }
            if !token.replicas.is_empty() && token.backend != BackendKind::Pkcs11 {
                return Err(ConfigError(format!(
                    "{origin}: token {slot} (\"{}\"): only a pkcs11 token has replicas",
                    token.label
                )));
            }
            if token.probe_interval_ms == 0 {
                return Err(ConfigError(format!(
                    "{origin}: token {slot}: probe_interval_ms must be at least 1"
                )));
            }
            if token.max_pin_failures == 0 {
                return Err(ConfigError(format!(
                    "{origin}: token {slot}: max_pin_failures must be at least 1"
                )));
            }
        }
        Ok(())
    }

    /// Reads the configuration: `reserved` (from `C_Initialize`), then `$B4AE_PKCS11_CONF`,
    /// the XDG config file, `/etc`; with none, the default embedded token.
    pub fn load(reserved: Option<&str>) -> Result<Config, ConfigError> {
        let (config, source) = Self::find(reserved)?;
        // Which file is in force is the first question when a program behaves unexpectedly
        // (some load modules with their own C_Initialize arguments).
        tracing::info!("configuration: {source}; {} slot(s)", config.tokens.len());
        Ok(config)
    }

    /// The configuration and where it came from.
    fn find(reserved: Option<&str>) -> Result<(Config, String), ConfigError> {
        if let Some(text) = reserved.map(str::trim).filter(|t| !t.is_empty()) {
            return match text.strip_prefix("config=") {
                Some(path) => Self::from_file(Path::new(path.trim()))
                    .map(|c| (c, format!("{} (C_Initialize pReserved)", path.trim()))),
                None => Self::parse(text, "C_Initialize pReserved")
                    .map(|c| (c, "TOML text in C_Initialize pReserved".to_owned())),
            };
        }
        if let Some(path) = std::env::var_os("B4AE_PKCS11_CONF") {
            let source = format!("{} ($B4AE_PKCS11_CONF)", Path::new(&path).display());
            return Self::from_file(Path::new(&path)).map(|c| (c, source));
        }
        for path in [
            xdg_dir("XDG_CONFIG_HOME", ".config"),
            Some(PathBuf::from("/etc")),
        ]
        .into_iter()
        .flatten()
        {
            let file = path.join("b4ae-pkcs11").join("b4ae-pkcs11.toml");
            if file.exists() {
                let source = file.display().to_string();
                return Self::from_file(&file).map(|c| (c, source));
            }
        }
        if let Some(library) = std::env::var_os("PKCS11_LIBRARY_PATH").filter(|l| !l.is_empty()) {
            let source = format!("no file; every token of $PKCS11_LIBRARY_PATH {library:?}");
            let config = Config {
                audit: None,
                metrics: None,
                tokens: vec![TokenConfig {
                    backend: BackendKind::ForwardAll,
                    library: Some(PathBuf::from(library)),
                    ..Self::embedded_default_token(PathBuf::new())
                }],
            };
            return Ok((config, source));
        }
        Self::default_embedded().map(|c| (c, "no file; the default embedded token".to_owned()))
    }

    fn embedded_default_token(path: PathBuf) -> TokenConfig {
        TokenConfig {
            label: default_label(),
            backend: BackendKind::Embedded,
            path: Some(path),
            max_pin_failures: default_max_pin_failures(),
            state_dir: None,
            pin_kdf: PinKdf::Argon2id,
            library: None,
            token_label: None,
            token_serial: None,
            init_reserved: None,
            socket: None,
            timeout_ms: default_agent_timeout_ms(),
            replicas: Vec::new(),
            balance: Balance::Failover,
            probe_interval_ms: default_probe_interval_ms(),
        }
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    fn default_embedded() -> Result<Config, ConfigError> {
        let data = xdg_dir("XDG_DATA_HOME", ".local/share").ok_or_else(|| {
            ConfigError("no configuration, and neither XDG_DATA_HOME nor HOME is set".into())
        })?;
        Ok(Config {
            audit: None,
            metrics: None,
            tokens: vec![Self::embedded_default_token(
                data.join("b4ae-pkcs11").join("default"),
            )],
        })
    }
}

fn xdg_dir(var: &str, fallback_under_home: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(fallback_under_home)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let c = Config::parse(
            "[[token]]\nlabel = \"B4AE-Token\"\nbackend = \"embedded\"\npath = \"/tmp/x\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.tokens[0].max_pin_failures, 10);
        assert_eq!(c.tokens[0].pin_kdf, PinKdf::Argon2id);
    }

    #[test]
    fn parses_replicas_and_balance() {
        let c = Config::parse(
            "[[token]]\nbackend = \"pkcs11\"\nlibrary = \"/a.so\"\ntoken_label = \"T\"\n\
             replicas = [ { library = \"/b.so\", token_label = \"T\" } ]\n\
             balance = \"round-robin\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.tokens[0].replicas.len(), 1);
        assert_eq!(c.tokens[0].balance, Balance::RoundRobin);
        assert!(Config::parse(
            "[[token]]\npath = \"/x\"\nreplicas = [ { library = \"/b.so\" } ]\n",
            "t"
        )
        .is_err());
        assert!(Config::parse(
            "[[token]]\nbackend = \"pkcs11\"\nlibrary = \"/a.so\"\nbalance = \"random\"\n",
            "t"
        )
        .is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_missing_path() {
        assert!(Config::parse("[[token]]\npath = \"/x\"\ncolour = 1\n", "t").is_err());
        assert!(Config::parse("[[token]]\nbackend = \"embedded\"\n", "t").is_err());
        assert!(Config::parse("", "t").is_err());
    }
}
