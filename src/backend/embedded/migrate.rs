//! Tokens of the earlier store format (`token.sqlite` directly in the configured `path`; rows
//! authenticated only where secret, no versions, the failure limit from the configuration).
//! The module does not read them; `b4ae-pkcs11 migrate` copies one into a store of the current
//! format under a fresh token key, with both PINs, and erases the old file.

use super::files;
use super::sealing::{self, KdfCost, Key};
use super::store::EmbeddedStore;
use crate::config::PinKdf;
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use crate::token::store::{Role, Store};
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use zeroize::Zeroizing;

/// What a migration copied.
pub struct Migrated {
    pub objects: usize,
    /// Rows of the old file that failed authentication there too.
    pub skipped: usize,
}

struct OldPin {
    salt: Vec<u8>,
    cost: KdfCost,
    wrapped: Vec<u8>,
    failures: u32,
}

fn old_pin(conn: &Connection, role: u8) -> Result<Option<OldPin>, String> {
    let field = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
    conn.query_row(
        "SELECT salt, memory_kib, passes, wrapped, failures FROM pins WHERE role = ?1",
        [role],
        |r| {
            Ok(OldPin {
                salt: r.get(0)?,
                cost: KdfCost {
                    memory_kib: field(r.get(1)?),
                    passes: field(r.get(2)?),
                },
                wrapped: r.get(3)?,
                failures: field(r.get(4)?),
            })
        },
    )
    .optional()
    .map_err(|e| format!("reading the old PIN records: {e}"))
}

/// The old token key, from one role's wrap.
fn old_token_key(
    uuid: &[u8],
    role: u8,
    record: &OldPin,
    pin: &[u8],
    max_failures: u32,
) -> Result<Key, String> {
    let who = if role == 0 { "SO" } else { "user" };
    if record.failures >= max_failures {
        return Err(format!("the {who} PIN of the old token is locked"));
    }
    if !record.cost.is_sane() {
        return Err(format!(
            "the {who} PIN's KDF cost in the old file is out of bounds"
        ));
    }
    let kek = sealing::pin_key(pin, &record.salt, record.cost).map_err(|e| e.to_string())?;
    let mut aad = b"b4ae-pkcs11/pin/v1".to_vec();
    aad.extend_from_slice(uuid);
    aad.push(role);
    let opened = sealing::open(&kek, &record.wrapped, &aad)
        .ok_or_else(|| format!("wrong {who} PIN for the old token"))?;
    let key: [u8; 32] = opened
        .as_slice()
        .try_into()
        .map_err(|_| "a malformed token key in the old file".to_string())?;
    Ok(Key::new(key))
}

/// Every object of the old file that authenticates under its token key.
fn old_objects(conn: &Connection, uuid: &[u8], key: &Key) -> Result<(Vec<Object>, usize), String> {
    let read = |e: rusqlite::Error| format!("reading the old objects: {e}");
    let mut stmt = conn
        .prepare("SELECT id, private, public, sealed FROM objects ORDER BY id")
        .map_err(read)?;
    let mut rows = stmt.query([]).map_err(read)?;
    let (mut objects, mut skipped) = (Vec::new(), 0);
    while let Some(row) = rows.next().map_err(read)? {
        let id: i64 = row.get(0).map_err(read)?;
        let private: bool = row.get(1).map_err(read)?;
        let public: Vec<u8> = row.get(2).map_err(read)?;
        let sealed: Option<Vec<u8>> = row.get(3).map_err(read)?;
        let mut aad = b"b4ae-pkcs11/object/v1".to_vec();
        aad.extend_from_slice(uuid);
        aad.extend_from_slice(&id.to_le_bytes());
        aad.extend_from_slice(&public);
        let hidden = match sealed {
            Some(sealed) => sealing::open(key, &sealed, &aad),
            None if !private => Some(Zeroizing::new(Vec::new())),
            None => None,
        };
        let parsed = hidden.and_then(|hidden| {
            let mut attrs = Attributes::deserialize(&public).ok()?;
            attrs.merge(Attributes::deserialize(&hidden).ok()?);
            Some(attrs)
        });
        match parsed {
            Some(attrs) => objects.push(Object::new(attrs)),
            None => {
                tracing::warn!("old object {id} fails authentication; not migrated");
                skipped += 1;
            }
        }
    }
    Ok((objects, skipped))
}

