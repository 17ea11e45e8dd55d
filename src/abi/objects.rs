//! Object management: create, copy, destroy, attributes, search.

use super::{answered, attribute_requests, entry_points, output, session, template};
use crate::error::Error;
use cryptoki_sys::*;

entry_points! {
    fn C_CreateObject(handle: CK_SESSION_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, object: CK_OBJECT_HANDLE_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pTemplate / phObject.
        let (attrs, out) = unsafe { (template(attrs, count)?, output(object)?) };
        let made = session.create_object(attrs);
        crate::module::audit("object_created", handle, &made);
        *out = made?;
        Ok(())
    }

    fn C_CopyObject(handle: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG, new_object: CK_OBJECT_HANDLE_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pTemplate / phNewObject.
        let (attrs, out) = unsafe { (template(attrs, count)?, output(new_object)?) };
        let made = session.copy_object(object, attrs);
        crate::module::audit("object_copied", handle, &made);
        *out = made?;
        Ok(())
    }

    fn C_DestroyObject(handle: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) {
        let result = session(handle)?.destroy_object(object);
        crate::module::audit("object_destroyed", handle, &result);
        result
    }

    fn C_GetObjectSize(handle: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, size: CK_ULONG_PTR) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pulSize.
        let out = unsafe { output(size) }?;
        *out = session.object_size(object)?;
        Ok(())
    }

    fn C_GetAttributeValue(handle: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pTemplate (values written in place).
        let mut requests = unsafe { attribute_requests(attrs, count) }?;
        let result = session.get_attributes(object, &mut requests);
        // SAFETY: PKCS#11 contract on pTemplate; the requests borrow the values, not the array.
        unsafe { answered(attrs, count, &requests) }?;
        result
    }

    fn C_SetAttributeValue(handle: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pTemplate.
        let attrs = unsafe { template(attrs, count) }?;
        session.set_attributes(object, attrs)
    }

    fn C_FindObjectsInit(handle: CK_SESSION_HANDLE, attrs: CK_ATTRIBUTE_PTR, count: CK_ULONG) {
        let session = session(handle)?;
        // SAFETY: PKCS#11 contract on pTemplate.
        let attrs = unsafe { template(attrs, count) }?;
        session.find_init(attrs)
    }

    fn C_FindObjects(handle: CK_SESSION_HANDLE, objects: CK_OBJECT_HANDLE_PTR, max: CK_ULONG, found: CK_ULONG_PTR) {
        let session = session(handle)?;
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

    fn C_FindObjectsFinal(handle: CK_SESSION_HANDLE) {
        session(handle)?.ops().find_final()
    }
}
