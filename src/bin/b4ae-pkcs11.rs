//! `b4ae-pkcs11`: administration of the module's tokens, through the same token layer the
//! module's C ABI uses.

use b4ae_pkcs11::backend::embedded::EmbeddedSlot;
use b4ae_pkcs11::backend::pkcs11::HsmSlot;
use b4ae_pkcs11::config::Config;
use b4ae_pkcs11::module;
use b4ae_pkcs11::token::store::Role;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    InitToken {
        /// Slot number (the token's position in the configuration).
        #[arg(long, default_value_t = 0)]
        slot: u64,
        /// Token label (at most 32 bytes).
        #[arg(long)]
        label: String,
        /// SO PIN; read from $B4AE_SO_PIN when omitted.
        #[arg(long, env = "B4AE_SO_PIN", hide_env_values = true)]
        so_pin: String,
        /// User PIN to set as well; read from $B4AE_USER_PIN when omitted.
        #[arg(long, env = "B4AE_USER_PIN", hide_env_values = true)]
        pin: Option<String>,
    },
    /// Generate a new random storage key in the HSM, re-seal every post-quantum key record under
    /// it and destroy the old one (pkcs11 slots). Also finishes a rotation that was
    /// interrupted, and migrates a token made by release 1.
    RotateStk {
        /// Slot number.
        #[arg(long, default_value_t = 0)]
        slot: u64,
        /// The HSM user's PIN; read from $B4AE_USER_PIN when omitted.
        #[arg(long, env = "B4AE_USER_PIN", hide_env_values = true)]
        pin: String,
    },
}

fn main() -> ExitCode {
    b4ae_pkcs11::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::InitToken {
            slot,
            label,
            so_pin,
            pin,
        } => init_token(slot, &label, &so_pin, pin.as_deref()),
        Command::RotateStk { slot, pin } => rotate_stk(slot, &pin),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("b4ae-pkcs11: {e}");
            ExitCode::FAILURE
        }
    }
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
        return Err(format!("slot {slot} is not an embedded token"));
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

fn rotate_stk(slot: u64, pin: &str) -> Result<(), String> {
    module::initialize(None).map_err(|e| format!("C_Initialize: {e}"))?;
    let m = module::get().map_err(|e| e.to_string())?;
    let slot_backend = m.slot(slot as _).map_err(|e| e.to_string())?;
    let Some(HsmSlot(token)) = slot_backend.as_any().downcast_ref::<HsmSlot>() else {
        return Err(format!("slot {slot} is not a pkcs11 slot"));
    };
    let flags = cryptoki_sys::CKF_SERIAL_SESSION | cryptoki_sys::CKF_RW_SESSION;
    let session = token
        .lib
        .open_session(token.real_slot(), flags)
        .map_err(|e| e.to_string())?;
    token
        .lib
        .login(session, cryptoki_sys::CKU_USER, pin.as_bytes())
        .map_err(|e| format!("C_Login: {e}"))?;
    let epoch = token
        .keys
        .rotate(true)
        .map_err(|e| format!("rotation: {e}"));
    token.keys.close();
    let _ = token.lib.close_session(session);
    println!(
        "slot {slot}: every key record is now sealed under storage key epoch {}",
        epoch?
    );
    Ok(())
}
