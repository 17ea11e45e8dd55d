//! Object management: creation, visibility, persistence, attributes, copy, destroy, search.

#[macro_use]
mod common;

use common::*;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::*;

const SLOT_FIND: usize = 0;
const SLOT_PRIVATE_VISIBILITY: usize = 1;
const SLOT_CREATE_RULES: usize = 2;
const SLOT_SESSION_OBJECTS: usize = 3;
const SLOT_GET_ATTRIBUTES: usize = 4;
const SLOT_SET_ATTRIBUTES: usize = 5;
const SLOT_COPY: usize = 6;
const SLOT_DESTROY: usize = 7;
const SLOT_FIND_STATE: usize = 8;
const SLOT_TEMPLATE_ERRORS: usize = 9;
const SLOT_REINIT: usize = 10;
const SLOT_TWO_PROCESSES: usize = 11;

#[track_caller]
fn create(session: &Session, template: &[Attribute]) -> ObjectHandle {
    ok(session.create_object(template))
}

#[track_caller]
fn label_of(session: &Session, object: ObjectHandle) -> String {
    String::from_utf8(attr_bytes(session, object, CKA_LABEL)).expect("UTF-8 label")
}

#[test]
fn data_objects_are_found_by_label_and_class() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_FIND);
    let session = f.user_session(slot);
    let ephemeral = create(
        &session,
        &data_template("obj-session", b"alpha", false, false),
    );
    let durable = create(&session, &data_template("obj-token", b"beta", true, false));
    assert_ne!(ephemeral, durable);

    assert_eq!(find_by_label(&session, "obj-session"), [ephemeral]);
    assert_eq!(find_by_label(&session, "obj-token"), [durable]);
    assert!(find_by_label(&session, "obj-nothing").is_empty());

    let mut all_data = ok(session.find_objects(&[Attribute::Class(ObjectClass::DATA)]));
    all_data.sort_by_key(ObjectHandle::handle);
    let mut expected = [ephemeral, durable];
    expected.sort_by_key(ObjectHandle::handle);
    assert_eq!(all_data, expected);

    let token_template = [Attribute::Class(ObjectClass::DATA), Attribute::Token(true)];
    let token_only = ok(session.find_objects(&token_template));
    assert_eq!(token_only, [durable]);

    assert_eq!(attr_bytes(&session, ephemeral, CKA_VALUE), b"alpha");
    assert_eq!(attr_bytes(&session, durable, CKA_VALUE), b"beta");
    assert!(!attr_bool(&session, ephemeral, CKA_TOKEN));
    assert!(attr_bool(&session, durable, CKA_TOKEN));
    assert_eq!(attr_ulong(&session, durable, CKA_CLASS), CKO_DATA);
}

#[test]
fn private_objects_are_invisible_until_login() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_PRIVATE_VISIBILITY);
    {
        let session = f.user_session(slot);
        create(&session, &data_template("secret", b"s3cret", true, true));
        create(&session, &data_template("public", b"open", true, false));
    } // closing the only session logs the user out

    let session = ok(f.pkcs11.open_ro_session(slot));
    assert!(find_by_label(&session, "secret").is_empty());
    assert_eq!(find_by_label(&session, "public").len(), 1);
    let visible = ok(session.find_objects(&[Attribute::Class(ObjectClass::DATA)]));
    assert_eq!(visible.len(), 1, "only the public object before login");

    ok(session.login(UserType::User, Some(&pin(USER_PIN))));
    let secret = find_by_label(&session, "secret");
    assert_eq!(secret.len(), 1);
    assert!(attr_bool(&session, secret[0], CKA_PRIVATE));
    assert_eq!(attr_bytes(&session, secret[0], CKA_VALUE), b"s3cret");
}

