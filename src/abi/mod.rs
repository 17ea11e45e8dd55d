//! The C ABI: every exported `C_*` function, the function tables, and the decoding of the
//! caller's pointers into safe values. This is the only place with `unsafe` code.
//!
//! Every entry point goes through [`run`]: a typed `Result` becomes a `CK_RV` the same way
//! everywhere, and a panic is caught, logged and answered with `CKR_GENERAL_ERROR` instead of
//! unwinding into C.

#![allow(non_snake_case)]
// The exported functions' safety contract is the PKCS#11 specification: each pointer argument
// is NULL or valid for the length the specification gives it.
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

mod cipher;
mod crypto;
mod general;
mod hsm_only;
mod kem;
mod message;
mod objects;
mod sessions;
mod slots;
mod tables;
mod unsupported;

use crate::backend::BackendSession;
use crate::error::{rv_name, Error, Result};
use crate::mechanism::{self, Mechanism, Param, ParamShape};
use crate::token::attributes::Attributes;
use crate::token::io::{AttributeRequest, Output};
use cryptoki_sys::*;
use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use tables::function_list_240;

/// Longest data buffer accepted: a length of 2^32 or more is a caller's bug, never data.
const MAX_DATA_LEN: CK_ULONG = u32::MAX as CK_ULONG;
/// Most attributes in one template.
const MAX_TEMPLATE_LEN: CK_ULONG = 4096;
/// Longest attribute value accepted.
const MAX_ATTRIBUTE_LEN: CK_ULONG = 64 << 20;
/// Longest opaque mechanism parameter accepted.
const MAX_PARAM_LEN: CK_ULONG = 64 << 10;

/// Runs an entry point's body: maps its result to a `CK_RV` and stops any panic at the border.
/// A call overtaken by `C_Finalize` in another thread answers `CKR_CRYPTOKI_NOT_INITIALIZED`
/// whatever it met on the way (its session's objects already gone, say).
pub(crate) fn run(name: &'static str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    if crate::metrics::enabled() {
        let started = std::time::Instant::now();
        let rv = answer(name, body);
        crate::metrics::call(name, rv, started.elapsed());
        return rv;
    }
    answer(name, body)
}

/// The `CK_RV` of an entry point's body.
fn answer(name: &'static str, body: impl FnOnce() -> Result<()>) -> CK_RV {
    let started_in = crate::module::instance();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(_)) if started_in.is_some() && crate::module::instance() != started_in => {
            CKR_CRYPTOKI_NOT_INITIALIZED
        }
        Ok(Err(Error(rv))) => {
            tracing::debug!("{name} -> {}", rv_name(rv));
            rv
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("{name}: internal error (panic: {what}); answering CKR_GENERAL_ERROR");
            CKR_GENERAL_ERROR
        }
    }
}

/// The `CK_RV` a result stands for.
fn rv_of<T>(result: &Result<T>) -> CK_RV {
    match result {
        Ok(_) => CKR_OK,
        Err(Error(rv)) => *rv,
    }
}

/// Declares exported entry points whose bodies return `Result<()>`.
macro_rules! entry_points {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block)*) => {
        $(
            #[no_mangle]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                $crate::abi::run(stringify!($name), || $body)
            }
        )*
    };
}
pub(crate) use entry_points;

/// The session behind a handle, whoever serves it.
fn session(handle: CK_SESSION_HANDLE) -> Result<std::sync::Arc<dyn BackendSession>> {
    crate::module::get()?.session(handle)
}

