//! The SQLite store. WAL journaling makes every write a transaction that a killed process cannot
//! leave half-done, lets several processes share a token, and `data_version` tells each process
//! when another one wrote.
//!
//! Nothing read from the file is trusted: every row is sealed under the token key with its
//! identity, version and clear part as associated data; the head (sealed too) says which rows
//! and PIN records are current; the PIN policy is bound into every wrap. What a file writer can
//! still do is written in docs/security.md ("Embedded store against a file writer").

use super::boxes;
use super::files;
use super::head::{self, Head, RowSet, RowSetKey};
use super::policy::Policy;
use super::sealing::{self, KdfCost, Key};
use crate::config::PinKdf;
use crate::error::{Error, Result};
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use crate::token::rules;
use crate::token::store::{Role, Store, StoredObject, TokenState};
use crate::token::MIN_PIN_LEN;
use cryptoki_sys::{
    CKA_CLASS, CKA_KEY_TYPE, CKO_PRIVATE_KEY, CKO_SECRET_KEY, CKR_USER_PIN_NOT_INITIALIZED,
};
use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pins (
    role INTEGER PRIMARY KEY,      -- 0 = SO, 1 = user
    version INTEGER NOT NULL,      -- the head generation it was written at
    salt BLOB NOT NULL,
    memory_kib INTEGER NOT NULL,
    passes INTEGER NOT NULL,
    wrapped BLOB NOT NULL,         -- the role's X25519 secret, sealed under the PIN's key
    tries INTEGER NOT NULL,        -- logins tried with this PIN record
    ok_tries INTEGER NOT NULL,     -- `tries` at the last success, bound into `wrapped`
    token_box BLOB NOT NULL        -- the token key, sealed to the role's public key
);
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    private INTEGER NOT NULL,
    version INTEGER NOT NULL,      -- the head generation it was written at
    public BLOB NOT NULL,          -- attributes shown before login (empty for sealed-whole rows)
    sealed BLOB NOT NULL           -- the rest, sealed with everything above as associated data
);
";

/// One embedded token's store.
pub struct EmbeddedStore {
    /// The configured `path`; the files are in [`files::STORE_DIR`] inside it.
    path: PathBuf,
    cost: KdfCost,
    /// The failure limit given to a token initialized through this configuration.
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
        Role::SecurityOfficer => head::SO as i64,
        Role::User => head::USER as i64,
    }
}

struct Unlocked {
    /// The token's identity and the identity of its current token key.
    token_id: Vec<u8>,
    key: Key,
}

/// What identifies a token and binds its records: its random identity and its PIN policy.
struct TokenMeta {
    uuid: Vec<u8>,
    policy: Policy,
}

struct PinRecord {
    version: i64,
    salt: Vec<u8>,
    cost: KdfCost,
    wrapped: Vec<u8>,
    tries: i64,
    ok_tries: i64,
    token_box: Vec<u8>,
}

impl PinRecord {
    /// Failures since the last success; `None` when the counter was moved backwards outside the
    /// module.
    fn failures(&self) -> Option<u32> {
        u32::try_from(self.tries.checked_sub(self.ok_tries)?).ok()
    }
}

/// A row whose seal opened: its clear part and the plaintext of its sealed part.
struct OpenRow {
    id: i64,
    version: i64,
    private: bool,
    public: Vec<u8>,
    plain: Zeroizing<Vec<u8>>,
}

/// A row as read, before anything in it is believed.
struct RawRow {
    id: i64,
    version: Option<i64>,
    private: Option<i64>,
    public: Option<Vec<u8>>,
    sealed: Option<Vec<u8>>,
}

impl RawRow {
    /// `None` for a row without an integer id (only a rebuilt table can hold one).
    fn read(row: &Row) -> Option<RawRow> {
        Some(RawRow {
            id: row.get(0).ok()?,
            version: row.get(1).ok(),
            private: row.get(2).ok(),
            public: row.get(3).ok(),
            sealed: row.get(4).ok(),
        })
    }
}

