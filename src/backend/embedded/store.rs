//! The SQLite store. WAL journaling makes every write a transaction that a killed process cannot
//! leave half-done, lets several processes share a token, and `data_version` tells each process
//! when another one wrote.

use super::sealing::{self, KdfCost, Key};
use crate::config::PinKdf;
use crate::error::{Error, Result};
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use crate::token::store::{Role, Store, StoredObject, TokenState};
use cryptoki_sys::CKR_USER_PIN_NOT_INITIALIZED;
use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::PathBuf;
use std::time::Duration;

const STORE_FILE: &str = "token.sqlite";
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (
    role INTEGER PRIMARY KEY,      -- 0 = SO, 1 = user
    salt BLOB NOT NULL,
    memory_kib INTEGER NOT NULL,
    passes INTEGER NOT NULL,
    wrapped BLOB NOT NULL,         -- the token key, sealed under the PIN's key
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    private INTEGER NOT NULL,
    version INTEGER NOT NULL,
    public BLOB NOT NULL,          -- attributes anyone may read (empty for private objects)
    sealed BLOB                    -- the rest, sealed under the token key
);
";

/// One embedded token's store.
pub struct EmbeddedStore {
    dir: PathBuf,
    cost: KdfCost,
    max_failures: u32,
    /// Opened on first use; `None` until the token exists on disk.
    conn: Mutex<Option<Connection>>,
    /// The token key while someone is logged in, with the identity of the token it opens
    /// (another process may re-initialize the token meanwhile).
    token_key: RwLock<Option<Unlocked>>,
    /// `PRAGMA data_version` when this process last synchronized.
    seen_version: Mutex<i64>,
}

fn role_id(role: Role) -> i64 {
    match role {
        Role::SecurityOfficer => 0,
        Role::User => 1,
    }
}

struct Unlocked {
    token_id: Vec<u8>,
    key: Key,
}

struct PinRecord {
    salt: Vec<u8>,
    cost: KdfCost,
    wrapped: Vec<u8>,
    failures: u32,
}