/// A caller's input buffer. `len` is checked before anything is read.
///
/// # Safety
/// `ptr` must be NULL or valid for reads of `len` bytes.
unsafe fn input<'a>(ptr: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || len > MAX_DATA_LEN {
        return Err(Error::ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes (PKCS#11 contract).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len as usize) })
}

/// A caller's output location.
///
/// # Safety
/// `ptr` must be NULL or valid for writes of one `T`.
unsafe fn output<'a, T>(ptr: *mut T) -> Result<&'a mut T> {
    // SAFETY: the caller promises a valid, writable location when non-NULL.
    unsafe { ptr.as_mut() }.ok_or(Error::ARGUMENTS_BAD)
}

/// Copies a fixed-size structure out to the caller.
///
/// # Safety
/// As [`output`].
unsafe fn write_out<T>(ptr: *mut T, value: T) -> Result<()> {
    // SAFETY: forwarded contract of `output`.
    *unsafe { output(ptr) }? = value;
    Ok(())
}

/// A caller's output buffer with the two-call length convention: NULL `buf` asks for the
/// length; otherwise the buffer spans the `*len` bytes the caller offers.
///
/// # Safety
/// `buf` must be NULL or valid for writes of `*len` bytes; `len` must be NULL or valid.
unsafe fn out_buffer<'a>(buf: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<Output<'a>> {
    // SAFETY: forwarded contract.
    let len = unsafe { output(len) }?;
    if buf.is_null() {
        return Ok(Output::new(None, len));
    }
    if *len > MAX_DATA_LEN {
        return Err(Error::ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, bounded, and the caller promises `*len` writable bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf, *len as usize) };
    Ok(Output::new(Some(buf), len))
}

/// An input and an output buffer of one call. A caller may encrypt in place (the same memory
/// for both): the input is then copied first (up to 64 MiB), so no byte is both read and
/// written through.
///
/// # Safety
/// As [`input`] and [`out_buffer`].
unsafe fn in_out<'a>(
    data: *const CK_BYTE,
    len: CK_ULONG,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> Result<(Cow<'a, [u8]>, Output<'a>)> {
    // SAFETY: forwarded contract.
    let data = unsafe { input(data, len) }?;
    // SAFETY: forwarded contract (a NULL length pointer is refused by `out_buffer` below).
    let offered = unsafe { out_len.as_ref() }.map_or(0, |l| *l as usize);
    let (start, end) = (out as usize, (out as usize).saturating_add(offered));
    let (in_start, in_end) = (data.as_ptr() as usize, data.as_ptr() as usize + data.len());
    let overlaps = !out.is_null() && !data.is_empty() && in_start < end && start < in_end;
    let data = if overlaps {
        // A length past any real in-place buffer is a caller's bug: refused before reading.
        if data.len() > crate::mechanism::MAX_COLLECTED_LEN {
            return Err(Error::ARGUMENTS_BAD);
        }
        Cow::Owned(data.to_vec())
    } else {
        Cow::Borrowed(data)
    };
    // SAFETY: forwarded contract; the output no longer overlaps a borrowed input.
    Ok((data, unsafe { out_buffer(out, out_len) }?))
}

/// The caller's `C_GetAttributeValue` template as requests a backend answers; [`answered`]
/// writes the answers back.
///
/// # Safety
/// `ptr` must be NULL or valid for `count` attributes, each `pValue` NULL or writable for its
/// `ulValueLen`.
unsafe fn attribute_requests<'a>(
    ptr: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<Vec<AttributeRequest<'a>>> {
    // SAFETY: forwarded contract; the view is dropped before the answers are written.
    let raw = unsafe { attribute_array(ptr, count) }?;
    raw.iter()
        .map(|a| {
            if a.pValue.is_null() {
                return Ok(AttributeRequest::new(a.type_, None, a.ulValueLen));
            }
            if a.ulValueLen > MAX_DATA_LEN {
                return Err(Error::ARGUMENTS_BAD);
            }
            // SAFETY: non-NULL, bounded, the caller promises `ulValueLen` writable bytes.
            let value = unsafe {
                std::slice::from_raw_parts_mut(a.pValue as *mut u8, a.ulValueLen as usize)
            };
            Ok(AttributeRequest::new(a.type_, Some(value), a.ulValueLen))
        })
        .collect()
}