impl EmbeddedStore {
    pub fn new(path: PathBuf, kdf: PinKdf, max_failures: u32) -> Self {
        if kdf == PinKdf::TestOnlyFast {
            tracing::warn!(
                "token at {}: pin_kdf = \"test-only-fast\" is insecure, for test suites only",
                path.display()
            );
        }
        files::warn_about_old_layout(&path);
        EmbeddedStore {
            path,
            cost: KdfCost::for_setting(kdf),
            max_failures,
            conn: Mutex::new(None),
            token_key: RwLock::new(None),
            seen_version: Mutex::new(0),
        }
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
            let file = files::store_file(&self.path);
            if !create && !file.exists() {
                return Ok(None);
            }
            if create {
                files::create(&self.path)?;
            }
            let conn = Connection::open(&file)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "secure_delete", "ON")?;
            conn.execute_batch(SCHEMA)?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(Error::GENERAL);
        };
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
        Self::meta(conn, "uuid")?.ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }

    /// The token and its current token key: `C_InitToken` changes the first, `C_SetPIN` and
    /// `C_InitPIN` the second, and a key unlocked before either is no longer used.
    fn token_id(conn: &Connection) -> Result<Vec<u8>> {
        let mut id = Self::uuid(conn)?;
        id.extend_from_slice(&Self::meta(conn, "key_id")?.unwrap_or_default());
        Ok(id)
    }

    fn token_meta(&self, conn: &Connection) -> Result<TokenMeta> {
        let uuid = Self::uuid(conn)?;
        let policy = Self::meta(conn, "policy")?
            .and_then(|p| Policy::decode(&p))
            .ok_or_else(|| {
                tracing::error!(
                    "token at {}: its PIN policy is missing or out of bounds; refused",
                    self.path.display()
                );
                Error::DEVICE
            })?;
        Ok(TokenMeta { uuid, policy })
    }

    fn head_aad(meta: &TokenMeta) -> Vec<u8> {
        let mut aad = b"b4ae-pkcs11/head/v2".to_vec();
        aad.extend_from_slice(&meta.uuid);
        aad.extend_from_slice(&meta.policy.encode());
        aad
    }

    fn read_head(&self, conn: &Connection, meta: &TokenMeta, key: &Key) -> Result<Head> {
        let sealed = Self::meta(conn, "head")?.unwrap_or_default();
        Head::open(key, &sealed, &Self::head_aad(meta)).inspect_err(|_| {
            tracing::error!(
                "token at {}: its head fails authentication (altered outside the module); refused",
                self.path.display()
            );
        })
    }

    fn write_head(conn: &Connection, meta: &TokenMeta, key: &Key, head: &Head) -> Result<()> {
        let sealed = head.seal(key, &Self::head_aad(meta))?;
        conn.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('head', ?1)",
            [sealed],
        )?;
        Ok(())
    }

    fn pin_record(conn: &Connection, role: Role) -> Result<Option<PinRecord>> {
        let cost_field = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(conn
            .query_row(
                "SELECT version, salt, memory_kib, passes, wrapped, tries, ok_tries, token_box
                 FROM pins WHERE role = ?1",
                [role_id(role)],
                |r| {
                    Ok(PinRecord {
                        version: r.get(0)?,
                        salt: r.get(1)?,
                        cost: KdfCost {
                            memory_kib: cost_field(r.get(2)?),
                            passes: cost_field(r.get(3)?),
                        },
                        wrapped: r.get(4)?,
                        tries: r.get(5)?,
                        ok_tries: r.get(6)?,
                        token_box: r.get(7)?,
                    })
                },
            )
            .optional()?)
    }

    /// The wrap's associated data: token, policy, role, record version and the count at the
    /// last success. Raising `ok_tries` in the file (to clear the failures) breaks the wrap.
    fn pin_aad(meta: &TokenMeta, role: Role, version: i64, ok_tries: i64) -> Vec<u8> {
        let mut aad = b"b4ae-pkcs11/pin/v2".to_vec();
        aad.extend_from_slice(&meta.uuid);
        aad.extend_from_slice(&meta.policy.encode());
        aad.extend_from_slice(&role_id(role).to_le_bytes());
        aad.extend_from_slice(&version.to_le_bytes());
        aad.extend_from_slice(&ok_tries.to_le_bytes());
        aad
    }

    fn box_aad(meta: &TokenMeta, role: Role, version: i64) -> Vec<u8> {
        let mut aad = b"b4ae-pkcs11/token-box/v2".to_vec();
        aad.extend_from_slice(&meta.uuid);
        aad.extend_from_slice(&role_id(role).to_le_bytes());
        aad.extend_from_slice(&version.to_le_bytes());
        aad
    }

    fn object_aad(uuid: &[u8], id: i64, version: i64, private: bool, public: &[u8]) -> Vec<u8> {
        let mut aad = b"b4ae-pkcs11/object/v2".to_vec();
        aad.extend_from_slice(uuid);
        aad.extend_from_slice(&id.to_le_bytes());
        aad.extend_from_slice(&version.to_le_bytes());
        aad.push(u8::from(private));
        aad.extend_from_slice(public);
        aad
    }

    fn not_initialized(role: Role) -> Error {
        match role {
            Role::User => Error(CKR_USER_PIN_NOT_INITIALIZED),
            Role::SecurityOfficer => Error::TOKEN_NOT_RECOGNIZED,
        }
    }

    fn check_not_locked(&self, record: &PinRecord, policy: Policy, role: Role) -> Result<()> {
        match record.failures() {
            None => {
                tracing::error!(
                    "token at {}: the {role:?} PIN's failure counter was moved backwards outside \
                     the module; the PIN stays locked",
                    self.path.display()
                );
                Err(Error::PIN_LOCKED)
            }
            Some(f) if f >= policy.max_failures => Err(Error::PIN_LOCKED),
            Some(_) => Ok(()),
        }
    }

    /// Checks a PIN against its wrapped token key, counting failures across processes.
    ///
    /// The slow KDF runs first and counts nothing: a process killed meanwhile has learned
    /// nothing and spent no try. The try is counted (under the write lock, with the limit
    /// checked again, so parallel guessers never exceed it) before the wrap is opened, so no
    /// result is ever seen uncounted; success then clears the count.
    fn verify_pin(&self, role: Role, pin: &[u8]) -> Result<Unlocked> {
        let (meta, record) = self
            .with_conn(false, |conn| {
                let meta = self.token_meta(conn)?;
                let record = Self::pin_record(conn, role)?.ok_or(Self::not_initialized(role))?;
                Ok((meta, record))
            })?
            .ok_or(Error::TOKEN_NOT_RECOGNIZED)?;
        self.check_not_locked(&record, meta.policy, role)?;
        if !record.cost.is_sane() {
            tracing::error!(
                "token at {}: the {role:?} PIN's KDF cost ({} KiB, {} passes) is out of bounds; \
                 refused",
                self.path.display(),
                record.cost.memory_kib,
                record.cost.passes
            );
            return Err(Error::DEVICE);
        }
        let kek = sealing::pin_key(pin, &record.salt, record.cost)?;

        let record = self
            .with_conn(false, |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = Self::pin_record(&tx, role)?.ok_or(Self::not_initialized(role))?;
                self.check_not_locked(&now, meta.policy, role)?;
                tx.execute(
                    "UPDATE pins SET tries = tries + 1 WHERE role = ?1",
                    [role_id(role)],
                )?;
                tx.commit()?;
                Ok(PinRecord {
                    tries: now.tries + 1,
                    ..now
                })
            })?
            .ok_or(Error::TOKEN_NOT_RECOGNIZED)?;
        let aad = Self::pin_aad(&meta, role, record.version, record.ok_tries);
        let Some(opened) = sealing::open(&kek, &record.wrapped, &aad) else {
            tracing::info!(
                "wrong {role:?} PIN ({} failures)",
                record.failures().unwrap_or(u32::MAX)
            );
            return Err(Error::PIN_INCORRECT);
        };
        let secret: [u8; 32] = opened.as_slice().try_into().map_err(|_| Error::DEVICE)?;
        let secret = Key::new(secret);
        let current = self
            .with_conn(false, |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let token_id = Self::token_id(&tx)?;
                let fresh = Self::pin_record(&tx, role)?.ok_or(Self::not_initialized(role))?;
                // Read again under the lock: the other role may have given the token a new key
                // since, sealed to this role in a new box.
                let box_aad = Self::box_aad(&meta, role, fresh.version);
                let opened = boxes::open_with(&secret, &fresh.token_box, &box_aad);
                let Some(opened) = opened.filter(|_| fresh.version == record.version) else {
                    tracing::error!(
                        "token at {}: the {role:?} PIN record changed meanwhile or fails \
                         authentication; refused",
                        self.path.display()
                    );
                    return Ok(None);
                };
                let key: [u8; 32] = opened.as_slice().try_into().map_err(|_| Error::DEVICE)?;
                let key = Key::new(key);
                let head = self.read_head(&tx, &meta, &key)?;
                if head.pin_versions[role_id(role) as usize] != record.version as u64 {
                    tracing::error!(
                        "token at {}: the {role:?} PIN record is not the current one (copied \
                         back from an older file); refused",
                        self.path.display()
                    );
                    return Ok(None);
                }
                let aad = Self::pin_aad(&meta, role, record.version, fresh.tries);
                let wrapped = sealing::seal(&kek, secret.as_ref(), &aad)?;
                tx.execute(
                    "UPDATE pins SET wrapped = ?1, ok_tries = ?2 WHERE role = ?3",
                    params![wrapped, fresh.tries, role_id(role)],
                )?;
                tx.commit()?;
                Ok(Some((token_id, key)))
            })?
            .ok_or(Error::TOKEN_NOT_RECOGNIZED)?;
        let Some((token_id, key)) = current else {
            return Err(Error::PIN_INCORRECT);
        };
        Ok(Unlocked { token_id, key })
    }

    /// Wraps the token key under a new PIN and stores it for `role` with a clean counter and
    /// a new version, which the head then expects.
    fn store_pin(
        &self,
        conn: &Connection,
        meta: &TokenMeta,
        head: &mut Head,
        role: Role,
        pin: &[u8],
        token_key: &Key,
    ) -> Result<()> {
        if pin.len() < meta.policy.min_pin_len as usize {
            return Err(Error::PIN_LEN_RANGE);
        }
        let version = head.next_version();
        let keys = boxes::new_role_keys()?;
        head.pin_versions[role_id(role) as usize] = version as u64;
        head.role_publics[role_id(role) as usize] = keys.public;
        let salt = sealing::random_bytes::<16>()?;
        let kek = sealing::pin_key(pin, &salt, self.cost)?;
        let aad = Self::pin_aad(meta, role, version, 0);
        let wrapped = sealing::seal(&kek, keys.secret.as_ref(), &aad)?;
        let token_box = boxes::seal_to(
            &keys.public,
            token_key.as_ref(),
            &Self::box_aad(meta, role, version),
        )?;
        conn.execute(
            "INSERT OR REPLACE INTO pins
             (role, version, salt, memory_kib, passes, wrapped, tries, ok_tries, token_box)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, ?7)",
            params![
                role_id(role),
                version,
                &salt[..],
                self.cost.memory_kib,
                self.cost.passes,
                wrapped,
                token_box
            ],
        )?;
        Ok(())
    }

    /// The token key, if someone is logged in and the token is still the one it opens. After
    /// another process re-initialized the token, the old key is forgotten: writing under it
    /// would make records nobody can read.
    fn unlocked_key(&self, conn: &Connection) -> Result<Option<Key>> {
        let token_id = Self::token_id(conn)?;
        let mut guard = self.token_key.write();
        match guard.as_ref() {
            Some(u) if u.token_id == token_id => Ok(Some(Key::new(*u.key))),
            Some(_) => {
                tracing::warn!(
                    "token at {} was re-initialized or given a new token key elsewhere; \
                     logged out",
                    self.path.display()
                );
                *guard = None;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Runs one write under the token key: `f` gets the open transaction, the token, the key
    /// and the head, which is sealed again afterwards. Writes that replace or remove records
    /// are checkpointed, so the old records are gone from the files when the call returns.
    fn write<T>(
        &self,
        erases: bool,
        f: impl FnOnce(&Connection, &TokenMeta, &Key, &mut Head) -> Result<T>,
    ) -> Result<T> {
        self.with_conn(false, |conn| {
            let key = self.unlocked_key(conn)?.ok_or(Error::USER_NOT_LOGGED_IN)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let meta = self.token_meta(&tx)?;
            let mut head = self.read_head(&tx, &meta, &key)?;
            let out = f(&tx, &meta, &key, &mut head)?;
            Self::write_head(&tx, &meta, &key, &head)?;
            tx.commit()?;
            if erases {
                self.checkpoint(conn);
            }
            Ok(out)
        })?
        .ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }

    /// Copies the WAL into the database and empties it. `secure_delete` has zeroed what the
    /// last transactions removed, but the WAL still holds the pages as they were before.
    fn checkpoint(&self, conn: &Connection) {
        let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        match result {
            Ok(0) => {}
            Ok(_) => tracing::warn!(
                "token at {}: another process is reading; erased records stay in the WAL until \
                 the next checkpoint",
                self.path.display()
            ),
            Err(e) => tracing::warn!("token at {}: checkpoint: {e}", self.path.display()),
        }
    }

    /// Seals an object into a row: its clear part and sealed part. Keys' rows are sealed
    /// whole, class included, so no key is ever read from the clear part.
    fn seal_row(
        meta: &TokenMeta,
        key: &Key,
        id: i64,
        version: i64,
        object: &Object,
    ) -> Result<(bool, Vec<u8>, Vec<u8>)> {
        let private = object.is_private();
        let whole = private || matches!(object.class(), CKO_PRIVATE_KEY | CKO_SECRET_KEY);
        let mut public = object.attrs.clone();
        let hidden = if whole {
            std::mem::take(&mut public)
        } else {
            public.split_off(|t| object.is_secret_attribute(t))
        };
        // The clear part holds nothing secret: nothing to wipe.
        let public = public.serialize().to_vec();
        let aad = Self::object_aad(&meta.uuid, id, version, private, &public);
        let sealed = sealing::seal(key, &hidden.serialize(), &aad)?;
        Ok((private, public, sealed))
    }

    /// Opens one row read from the file; `None` for anything but a row this module sealed.
    fn open_row(meta: &TokenMeta, key: &Key, head: &Head, row: RawRow) -> Option<OpenRow> {
        let version = row
            .version
            .filter(|v| *v > 0 && *v as u64 <= head.generation)?;
        let private = match row.private? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let (public, sealed) = (row.public?, row.sealed?);
        let aad = Self::object_aad(&meta.uuid, row.id, version, private, &public);
        let plain = sealing::open(key, &sealed, &aad)?;
        Some(OpenRow {
            id: row.id,
            version,
            private,
            public,
            plain,
        })
    }

    /// Every row whose seal opens and whose bucket matches the head's row set.
    fn verified_rows(
        &self,
        conn: &Connection,
        meta: &TokenMeta,
        key: &Key,
        head: &Head,
    ) -> Result<Vec<OpenRow>> {
        let set_key = RowSetKey::new(key);
        let mut set = RowSet::new();
        let mut opened = Vec::new();
        let mut stmt = conn.prepare("SELECT id, version, private, public, sealed FROM objects")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let Some(row) = RawRow::read(row) else {
                tracing::error!(
                    "token at {}: a row without an id; skipped",
                    self.path.display()
                );
                continue;
            };
            match row.version {
                Some(version) => set.add(&set_key, row.id, version),
                None => set.spoil(row.id),
            }
            let id = row.id;
            match Self::open_row(meta, key, head, row) {
                Some(row) => opened.push(row),
                None => tracing::error!(
                    "token at {}: object {id} fails authentication (altered or written outside \
                     the module); skipped",
                    self.path.display(),
                ),
            }
        }
        let bad = set.mismatches(head);
        if bad.iter().any(|b| *b) {
            let withheld = opened.iter().filter(|r| bad[head::bucket(r.id)]);
            let ids: Vec<i64> = withheld.map(|r| r.id).collect();
            tracing::error!(
                "token at {}: the rows of {} bucket(s) do not match the token's head (rolled \
                 back, removed or added outside the module); objects {ids:?} withheld",
                self.path.display(),
                bad.iter().filter(|b| **b).count()
            );
            opened.retain(|r| !bad[head::bucket(r.id)]);
        }
        Ok(opened)
    }

    /// Every object that authenticates, with whether it is private.
    fn load_verified(&self, conn: &Connection, key: &Key) -> Result<Vec<(bool, StoredObject)>> {
        let meta = self.token_meta(conn)?;
        let head = self.read_head(conn, &meta, key)?;
        let rows = self.verified_rows(conn, &meta, key, &head)?;
        let mut objects = Vec::with_capacity(rows.len());
        for row in rows {
            let parsed = Attributes::deserialize(&row.public).and_then(|mut attrs| {
                attrs.merge(Attributes::deserialize(&row.plain)?);
                Ok(attrs)
            });
            match parsed {
                Ok(attrs) => objects.push((
                    row.private,
                    StoredObject {
                        id: row.id,
                        version: row.version,
                        attrs,
                    },
                )),
                Err(_) => tracing::error!(
                    "token at {}: object {} is malformed; skipped",
                    self.path.display(),
                    row.id
                ),
            }
        }
        Ok(objects)
    }

    /// Replaces the token key (`C_SetPIN`, `C_InitPIN`): every row that authenticates is
    /// sealed again under a new key, the other role gets the new key sealed to its public key
    /// (from the head, so a file writer cannot slip in its own), and `role` a new PIN record.
    /// A PIN known before, with a copy of the file from before, then opens only the old key,
    /// which opens nothing written since. Rows that fail their checks are dropped: sealed
    /// again they would pass for genuine.
    fn rekey(
        &self,
        tx: &Connection,
        meta: &TokenMeta,
        old_key: &Key,
        role: Role,
        pin: &[u8],
    ) -> Result<Unlocked> {
        let head = self.read_head(tx, meta, old_key)?;
        let rows = self.verified_rows(tx, meta, old_key, &head)?;
        let key = sealing::random_key()?;
        let set_key = RowSetKey::new(&key);
        let mut new_head = head.without_rows();
        let kept: std::collections::HashSet<i64> = rows.iter().map(|r| r.id).collect();
        let all: Vec<rusqlite::types::Value> = tx
            .prepare("SELECT id FROM objects")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in all {
            let keep = matches!(id, rusqlite::types::Value::Integer(i) if kept.contains(&i));
            if !keep {
                tx.execute("DELETE FROM objects WHERE id = ?1", [&id])?;
                tracing::warn!(
                    "token at {}: a row that failed authentication is erased",
                    self.path.display()
                );
            }
        }
        for row in rows {
            let aad = Self::object_aad(&meta.uuid, row.id, row.version, row.private, &row.public);
            let sealed = sealing::seal(&key, &row.plain, &aad)?;
            tx.execute(
                "UPDATE objects SET sealed = ?1 WHERE id = ?2",
                params![sealed, row.id],
            )?;
            new_head.toggle(&set_key, row.id, row.version);
        }
        let other = match role {
            Role::SecurityOfficer => Role::User,
            Role::User => Role::SecurityOfficer,
        };
        let index = role_id(other) as usize;
        match Self::pin_record(tx, other)? {
            Some(record) if head.pin_versions[index] == record.version as u64 => {
                let aad = Self::box_aad(meta, other, record.version);
                let token_box = boxes::seal_to(&head.role_publics[index], key.as_ref(), &aad)?;
                tx.execute(
                    "UPDATE pins SET token_box = ?1 WHERE role = ?2",
                    params![token_box, role_id(other)],
                )?;
            }
            Some(_) => {
                tracing::error!(
                    "token at {}: the {other:?} PIN record is not the current one; erased",
                    self.path.display()
                );
                tx.execute("DELETE FROM pins WHERE role = ?1", [role_id(other)])?;
                new_head.pin_versions[index] = 0;
            }
            None => {}
        }
        self.store_pin(tx, meta, &mut new_head, role, pin, &key)?;
        let key_id = sealing::random_bytes::<16>()?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('key_id', ?1)",
            [&key_id[..]],
        )?;
        Self::write_head(tx, meta, &key, &new_head)?;
        Ok(Unlocked {
            token_id: Self::token_id(tx)?,
            key,
        })
    }

    /// Gives `role` a new PIN, and the token a new key, in one transaction.
    fn change_pin(&self, unlocked: &Unlocked, role: Role, pin: &[u8]) -> Result<()> {
        let new = self
            .with_conn(false, |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if Self::token_id(&tx)? != unlocked.token_id {
                    return Err(Error::TOKEN_NOT_RECOGNIZED);
                }
                let meta = self.token_meta(&tx)?;
                let new = self.rekey(&tx, &meta, &unlocked.key, role, pin)?;
                tx.commit()?;
                self.checkpoint(conn);
                Ok(new)
            })?
            .ok_or(Error::TOKEN_NOT_RECOGNIZED)?;
        self.replace_unlocked(&unlocked.token_id, new);
        Ok(())
    }

    /// After this process changed the token key, its login goes on with the new one.
    fn replace_unlocked(&self, old_token_id: &[u8], new: Unlocked) {
        let mut guard = self.token_key.write();
        if guard.as_ref().is_some_and(|u| u.token_id == old_token_id) {
            *guard = Some(new);
        }
    }

    /// Before login the token key is unknown and nothing can be authenticated: only rows that
    /// claim to be public and hold no key are shown, and they are checked again at login.
    fn load_unverified(&self, conn: &Connection) -> Result<Vec<StoredObject>> {
        let mut objects = Vec::new();
        let mut stmt = conn.prepare("SELECT id, version, private, public, sealed FROM objects")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let Some(row) = RawRow::read(row) else {
                continue;
            };
            if row.private != Some(0) || row.public.as_deref().is_some_and(<[u8]>::is_empty) {
                continue;
            }
            let parsed = row
                .public
                .as_deref()
                .and_then(|p| Attributes::deserialize(p).ok());
            let shown = match (row.version, parsed) {
                (Some(version), Some(attrs)) if Self::may_be_public(&attrs) => {
                    Some((version, attrs))
                }
                _ => None,
            };
            match shown {
                Some((version, attrs)) => objects.push(StoredObject {
                    id: row.id,
                    version,
                    attrs,
                }),
                None => tracing::warn!(
                    "token at {}: object {} is malformed or shows key material in the clear; \
                     skipped",
                    self.path.display(),
                    row.id
                ),
            }
        }
        Ok(objects)
    }

    /// Whether a clear part could have been written by this module: a class, and neither a
    /// key class nor a secret attribute (those are always sealed).
    fn may_be_public(attrs: &Attributes) -> bool {
        let class = attrs.ulong(CKA_CLASS).ok().flatten();
        let Some(class) = class.filter(|c| !matches!(*c, CKO_PRIVATE_KEY | CKO_SECRET_KEY)) else {
            return false;
        };
        let key_type = attrs.ulong(CKA_KEY_TYPE).ok().flatten();
        let tables = rules::tables(class, key_type).unwrap_or_default();
        !attrs
            .types()
            .any(|t| rules::find(&tables, t).is_some_and(|r| r.sensitive))
    }

    /// Sets the serial number a migrated token had (shown by `C_GetTokenInfo`, not secret and
    /// not authenticated).
    pub fn keep_serial(&self, serial: &[u8]) -> Result<()> {
        self.with_conn(false, |conn| {
            conn.execute("UPDATE meta SET value = ?1 WHERE name = 'serial'", [serial])?;
            Ok(())
        })?
        .ok_or(Error::TOKEN_NOT_RECOGNIZED)
    }

    /// Records that this process is up to date with the store.
    fn note_synchronized(&self, conn: &Connection) -> Result<()> {
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        *self.seen_version.lock() = version;
        Ok(())
    }
}

