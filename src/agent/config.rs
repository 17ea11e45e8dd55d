//! The custody agent's own configuration file (`b4ae-pkcs11 agent --config FILE`).

use crate::config::{PinKdf, DEFAULT_MAX_PIN_FAILURES};
use nix::unistd::{Group, User};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub agent: AgentSection,
    #[serde(default, rename = "token")]
    pub tokens: Vec<AgentToken>,
    pub audit: Option<AuditSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// The socket to create (unused under systemd socket activation).
    pub socket: PathBuf,
    /// Its mode, octal (default "0660": the agent's user and group).
    #[serde(default = "default_mode")]
    pub socket_mode: String,
    /// The group the socket is given (the agent's user must be a member).
    pub socket_group: Option<String>,
    /// Connections served at once; more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a request may take to arrive once begun, and an answer to be taken.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// One token the agent serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentToken {
    /// How clients name it (the slot description).
    pub label: String,
    /// "embedded" (an encrypted store the agent owns) or "pkcs11" (a token of an HSM,
    /// post-quantum keys sealed in it: custody 2 behind the agent).
    #[serde(default)]
    pub backend: AgentBackend,
    /// embedded: the store's directory; pkcs11: the directory of the token's own PINs (what
    /// clients log in with). Readable by the agent's user alone.
    pub path: PathBuf,
    /// pkcs11: the HSM's PKCS#11 library.
    pub library: Option<PathBuf>,
    /// pkcs11: the HSM token, by label or serial.
    pub token_label: Option<String>,
    pub token_serial: Option<String>,
    /// pkcs11: `pReserved` for the HSM library's `C_Initialize`.
    pub init_reserved: Option<String>,
    /// pkcs11: a file holding the HSM user's PIN (one line), owned by the agent's user and
    /// readable by it alone; the agent logs in to the HSM with it and no client ever sees it.
    pub credential_file: Option<PathBuf>,
    #[serde(default)]
    pub pin_kdf: PinKdf,
    #[serde(default = "default_max_pin_failures")]
    pub max_pin_failures: u32,
    /// Users (names or numeric ids) who may use the token.
    #[serde(default)]
    pub allow_users: Vec<String>,
    /// Groups (names or numeric ids) whose members may use it.
    #[serde(default)]
    pub allow_groups: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentBackend {
    #[default]
    Embedded,
    Pkcs11,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub path: PathBuf,
}

fn default_mode() -> String {
    "0660".into()
}
fn default_max_connections() -> usize {
    256
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_max_pin_failures() -> u32 {
    DEFAULT_MAX_PIN_FAILURES
}

/// A token's allow-list, with names resolved to ids.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

fn resolve(
    entries: &[String],
    by_name: impl Fn(&str) -> Option<u32>,
    what: &str,
) -> Result<Vec<u32>, String> {
    entries
        .iter()
        .map(|e| {
            e.parse::<u32>()
                .ok()
                .or_else(|| by_name(e))
                .ok_or_else(|| format!("no {what} named {e:?}"))
        })
        .collect()
}

impl AgentToken {
    pub fn allow_list(&self) -> Result<AllowList, String> {
        Ok(AllowList {
            uids: resolve(
                &self.allow_users,
                |n| User::from_name(n).ok().flatten().map(|u| u.uid.as_raw()),
                "user",
            )?,
            gids: resolve(
                &self.allow_groups,
                |n| Group::from_name(n).ok().flatten().map(|g| g.gid.as_raw()),
                "group",
            )?,
        })
    }
}

impl AgentConfig {
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: AgentConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.tokens.is_empty() {
            return Err(format!("{}: no [[token]] is configured", path.display()));
        }
        for (i, t) in config.tokens.iter().enumerate() {
            if t.backend == AgentBackend::Pkcs11
                && (t.library.is_none() || t.credential_file.is_none())
            {
                return Err(format!(
                    "{}: token {i} (\"{}\"): a pkcs11 token needs `library` and \
                     `credential_file`",
                    path.display(),
                    t.label
                ));
            }
            if t.max_pin_failures == 0 {
                return Err(format!("token {i}: max_pin_failures must be at least 1"));
            }
            t.allow_list()
                .map_err(|e| format!("{}: token {i} (\"{}\"): {e}", path.display(), t.label))?;
        }
        u32::from_str_radix(config.agent.socket_mode.trim_start_matches("0o"), 8)
            .map_err(|_| format!("socket_mode {:?} is not octal", config.agent.socket_mode))?;
        Ok(config)
    }

    pub fn socket_mode(&self) -> u32 {
        u32::from_str_radix(self.agent.socket_mode.trim_start_matches("0o"), 8).unwrap_or(0o660)
    }
}

impl AgentToken {
    /// The module configuration of the HSM token behind a pkcs11 agent token. The module's
    /// own count of wrong HSM PINs is kept beside the token's PINs.
    pub fn hsm_config(&self) -> crate::config::TokenConfig {
        crate::config::TokenConfig {
            label: self.label.clone(),
            backend: crate::config::BackendKind::Pkcs11,
            path: None,
            max_pin_failures: self.max_pin_failures,
            state_dir: Some(self.path.clone()),
            pin_kdf: self.pin_kdf,
            library: self.library.clone(),
            token_label: self.token_label.clone(),
            token_serial: self.token_serial.clone(),
            init_reserved: self.init_reserved.clone(),
            socket: None,
            timeout_ms: 0,
            replicas: Vec::new(),
            balance: crate::config::Balance::Failover,
            probe_interval_ms: 1_000,
        }
    }
}

/// Reads the HSM credential, refusing a file another user could read or write (as ssh does
/// with its keys): a credential others can read is no longer the agent's alone.
pub fn read_credential(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{}: must be owned by the agent's user (uid {me}) with mode 0600 or 0400 \
             (it is uid {}, mode {:o})",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let pin = text.trim_end_matches(['\n', '\r']);
    Ok(zeroize::Zeroizing::new(pin.to_owned()))
}