#[test]
fn creating_objects_respects_login_and_session_kind() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_CREATE_RULES);

    let public_rw = ok(f.pkcs11.open_rw_session(slot));
    for token in [false, true] {
        assert_rv(
            public_rw.create_object(&data_template("private", b"x", token, true)),
            CKR_USER_NOT_LOGGED_IN,
        );
    }
    // Token objects, public ones included, are written only after login: every row of the
    // embedded store is sealed under the token key (docs/security.md).
    assert_rv(
        public_rw.create_object(&data_template("public-token", b"x", true, false)),
        CKR_USER_NOT_LOGGED_IN,
    );
    create(
        &public_rw,
        &data_template("public-session", b"x", false, false),
    );

    let ro = ok(f.pkcs11.open_ro_session(slot));
    ok(ro.login(UserType::User, Some(&pin(USER_PIN))));
    assert_rv(
        ro.create_object(&data_template("ro-token", b"x", true, false)),
        CKR_SESSION_READ_ONLY,
    );
    assert_rv(
        ro.create_object(&data_template("ro-token-private", b"x", true, true)),
        CKR_SESSION_READ_ONLY,
    );
    // Session objects may be created in a read-only session.
    create(&ro, &data_template("ro-session", b"x", false, true));
    assert!(find_by_label(&ro, "ro-token").is_empty());
}

