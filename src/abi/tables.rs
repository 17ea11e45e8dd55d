//! The function tables and the interface discovery calls: `C_GetFunctionList` (a true 2.40
//! table), `C_GetInterfaceList` and `C_GetInterface` ("PKCS 11" at 3.2, 3.0 and 2.40).

use super::cipher::*;
use super::crypto::*;
use super::entry_points;
use super::general::*;
use super::hsm_only::*;
use super::kem::*;
use super::message::*;
use super::objects::*;
use super::sessions::*;
use super::slots::*;
use super::unsupported::*;
use super::{deliver_list, output};
use crate::error::Error;
use cryptoki_sys::*;

/// Fills a table with every function it names, the same functions in every table.
macro_rules! table {
    ($ty:ident, $major:expr, $minor:expr, [$($f:ident),* $(,)?]) => {
        $ty {
            version: CK_VERSION { major: $major, minor: $minor },
            $($f: Some($f),)*
        }
    };
}

/// The 2.40 functions, in table order, passed to `$then` after any leading tokens.
macro_rules! v240 {
    ($then:ident!($($lead:tt)*) $(, $($more:ident),*)?) => {
        $then!($($lead)* [
            C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList, C_GetSlotList, C_GetSlotInfo,
            C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, C_InitToken, C_InitPIN, C_SetPIN,
            C_OpenSession, C_CloseSession, C_CloseAllSessions, C_GetSessionInfo, C_GetOperationState,
            C_SetOperationState, C_Login, C_Logout, C_CreateObject, C_CopyObject, C_DestroyObject,
            C_GetObjectSize, C_GetAttributeValue, C_SetAttributeValue, C_FindObjectsInit, C_FindObjects,
            C_FindObjectsFinal, C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal, C_DecryptInit,
            C_Decrypt, C_DecryptUpdate, C_DecryptFinal, C_DigestInit, C_Digest, C_DigestUpdate,
            C_DigestKey, C_DigestFinal, C_SignInit, C_Sign, C_SignUpdate, C_SignFinal, C_SignRecoverInit,
            C_SignRecover, C_VerifyInit, C_Verify, C_VerifyUpdate, C_VerifyFinal, C_VerifyRecoverInit,
            C_VerifyRecover, C_DigestEncryptUpdate, C_DecryptDigestUpdate, C_SignEncryptUpdate,
            C_DecryptVerifyUpdate, C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey,
            C_SeedRandom, C_GenerateRandom, C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent
            $($(, $more)*)?
        ])
    };
}

/// The functions 3.0 added.
macro_rules! v30 {
    ($then:ident!($($lead:tt)*) $(, $($more:ident),*)?) => {
        v240!($then!($($lead)*),
            C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel, C_MessageEncryptInit,
            C_EncryptMessage, C_EncryptMessageBegin, C_EncryptMessageNext, C_MessageEncryptFinal,
            C_MessageDecryptInit, C_DecryptMessage, C_DecryptMessageBegin, C_DecryptMessageNext,
            C_MessageDecryptFinal, C_MessageSignInit, C_SignMessage, C_SignMessageBegin,
            C_SignMessageNext, C_MessageSignFinal, C_MessageVerifyInit, C_VerifyMessage,
            C_VerifyMessageBegin, C_VerifyMessageNext, C_MessageVerifyFinal
            $($(, $more)*)?)
    };
}

static FUNCTIONS_240: CK_FUNCTION_LIST = v240!(table!(CK_FUNCTION_LIST, 2, 40,));
static FUNCTIONS_30: CK_FUNCTION_LIST_3_0 = v30!(table!(CK_FUNCTION_LIST_3_0, 3, 0,));
static FUNCTIONS_32: CK_FUNCTION_LIST_3_2 = v30!(
    table!(CK_FUNCTION_LIST_3_2, 3, 2,),
    C_EncapsulateKey,
    C_DecapsulateKey,
    C_VerifySignatureInit,
    C_VerifySignature,
    C_VerifySignatureUpdate,
    C_VerifySignatureFinal,
    C_GetSessionValidationFlags,
    C_AsyncComplete,
    C_AsyncGetID,
    C_AsyncJoin,
    C_WrapKeyAuthenticated,
    C_UnwrapKeyAuthenticated
);

/// The 2.40 table, for in-process callers.
pub fn function_list_240() -> &'static CK_FUNCTION_LIST {
    &FUNCTIONS_240
}

const INTERFACE_NAME: &[u8] = b"PKCS 11\0";

/// `CK_INTERFACE` holds raw pointers; these point only at immutable statics.
struct Interfaces([CK_INTERFACE; 3]);
// SAFETY: every pointer in the table refers to immutable, 'static data.
unsafe impl Sync for Interfaces {}

static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTIONS_32 as *const CK_FUNCTION_LIST_3_2 as *mut std::ffi::c_void,
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTIONS_30 as *const CK_FUNCTION_LIST_3_0 as *mut std::ffi::c_void,
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTIONS_240 as *const CK_FUNCTION_LIST as *mut std::ffi::c_void,
        flags: 0,
    },
]);

/// The version at the head of each table.
fn table_version(interface: &CK_INTERFACE) -> CK_VERSION {
    // SAFETY: every table starts with its CK_VERSION (the PKCS#11 layout rule).
    unsafe { *(interface.pFunctionList as *const CK_VERSION) }
}

entry_points! {
    fn C_GetFunctionList(list: CK_FUNCTION_LIST_PTR_PTR) {
        // SAFETY: PKCS#11 contract on ppFunctionList.
        *unsafe { output(list) }? = &FUNCTIONS_240 as *const CK_FUNCTION_LIST as CK_FUNCTION_LIST_PTR;
        Ok(())
    }

    fn C_GetInterfaceList(list: *mut CK_INTERFACE, count: CK_ULONG_PTR) {
        // SAFETY: PKCS#11 contract on pInterfacesList / pulCount.
        unsafe { deliver_list(list, count, &INTERFACES.0) }
    }

    fn C_GetInterface(name: *mut CK_UTF8CHAR, version: *mut CK_VERSION, interface: *mut *mut CK_INTERFACE, flags: CK_FLAGS) {
        // SAFETY: PKCS#11 contract on ppInterface.
        let out = unsafe { output(interface) }?;
        if !name.is_null() {
            // SAFETY: a NUL-terminated name; compared byte by byte up to our name's length.
            let matches = INTERFACE_NAME
                .iter()
                .enumerate()
                .all(|(i, b)| unsafe { *name.add(i) } == *b);
            if !matches {
                return Err(Error::ARGUMENTS_BAD);
            }
        }
        // SAFETY: PKCS#11 contract on pVersion (NULL or valid).
        let wanted = unsafe { version.as_ref() }.copied();
        let found = INTERFACES.0.iter().find(|i| {
            let v = table_version(i);
            i.flags & flags == flags && wanted.is_none_or(|w| w.major == v.major && w.minor == v.minor)
        });
        let found = found.ok_or(Error::ARGUMENTS_BAD)?;
        *out = found as *const CK_INTERFACE as *mut CK_INTERFACE;
        Ok(())
    }
}