/// Copies the old-format token at `path` into a new store there, then erases the old file.
/// `user_pin` is needed when the old token has a user PIN. Both PINs are kept, so they must
/// meet this release's minimum length (change them with the earlier release first if not).
pub fn migrate_earlier_store(
    path: &Path,
    kdf: PinKdf,
    max_failures: u32,
    so_pin: &[u8],
    user_pin: Option<&[u8]>,
) -> Result<Migrated, String> {
    let old = path.join(files::STORE_FILE);
    if files::store_file(path).exists() {
        return Err(format!(
            "{} already holds a store of this release",
            path.display()
        ));
    }
    if !old.exists() {
        return Err(format!(
            "no store of an earlier release at {}",
            old.display()
        ));
    }
    let conn = Connection::open(&old).map_err(|e| format!("{}: {e}", old.display()))?;
    let meta = |name: &str| -> Result<Vec<u8>, String> {
        conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| format!("reading the old token: {e}"))?
        .ok_or_else(|| format!("the old file has no {name}: not an initialized token"))
    };
    let (uuid, label, serial) = (meta("uuid")?, meta("label")?, meta("serial")?);
    let so = old_pin(&conn, 0)?.ok_or("the old token has no SO PIN")?;
    let key = old_token_key(&uuid, 0, &so, so_pin, max_failures)?;
    let user_pin = match old_pin(&conn, 1)? {
        Some(record) => {
            let pin = user_pin.ok_or("the old token has a user PIN: give it too")?;
            let user_key = old_token_key(&uuid, 1, &record, pin, max_failures)?;
            if *user_key != *key {
                return Err("the old user PIN opens another token key".into());
            }
            Some(pin)
        }
        None => None,
    };
    let (objects, skipped) = old_objects(&conn, &uuid, &key)?;

    let mut padded = [b' '; 32];
    let n = label.len().min(32);
    padded[..n].copy_from_slice(&label[..n]);
    let copied = copy_into_new_store(
        path,
        kdf,
        max_failures,
        so_pin,
        user_pin,
        &padded,
        &serial,
        &objects,
    );
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(path.join(files::STORE_DIR));
        return Err(e);
    }
    erase_old_file(conn, &old)?;
    Ok(Migrated {
        objects: objects.len(),
        skipped,
    })
}

#[allow(clippy::too_many_arguments)]
fn copy_into_new_store(
    path: &Path,
    kdf: PinKdf,
    max_failures: u32,
    so_pin: &[u8],
    user_pin: Option<&[u8]>,
    label: &[u8; 32],
    serial: &[u8],
    objects: &[Object],
) -> Result<(), String> {
    let too_short = |e: crate::error::Error| {
        if e == crate::error::Error::PIN_LEN_RANGE {
            "PINs are 8 characters at least now: change them with the earlier release first".into()
        } else {
            format!("writing the new store: {e}")
        }
    };
    let store = EmbeddedStore::new(path.to_path_buf(), kdf, max_failures);
    store.init_token(so_pin, label).map_err(too_short)?;
    store.keep_serial(serial).map_err(too_short)?;
    store
        .login(Role::SecurityOfficer, so_pin)
        .map_err(too_short)?;
    if let Some(pin) = user_pin {
        store.init_pin(pin).map_err(too_short)?;
    }
    let refs: Vec<&Object> = objects.iter().collect();
    if !refs.is_empty() {
        store.insert(&refs).map_err(too_short)?;
    }
    store.logout();
    Ok(())
}

/// Empties the old file (SQLite zeroes what it frees) before removing it and its WAL.
fn erase_old_file(conn: Connection, old: &Path) -> Result<(), String> {
    conn.execute_batch(
        "PRAGMA secure_delete = ON;
         DELETE FROM objects; DELETE FROM pins; DELETE FROM meta;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .map_err(|e| format!("erasing {}: {e}", old.display()))?;
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let mut name = old.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("removing {}: {e}", Path::new(&name).display()))
            }
            _ => {}
        }
    }
    Ok(())
}