#[test]
fn session_objects_vanish_with_their_session() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_SESSION_OBJECTS);
    let observer = ok(f.pkcs11.open_ro_session(slot));
    let owner = f.user_session(slot);
    let ephemeral = create(&owner, &data_template("ephemeral", b"e", false, false));
    let durable = create(&owner, &data_template("durable", b"d", true, false));

    // Session objects are visible to every session of the application...
    assert_eq!(find_by_label(&observer, "ephemeral"), [ephemeral]);
    ok(owner.close());

    // ...until the session that created them closes.
    assert!(find_by_label(&observer, "ephemeral").is_empty());
    assert_eq!(
        get_attr(observer.handle(), ephemeral.handle(), CKA_LABEL).err(),
        Some(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_eq!(find_by_label(&observer, "durable"), [durable]);
}

#[test]
fn get_attribute_value_length_and_error_conventions() {
    const LABEL: &str = "attribute-conventions";
    const VALUE: &[u8] = b"some value bytes";
    let f = fixture();
    let slot = f.ready_slot(SLOT_GET_ATTRIBUTES);
    let session = f.user_session(slot);
    let object = create(&session, &data_template(LABEL, VALUE, false, false));
    let (s, o) = (session.handle(), object.handle());
    let label_len = LABEL.len() as CK_ULONG;

    // NULL pValue: the length only.
    let mut query = [raw_query(CKA_LABEL)];
    assert_ck!(CKR_OK; C_GetAttributeValue(s, o, query.as_mut_ptr(), 1));
    assert_eq!(query[0].ulValueLen, label_len);

    // A buffer one byte short.
    let mut short = [0u8; LABEL.len() - 1];
    let mut too_small = [raw_buffer(CKA_LABEL, &mut short)];
    assert_ck!(CKR_BUFFER_TOO_SMALL; C_GetAttributeValue(s, o, too_small.as_mut_ptr(), 1));
    assert_eq!(too_small[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);

    // A larger buffer: the real length comes back.
    let mut large = [0u8; 64];
    let mut roomy = [raw_buffer(CKA_LABEL, &mut large)];
    assert_ck!(CKR_OK; C_GetAttributeValue(s, o, roomy.as_mut_ptr(), 1));
    assert_eq!(roomy[0].ulValueLen, label_len);
    assert_eq!(&large[..LABEL.len()], LABEL.as_bytes());

    // An unknown attribute among good ones: the others are still filled.
    let mut class = [0u8; size_of::<CK_OBJECT_CLASS>()];
    let mut unknown = [0u8; 16];
    let mut label = [0u8; 64];
    let mut mixed = [
        raw_buffer(CKA_CLASS, &mut class),
        raw_buffer(UNKNOWN_ATTRIBUTE, &mut unknown),
        raw_buffer(CKA_LABEL, &mut label),
    ];
    let invalid = CKR_ATTRIBUTE_TYPE_INVALID;
    assert_ck!(invalid; C_GetAttributeValue(s, o, mixed.as_mut_ptr(), 3));
    assert_eq!(
        mixed[0].ulValueLen,
        size_of::<CK_OBJECT_CLASS>() as CK_ULONG
    );
    assert_eq!(CK_OBJECT_CLASS::from_ne_bytes(class), CKO_DATA);
    assert_eq!(mixed[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(mixed[2].ulValueLen, label_len);
    assert_eq!(&label[..LABEL.len()], LABEL.as_bytes());

    // An attribute of another object class is just as invalid here.
    assert_eq!(get_attr(s, o, CKA_MODULUS).err(), Some(invalid));

    // A short buffer among good ones: the others are still filled.
    let mut value = [0u8; VALUE.len()];
    let mut tiny = [0u8; 3];
    let mut partly = [
        raw_buffer(CKA_LABEL, &mut tiny),
        raw_buffer(CKA_VALUE, &mut value),
    ];
    assert_ck!(CKR_BUFFER_TOO_SMALL; C_GetAttributeValue(s, o, partly.as_mut_ptr(), 2));
    assert_eq!(partly[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
    assert_eq!(partly[1].ulValueLen, VALUE.len() as CK_ULONG);
    assert_eq!(value, VALUE);
}

#[test]
fn set_attribute_value_rules() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_SET_ATTRIBUTES);
    let session = f.user_session(slot);
    let object = create(&session, &data_template("before", b"v", true, false));

    ok(session.update_attributes(object, &[Attribute::Label(b"after".to_vec())]));
    assert_eq!(label_of(&session, object), "after");
    assert_eq!(find_by_label(&session, "after"), [object]);

    assert_rv(
        session.update_attributes(object, &[Attribute::Class(ObjectClass::SECRET_KEY)]),
        CKR_ATTRIBUTE_READ_ONLY,
    );
    assert_eq!(attr_ulong(&session, object, CKA_CLASS), CKO_DATA);

    let mut frozen_template = data_template("frozen", b"v", true, false);
    frozen_template.push(Attribute::Modifiable(false));
    let frozen = create(&session, &frozen_template);
    assert!(!attr_bool(&session, frozen, CKA_MODIFIABLE));
    assert_rv(
        session.update_attributes(frozen, &[Attribute::Label(b"thawed".to_vec())]),
        CKR_ACTION_PROHIBITED,
    );
    assert_eq!(label_of(&session, frozen), "frozen");

    let ro = ok(f.pkcs11.open_ro_session(slot));
    assert_rv(
        ro.update_attributes(object, &[Attribute::Label(b"from-ro".to_vec())]),
        CKR_SESSION_READ_ONLY,
    );
    assert_eq!(label_of(&session, object), "after");
}

#[test]
fn copy_object_with_a_new_label() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_COPY);
    let session = f.user_session(slot);
    let original = create(
        &session,
        &data_template("original", b"payload", true, false),
    );
    let copy = ok(session.copy_object(original, &[Attribute::Label(b"copy".to_vec())]));
    assert_ne!(copy, original);
    assert_eq!(label_of(&session, original), "original");
    assert_eq!(label_of(&session, copy), "copy");
    assert_eq!(attr_bytes(&session, copy, CKA_VALUE), b"payload");
    assert!(attr_bool(&session, copy, CKA_TOKEN));
    assert_eq!(find_by_label(&session, "copy"), [copy]);

    let session_copy = ok(session.copy_object(original, &[Attribute::Token(false)]));
    assert!(!attr_bool(&session, session_copy, CKA_TOKEN));
    assert_eq!(find_by_label(&session, "original").len(), 2);
}

#[test]
fn destroyed_objects_have_invalid_handles() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_DESTROY);
    let session = f.user_session(slot);
    let object = create(&session, &data_template("doomed", b"v", true, false));
    let (s, o) = (session.handle(), object.handle());

    let mut size: CK_ULONG = 0;
    assert_rv(ck!(C_GetObjectSize(s, o, &mut size)), CKR_OK);
    assert!(size > 0, "object size {size}");

    ok(session.destroy_object(object));
    assert_eq!(
        get_attr(s, o, CKA_LABEL).err(),
        Some(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_rv(session.destroy_object(object), CKR_OBJECT_HANDLE_INVALID);
    assert_rv(
        ck!(C_GetObjectSize(s, o, &mut size)),
        CKR_OBJECT_HANDLE_INVALID,
    );
    assert!(find_by_label(&session, "doomed").is_empty());
}

#[test]
fn find_objects_operation_state_and_paging() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_FIND_STATE);
    let session = f.user_session(slot);
    let s = session.handle();
    let mut found = [CK_INVALID_HANDLE; 2];
    let mut count: CK_ULONG = 0;

    assert_rv(
        ck!(C_FindObjects(s, found.as_mut_ptr(), 2, &mut count)),
        CKR_OPERATION_NOT_INITIALIZED,
    );
    assert_rv(ck!(C_FindObjectsFinal(s)), CKR_OPERATION_NOT_INITIALIZED);

    let created: Vec<_> = (0..5)
        .map(|i| create(&session, &data_template("many", &[i], true, false)).handle())
        .collect();
    let label = b"many";
    let mut template = [raw_bytes(CKA_LABEL, label)];
    assert_rv(ck!(C_FindObjectsInit(s, template.as_mut_ptr(), 1)), CKR_OK);
    assert_rv(
        ck!(C_FindObjectsInit(s, template.as_mut_ptr(), 1)),
        CKR_OPERATION_ACTIVE,
    );
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        assert_rv(
            ck!(C_FindObjects(s, found.as_mut_ptr(), 2, &mut count)),
            CKR_OK,
        );
        pages.push(count);
        seen.extend_from_slice(&found[..count as usize]);
        if count == 0 {
            break;
        }
        assert!(pages.len() < 10, "C_FindObjects never ends: {pages:?}");
    }
    assert_eq!(pages, [2, 2, 1, 0]);
    seen.sort_unstable();
    let mut expected = created;
    expected.sort_unstable();
    assert_eq!(seen, expected);
    assert_rv(ck!(C_FindObjectsFinal(s)), CKR_OK);
    assert_rv(
        ck!(C_FindObjects(s, found.as_mut_ptr(), 2, &mut count)),
        CKR_OPERATION_NOT_INITIALIZED,
    );
}

