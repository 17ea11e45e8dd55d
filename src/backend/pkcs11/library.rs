//! The outbound FFI border: the real HSM's PKCS#11 library, loaded at run time.
//!
//! `C_GetInterface("PKCS 11", 3.2)` when the library has it (then its key-encapsulation
//! functions are kept too), else its default interface, else `C_GetFunctionList`; of those only
//! the 2.40 part of the table is copied (SoftHSM 2.7 reports 3.2 in a 2.40-sized table).
//!
//! Lifecycle: one loaded instance per library path in the whole process, shared by every slot
//! and by a module initialized again while calls of the previous one are still running. It is
//! finalized when the last reference goes, which is after the last call into it has returned;
//! loading and finalizing are serialized, so a `C_Initialize` never races a `C_Finalize` of the
//! same library. In a forked child the parent's instances are set aside and a library the
//! parent initialized is finalized and initialized again, so the child never inherits the
//! parent's sessions or login.

use crate::error::{Error, Result};
use crate::forksafe::PerProcess;
use crate::token::attributes::Attributes;
use crate::token::operations::OpKind;
use cryptoki_sys::*;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Arc, Weak};
use zeroize::Zeroizing;

/// One empty byte for NULL pointers of zero length: some libraries dereference them anyway.
pub static EMPTY: [u8; 1] = [0];

/// The libraries loaded by this process, and which of them this module initialized.
#[derive(Default)]
struct Registry {
    loaded: HashMap<PathBuf, Weak<HsmLibrary>>,
    initialized_here: HashSet<PathBuf>,
}

static REGISTRY: PerProcess<Mutex<Registry>> = PerProcess::new();
/// In a forked child: the parent's registry, to know which libraries the parent initialized.
static PARENT_REGISTRY: PerProcess<Mutex<Registry>> = PerProcess::new();

/// Called in a forked child: the parent's instances must never be used or finalized here.
pub fn forked() {
    if let Some(parent) = REGISTRY.take() {
        if let Some(older) = PARENT_REGISTRY.replace(parent) {
            std::mem::forget(older);
        }
    }
}

/// Whether the parent of this forked process had initialized the library at `path`.
fn parent_initialized(path: &Path) -> bool {
    PARENT_REGISTRY
        .current()
        .and_then(|parent| parent.try_lock().map(|r| r.initialized_here.contains(path)))
        .unwrap_or(false)
}

/// A loaded and initialized real PKCS#11 library.
pub struct HsmLibrary {
    pub path: PathBuf,
    functions: CK_FUNCTION_LIST,
    /// The 3.x functions this module forwards, from the library's newest interface.
    pub(super) newer: Newer,
    /// Whether our `C_Initialize` did the initializing (then ours is the `C_Finalize`).
    initialized_here: bool,
    /// In a forked child, the library's state was copied from the parent by `fork()` and the
    /// application, not this module, initialized it: logins in it are the parent's.
    pub inherited: bool,
    _library: libloading::Library,
}

// SAFETY: the table holds plain function pointers into a library that stays loaded while
// `self` lives; the library itself is thread-safe (initialized with CKF_OS_LOCKING_OK).
unsafe impl Send for HsmLibrary {}
// SAFETY: as above; nothing in `self` is mutated after loading.
unsafe impl Sync for HsmLibrary {}

macro_rules! call {
    ($lib:expr, $name:ident($($arg:expr),* $(,)?)) => {{
        let f = $lib.functions.$name.ok_or(Error::FUNCTION_NOT_SUPPORTED)?;
        // SAFETY: a function of the loaded library, called per PKCS#11 with arguments built
        // here from live Rust values.
        let rv = unsafe { f($($arg),*) };
        $lib.outcome(stringify!($name), rv)
    }};
}

/// The functions of a library's 3.0 and 3.2 interfaces that this module forwards (its 2.40
/// table is `functions`); each `None` where the library gave an older interface.
#[derive(Clone, Copy, Default)]
pub(super) struct Newer {
    /// The interface's version: (2, x) for a 2.40 table.
    pub version: (u8, u8),
    pub login_user: CK_C_LoginUser,
    pub session_cancel: CK_C_SessionCancel,
    pub encapsulate: CK_C_EncapsulateKey,
    pub decapsulate: CK_C_DecapsulateKey,
}

