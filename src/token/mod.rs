//! The token model: slots and tokens, login state, objects and their visibility, sessions.

pub mod attributes;
pub mod factory;
pub mod info;
pub mod io;
pub mod object;
pub mod operations;
pub mod rules;
pub mod session;
pub mod store;
pub mod table;

use crate::error::{Error, Result};
use crate::token::attributes::Attributes;
use crate::token::object::Object;
use crate::token::store::{Role, Store, TokenState};
use crate::token::table::{Home, ObjectTable};
use cryptoki_sys::*;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Who is logged in to a token, for the whole application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    Public,
    User,
    SecurityOfficer,
}

/// Shortest and longest PIN accepted. The B4AE HSM guide asks for 8 characters at least: an
/// Argon2id guess costs a fraction of a second, so a 4-digit PIN falls offline in minutes.
pub const MIN_PIN_LEN: usize = 8;
pub const MAX_PIN_LEN: usize = 255;

/// One slot and the token in it.
pub struct Token {
    pub slot_id: CK_SLOT_ID,
    /// The slot's description, from the configuration.
    pub description: String,
    pub model: &'static str,
    backend: Box<dyn Store>,
    login: RwLock<Login>,
    objects: RwLock<ObjectTable>,
    pub sessions: AtomicUsize,
    pub rw_sessions: AtomicUsize,
}

impl Token {
    pub fn new(
        slot_id: CK_SLOT_ID,
        description: String,
        model: &'static str,
        backend: Box<dyn Store>,
    ) -> Self {
        Token {
            slot_id,
            description,
            model,
            backend,
            login: RwLock::new(Login::Public),
            objects: RwLock::new(ObjectTable::default()),
            sessions: AtomicUsize::new(0),
            rw_sessions: AtomicUsize::new(0),
        }
    }

    pub fn login_state(&self) -> Login {
        *self.login.read()
    }

    pub fn state(&self) -> Result<TokenState> {
        self.backend.state()
    }

    /// `C_InitToken`.
    pub fn init_token(&self, so_pin: &[u8], label: &[u8; 32]) -> Result<()> {
        check_pin_len(so_pin)?;
        if self.sessions.load(Ordering::SeqCst) > 0 {
            return Err(Error(CKR_SESSION_EXISTS));
        }
        self.backend.init_token(so_pin, label)?;
        *self.login.write() = Login::Public;
        *self.objects.write() = ObjectTable::default();
        Ok(())
    }

    /// `C_Login` for the whole application. The slow PIN check runs without holding the
    /// login lock, so sessions already at work are never held up by someone logging in.
    pub fn login(&self, role: Role, pin: &[u8], read_only_sessions: bool) -> Result<()> {
        let check = |login: Login| match (login, role) {
            (Login::Public, _) => Ok(()),
            (Login::User, Role::User) | (Login::SecurityOfficer, Role::SecurityOfficer) => {
                Err(Error(CKR_USER_ALREADY_LOGGED_IN))
            }
            _ => Err(Error(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)),
        };
        check(self.login_state())?;
        if role == Role::SecurityOfficer && read_only_sessions {
            return Err(Error(CKR_SESSION_READ_ONLY_EXISTS));
        }
        if pin.len() > MAX_PIN_LEN {
            return Err(Error::PIN_INCORRECT);
        }
        self.backend.login(role, pin)?;
        {
            let mut login = self.login.write();
            // Another thread may have logged in meanwhile.
            check(*login)?;
            *login = match role {
                Role::User => Login::User,
                Role::SecurityOfficer => Login::SecurityOfficer,
            };
        }
        // A login whose objects cannot be read is no login: the application must not be left
        // logged in to a token it was told it could not log in to.
        self.reload().inspect_err(|_| {
            *self.login.write() = Login::Public;
            self.backend.logout();
        })
    }