#[test]
fn malformed_templates_are_rejected() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_TEMPLATE_ERRORS);
    let session = f.user_session(slot);
    let class: CK_OBJECT_CLASS = CKO_DATA;
    let unknown_class: CK_OBJECT_CLASS = 0x7FFF_0000;
    let (yes, no): (CK_BBOOL, CK_BBOOL) = (CK_TRUE, CK_FALSE);
    let wide_bool = [1u8, 0u8];
    let short_class = [0u8; 4];
    let cases: [(&str, Vec<CK_ATTRIBUTE>, &[CK_RV]); 7] = [
        (
            "no CKA_CLASS",
            vec![raw_bytes(CKA_LABEL, b"a")],
            &[CKR_TEMPLATE_INCOMPLETE],
        ),
        (
            "two different CKA_LABELs",
            vec![
                raw_attr(CKA_CLASS, &class),
                raw_bytes(CKA_LABEL, b"a"),
                raw_bytes(CKA_LABEL, b"b"),
            ],
            &[CKR_TEMPLATE_INCONSISTENT],
        ),
        (
            "CKA_TOKEN both TRUE and FALSE",
            vec![
                raw_attr(CKA_CLASS, &class),
                raw_attr(CKA_TOKEN, &yes),
                raw_attr(CKA_TOKEN, &no),
            ],
            &[CKR_TEMPLATE_INCONSISTENT],
        ),
        (
            "a 2-byte CK_BBOOL",
            vec![
                raw_attr(CKA_CLASS, &class),
                raw_bytes(CKA_TOKEN, &wide_bool),
            ],
            &[CKR_ATTRIBUTE_VALUE_INVALID],
        ),
        (
            "a 4-byte CKA_CLASS",
            vec![raw_bytes(CKA_CLASS, &short_class)],
            &[CKR_ATTRIBUTE_VALUE_INVALID],
        ),
        (
            "an unknown attribute type",
            vec![
                raw_attr(CKA_CLASS, &class),
                raw_bytes(UNKNOWN_ATTRIBUTE, b"a"),
            ],
            &[CKR_ATTRIBUTE_TYPE_INVALID],
        ),
        (
            "an unknown object class",
            vec![raw_attr(CKA_CLASS, &unknown_class)],
            &[CKR_ATTRIBUTE_VALUE_INVALID, CKR_TEMPLATE_INCONSISTENT],
        ),
    ];
    for (what, mut template, allowed) in cases {
        let mut object = CK_INVALID_HANDLE;
        let rv = ck!(C_CreateObject(
            session.handle(),
            template.as_mut_ptr(),
            template.len() as CK_ULONG,
            &mut object
        ));
        assert!(
            allowed.contains(&rv),
            "{what}: got {}, expected one of {:?}",
            rv_name(rv),
            allowed.iter().map(|&rv| rv_name(rv)).collect::<Vec<_>>()
        );
    }
    let left = ok(session.find_objects(&[]));
    assert!(
        left.is_empty(),
        "rejected templates created objects: {left:?}"
    );
}