/// Writes each request's answer into the caller's `ulValueLen`.
///
/// # Safety
/// As [`attribute_requests`], with no other reference to the array alive.
unsafe fn answered(
    ptr: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    requests: &[AttributeRequest],
) -> Result<()> {
    // SAFETY: forwarded contract.
    let raw = unsafe { attribute_array_mut(ptr, count) }?;
    for (a, r) in raw.iter_mut().zip(requests) {
        a.ulValueLen = r.answer;
    }
    Ok(())
}

/// A list answered with the two-call convention (`C_GetSlotList`, `C_GetMechanismList`).
///
/// # Safety
/// `list` must be NULL or valid for `*count` elements; `count` must be NULL or valid.
unsafe fn deliver_list<T: Copy>(list: *mut T, count: *mut CK_ULONG, items: &[T]) -> Result<()> {
    // SAFETY: forwarded contract.
    let count = unsafe { output(count) }?;
    if list.is_null() {
        *count = items.len() as CK_ULONG;
        return Ok(());
    }
    if (*count as usize) < items.len() {
        *count = items.len() as CK_ULONG;
        return Err(Error::BUFFER_TOO_SMALL);
    }
    // SAFETY: `list` holds at least `*count >= items.len()` elements.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), list, items.len()) };
    *count = items.len() as CK_ULONG;
    Ok(())
}

/// A caller's template, read in full and checked.
///
/// # Safety
/// `ptr` must be NULL or valid for `count` attributes, each `pValue` valid for `ulValueLen`.
unsafe fn template(ptr: *const CK_ATTRIBUTE, count: CK_ULONG) -> Result<Attributes> {
    // SAFETY: forwarded contract.
    let raw = unsafe { attribute_array(ptr, count) }?;
    let mut attrs = Attributes::new();
    for a in raw {
        if a.ulValueLen > MAX_ATTRIBUTE_LEN || (a.ulValueLen > 0 && a.pValue.is_null()) {
            return Err(Error::ATTRIBUTE_VALUE_INVALID);
        }
        // SAFETY: checked non-NULL when non-empty; the caller promises `ulValueLen` bytes.
        let value = unsafe { input(a.pValue as *const CK_BYTE, a.ulValueLen) }?;
        attrs.add_from_template(a.type_, value)?;
    }
    Ok(attrs)
}

/// The caller's attribute array, read only.
///
/// # Safety
/// `ptr` must be NULL or valid for `count` attributes.
unsafe fn attribute_array<'a>(
    ptr: *const CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<&'a [CK_ATTRIBUTE]> {
    if count == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || count > MAX_TEMPLATE_LEN {
        return Err(Error::ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, bounded count, caller promises `count` attributes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count as usize) })
}

/// The caller's attribute array for `C_GetAttributeValue`, which writes each `ulValueLen`: a
/// unique borrow, so no shared view of the array exists while it is written.
///
/// # Safety
/// `ptr` must be NULL or valid for reads and writes of `count` attributes, and no other
/// reference to them may be alive.
unsafe fn attribute_array_mut<'a>(
    ptr: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> Result<&'a mut [CK_ATTRIBUTE]> {
    if count == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() || count > MAX_TEMPLATE_LEN {
        return Err(Error::ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, bounded count, caller promises `count` writable attributes.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, count as usize) })
}