    /// `C_Logout`, or the last session closing.
    pub fn logout(&self) -> Result<()> {
        let mut login = self.login.write();
        if *login == Login::Public {
            return Err(Error::USER_NOT_LOGGED_IN);
        }
        *login = Login::Public;
        self.backend.logout();
        self.objects.write().remove_private_session_objects();
        drop(login);
        self.reload()
    }

    /// `C_InitPIN`.
    pub fn init_pin(&self, pin: &[u8]) -> Result<()> {
        check_pin_len(pin)?;
        if self.login_state() != Login::SecurityOfficer {
            return Err(Error::USER_NOT_LOGGED_IN);
        }
        self.backend.init_pin(pin)
    }

    /// `C_SetPIN`: the SO's PIN when the SO is logged in, else the user's.
    pub fn set_pin(&self, old: &[u8], new: &[u8]) -> Result<()> {
        check_pin_len(new)?;
        let role = match self.login_state() {
            Login::SecurityOfficer => Role::SecurityOfficer,
            _ => Role::User,
        };
        self.backend.set_pin(role, old, new)
    }

    /// The last session of the application on this token closed.
    pub fn all_sessions_closed(&self) {
        if self.login_state() != Login::Public {
            let _ = self.logout();
        }
    }

    /// Re-reads the token objects from the store.
    fn reload(&self) -> Result<()> {
        let private = self.login_state() == Login::User;
        let stored = match self.backend_result(self.backend.load(private)) {
            Err(Error::USER_NOT_LOGGED_IN) if private => self.backend.load(false)?,
            other => other?,
        };
        self.objects.write().synchronize(stored);
        Ok(())
    }

    /// A backend may forget a login on its own (another process re-initialized the token):
    /// the application is then logged out too.
    fn backend_result<T>(&self, result: Result<T>) -> Result<T> {
        if matches!(result, Err(Error::USER_NOT_LOGGED_IN)) {
            *self.login.write() = Login::Public;
        }
        result
    }

    /// Re-reads the token objects if this process has not read them yet, or another process
    /// changed them.
    pub fn refresh(&self) -> Result<()> {
        if !self.objects.read().loaded || self.backend.changed_elsewhere()? {
            self.reload()?;
        }
        Ok(())
    }

    fn visible(&self, object: &Object) -> bool {
        !object.is_private() || self.login_state() == Login::User
    }

    /// The object behind a handle, if this application may see it.
    pub fn object(&self, handle: CK_OBJECT_HANDLE) -> Result<(Arc<Object>, Home)> {
        let found = self.objects.read().get(handle).cloned();
        let entry = match found {
            Some(e) => e,
            None => {
                // Perhaps another process made it and told us its handle's object: re-read.
                self.refresh()?;
                self.objects
                    .read()
                    .get(handle)
                    .cloned()
                    .ok_or(Error::OBJECT_HANDLE_INVALID)?
            }
        };
        if !self.visible(&entry.object) {
            return Err(Error::OBJECT_HANDLE_INVALID);
        }
        Ok((entry.object, entry.home))
    }

    /// Handles of the visible objects matching a template.
    pub fn find(&self, template: &Attributes) -> Result<Vec<CK_OBJECT_HANDLE>> {
        self.refresh()?;
        let table = self.objects.read();
        let mut found: Vec<CK_OBJECT_HANDLE> = table
            .iter()
            .filter(|(_, e)| self.visible(&e.object) && e.object.attrs.matches(template))
            .map(|(h, _)| h)
            .collect();
        found.sort_unstable();
        Ok(found)
    }

    /// Only the SO may make an object trusted (PKCS#11: `CKA_TRUSTED` is set to TRUE by the
    /// SO alone).
    pub fn check_trusted(&self, attrs: &Attributes) -> Result<()> {
        if attrs.bool_or(CKA_TRUSTED, false) && self.login_state() != Login::SecurityOfficer {
            return Err(Error::ATTRIBUTE_READ_ONLY);
        }
        Ok(())
    }