/// A template as the C API wants it, pointing into `attrs` (which must outlive it).
pub(super) fn raw_template(attrs: &Attributes) -> Vec<CK_ATTRIBUTE> {
    attrs
        .iter()
        .map(|(t, v)| CK_ATTRIBUTE {
            type_: t,
            pValue: v.as_ptr() as *mut _,
            ulValueLen: v.len() as CK_ULONG,
        })
        .collect()
}

impl HsmLibrary {
    /// The process's instance of the library at `path`, loaded and initialized with OS locking
    /// on first use (`reserved` is passed to the first `C_Initialize` only).
    pub fn open(path: &Path, reserved: Option<&str>) -> Result<Arc<Self>> {
        loop {
            let registry = REGISTRY.get();
            let mut r = registry.lock();
            match r.loaded.get(path).map(Weak::upgrade) {
                Some(Some(lib)) => return Ok(lib),
                // The last reference went and the instance is being finalized: wait for it,
                // since initializing now would be undone by that `C_Finalize`.
                Some(None) => {
                    drop(r);
                    std::thread::yield_now();
                    continue;
                }
                None => {}
            }
            let lib = Arc::new(Self::load(path, reserved)?);
            r.loaded.insert(path.to_path_buf(), Arc::downgrade(&lib));
            if lib.initialized_here {
                r.initialized_here.insert(path.to_path_buf());
            }
            return Ok(lib);
        }
    }