impl EmbeddedStore {
    pub fn new(dir: PathBuf, kdf: PinKdf, max_failures: u32) -> Self {
        if kdf == PinKdf::TestOnlyFast {
            tracing::warn!(
                "token at {}: pin_kdf = \"test-only-fast\" is insecure, for test suites only",
                dir.display()
            );
        }
        EmbeddedStore {
            dir,
            cost: KdfCost::for_setting(kdf),
            max_failures,
            conn: Mutex::new(None),
            token_key: RwLock::new(None),
            seen_version: Mutex::new(0),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    /// Runs `f` on the connection, opening (and with `create`, creating) the store first.
    /// `Ok(None)` when the store does not exist and `create` is false.
    fn with_conn<T>(
        &self,
        create: bool,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut guard = self.conn.lock();
        if guard.is_none() {
            let path = self.path();
            if !create && !path.exists() {
                return Ok(None);
            }
            if create {
                std::fs::create_dir_all(&self.dir)?;
                set_private_mode(&self.dir);
            }
            let conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "secure_delete", "ON")?;
            conn.execute_batch(SCHEMA)?;
            set_private_mode(&path);
            *guard = Some(conn);
        }
        let conn = guard.as_mut().expect("connection opened above");
        f(conn).map(Some)
    }

    fn meta(conn: &Connection, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn uuid(conn: &Connection) -> Result<Vec<u8>> {
        Self::meta(conn, "uuid")?.ok_or(Error(cryptoki_sys::CKR_TOKEN_NOT_RECOGNIZED))
    }

    fn pin_record(conn: &Connection, role: Role) -> Result<Option<PinRecord>> {
        Ok(conn
            .query_row(
                "SELECT salt, memory_kib, passes, wrapped, failures FROM pins WHERE role = ?1",
                [role_id(role)],
                |r| {
                    Ok(PinRecord {
                        salt: r.get(0)?,
                        cost: KdfCost {
                            memory_kib: r.get(1)?,
                            passes: r.get(2)?,
                        },
                        wrapped: r.get(3)?,
                        failures: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    fn pin_aad(uuid: &[u8], role: Role) -> Vec<u8> {
        let mut aad = b"b4ae-pkcs11/pin/v1".to_vec();
        aad.extend_from_slice(uuid);
        aad.push(role_id(role) as u8);
        aad
    }

    fn object_aad(uuid: &[u8], id: i64, public: &[u8]) -> Vec<u8> {
        let mut aad = b"b4ae-pkcs11/object/v1".to_vec();
        aad.extend_from_slice(uuid);
        aad.extend_from_slice(&id.to_le_bytes());
        aad.extend_from_slice(public);
        aad
    }

    /// Checks a PIN against its wrapped token key, counting failures across processes. A try
    /// is counted before the slow KDF runs and cleared on success, so parallel guessing from
    /// several processes cannot exceed the limit.
    fn verify_pin(&self, role: Role, pin: &[u8]) -> Result<Unlocked> {
        let (record, uuid) = self
            .with_conn(false, |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let uuid = Self::uuid(&tx)?;
                let record = Self::pin_record(&tx, role)?.ok_or(match role {
                    Role::User => Error(CKR_USER_PIN_NOT_INITIALIZED),
                    Role::SecurityOfficer => Error::TOKEN_NOT_RECOGNIZED,
                })?;
                if record.failures >= self.max_failures {
                    return Err(Error::PIN_LOCKED);
                }
                tx.execute(
                    "UPDATE pins SET failures = failures + 1 WHERE role = ?1",
                    [role_id(role)],
                )?;
                tx.commit()?;
                Ok((record, uuid))
            })?
            .ok_or(Error::TOKEN_NOT_RECOGNIZED)?;
        let kek = sealing::pin_key(pin, &record.salt, record.cost)?;
        let opened = sealing::open(&kek, &record.wrapped, &Self::pin_aad(&uuid, role));
        let Some(opened) = opened else {
            tracing::info!("wrong {role:?} PIN ({} failures)", record.failures + 1);
            return Err(Error::PIN_INCORRECT);
        };
        self.with_conn(false, |conn| {
            conn.execute(
                "UPDATE pins SET failures = 0 WHERE role = ?1",
                [role_id(role)],
            )?;
            Ok(())
        })?;
        let key: [u8; 32] = opened.as_slice().try_into().map_err(|_| Error::DEVICE)?;
        Ok(Unlocked {
            token_id: uuid,
            key: Key::new(key),
        })
    }

    /// Wraps the token key under a new PIN and stores it for `role` with a clean counter.
    fn store_pin(
        &self,
        conn: &Connection,
        uuid: &[u8],
        role: Role,
        pin: &[u8],
        token_key: &Key,
    ) -> Result<()> {
        let salt = sealing::random_bytes::<16>()?;
        let kek = sealing::pin_key(pin, &salt, self.cost)?;
        let wrapped = sealing::seal(&kek, token_key.as_ref(), &Self::pin_aad(uuid, role))?;
        conn.execute(
            "INSERT OR REPLACE INTO pins (role, salt, memory_kib, passes, wrapped, failures)
             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
            params![
                role_id(role),
                &salt[..],
                self.cost.memory_kib,
                self.cost.passes,
                wrapped
            ],
        )?;
        Ok(())
    }

    /// The token key, if someone is logged in and the token is still the one it opens. After
    /// another process re-initialized the token, the old key is forgotten: writing under it
    /// would make records nobody can read.
    fn unlocked_key(&self, conn: &Connection) -> Result<Option<Key>> {
        let token_id = Self::uuid(conn)?;
        let mut guard = self.token_key.write();
        match guard.as_ref() {
            Some(u) if u.token_id == token_id => Ok(Some(Key::new(*u.key))),
            Some(_) => {
                tracing::warn!(
                    "token at {} was re-initialized elsewhere; logged out",
                    self.dir.display()
                );
                *guard = None;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Splits an object into its public and sealed parts and seals the latter.
    fn encode(
        &self,
        conn: &Connection,
        id: i64,
        object: &Object,
    ) -> Result<(bool, Vec<u8>, Option<Vec<u8>>)> {
        let private = object.is_private();
        let mut public = object.attrs.clone();
        let hidden = if private {
            std::mem::take(&mut public)
        } else {
            public.split_off(|t| object.is_secret_attribute(t))
        };
        let public = public.serialize();
        let sealed = if hidden.iter().next().is_some() {
            let key = self.unlocked_key(conn)?.ok_or(Error::USER_NOT_LOGGED_IN)?;
            let uuid = Self::uuid(conn)?;
            Some(sealing::seal(
                &key,
                &hidden.serialize(),
                &Self::object_aad(&uuid, id, &public),
            )?)
        } else {
            None
        };
        // The public part is stored in the clear: nothing secret to wipe.
        Ok((private, public.to_vec(), sealed))
    }

    /// Records that this process is up to date with the store.
    fn note_synchronized(&self, conn: &Connection) -> Result<()> {
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        *self.seen_version.lock() = version;
        Ok(())
    }
}

#[cfg(unix)]
fn set_private_mode(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o700 } else { 0o600 };
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        tracing::warn!("cannot restrict permissions of {}: {e}", path.display());
    }
}

#[cfg(not(unix))]
fn set_private_mode(_path: &std::path::Path) {}

impl Store for EmbeddedStore {
    fn state(&self) -> Result<TokenState> {
        let mut state = TokenState {
            max_failures: self.max_failures,
            ..TokenState::default()
        };
        self.with_conn(false, |conn| {
            let Some(label) = Self::meta(conn, "label")? else {
                return Ok(());
            };
            state.initialized = Self::pin_record(conn, Role::SecurityOfficer)?.is_some();
            copy_padded(&mut state.label, &label);
            copy_padded(
                &mut state.serial,
                &Self::meta(conn, "serial")?.unwrap_or_default(),
            );
            if let Some(so) = Self::pin_record(conn, Role::SecurityOfficer)? {
                state.so_failures = so.failures;
            }
            if let Some(user) = Self::pin_record(conn, Role::User)? {
                state.user_pin_initialized = true;
                state.user_failures = user.failures;
            }
            Ok(())
        })?;
        Ok(state)
    }

    fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        if self.state()?.initialized {
            self.verify_pin(Role::SecurityOfficer, so_pin)?;
        }
        let token_key = sealing::random_key()?;
        self.with_conn(true, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let uuid = sealing::random_bytes::<16>()?.to_vec();
            let serial = match Self::meta(&tx, "serial")? {
                Some(s) => s,
                None => hex16(&sealing::random_bytes::<8>()?),
            };
            tx.execute("DELETE FROM objects", [])?;
            tx.execute("DELETE FROM pins", [])?;
            for (name, value) in [
                ("uuid", uuid.clone()),
                ("label", label.to_vec()),
                ("serial", serial),
            ] {
                tx.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )?;
            }
            self.store_pin(&tx, &uuid, Role::SecurityOfficer, so_pin, &token_key)?;
            tx.commit()?;
            self.note_synchronized(conn)
        })?;
        self.logout();
        tracing::info!("token at {} initialized", self.dir.display());
        Ok(())
    }

    fn login(&self, role: Role, pin: &[u8]) -> Result<()> {
        let unlocked = self.verify_pin(role, pin)?;
        *self.token_key.write() = Some(unlocked);
        Ok(())
    }

    fn logout(&self) {
        *self.token_key.write() = None;
    }

    fn forget_secrets(&self) {
        if let Some(mut key) = self.token_key.try_write() {
            *key = None;
        }
    }

    fn init_pin(&self, pin: &[u8]) -> Result<()> {
        self.with_conn(false, |conn| {
            let key = self.unlocked_key(conn)?.ok_or(Error::USER_NOT_LOGGED_IN)?;
            let uuid = Self::uuid(conn)?;
            self.store_pin(conn, &uuid, Role::User, pin, &key)
        })?
        .ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }

    fn set_pin(&self, role: Role, old: &[u8], new: &[u8]) -> Result<()> {
        let unlocked = self.verify_pin(role, old)?;
        self.with_conn(false, |conn| {
            self.store_pin(conn, &unlocked.token_id, role, new, &unlocked.key)
        })?
        .ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }

    fn load(&self, private: bool) -> Result<Vec<StoredObject>> {
        let loaded = self.with_conn(false, |conn| {
            let key = self.unlocked_key(conn)?;
            if private && key.is_none() {
                return Err(Error::USER_NOT_LOGGED_IN);
            }
            let tx = conn.transaction()?;
            let uuid = Self::uuid(&tx)?;
            let mut objects = Vec::new();
            {
                let mut stmt =
                    tx.prepare("SELECT id, version, private, public, sealed FROM objects")?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    let id: i64 = row.get(0)?;
                    let is_private: bool = row.get(2)?;
                    if is_private && !private {
                        continue;
                    }
                    let public: Vec<u8> = row.get(3)?;
                    let sealed: Option<Vec<u8>> = row.get(4)?;
                    let mut attrs = Attributes::deserialize(&public)?;
                    if let (Some(sealed), Some(key)) = (sealed, key.as_ref()) {
                        let aad = Self::object_aad(&uuid, id, &public);
                        let Some(plain) = sealing::open(key, &sealed, &aad) else {
                            tracing::error!(
                                "object {id} in {} fails authentication; skipped",
                                self.dir.display()
                            );
                            continue;
                        };
                        attrs.merge(Attributes::deserialize(&plain)?);
                    } else if is_private {
                        continue;
                    }
                    objects.push(StoredObject {
                        id,
                        version: row.get(1)?,
                        attrs,
                    });
                }
            }
            tx.commit()?;
            self.note_synchronized(conn)?;
            Ok(objects)
        })?;
        Ok(loaded.unwrap_or_default())
    }

    fn changed_elsewhere(&self) -> Result<bool> {
        let changed = self.with_conn(false, |conn| {
            let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
            Ok(version != *self.seen_version.lock())
        })?;
        Ok(changed.unwrap_or(false))
    }

    fn insert(&self, objects: &[&Object]) -> Result<Vec<(i64, i64)>> {
        self.with_conn(false, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut stored = Vec::with_capacity(objects.len());
            for object in objects {
                // The row id is part of the sealed record's associated data: take it first.
                tx.execute(
                    "INSERT INTO objects (private, version, public) VALUES (1, 1, x'')",
                    [],
                )?;
                let id = tx.last_insert_rowid();
                let (private, public, sealed) = self.encode(&tx, id, object)?;
                tx.execute(
                    "UPDATE objects SET private = ?1, public = ?2, sealed = ?3 WHERE id = ?4",
                    params![private, public, sealed, id],
                )?;
                stored.push((id, 1));
            }
            tx.commit()?;
            Ok(stored)
        })?
        .ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }

    fn update(&self, id: i64, object: &Object) -> Result<i64> {
        self.with_conn(false, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (private, public, sealed) = self.encode(&tx, id, object)?;
            let version: Option<i64> = tx
                .query_row(
                    "UPDATE objects SET private = ?1, public = ?2, sealed = ?3, version = version + 1
                     WHERE id = ?4 RETURNING version",
                    params![private, public, sealed, id],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            version.ok_or(Error::OBJECT_HANDLE_INVALID)
        })?
        .ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }

    fn delete(&self, id: i64) -> Result<()> {
        self.with_conn(false, |conn| {
            let n = conn.execute("DELETE FROM objects WHERE id = ?1", [id])?;
            if n == 0 {
                return Err(Error::OBJECT_HANDLE_INVALID);
            }
            Ok(())
        })?
        .ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }
}

fn copy_padded(dest: &mut [u8], src: &[u8]) {
    dest.fill(b' ');
    let n = src.len().min(dest.len());
    dest[..n].copy_from_slice(&src[..n]);
}

fn hex16(bytes: &[u8; 8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("{b:02X}").into_bytes())
        .collect()
}