/// A caller's `CK_MECHANISM`, decoded by the parameter shape its type has.
///
/// # Safety
/// `ptr` must be NULL or point to a valid `CK_MECHANISM` whose parameter is valid for its length.
unsafe fn mechanism(ptr: *const CK_MECHANISM) -> Result<Mechanism> {
    // SAFETY: forwarded contract.
    let m = unsafe { ptr.as_ref() }.ok_or(Error::ARGUMENTS_BAD)?;
    let has_param = !m.pParameter.is_null() || m.ulParameterLen != 0;
    let param = match mechanism::param_shape(m.mechanism) {
        ParamShape::Gcm if !has_param => return Err(Error::MECHANISM_PARAM_INVALID),
        _ if !has_param => Param::None,
        ParamShape::Empty => return Err(Error::MECHANISM_PARAM_INVALID),
        ParamShape::SignContext => {
            // SAFETY: forwarded contract.
            let p = unsafe { param_struct::<CK_SIGN_ADDITIONAL_CONTEXT>(m) }?;
            Param::SignContext {
                hedge: p.hedgeVariant,
                // SAFETY: the structure's own pointer and length (PKCS#11 contract).
                context: unsafe { context(p.pContext, p.ulContextLen) }?,
            }
        }
        ParamShape::HashSignContext => {
            // SAFETY: forwarded contract.
            let p = unsafe { param_struct::<CK_HASH_SIGN_ADDITIONAL_CONTEXT>(m) }?;
            Param::HashSignContext {
                hedge: p.hedgeVariant,
                // SAFETY: the structure's own pointer and length (PKCS#11 contract).
                context: unsafe { context(p.pContext, p.ulContextLen) }?,
                hash: p.hash,
            }
        }
        ParamShape::Gcm => {
            // SAFETY: forwarded contract.
            let p = unsafe { param_struct::<CK_GCM_PARAMS>(m) }?;
            let bounded = |len| len <= MAX_PARAM_LEN;
            if !bounded(p.ulIvLen) || !bounded(p.ulAADLen) {
                return Err(Error::MECHANISM_PARAM_INVALID);
            }
            // SAFETY: the structure's own pointers and lengths (PKCS#11 contract); NULL with a
            // non-zero length is refused by `input`.
            let (iv, aad) = unsafe { (input(p.pIv, p.ulIvLen), input(p.pAAD, p.ulAADLen)) };
            let invalid = |_| Error::MECHANISM_PARAM_INVALID;
            Param::Gcm(crate::mechanism::aes_gcm::GcmParams {
                iv: iv.map_err(invalid)?.to_vec(),
                aad: aad.map_err(invalid)?.to_vec(),
                tag_bits: p.ulTagBits as u64,
            })
        }
        ParamShape::Eddsa => {
            // SAFETY: forwarded contract.
            let p = unsafe { param_struct::<CK_EDDSA_PARAMS>(m) }?;
            Param::Eddsa {
                prehash: p.phFlag != CK_FALSE,
                // SAFETY: the structure's own pointer and length (PKCS#11 contract).
                context: unsafe { context(p.pContextData, p.ulContextDataLen) }?,
            }
        }
        ParamShape::Opaque => {
            if m.pParameter.is_null() || m.ulParameterLen > MAX_PARAM_LEN {
                return Err(Error::MECHANISM_PARAM_INVALID);
            }
            // SAFETY: non-NULL, bounded, caller's promise.
            let bytes = unsafe { input(m.pParameter as *const CK_BYTE, m.ulParameterLen) }?;
            Param::Opaque(zeroize::Zeroizing::new(bytes.to_vec()))
        }
    };
    Ok(Mechanism {
        mechanism: m.mechanism,
        param,
    })
}

/// A mechanism parameter that must be exactly one `T`.
///
/// # Safety
/// `m.pParameter` must be NULL or valid for `m.ulParameterLen` bytes.
unsafe fn param_struct<T>(m: &CK_MECHANISM) -> Result<&T> {
    if m.pParameter.is_null() || m.ulParameterLen as usize != std::mem::size_of::<T>() {
        return Err(Error::MECHANISM_PARAM_INVALID);
    }
    // SAFETY: non-NULL and exactly the structure's size, as checked above.
    Ok(unsafe { &*(m.pParameter as *const T) })
}

/// A signature context string: at most 255 bytes (FIPS 204).
///
/// # Safety
/// `ptr` must be NULL or valid for `len` bytes.
unsafe fn context(ptr: *const CK_BYTE, len: CK_ULONG) -> Result<Vec<u8>> {
    if len > crate::mechanism::mldsa::MAX_CONTEXT_LEN as CK_ULONG || (len > 0 && ptr.is_null()) {
        return Err(Error::MECHANISM_PARAM_INVALID);
    }
    // SAFETY: non-NULL when non-empty, at most 255 bytes, caller's promise.
    Ok(unsafe { input(ptr, len) }?.to_vec())
}