#[test]
fn reinitializing_a_token_erases_its_objects() {
    let f = fixture();
    let slot = f.ready_slot(SLOT_REINIT);
    {
        let session = f.user_session(slot);
        create(&session, &data_template("old-public", b"v", true, false));
        create(&session, &data_template("old-private", b"v", true, true));
    }
    init_token(&f.pkcs11, slot, "reinitialized");
    let session = f.user_session(slot);
    assert!(find_by_label(&session, "old-public").is_empty());
    assert!(find_by_label(&session, "old-private").is_empty());
    assert!(ok(session.find_objects(&[])).is_empty());
}

#[test]
fn token_objects_persist_across_finalize_and_initialize() {
    let name = test_name!();
    if !is_child(name) {
        let config = TestConfig::new(1, None);
        run_child(name, &config.path, &[]);
        return;
    }
    let pkcs11 = load_module();
    initialize(&pkcs11);
    let slot = ok(pkcs11.get_all_slots())[0];
    init_token(&pkcs11, slot, "persistence");
    {
        let session = user_session(&pkcs11, slot);
        create(
            &session,
            &data_template("kept-public", b"public value", true, false),
        );
        create(
            &session,
            &data_template("kept-private", b"private value", true, true),
        );
        create(
            &session,
            &data_template("gone", b"session value", false, false),
        );
    }
    ok(pkcs11.clone().finalize());
    initialize(&pkcs11);

    assert_eq!(ok(pkcs11.get_all_slots()), [slot]);
    assert_token_flags(slot, CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED, 0);
    let session = ok(pkcs11.open_ro_session(slot));
    let public = find_by_label(&session, "kept-public");
    assert_eq!(public.len(), 1);
    assert_eq!(attr_bytes(&session, public[0], CKA_VALUE), b"public value");
    assert!(find_by_label(&session, "kept-private").is_empty());
    assert!(find_by_label(&session, "gone").is_empty());

    ok(session.login(UserType::User, Some(&pin(USER_PIN))));
    let private = find_by_label(&session, "kept-private");
    assert_eq!(private.len(), 1);
    assert_eq!(
        attr_bytes(&session, private[0], CKA_VALUE),
        b"private value"
    );
    assert!(find_by_label(&session, "gone").is_empty());
}

#[test]
fn another_process_sees_token_objects() {
    let name = test_name!();
    if is_child(name) {
        // The child: the parent's configuration, the same slot, another process.
        let pkcs11 = load_module();
        initialize(&pkcs11);
        let slot = ok(pkcs11.get_all_slots())[SLOT_TWO_PROCESSES];
        let session = ok(pkcs11.open_rw_session(slot));
        let from_parent = find_by_label(&session, "from-parent");
        assert_eq!(from_parent.len(), 1, "the parent's object");
        assert_eq!(attr_bytes(&session, from_parent[0], CKA_VALUE), b"parent");
        ok(session.login(UserType::User, Some(&pin(USER_PIN))));
        create(&session, &data_template("from-child", b"child", true, true));
        return;
    }
    let f = fixture();
    let slot = f.ready_slot(SLOT_TWO_PROCESSES);
    let session = f.user_session(slot);
    create(
        &session,
        &data_template("from-parent", b"parent", true, false),
    );

    run_child(name, &f.conf, &[]);

    let from_child = find_by_label(&session, "from-child");
    assert_eq!(
        from_child.len(),
        1,
        "the child's object, seen without re-initializing"
    );
    assert_eq!(attr_bytes(&session, from_child[0], CKA_VALUE), b"child");
    assert!(attr_bool(&session, from_child[0], CKA_PRIVATE));
}
