//! Object management: create, copy, destroy, attributes, search.

use super::forward::{self, real};
use super::{attribute_array, attribute_array_mut, entry_points, or_forward, output, template};
use crate::error::{Error, Result};
use crate::token::object::{Object, Readable};
use cryptoki_sys::*;

/// `C_GetAttributeValue` answered from one of our objects: every attribute is answered (value,
/// length, or `CK_UNAVAILABLE_INFORMATION`), and the error, if any, is one of theirs.
///
/// # Safety
/// `attrs` must be NULL or valid for `count` attributes whose values are writable.
pub(super) unsafe fn answer_attributes(
    object: &Object,
    attrs: CK_ATTRIBUTE_PTR,
    count: CK_ULONG,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let requested = unsafe { attribute_array_mut(attrs, count) }?;
    let mut result = Ok(());
    for wanted in requested.iter_mut() {
        let (len, failure) = match object.readable(wanted.type_) {
            Readable::Value(value) if wanted.pValue.is_null() => (value.len() as CK_ULONG, None),
            Readable::Value(value) if (wanted.ulValueLen as usize) < value.len() => {
                (CK_UNAVAILABLE_INFORMATION, Some(Error::BUFFER_TOO_SMALL))
            }
            Readable::Value(value) => {
                // SAFETY: pValue is writable for ulValueLen >= value.len() bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        value.as_ptr(),
                        wanted.pValue as *mut u8,
                        value.len(),
                    )
                };
                (value.len() as CK_ULONG, None)
            }
            Readable::Sensitive => (
                CK_UNAVAILABLE_INFORMATION,
                Some(Error(CKR_ATTRIBUTE_SENSITIVE)),
            ),
            Readable::Invalid => (
                CK_UNAVAILABLE_INFORMATION,
                Some(Error::ATTRIBUTE_TYPE_INVALID),
            ),
        };
        wanted.ulValueLen = len;
        if let Some(e) = failure {
            result = Err(e);
        }
    }
    result
}

entry_points! {
    fn C_CreateObject(session: CK_SESSION_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, object: CK_OBJECT_HANDLE_PTR) {
        // SAFETY: PKCS#11 contract on pTemplate / phObject.
        let session = or_forward!(session, |f| unsafe { forward::create_object(&f, attrs, count, object) });
        // SAFETY: PKCS#11 contract on pTemplate / phObject.
        let (attrs, out) = unsafe { (template(attrs, count)?, output(object)?) };
        *out = session.create_object(attrs)?;
        Ok(())
    }

    fn C_CopyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, new_object: CK_OBJECT_HANDLE_PTR) {
        // SAFETY: PKCS#11 contract on pTemplate / phNewObject.
        let session = or_forward!(session, |f| unsafe { forward::copy_object(&f, object, attrs, count, new_object) });
        // SAFETY: PKCS#11 contract on pTemplate / phNewObject.
        let (attrs, out) = unsafe { (template(attrs, count)?, output(new_object)?) };
        *out = session.copy_object(object, attrs)?;
        Ok(())
    }

    fn C_DestroyObject(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) {
        or_forward!(session, |f| forward::destroy_object(&f, object)).destroy_object(object)
    }

    fn C_GetObjectSize(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, size: CK_ULONG_PTR) {
        let session = or_forward!(session, |f| {
            // SAFETY: PKCS#11 contract on pulSize.
            let out = unsafe { output(size) }?;
            real!(f.token.lib, C_GetObjectSize(f.real, object, out))
        });
        // SAFETY: PKCS#11 contract on pulSize.
        let out = unsafe { output(size) }?;
        *out = session.object_size(object)? as CK_ULONG;
        Ok(())
    }

    fn C_GetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pTemplate.
        let session = or_forward!(session, |f| unsafe { forward::get_attribute_value(&f, object, attrs, count) });
        // SAFETY: PKCS#11 contract on pTemplate; checked before the object is looked up.
        unsafe { attribute_array(attrs, count) }?;
        let object = session.attributes(object)?;
        // SAFETY: PKCS#11 contract on pTemplate (read and written in place).
        unsafe { answer_attributes(&object, attrs, count) }
    }

    fn C_SetAttributeValue(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pTemplate.
        let session = or_forward!(session, |f| unsafe { forward::set_attribute_value(&f, object, attrs, count) });
        // SAFETY: PKCS#11 contract on pTemplate.
        let attrs = unsafe { template(attrs, count) }?;
        session.set_attributes(object, attrs)
    }

    fn C_FindObjectsInit(session: CK_SESSION_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG) {
        // SAFETY: PKCS#11 contract on pTemplate.
        let session = or_forward!(session, |f| unsafe { forward::find_init(&f, attrs, count) });
        // SAFETY: PKCS#11 contract on pTemplate.
        let attrs = unsafe { template(attrs, count) }?;
        session.find_init(attrs)
    }

    fn C_FindObjects(session: CK_SESSION_HANDLE, objects: CK_OBJECT_HANDLE_PTR, max: CK_ULONG, found: CK_ULONG_PTR) {
        let session = crate::module::get()?.session(session)?;
        // SAFETY: PKCS#11 contract on pulObjectCount.
        let found = unsafe { output(found) }?;
        if objects.is_null() && max > 0 {
            return Err(Error::ARGUMENTS_BAD);
        }
        let handles = session.ops().find_next(max.min(u32::MAX as CK_ULONG) as usize)?;
        if !handles.is_empty() {
            // SAFETY: phObject holds `max` handles and at most `max` are written.
            unsafe { std::ptr::copy_nonoverlapping(handles.as_ptr(), objects, handles.len()) };
        }
        *found = handles.len() as CK_ULONG;
        Ok(())
    }

    fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) {
        crate::module::get()?.session(session)?.ops().find_final()
    }
}
