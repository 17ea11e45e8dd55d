//! `b4ae-pkcs11`: administration of the module's tokens, through the same token layer the
//! module's C ABI uses.

use b4ae_pkcs11::backend::embedded::{migrate_earlier_store, EmbeddedSlot};
use b4ae_pkcs11::backend::pkcs11::HsmSlot;
use b4ae_pkcs11::backend::replicas::ReplicaSet;
use b4ae_pkcs11::backend::Backend;
use b4ae_pkcs11::config::{BackendKind, Config};
use b4ae_pkcs11::module;
use b4ae_pkcs11::token::store::Role;
use clap::{CommandFactory, Parser, Subcommand};

mod backup;
use cryptoki_sys::{CKF_RW_SESSION, CKF_SERIAL_SESSION, CKU_SO};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(name = "b4ae-pkcs11", version, about = "Administer b4ae-pkcs11 tokens")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the configuration in force and each slot's token.
    Info,
    /// Initialize (or re-initialize, erasing every object) a token, and optionally set its user PIN.
    ///
    /// PINs are never taken as arguments (any user can read them with ps): each comes from its
    /// file option, else its environment variable, else a prompt on the terminal.
    InitToken {
        /// Slot number (the token's position in the configuration).
        #[arg(long, default_value_t = 0)]
        slot: u64,
        /// Token label (at most 32 bytes).
        #[arg(long)]
        label: String,
        /// File holding the SO PIN (one line); else $B4AE_SO_PIN, else a prompt.
        #[arg(long, value_name = "FILE")]
        so_pin_file: Option<PathBuf>,
        /// File holding a user PIN to set as well; else $B4AE_USER_PIN; else none, unless
        /// --set-user-pin asks for a prompt.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// Set the user PIN too, prompting for it when neither --pin-file nor $B4AE_USER_PIN
        /// gives it.
        #[arg(long)]
        set_user_pin: bool,
    },
    /// Copy an embedded token of an earlier release (its `token.sqlite` directly in the
    /// configured `path`) into a store of this release, under a fresh token key, then erase
    /// the old file. Needs the SO PIN, and the user PIN when the token has one; both keep
    /// working and must be 8 characters at least.
    Migrate {
        /// Slot number.
        #[arg(long, default_value_t = 0)]
        slot: u64,
        /// File holding the SO PIN; else $B4AE_SO_PIN, else a prompt.
        #[arg(long, value_name = "FILE")]
        so_pin_file: Option<PathBuf>,
        /// File holding the user PIN; else $B4AE_USER_PIN, else a prompt (empty: none).
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
    },
    /// Generate a new random storage key in the HSM, re-seal every post-quantum key record under
    /// it and destroy the old one (pkcs11 slots). Also finishes a rotation that was
    /// interrupted, and migrates a token made by release 1.
    RotateStk {
        /// Slot number.
        #[arg(long, default_value_t = 0)]
        slot: u64,
        /// File holding the HSM user's PIN; else $B4AE_USER_PIN, else a prompt.
        #[arg(long, value_name = "FILE")]
        pin_file: Option<PathBuf>,
        /// One JSON line (slot, epoch) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a pkcs11 token's post-quantum key records (still sealed under its storage keys)
    /// and public objects to one file, sealed by a backup key the HSM generates and keeps:
    /// only a token holding that key (this one, a replica, or one the HSM's own key cloning
    /// gave it) can read it.
    Backup {
        #[command(flatten)]
        file: BackupFile,
    },
    /// Put the keys and public objects of a backup file back into a pkcs11 token (objects
    /// already there are left as they are). Refuses a file that was altered, and a token
    /// without the backup key or the storage keys the records are sealed under.
    Restore {
        #[command(flatten)]
        file: BackupFile,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), or write one page per command into a directory.
    Man {
        /// Write b4ae-pkcs11.1 and b4ae-pkcs11-<command>.1 here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the custody agent: a separate process, under its own user, that alone holds the
    /// keys of its tokens and serves the module's `backend = "agent"` slots over a local
    /// socket (docs/agent.md).
    Agent {
        /// The agent's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Open each configured token on its own and report whether it is served: exit 0 when all
    /// are up, 1 when a token is served but one of its replicas is down (degraded), 2 when a
    /// token is unserved.
    Health {
        /// One JSON document (per token: slot, label, backend, library / token_label / socket /
        /// path, state up|down, error, initialized) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Audit trail commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// The arguments `backup` and `restore` share.
#[derive(clap::Args)]
struct BackupFile {
    /// Slot number.
    #[arg(long, default_value_t = 0)]
    slot: u64,
    /// The backup file (written with mode 0600).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
    /// File holding the HSM user's PIN; else $B4AE_USER_PIN, else a prompt.
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// One JSON line (slot, file, and the counts of records and objects) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Follow the hash chain of an audit trail: exit 0 when every line is where it was
    /// written, 1 (naming the first bad line) when one was removed, reordered or edited.
    Verify {
        /// The audit trail (JSON lines).
        file: PathBuf,
    },
}

const SO_PIN_VAR: &str = "B4AE_SO_PIN";
const USER_PIN_VAR: &str = "B4AE_USER_PIN";

/// How to ask for a PIN on the terminal.
#[derive(Clone, Copy)]
enum Ask<'a> {
    /// Not at all.
    Never,
    /// A PIN the token has: once.
    Existing(&'a str),
    /// A PIN being set: twice, since a mistyped one may lock the token for good.
    New(&'a str),
}

/// A PIN from `file`, else the environment variable `var`, else
/// the terminal as `ask` says. `Ok(None)` when none applies.
fn read_pin(file: Option<&Path>, var: &str, ask: Ask) -> Result<Option<Zeroizing<String>>, String> {
    if let Some(file) = file {
        let text = Zeroizing::new(
            std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?,
        );
        let pin = text.strip_suffix('\n').unwrap_or(&text);
        let pin = pin.strip_suffix('\r').unwrap_or(pin);
        return Ok(Some(Zeroizing::new(pin.to_owned())));
    }
    if let Some(value) = std::env::var_os(var) {
        let value = value
            .into_string()
            .map_err(|_| format!("${var} is not UTF-8"))?;
        return Ok(Some(Zeroizing::new(value)));
    }
    let prompt = |text: &str| {
        rpassword::prompt_password(text)
            .map(Zeroizing::new)
            .map_err(|e| format!("reading the PIN from the terminal: {e}"))
    };
    match ask {
        Ask::Never => Ok(None),
        Ask::Existing(text) => prompt(text).map(Some),
        Ask::New(text) => {
            let pin = prompt(text)?;
            if *prompt("Again: ")? != *pin {
                return Err("the two PINs differ".into());
            }
            Ok(Some(pin))
        }
    }
}

fn main() -> ExitCode {
    b4ae_pkcs11::logging::init();
    let cli = Cli::parse();
    if let Command::Health { json } = cli.command {
        return health(json);
    }
    let result = match cli.command {
        Command::Health { .. } => Ok(()),
        Command::Info => info(),
        Command::InitToken {
            slot,
            label,
            so_pin_file,
            pin_file,
            set_user_pin,
        } => {
            let pins = (so_pin_file.as_deref(), pin_file.as_deref(), set_user_pin);
            init_token_command(slot, &label, pins)
        }
        Command::Migrate {
            slot,
            so_pin_file,
            pin_file,
        } => migrate_command(slot, so_pin_file.as_deref(), pin_file.as_deref()),
        Command::Agent { config } => {
            b4ae_pkcs11::agent::Config::from_file(&config).and_then(b4ae_pkcs11::agent::run)
        }
        Command::Audit {
            command: AuditCommand::Verify { file },
        } => audit_verify(&file),
        Command::RotateStk {
            slot,
            pin_file,
            json,
        } => hsm_user_pin(pin_file.as_deref()).and_then(|pin| backup::rotate_stk(slot, &pin, json)),
        Command::Backup { file: f } => hsm_user_pin(f.pin_file.as_deref())
            .and_then(|pin| backup::backup(f.slot, &pin, &f.file, f.json)),
        Command::Restore { file: f } => hsm_user_pin(f.pin_file.as_deref())
            .and_then(|pin| backup::restore(f.slot, &pin, &f.file, f.json)),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics when its writer fails (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "b4ae-pkcs11", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(|e| e.to_string())
        }
        Command::Man { dir } => man(dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("b4ae-pkcs11: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_token_command(
    slot: u64,
    label: &str,
    (so_pin_file, pin_file, set_user_pin): (Option<&Path>, Option<&Path>, bool),
) -> Result<(), String> {
    let so_pin = read_pin(so_pin_file, SO_PIN_VAR, Ask::New("New SO PIN: "))?.ok_or("no SO PIN")?;
    let ask = match set_user_pin {
        true => Ask::New("New user PIN: "),
        false => Ask::Never,
    };
    let pin = read_pin(pin_file, USER_PIN_VAR, ask)?;
    init_token(slot, label, &so_pin, pin.as_deref().map(String::as_str))
}

fn migrate_command(
    slot: u64,
    so_pin_file: Option<&Path>,
    pin_file: Option<&Path>,
) -> Result<(), String> {
    let so_pin =
        read_pin(so_pin_file, SO_PIN_VAR, Ask::Existing("SO PIN: "))?.ok_or("no SO PIN")?;
    let ask = Ask::Existing("User PIN (empty: the token has none): ");
    let pin = read_pin(pin_file, USER_PIN_VAR, ask)?.filter(|p| !p.is_empty());
    migrate(slot, &so_pin, pin.as_deref().map(String::as_str))
}

fn info() -> Result<(), String> {
    let config = Config::load(None).map_err(|e| e.to_string())?;
    module::initialize(None).map_err(|e| format!("C_Initialize: {e}"))?;
    let m = module::get().map_err(|e| e.to_string())?;
    for (slot_id, slot) in m.slots.iter().enumerate() {
        let any = slot.as_any();
        if let Some(EmbeddedSlot(token)) = any.downcast_ref::<EmbeddedSlot>() {
            {
                let state = token.state().map_err(|e| e.to_string())?;
                let path = config.tokens.get(slot_id).and_then(|c| c.path.as_ref());
                let path = path.map(|p| p.display().to_string()).unwrap_or_default();
                println!(
                    "slot {slot_id}: \"{}\" (embedded at {path})",
                    token.description
                );
                if state.initialized {
                    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_owned();
                    println!(
                        "  token \"{}\" serial {}",
                        text(&state.label),
                        text(&state.serial)
                    );
                    println!(
                        "  user PIN {}, failures {}/{}; SO PIN failures {}/{}",
                        if state.user_pin_initialized {
                            "set"
                        } else {
                            "not set"
                        },
                        state.user_failures,
                        state.max_failures,
                        state.so_failures,
                        state.max_failures
                    );
                } else {
                    println!("  token not initialized");
                }
            }
        } else if let Some(HsmSlot(token)) = any.downcast_ref::<HsmSlot>() {
            {
                let info = token
                    .lib
                    .token_info(token.real_slot())
                    .map_err(|e| e.to_string())?;
                let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_owned();
                println!(
                    "slot {slot_id}: \"{}\" (pkcs11: {} slot {})",
                    token.description,
                    token.lib.path.display(),
                    token.real_slot()
                );
                println!(
                    "  token \"{}\" serial {}",
                    text(&info.label),
                    text(&info.serialNumber)
                );
            }
        }
    }
    Ok(())
}

fn init_token(slot: u64, label: &str, so_pin: &str, pin: Option<&str>) -> Result<(), String> {
    if label.len() > 32 {
        return Err("the label is longer than 32 bytes".into());
    }
    let mut padded = [b' '; 32];
    padded[..label.len()].copy_from_slice(label.as_bytes());
    module::initialize(None).map_err(|e| format!("C_Initialize: {e}"))?;
    let m = module::get().map_err(|e| e.to_string())?;
    let slot_backend = m.slot(slot as _).map_err(|e| e.to_string())?;
    let Some(EmbeddedSlot(token)) = slot_backend.as_any().downcast_ref::<EmbeddedSlot>() else {
        return init_token_by_calls(slot_backend.as_ref(), &padded, so_pin, pin)
            .map(|()| println!("slot {slot}: token \"{label}\" initialized"));
    };
    token
        .init_token(so_pin.as_bytes(), &padded)
        .map_err(|e| format!("C_InitToken: {e}"))?;
    println!("slot {slot}: token \"{label}\" initialized");
    if let Some(pin) = pin {
        token
            .login(Role::SecurityOfficer, so_pin.as_bytes(), false)
            .map_err(|e| format!("SO login: {e}"))?;
        token
            .init_pin(pin.as_bytes())
            .map_err(|e| format!("C_InitPIN: {e}"))?;
        token.logout().map_err(|e| e.to_string())?;
        println!("slot {slot}: user PIN set");
    }
    Ok(())
}

/// `C_InitToken`, then `C_InitPIN` as the SO, through the backend interface (a token the
/// custody agent serves).
fn init_token_by_calls(
    slot: &dyn Backend,
    label: &[u8; 32],
    so_pin: &str,
    pin: Option<&str>,
) -> Result<(), String> {
    slot.init_token(so_pin.as_bytes(), label)
        .map_err(|e| format!("C_InitToken: {e}"))?;
    if let Some(pin) = pin {
        let session = slot
            .open_session(1, CKF_SERIAL_SESSION | CKF_RW_SESSION)
            .map_err(|e| format!("C_OpenSession: {e}"))?;
        let result = session
            .login(CKU_SO, so_pin.as_bytes())
            .map_err(|e| format!("SO login: {e}"))
            .and_then(|()| {
                session
                    .init_pin(pin.as_bytes())
                    .map_err(|e| format!("C_InitPIN: {e}"))
            })
            .and_then(|()| session.logout().map_err(|e| e.to_string()));
        session.closed();
        result?;
    }
    Ok(())
}

fn migrate(slot: u64, so_pin: &str, pin: Option<&str>) -> Result<(), String> {
    let config = Config::load(None).map_err(|e| e.to_string())?;
    let token = usize::try_from(slot)
        .ok()
        .and_then(|i| config.tokens.get(i))
        .ok_or_else(|| format!("no slot {slot} in the configuration"))?;
    let path = match (token.backend, &token.path) {
        (BackendKind::Embedded, Some(path)) => path,
        _ => return Err(format!("slot {slot} is not an embedded token")),
    };
    let migrated = migrate_earlier_store(
        path,
        token.pin_kdf,
        token.max_pin_failures,
        so_pin.as_bytes(),
        pin.map(str::as_bytes),
    )?;
    println!(
        "slot {slot}: {} object(s) migrated into {}{}",
        migrated.objects,
        b4ae_pkcs11::backend::embedded::store_file(path).display(),
        match migrated.skipped {
            0 => String::new(),
            n => format!(" ({n} that failed authentication left out)"),
        }
    );
    Ok(())
}

/// The HSM user's PIN: `--pin-file`, else $B4AE_USER_PIN, else a prompt.
fn hsm_user_pin(file: Option<&Path>) -> Result<Zeroizing<String>, String> {
    read_pin(file, USER_PIN_VAR, Ask::Existing("HSM user PIN: "))?.ok_or_else(|| "no PIN".into())
}

/// `man`: the page of the tool, or with `dir` one page per command.
fn man(dir: Option<&Path>) -> Result<(), String> {
    let command = Cli::command();
    let Some(dir) = dir else {
        return clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .map_err(|e| e.to_string());
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, page: clap::Command| {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut out)
            .and_then(|()| std::fs::write(&path, out))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    for sub in command.get_subcommands() {
        let name = format!("b4ae-pkcs11-{}", sub.get_name());
        write(&name, sub.clone().name(name.clone()))?;
    }
    write("b4ae-pkcs11", command)
}

fn audit_verify(file: &Path) -> Result<(), String> {
    use b4ae_pkcs11::audit::{verify, Verdict};
    match verify(file).map_err(|e| format!("{}: {e}", file.display()))? {
        Verdict::Intact(lines) => {
            println!("{}: {lines} line(s), the chain is intact", file.display());
            Ok(())
        }
        Verdict::Broken(line, why) => Err(format!("{}: line {line}: {why}", file.display())),
    }
}

/// One token's health.
#[derive(serde::Serialize)]
struct TokenHealth {
    slot: usize,
    label: String,
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    library: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    state: &'static str,
    error: Option<String>,
    initialized: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replicas: Vec<ReplicaHealth>,
}

/// One replica's health.
#[derive(serde::Serialize)]
struct ReplicaHealth {
    library: String,
    token_label: Option<String>,
    state: &'static str,
    error: Option<String>,
}

fn health_of(slot: usize, t: &b4ae_pkcs11::config::TokenConfig) -> TokenHealth {
    use cryptoki_sys::CKF_TOKEN_INITIALIZED;
    let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let backend = match t.backend {
        BackendKind::Embedded => "embedded",
        BackendKind::Pkcs11 | BackendKind::ForwardAll => "pkcs11",
        BackendKind::Agent => "agent",
    };
    let opened = module::open_slots(slot as _, slot, t, None);
    let first = opened
        .as_ref()
        .ok()
        .and_then(|slots| slots.first().cloned());
    let info = match &first {
        Some(backend) => backend.token_info(),
        None => Err(opened.err().unwrap_or(b4ae_pkcs11::error::Error::GENERAL)),
    };
    let replicas: Vec<ReplicaHealth> = first
        .as_ref()
        .and_then(|b| b.as_any().downcast_ref::<ReplicaSet>())
        .map(|set| {
            set.states()
                .into_iter()
                .map(|r| ReplicaHealth {
                    library: r.library,
                    token_label: r.token_label,
                    state: if r.up { "up" } else { "down" },
                    error: r.error,
                })
                .collect()
        })
        .unwrap_or_default();
    let state = match &info {
        Err(_) => "down",
        Ok(_) if replicas.iter().any(|r| r.state == "down") => "degraded",
        Ok(_) => "up",
    };
    TokenHealth {
        slot,
        label: t.label.clone(),
        backend,
        library: shown(&t.library),
        token_label: t.token_label.clone(),
        socket: shown(&t.socket),
        path: shown(&t.path),
        state,
        error: info.as_ref().err().map(|e| e.to_string()),
        initialized: info.is_ok_and(|i| i.flags & CKF_TOKEN_INITIALIZED != 0),
        replicas,
    }
}

/// `health`: exit 0 all up, 1 degraded (a replica down, the token served), 2 a token
/// unserved (SPEC §6).
fn health(json: bool) -> ExitCode {
    let config = match Config::load(None) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("b4ae-pkcs11: {e}");
            return ExitCode::from(2);
        }
    };
    let tokens: Vec<TokenHealth> = config
        .tokens
        .iter()
        .enumerate()
        .map(|(slot, t)| health_of(slot, t))
        .collect();
    let (status, code) = if tokens.iter().any(|t| t.state == "down") {
        ("unserved", 2)
    } else if tokens.iter().any(|t| t.state == "degraded") {
        ("degraded", 1)
    } else {
        ("up", 0)
    };
    if json {
        let doc = serde_json::json!({ "status": status, "tokens": tokens });
        println!("{doc}");
    } else {
        for t in &tokens {
            let place = [&t.library, &t.token_label, &t.socket, &t.path]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            let error = t
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            println!(
                "slot {} \"{}\" {} {place}: {}{error}",
                t.slot, t.label, t.backend, t.state
            );
            for (i, r) in t.replicas.iter().enumerate() {
                let error = r
                    .error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                println!("  replica {i} {}: {}{error}", r.library, r.state);
            }
        }
        println!("{status}");
    }
    ExitCode::from(code)
}