    /// Checks that a session may make an object with these attributes.
    fn check_may_hold(&self, attrs: &Attributes, rw: bool) -> Result<()> {
        self.check_trusted(attrs)?;
        if attrs.bool_or(CKA_TOKEN, false) && !rw {
            return Err(Error::SESSION_READ_ONLY);
        }
        if attrs.bool_or(CKA_PRIVATE, false) && self.login_state() != Login::User {
            return Err(Error::USER_NOT_LOGGED_IN);
        }
        Ok(())
    }

    /// Stores new objects (token or session), all or none, and returns their handles.
    pub fn add_objects(
        &self,
        session: CK_SESSION_HANDLE,
        rw: bool,
        all: Vec<Attributes>,
    ) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let mut objects = Vec::with_capacity(all.len());
        for mut attrs in all {
            self.check_may_hold(&attrs, rw)?;
            attrs.set(CKA_UNIQUE_ID, unique_id()?);
            objects.push(Object::new(attrs));
        }
        let on_token: Vec<&Object> = objects.iter().filter(|o| o.is_token()).collect();
        let mut stored = if on_token.is_empty() {
            Vec::new()
        } else {
            self.backend_result(self.backend.insert(&on_token))?
        }
        .into_iter();
        let mut table = self.objects.write();
        Ok(objects
            .into_iter()
            .map(|object| {
                let home = match stored.next().filter(|_| object.is_token()) {
                    Some((id, version)) => Home::Store { id, version },
                    None => Home::Session(session),
                };
                table.add(Arc::new(object), home)
            })
            .collect())
    }

    /// Replaces an object's attributes (`C_SetAttributeValue`).
    pub fn replace_object(
        &self,
        handle: CK_OBJECT_HANDLE,
        home: Home,
        rw: bool,
        attrs: Attributes,
    ) -> Result<()> {
        let object = Object::new(attrs);
        let home = match home {
            Home::Store { id, .. } => {
                if !rw {
                    return Err(Error::SESSION_READ_ONLY);
                }
                let version = self.backend_result(self.backend.update(id, &object))?;
                Home::Store { id, version }
            }
            session => session,
        };
        self.objects.write().replace(handle, Arc::new(object), home);
        Ok(())
    }

    /// `C_DestroyObject`.
    pub fn destroy_object(&self, handle: CK_OBJECT_HANDLE, rw: bool) -> Result<()> {
        let (object, home) = self.object(handle)?;
        if !object.is_destroyable() {
            return Err(Error::ACTION_PROHIBITED);
        }
        if let Home::Store { id, .. } = home {
            if !rw {
                return Err(Error::SESSION_READ_ONLY);
            }
            match self.backend.delete(id) {
                Ok(()) | Err(Error::OBJECT_HANDLE_INVALID) => {}
                Err(e) => return Err(e),
            }
        }
        self.objects.write().remove(handle);
        Ok(())
    }

    /// Forgets every decrypted secret without blocking: used in a forked child, where a lock
    /// may have been held by a thread of the parent and will never be released.
    pub fn forget_secrets(&self) {
        if let Some(mut objects) = self.objects.try_write() {
            *objects = ObjectTable::default();
        }
        self.backend.forget_secrets();
    }

    /// Drops a closed session's objects.
    pub fn session_closed(&self, session: CK_SESSION_HANDLE) {
        self.objects.write().remove_session_objects(session);
    }
}

fn check_pin_len(pin: &[u8]) -> Result<()> {
    if (MIN_PIN_LEN..=MAX_PIN_LEN).contains(&pin.len()) {
        Ok(())
    } else {
        Err(Error::PIN_LEN_RANGE)
    }
}

/// A fresh CKA_UNIQUE_ID: 32 hex digits.
fn unique_id() -> Result<Vec<u8>> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|_| Error::DEVICE)?;
    Ok(bytes
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect())
}
