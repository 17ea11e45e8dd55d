//! The one error type: a PKCS#11 return value. Every layer returns `Result<T>`; the ABI layer
//! turns it into a `CK_RV`.

use cryptoki_sys::*;
use std::fmt;

/// A failed call, carrying the `CKR_*` value the caller will see.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Error(pub CK_RV);

/// Result of every internal operation.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub const ARGUMENTS_BAD: Error = Error(CKR_ARGUMENTS_BAD);
    pub const GENERAL: Error = Error(CKR_GENERAL_ERROR);
    pub const DEVICE: Error = Error(CKR_DEVICE_ERROR);
    pub const HOST_MEMORY: Error = Error(CKR_HOST_MEMORY);
    pub const NOT_INITIALIZED: Error = Error(CKR_CRYPTOKI_NOT_INITIALIZED);
    pub const SESSION_HANDLE_INVALID: Error = Error(CKR_SESSION_HANDLE_INVALID);
    pub const OBJECT_HANDLE_INVALID: Error = Error(CKR_OBJECT_HANDLE_INVALID);
    pub const SLOT_ID_INVALID: Error = Error(CKR_SLOT_ID_INVALID);
    pub const MECHANISM_INVALID: Error = Error(CKR_MECHANISM_INVALID);
    pub const MECHANISM_PARAM_INVALID: Error = Error(CKR_MECHANISM_PARAM_INVALID);
    pub const OPERATION_ACTIVE: Error = Error(CKR_OPERATION_ACTIVE);
    pub const OPERATION_NOT_INITIALIZED: Error = Error(CKR_OPERATION_NOT_INITIALIZED);
    pub const USER_NOT_LOGGED_IN: Error = Error(CKR_USER_NOT_LOGGED_IN);
    pub const TEMPLATE_INCOMPLETE: Error = Error(CKR_TEMPLATE_INCOMPLETE);
    pub const TEMPLATE_INCONSISTENT: Error = Error(CKR_TEMPLATE_INCONSISTENT);
    pub const ATTRIBUTE_VALUE_INVALID: Error = Error(CKR_ATTRIBUTE_VALUE_INVALID);
    pub const ATTRIBUTE_TYPE_INVALID: Error = Error(CKR_ATTRIBUTE_TYPE_INVALID);
    pub const ATTRIBUTE_READ_ONLY: Error = Error(CKR_ATTRIBUTE_READ_ONLY);
    pub const KEY_HANDLE_INVALID: Error = Error(CKR_KEY_HANDLE_INVALID);
    pub const KEY_TYPE_INCONSISTENT: Error = Error(CKR_KEY_TYPE_INCONSISTENT);
    pub const KEY_FUNCTION_NOT_PERMITTED: Error = Error(CKR_KEY_FUNCTION_NOT_PERMITTED);
    pub const FUNCTION_NOT_SUPPORTED: Error = Error(CKR_FUNCTION_NOT_SUPPORTED);
    pub const DATA_LEN_RANGE: Error = Error(CKR_DATA_LEN_RANGE);
    pub const ENCRYPTED_DATA_LEN_RANGE: Error = Error(CKR_ENCRYPTED_DATA_LEN_RANGE);
    pub const PIN_INCORRECT: Error = Error(CKR_PIN_INCORRECT);
    pub const PIN_LOCKED: Error = Error(CKR_PIN_LOCKED);
    pub const PIN_LEN_RANGE: Error = Error(CKR_PIN_LEN_RANGE);
    pub const SESSION_READ_ONLY: Error = Error(CKR_SESSION_READ_ONLY);
    pub const TOKEN_NOT_RECOGNIZED: Error = Error(CKR_TOKEN_NOT_RECOGNIZED);
    pub const ACTION_PROHIBITED: Error = Error(CKR_ACTION_PROHIBITED);
    pub const SIGNATURE_INVALID: Error = Error(CKR_SIGNATURE_INVALID);
    pub const SIGNATURE_LEN_RANGE: Error = Error(CKR_SIGNATURE_LEN_RANGE);
    pub const BUFFER_TOO_SMALL: Error = Error(CKR_BUFFER_TOO_SMALL);
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", rv_name(self.0), self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        tracing::error!("token store: {e}");
        Error::DEVICE
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        tracing::error!("token store: {e}");
        Error::DEVICE
    }
}

/// The name of a return value, for logs.
pub fn rv_name(rv: CK_RV) -> &'static str {
    match rv {
        CKR_OK => "CKR_OK",
        CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_HOST_MEMORY => "CKR_HOST_MEMORY",
        CKR_CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
        CKR_CRYPTOKI_ALREADY_INITIALIZED => "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_SLOT_ID_INVALID => "CKR_SLOT_ID_INVALID",
        CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
        CKR_MECHANISM_PARAM_INVALID => "CKR_MECHANISM_PARAM_INVALID",
        CKR_OPERATION_ACTIVE => "CKR_OPERATION_ACTIVE",
        CKR_OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
        CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
        CKR_USER_ALREADY_LOGGED_IN => "CKR_USER_ALREADY_LOGGED_IN",
        CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
        CKR_ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
        CKR_ATTRIBUTE_READ_ONLY => "CKR_ATTRIBUTE_READ_ONLY",
        CKR_ATTRIBUTE_SENSITIVE => "CKR_ATTRIBUTE_SENSITIVE",
        CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
        CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_DATA_LEN_RANGE => "CKR_DATA_LEN_RANGE",
        CKR_PIN_INCORRECT => "CKR_PIN_INCORRECT",
        CKR_PIN_LOCKED => "CKR_PIN_LOCKED",
        CKR_PIN_LEN_RANGE => "CKR_PIN_LEN_RANGE",
        CKR_SESSION_READ_ONLY => "CKR_SESSION_READ_ONLY",
        CKR_SESSION_EXISTS => "CKR_SESSION_EXISTS",
        CKR_TOKEN_NOT_RECOGNIZED => "CKR_TOKEN_NOT_RECOGNIZED",
        CKR_ACTION_PROHIBITED => "CKR_ACTION_PROHIBITED",
        CKR_SIGNATURE_INVALID => "CKR_SIGNATURE_INVALID",
        CKR_SIGNATURE_LEN_RANGE => "CKR_SIGNATURE_LEN_RANGE",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        CKR_USER_PIN_NOT_INITIALIZED => "CKR_USER_PIN_NOT_INITIALIZED",
        CKR_USER_TYPE_INVALID => "CKR_USER_TYPE_INVALID",
        CKR_PARAMETER_SET_NOT_SUPPORTED => "CKR_PARAMETER_SET_NOT_SUPPORTED",
        CKR_DEVICE_REMOVED => "CKR_DEVICE_REMOVED",
        CKR_DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
        CKR_SESSION_CLOSED => "CKR_SESSION_CLOSED",
        CKR_KEY_NOT_WRAPPABLE => "CKR_KEY_NOT_WRAPPABLE",
        _ => "CKR_?",
    }
}