impl Store for EmbeddedStore {
    fn state(&self) -> Result<TokenState> {
        let mut state = TokenState {
            max_failures: self.max_failures,
            min_pin_len: MIN_PIN_LEN as u32,
            ..TokenState::default()
        };
        self.with_conn(false, |conn| {
            let Some(label) = Self::meta(conn, "label")? else {
                return Ok(());
            };
            let meta = self.token_meta(conn)?;
            state.max_failures = meta.policy.max_failures;
            state.min_pin_len = meta.policy.min_pin_len;
            // Shown as locked when the counter was tampered with, as login then treats it.
            let failures = |r: &PinRecord| r.failures().unwrap_or(meta.policy.max_failures);
            copy_padded(&mut state.label, &label);
            copy_padded(
                &mut state.serial,
                &Self::meta(conn, "serial")?.unwrap_or_default(),
            );
            if let Some(so) = Self::pin_record(conn, Role::SecurityOfficer)? {
                state.initialized = true;
                state.so_failures = failures(&so);
            }
            if let Some(user) = Self::pin_record(conn, Role::User)? {
                state.user_pin_initialized = true;
                state.user_failures = failures(&user);
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
        let policy = Policy {
            min_pin_len: MIN_PIN_LEN as u32,
            max_failures: self.max_failures,
        };
        self.with_conn(true, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let meta = TokenMeta {
                uuid: sealing::random_bytes::<16>()?.to_vec(),
                policy,
            };
            let serial = match Self::meta(&tx, "serial")? {
                Some(s) => s,
                None => hex16(&sealing::random_bytes::<8>()?),
            };
            tx.execute("DELETE FROM objects", [])?;
            tx.execute("DELETE FROM pins", [])?;
            tx.execute("DELETE FROM meta", [])?;
            for (name, value) in [
                ("uuid", meta.uuid.clone()),
                ("label", label.to_vec()),
                ("serial", serial),
                ("policy", policy.encode()),
                ("key_id", sealing::random_bytes::<16>()?.to_vec()),
            ] {
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES (?1, ?2)",
                    params![name, value],
                )?;
            }
            let mut head = Head::new();
            self.store_pin(
                &tx,
                &meta,
                &mut head,
                Role::SecurityOfficer,
                so_pin,
                &token_key,
            )?;
            Self::write_head(&tx, &meta, &token_key, &head)?;
            tx.commit()?;
            self.checkpoint(conn);
            self.note_synchronized(conn)
        })?;
        self.logout();
        tracing::info!("token at {} initialized", self.path.display());
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

    /// The SO sets the user PIN: a new token key too, since the user PIN it replaces may be
    /// known to someone (that is often why it is reset).
    fn init_pin(&self, pin: &[u8]) -> Result<()> {
        let unlocked = self
            .with_conn(false, |conn| {
                let token_id = Self::token_id(conn)?;
                let key = self.unlocked_key(conn)?.ok_or(Error::USER_NOT_LOGGED_IN)?;
                Ok(Unlocked { token_id, key })
            })?
            .ok_or(Error::TOKEN_NOT_RECOGNIZED)?;
        self.change_pin(&unlocked, Role::User, pin)
    }

    fn set_pin(&self, role: Role, old: &[u8], new: &[u8]) -> Result<()> {
        let unlocked = self.verify_pin(role, old)?;
        self.change_pin(&unlocked, role, new)
    }

    fn load(&self, private: bool) -> Result<Vec<StoredObject>> {
        let loaded = self.with_conn(false, |conn| {
            let key = self.unlocked_key(conn)?;
            if private && key.is_none() {
                return Err(Error::USER_NOT_LOGGED_IN);
            }
            let tx = conn.transaction()?;
            let objects = match key {
                Some(key) => self
                    .load_verified(&tx, &key)?
                    .into_iter()
                    .filter(|(is_private, _)| private || !is_private)
                    .map(|(_, o)| o)
                    .collect(),
                None => self.load_unverified(&tx)?,
            };
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
        self.write(false, |tx, meta, key, head| {
            let set_key = RowSetKey::new(key);
            let mut stored = Vec::with_capacity(objects.len());
            for object in objects {
                let version = head.next_version();
                // The row id is part of the sealed record's associated data: take it first.
                tx.execute(
                    "INSERT INTO objects (private, version, public, sealed)
                     VALUES (1, ?1, x'', x'')",
                    [version],
                )?;
                let id = tx.last_insert_rowid();
                let (private, public, sealed) = Self::seal_row(meta, key, id, version, object)?;
                tx.execute(
                    "UPDATE objects SET private = ?1, public = ?2, sealed = ?3 WHERE id = ?4",
                    params![private, public, sealed, id],
                )?;
                head.toggle(&set_key, id, version);
                stored.push((id, version));
            }
            Ok(stored)
        })
    }

    fn update(&self, id: i64, object: &Object) -> Result<i64> {
        self.write(true, |tx, meta, key, head| {
            let old: Option<i64> = tx
                .query_row("SELECT version FROM objects WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            let old = old.ok_or(Error::OBJECT_HANDLE_INVALID)?;
            let version = head.next_version();
            let (private, public, sealed) = Self::seal_row(meta, key, id, version, object)?;
            tx.execute(
                "UPDATE objects SET private = ?1, version = ?2, public = ?3, sealed = ?4
                 WHERE id = ?5",
                params![private, version, public, sealed, id],
            )?;
            let set_key = RowSetKey::new(key);
            head.toggle(&set_key, id, old);
            head.toggle(&set_key, id, version);
            Ok(version)
        })
    }

    fn delete(&self, id: i64) -> Result<()> {
        self.write(true, |tx, _meta, key, head| {
            let old: Option<i64> = tx
                .query_row("SELECT version FROM objects WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            let old = old.ok_or(Error::OBJECT_HANDLE_INVALID)?;
            tx.execute("DELETE FROM objects WHERE id = ?1", [id])?;
            head.toggle(&RowSetKey::new(key), id, old);
            Ok(())
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::{CKA_LABEL, CKA_PRIVATE, CKA_TOKEN, CKA_VALUE, CKO_DATA};

    const SO: &[u8] = b"so-pin-0000";

    fn data_object(value: &[u8]) -> Object {
        let mut attrs = Attributes::new();
        attrs.set_ulong(CKA_CLASS, CKO_DATA);
        attrs.set_bool(CKA_TOKEN, true);
        attrs.set_bool(CKA_PRIVATE, true);
        attrs.set(CKA_LABEL, b"k".to_vec());
        attrs.set(CKA_VALUE, value.to_vec());
        Object::new(attrs)
    }

    fn copy_store(from: &std::path::Path, to: &std::path::Path) {
        let (from, to) = (from.join(files::STORE_DIR), to.join(files::STORE_DIR));
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    /// The "the token key never changes": whoever kept a copy of the file and knows
    /// the old PIN gets the old token key, which must open nothing written since.
    #[test]
    fn after_set_pin_an_old_pin_and_an_old_copy_open_nothing_current() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let store = EmbeddedStore::new(path.clone(), PinKdf::TestOnlyFast, 10);
        store.init_token(SO, &[b' '; 32]).unwrap();
        store.login(Role::SecurityOfficer, SO).unwrap();
        store.init_pin(b"user-pin-old").unwrap();
        store.logout();
        store.login(Role::User, b"user-pin-old").unwrap();
        store.insert(&[&data_object(b"secret")]).unwrap();
        let copy = dir.path().join("copy");
        copy_store(&path, &copy);

        store
            .set_pin(Role::User, b"user-pin-old", b"user-pin-new")
            .unwrap();
        assert_eq!(store.load(true).unwrap().len(), 1, "still logged in");

        let old = EmbeddedStore::new(copy, PinKdf::TestOnlyFast, 10);
        old.login(Role::User, b"user-pin-old").unwrap();
        let old_key = old
            .token_key
            .read()
            .as_ref()
            .map(|u| Key::new(*u.key))
            .unwrap();
        let db = Connection::open(files::store_file(&path)).unwrap();
        let uuid: Vec<u8> = db
            .query_row("SELECT value FROM meta WHERE name = 'uuid'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let (id, version, public, sealed): (i64, i64, Vec<u8>, Vec<u8>) = db
            .query_row("SELECT id, version, public, sealed FROM objects", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        let aad = EmbeddedStore::object_aad(&uuid, id, version, true, &public);
        assert!(
            sealing::open(&old_key, &sealed, &aad).is_none(),
            "the current record opens under the old token key"
        );

        store.logout();
        assert!(store.login(Role::User, b"user-pin-old").is_err());
        store.login(Role::User, b"user-pin-new").unwrap();
        let loaded = store.load(true).unwrap();
        assert_eq!(loaded[0].attrs.get(CKA_VALUE), Some(&b"secret"[..]));
        store.logout();
        store.login(Role::SecurityOfficer, SO).unwrap();
    }
}