    /// Runs the real `C_Initialize`.
    fn initialize(functions: &CK_FUNCTION_LIST, reserved: Option<&CString>) -> Result<CK_RV> {
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: reserved.map_or(ptr::null_mut(), |r| r.as_ptr() as *mut _),
        };
        let init = functions.C_Initialize.ok_or(Error::DEVICE)?;
        // SAFETY: C_Initialize with a valid CK_C_INITIALIZE_ARGS that outlives the call.
        Ok(unsafe { init(&mut args as *mut CK_C_INITIALIZE_ARGS as *mut _) })
    }

    fn load(path: &Path, reserved: Option<&str>) -> Result<Self> {
        // SAFETY: loading a PKCS#11 module named by the administrator's configuration; its
        // initializers are the module's own business, as for any PKCS#11 consumer.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| {
            tracing::error!("cannot load the HSM library {}: {e}", path.display());
            Error::DEVICE
        })?;
        let (functions, newer) = Self::function_table(&library).inspect_err(|_| {
            tracing::error!(
                "{}: neither C_GetInterface nor C_GetFunctionList works",
                path.display()
            );
        })?;
        let reserved = reserved
            .map(CString::new)
            .transpose()
            .map_err(|_| Error::ARGUMENTS_BAD)?;
        let mut rv = Self::initialize(&functions, reserved.as_ref())?;
        let mut inherited = false;
        if rv == CKR_CRYPTOKI_ALREADY_INITIALIZED && crate::forksafe::in_forked_child() {
            if parent_initialized(path) {
                // The state fork() copied is the parent's (its sessions and login): this
                // module owned it, so it is torn down and the library started afresh.
                tracing::info!("{}: initialized again in a forked child", path.display());
                if let Some(finalize) = functions.C_Finalize {
                    // SAFETY: the copied library state was initialized by this module.
                    unsafe { finalize(ptr::null_mut()) };
                }
                rv = Self::initialize(&functions, reserved.as_ref())?;
            } else {
                inherited = true;
            }
        }
        let initialized_here = match rv {
            CKR_OK => true,
            // The application loaded and initialized the same library itself.
            CKR_CRYPTOKI_ALREADY_INITIALIZED => false,
            rv => {
                tracing::error!(
                    "{}: C_Initialize failed: {}",
                    path.display(),
                    crate::error::rv_name(rv)
                );
                return Err(Error::DEVICE);
            }
        };
        tracing::info!(
            "{}: PKCS#11 {}.{} interface",
            path.display(),
            newer.version.0,
            newer.version.1
        );
        Ok(HsmLibrary {
            path: path.to_path_buf(),
            functions,
            newer,
            initialized_here,
            inherited,
            _library: library,
        })
    }

    /// The 2.40 part of the library's table, and the 3.x functions of its newest interface:
    /// 3.2, else 3.0, else its default one, else `C_GetFunctionList`'s table.
    fn function_table(library: &libloading::Library) -> Result<(CK_FUNCTION_LIST, Newer)> {
        // SAFETY: symbol types are those PKCS#11 defines for these names; a table is read as
        // 3.0 or 3.2 only when its own version says it is one.
        unsafe {
            if let Ok(get_interface) = library.get::<CK_C_GetInterface>(b"C_GetInterface\0") {
                if let Some(get_interface) = *get_interface {
                    let name = c"PKCS 11".as_ptr() as *mut CK_UTF8CHAR;
                    let wanted = [
                        Some(CK_VERSION { major: 3, minor: 2 }),
                        Some(CK_VERSION { major: 3, minor: 0 }),
                        None,
                    ];
                    for wanted in wanted {
                        let mut version = wanted;
                        let version_ptr = version
                            .as_mut()
                            .map_or(ptr::null_mut(), |v| v as *mut CK_VERSION);
                        let mut interface: *mut CK_INTERFACE = ptr::null_mut();
                        if get_interface(name, version_ptr, &mut interface, 0) != CKR_OK
                            || interface.is_null()
                            || (*interface).pFunctionList.is_null()
                        {
                            continue;
                        }
                        let list = (*interface).pFunctionList;
                        // Every table starts with the 2.40 functions; copy only those.
                        let table = ptr::read(list as *const CK_FUNCTION_LIST);
                        let version = (table.version.major, table.version.minor);
                        let mut newer = Newer {
                            version,
                            ..Newer::default()
                        };
                        if version.0 == 3 {
                            let v3 = &*(list as *const CK_FUNCTION_LIST_3_0);
                            newer.login_user = v3.C_LoginUser;
                            newer.session_cancel = v3.C_SessionCancel;
                        }
                        if version >= (3, 2) && version.0 == 3 {
                            let v32 = &*(list as *const CK_FUNCTION_LIST_3_2);
                            newer.encapsulate = v32.C_EncapsulateKey;
                            newer.decapsulate = v32.C_DecapsulateKey;
                        }
                        return Ok((table, newer));
                    }
                }
            }
            let get_list = library
                .get::<CK_C_GetFunctionList>(b"C_GetFunctionList\0")
                .map_err(|_| Error::DEVICE)?;
            let get_list = (*get_list).ok_or(Error::DEVICE)?;
            let mut list: CK_FUNCTION_LIST_PTR = ptr::null_mut();
            if get_list(&mut list) != CKR_OK || list.is_null() {
                return Err(Error::DEVICE);
            }
            let table = ptr::read(list);
            let newer = Newer {
                version: (table.version.major, table.version.minor),
                ..Newer::default()
            };
            Ok((table, newer))
        }
    }

    /// A real function's return value as ours; faults of the device itself are logged with
    /// the library's name, since the caller only sees the code.
    pub fn outcome(&self, function: &str, rv: CK_RV) -> Result<()> {
        match rv {
            CKR_OK => Ok(()),
            CKR_DEVICE_ERROR
            | CKR_DEVICE_REMOVED
            | CKR_DEVICE_MEMORY
            | CKR_TOKEN_NOT_PRESENT
            | CKR_GENERAL_ERROR
            | CKR_FUNCTION_FAILED => {
                tracing::warn!(
                    "{function}: the HSM library {} answered {}",
                    self.path.display(),
                    crate::error::rv_name(rv)
                );
                Err(Error(rv))
            }
            rv => Err(Error(rv)),
        }
    }

    /// The real library's 2.40 functions, for forwarding a caller's checked arguments.
    pub fn functions(&self) -> &CK_FUNCTION_LIST {
        &self.functions
    }

    pub fn slots(&self) -> Result<Vec<CK_SLOT_ID>> {
        let mut count: CK_ULONG = 0;
        call!(self, C_GetSlotList(CK_TRUE, ptr::null_mut(), &mut count))?;
        let mut slots = vec![0; count as usize];
        call!(self, C_GetSlotList(CK_TRUE, slots.as_mut_ptr(), &mut count))?;
        slots.truncate(count as usize);
        Ok(slots)
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO> {
        let mut info = CK_TOKEN_INFO::default();
        call!(self, C_GetTokenInfo(slot, &mut info))?;
        Ok(info)
    }

    pub fn mechanisms(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        let mut count: CK_ULONG = 0;
        call!(self, C_GetMechanismList(slot, ptr::null_mut(), &mut count))?;
        let mut list = vec![0; count as usize];
        call!(
            self,
            C_GetMechanismList(slot, list.as_mut_ptr(), &mut count)
        )?;
        list.truncate(count as usize);
        Ok(list)
    }

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        let mut session = CK_INVALID_HANDLE;
        call!(
            self,
            C_OpenSession(slot, flags, ptr::null_mut(), None, &mut session)
        )?;
        Ok(session)
    }

    /// `C_CloseSession`, except once the process is exiting (`process_exit`).
    pub fn close_session(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        if crate::process_exit::exiting() {
            return Ok(());
        }
        call!(self, C_CloseSession(session))
    }

    pub fn login(&self, session: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<()> {
        call!(
            self,
            C_Login(session, user, pin.as_ptr() as *mut _, pin.len() as CK_ULONG)
        )
    }

    /// Ends the session's active operation of `kind` in the HSM, whatever state it is in:
    /// PKCS#11 ends an operation at any answer but `CKR_BUFFER_TOO_SMALL`, so its final call
    /// runs with a large buffer (ending a multi-part operation), then its single-part call on
    /// empty input (ending one that refused the final call without ending). A library that
    /// supports it would take a NULL mechanism; 2.40 libraries do not. A 3.x library's own
    /// `C_SessionCancel` does it in one call.
    pub fn end_operation(&self, session: CK_SESSION_HANDLE, kind: OpKind) {
        if let Some(cancel) = self.newer.session_cancel {
            // SAFETY: the library's own function on a session of ours.
            if unsafe { cancel(session, kind.flag()) } == CKR_OK {
                return;
            }
        }
        let mut out = vec![0u8; 1 << 16];
        let mut len = out.len() as CK_ULONG;
        let empty = EMPTY.as_ptr() as *mut CK_BYTE;
        let out_ptr = out.as_mut_ptr();
        let f = &self.functions;
        // SAFETY (every call below): the library's own functions on a session of ours, with
        // a 64 KiB output buffer and its length, or the one-byte EMPTY buffer with length 0.
        unsafe {
            match kind {
                OpKind::Digest => {
                    f.C_DigestFinal.map(|c| c(session, out_ptr, &mut len));
                    len = out.len() as CK_ULONG;
                    f.C_Digest.map(|c| c(session, empty, 0, out_ptr, &mut len));
                }
                OpKind::Sign => {
                    f.C_SignFinal.map(|c| c(session, out_ptr, &mut len));
                    len = out.len() as CK_ULONG;
                    f.C_Sign.map(|c| c(session, empty, 0, out_ptr, &mut len));
                }
                OpKind::Verify => {
                    f.C_VerifyFinal.map(|c| c(session, empty, 0));
                    f.C_Verify.map(|c| c(session, empty, 0, empty, 0));
                }
                OpKind::Encrypt => {
                    f.C_EncryptFinal.map(|c| c(session, out_ptr, &mut len));
                    len = out.len() as CK_ULONG;
                    f.C_Encrypt.map(|c| c(session, empty, 0, out_ptr, &mut len));
                }
                OpKind::Decrypt => {
                    f.C_DecryptFinal.map(|c| c(session, out_ptr, &mut len));
                    len = out.len() as CK_ULONG;
                    f.C_Decrypt.map(|c| c(session, empty, 0, out_ptr, &mut len));
                }
            }
        }
    }

    /// `C_Logout`, except once the process is exiting (`process_exit`).
    pub fn logout(&self, session: CK_SESSION_HANDLE) -> Result<()> {
        if crate::process_exit::exiting() {
            return Ok(());
        }
        call!(self, C_Logout(session))
    }

    pub fn session_info(&self, session: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO> {
        let mut info = CK_SESSION_INFO::default();
        call!(self, C_GetSessionInfo(session, &mut info))?;
        Ok(info)
    }

    /// Every object matching `template`.
    pub fn find(
        &self,
        session: CK_SESSION_HANDLE,
        template: &Attributes,
    ) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let mut raw = raw_template(template);
        call!(
            self,
            C_FindObjectsInit(session, raw.as_mut_ptr(), raw.len() as CK_ULONG)
        )?;
        let mut found = Vec::new();
        let result = loop {
            let mut batch = [CK_INVALID_HANDLE; 256];
            let mut n: CK_ULONG = 0;
            if let Err(e) = call!(
                self,
                C_FindObjects(session, batch.as_mut_ptr(), 256, &mut n)
            ) {
                break Err(e);
            }
            found.extend_from_slice(&batch[..n as usize]);
            if n == 0 {
                break Ok(());
            }
        };
        let finished = call!(self, C_FindObjectsFinal(session));
        result.and(finished)?;
        Ok(found)
    }

    pub fn create(
        &self,
        session: CK_SESSION_HANDLE,
        attrs: &Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let mut raw = raw_template(attrs);
        let mut object = CK_INVALID_HANDLE;
        call!(
            self,
            C_CreateObject(
                session,
                raw.as_mut_ptr(),
                raw.len() as CK_ULONG,
                &mut object
            )
        )?;
        Ok(object)
    }

    pub fn destroy(&self, session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> Result<()> {
        call!(self, C_DestroyObject(session, object))
    }

    pub fn set_attributes(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        attrs: &Attributes,
    ) -> Result<()> {
        let mut raw = raw_template(attrs);
        call!(
            self,
            C_SetAttributeValue(session, object, raw.as_mut_ptr(), raw.len() as CK_ULONG)
        )
    }

    /// One attribute's value; `None` when the object does not have it or hides it.
    pub fn attribute(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        kind: CK_ATTRIBUTE_TYPE,
    ) -> Result<Option<Vec<u8>>> {
        let mut query = CK_ATTRIBUTE {
            type_: kind,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        };
        match call!(self, C_GetAttributeValue(session, object, &mut query, 1)) {
            Ok(()) => {}
            Err(Error(CKR_ATTRIBUTE_TYPE_INVALID | CKR_ATTRIBUTE_SENSITIVE)) => return Ok(None),
            Err(e) => return Err(e),
        }
        if query.ulValueLen == CK_UNAVAILABLE_INFORMATION {
            return Ok(None);
        }
        let mut value = vec![0u8; query.ulValueLen as usize];
        query.pValue = value.as_mut_ptr() as *mut _;
        call!(self, C_GetAttributeValue(session, object, &mut query, 1))?;
        value.truncate(query.ulValueLen as usize);
        Ok(Some(value))
    }

    /// A signature made inside the HSM with a mechanism that takes no parameter.
    pub fn sign(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        max_len: usize,
    ) -> Result<Vec<u8>> {
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        call!(self, C_SignInit(session, &mut mech, key))?;
        let mut out = vec![0u8; max_len];
        let mut len = out.len() as CK_ULONG;
        call!(
            self,
            C_Sign(
                session,
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut len
            )
        )?;
        out.truncate(len as usize);
        Ok(out)
    }

    /// Derives a key inside the HSM: HKDF (SHA-256, expand only) where `hkdf`, else
    /// AES-ECB-encrypt-data of `info` (which must then be a multiple of 16 bytes).
    pub fn derive(
        &self,
        session: CK_SESSION_HANDLE,
        base: CK_OBJECT_HANDLE,
        hkdf: bool,
        info: &[u8],
        attrs: &Attributes,
    ) -> Result<CK_OBJECT_HANDLE> {
        let mut hkdf_params = CK_HKDF_PARAMS {
            bExtract: CK_FALSE,
            bExpand: CK_TRUE,
            prfHashMechanism: CKM_SHA256,
            ulSaltType: CKF_HKDF_SALT_NULL,
            pSalt: ptr::null_mut(),
            ulSaltLen: 0,
            hSaltKey: CK_INVALID_HANDLE,
            pInfo: info.as_ptr() as *mut _,
            ulInfoLen: info.len() as CK_ULONG,
        };
        let mut string_data = CK_KEY_DERIVATION_STRING_DATA {
            pData: info.as_ptr() as *mut _,
            ulLen: info.len() as CK_ULONG,
        };
        let mut mech = if hkdf {
            CK_MECHANISM {
                mechanism: CKM_HKDF_DERIVE,
                pParameter: &mut hkdf_params as *mut CK_HKDF_PARAMS as *mut _,
                ulParameterLen: std::mem::size_of::<CK_HKDF_PARAMS>() as CK_ULONG,
            }
        } else {
            CK_MECHANISM {
                mechanism: CKM_AES_ECB_ENCRYPT_DATA,
                pParameter: &mut string_data as *mut CK_KEY_DERIVATION_STRING_DATA as *mut _,
                ulParameterLen: std::mem::size_of::<CK_KEY_DERIVATION_STRING_DATA>() as CK_ULONG,
            }
        };
        let mut raw = raw_template(attrs);
        let mut key = CK_INVALID_HANDLE;
        call!(
            self,
            C_DeriveKey(
                session,
                &mut mech,
                base,
                raw.as_mut_ptr(),
                raw.len() as CK_ULONG,
                &mut key
            )
        )?;
        Ok(key)
    }

    /// AES-GCM inside the HSM (128-bit tag). `decrypt` chooses the direction.
    pub fn aes_gcm(
        &self,
        session: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        iv: &[u8],
        aad: &[u8],
        input: &[u8],
        decrypt: bool,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut params = CK_GCM_PARAMS {
            pIv: iv.as_ptr() as *mut _,
            ulIvLen: iv.len() as CK_ULONG,
            ulIvBits: (iv.len() * 8) as CK_ULONG,
            pAAD: aad.as_ptr() as *mut _,
            ulAADLen: aad.len() as CK_ULONG,
            ulTagBits: 128,
        };
        let mut mech = CK_MECHANISM {
            mechanism: CKM_AES_GCM,
            pParameter: &mut params as *mut CK_GCM_PARAMS as *mut _,
            ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
        };
        let mut out = Zeroizing::new(vec![0u8; input.len() + 16]);
        let mut out_len = out.len() as CK_ULONG;
        let data = input.as_ptr() as *mut _;
        let functions = &self.functions;
        let (init, run, names) = if decrypt {
            (
                functions.C_DecryptInit,
                functions.C_Decrypt,
                ["C_DecryptInit", "C_Decrypt"],
            )
        } else {
            (
                functions.C_EncryptInit,
                functions.C_Encrypt,
                ["C_EncryptInit", "C_Encrypt"],
            )
        };
        let (init, run) = (
            init.ok_or(Error::FUNCTION_NOT_SUPPORTED)?,
            run.ok_or(Error::FUNCTION_NOT_SUPPORTED)?,
        );
        // SAFETY: the library's own functions, with a mechanism and buffers that live through
        // both calls; `out` holds the input plus the 16-byte tag.
        let rv = unsafe { init(session, &mut mech, key) };
        self.outcome(names[0], rv)?;
        // SAFETY: as above.
        let rv = unsafe {
            run(
                session,
                data,
                input.len() as CK_ULONG,
                out.as_mut_ptr(),
                &mut out_len,
            )
        };
        self.outcome(names[1], rv)?;
        out.truncate(out_len as usize);
        Ok(out)
    }
}

impl Drop for HsmLibrary {
    /// The last reference is gone, so no call into the library is running: finalize it (when
    /// this module initialized it) while holding the registry, so no `open` initializes it
    /// meanwhile.
    fn drop(&mut self) {
        let registry = REGISTRY.get();
        let mut r = registry.lock();
        // Once the process is exiting, the library is left as it is (`process_exit`).
        if self.initialized_here && !crate::process_exit::exiting() {
            if let Some(finalize) = self.functions.C_Finalize {
                // SAFETY: the library was initialized by us and is still loaded.
                unsafe { finalize(ptr::null_mut()) };
            }
            r.initialized_here.remove(&self.path);
        }
        let me: *const HsmLibrary = self;
        if r.loaded.get(&self.path).map(Weak::as_ptr) == Some(me) {
            r.loaded.remove(&self.path);
        }
    }
}
