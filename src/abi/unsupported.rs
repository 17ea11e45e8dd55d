//! Functions of the 3.2 table this release does not perform (message-based encryption and
//! decryption, asynchronous calls, session validation flags, authenticated wrapping). Each answers
//! `CKR_FUNCTION_NOT_SUPPORTED`, as PKCS#11 requires of an unsupported function in the table.

use super::entry_points;
use crate::error::Error;
use cryptoki_sys::*;

entry_points! {
    fn C_MessageEncryptInit(_a1: CK_SESSION_HANDLE, _a2: *mut CK_MECHANISM, _a3: CK_OBJECT_HANDLE) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_EncryptMessage(_a1: CK_SESSION_HANDLE, _a2: *mut std::ffi::c_void, _a3: CK_ULONG, _a4: *mut CK_BYTE, _a5: CK_ULONG, _a6: *mut CK_BYTE, _a7: CK_ULONG, _a8: *mut CK_BYTE, _a9: *mut CK_ULONG) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_EncryptMessageBegin(_a1: CK_SESSION_HANDLE, _a2: *mut std::ffi::c_void, _a3: CK_ULONG, _a4: *mut CK_BYTE, _a5: CK_ULONG) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_EncryptMessageNext(_a1: CK_SESSION_HANDLE, _a2: *mut std::ffi::c_void, _a3: CK_ULONG, _a4: *mut CK_BYTE, _a5: CK_ULONG, _a6: *mut CK_BYTE, _a7: *mut CK_ULONG, _a8: CK_FLAGS) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_MessageEncryptFinal(_a1: CK_SESSION_HANDLE) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_MessageDecryptInit(_a1: CK_SESSION_HANDLE, _a2: *mut CK_MECHANISM, _a3: CK_OBJECT_HANDLE) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_DecryptMessage(_a1: CK_SESSION_HANDLE, _a2: *mut std::ffi::c_void, _a3: CK_ULONG, _a4: *mut CK_BYTE, _a5: CK_ULONG, _a6: *mut CK_BYTE, _a7: CK_ULONG, _a8: *mut CK_BYTE, _a9: *mut CK_ULONG) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_DecryptMessageBegin(_a1: CK_SESSION_HANDLE, _a2: *mut std::ffi::c_void, _a3: CK_ULONG, _a4: *mut CK_BYTE, _a5: CK_ULONG) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_DecryptMessageNext(_a1: CK_SESSION_HANDLE, _a2: *mut std::ffi::c_void, _a3: CK_ULONG, _a4: *mut CK_BYTE, _a5: CK_ULONG, _a6: *mut CK_BYTE, _a7: *mut CK_ULONG, _a8: CK_FLAGS) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_MessageDecryptFinal(_a1: CK_SESSION_HANDLE) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_GetSessionValidationFlags(_a1: CK_SESSION_HANDLE, _a2: CK_SESSION_VALIDATION_FLAGS_TYPE, _a3: *mut CK_FLAGS) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_AsyncComplete(_a1: CK_SESSION_HANDLE, _a2: *mut CK_UTF8CHAR, _a3: *mut CK_ASYNC_DATA) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_AsyncGetID(_a1: CK_SESSION_HANDLE, _a2: *mut CK_UTF8CHAR, _a3: *mut CK_ULONG) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_AsyncJoin(_a1: CK_SESSION_HANDLE, _a2: *mut CK_UTF8CHAR, _a3: CK_ULONG, _a4: *mut CK_BYTE, _a5: CK_ULONG) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_WrapKeyAuthenticated(_a1: CK_SESSION_HANDLE, _a2: *mut CK_MECHANISM, _a3: CK_OBJECT_HANDLE, _a4: CK_OBJECT_HANDLE, _a5: *mut CK_BYTE, _a6: CK_ULONG, _a7: *mut CK_BYTE, _a8: *mut CK_ULONG) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }

    fn C_UnwrapKeyAuthenticated(_a1: CK_SESSION_HANDLE, _a2: *mut CK_MECHANISM, _a3: CK_OBJECT_HANDLE, _a4: *mut CK_BYTE, _a5: CK_ULONG, _a6: *mut CK_ATTRIBUTE, _a7: CK_ULONG, _a8: *mut CK_BYTE, _a9: CK_ULONG, _a10: *mut CK_OBJECT_HANDLE) {
        Err(Error::FUNCTION_NOT_SUPPORTED)
    }
}
