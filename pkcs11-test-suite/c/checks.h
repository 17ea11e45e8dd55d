/*
 * checks.h - shared by the C consumers of pkcs11-test-suite/c: the module's 3.2 function table,
 * one "ok - " / "not ok - " line per check, CK_RV names, and attribute reads. Each program
 * includes it once (its functions are static).
 */
#ifndef B4AE_TEST_CHECKS_H
#define B4AE_TEST_CHECKS_H

#include "b4ae_pkcs11.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;
static CK_FUNCTION_LIST_3_2 *p11;

static const char *rv_name(CK_RV rv)
{
    switch (rv) {
#define RV(x) \
    case x: \
        return #x
        RV(CKR_OK);
        RV(CKR_HOST_MEMORY);
        RV(CKR_SLOT_ID_INVALID);
        RV(CKR_GENERAL_ERROR);
        RV(CKR_FUNCTION_FAILED);
        RV(CKR_ARGUMENTS_BAD);
        RV(CKR_ATTRIBUTE_SENSITIVE);
        RV(CKR_ATTRIBUTE_TYPE_INVALID);
        RV(CKR_ATTRIBUTE_VALUE_INVALID);
        RV(CKR_DATA_LEN_RANGE);
        RV(CKR_DEVICE_ERROR);
        RV(CKR_ENCRYPTED_DATA_LEN_RANGE);
        RV(CKR_FUNCTION_NOT_SUPPORTED);
        RV(CKR_KEY_HANDLE_INVALID);
        RV(CKR_KEY_TYPE_INCONSISTENT);
        RV(CKR_KEY_FUNCTION_NOT_PERMITTED);
        RV(CKR_MECHANISM_INVALID);
        RV(CKR_MECHANISM_PARAM_INVALID);
        RV(CKR_OBJECT_HANDLE_INVALID);
        RV(CKR_OPERATION_ACTIVE);
        RV(CKR_OPERATION_NOT_INITIALIZED);
        RV(CKR_PIN_INCORRECT);
        RV(CKR_PIN_LOCKED);
        RV(CKR_SESSION_HANDLE_INVALID);
        RV(CKR_SIGNATURE_INVALID);
        RV(CKR_SIGNATURE_LEN_RANGE);
        RV(CKR_TEMPLATE_INCOMPLETE);
        RV(CKR_TEMPLATE_INCONSISTENT);
        RV(CKR_TOKEN_NOT_PRESENT);
        RV(CKR_USER_ALREADY_LOGGED_IN);
        RV(CKR_USER_NOT_LOGGED_IN);
        RV(CKR_BUFFER_TOO_SMALL);
        RV(CKR_CRYPTOKI_NOT_INITIALIZED);
        RV(CKR_CRYPTOKI_ALREADY_INITIALIZED);
        RV(CKR_PARAMETER_SET_NOT_SUPPORTED);
        RV(CKR_ENCRYPTED_DATA_INVALID);
#undef RV
    default:
        return "unknown CK_RV";
    }
}

/* One check: "ok - what" when cond holds, else "not ok - what: why". Returns cond. */
static int check(int cond, const char *what, const char *why_fmt, ...)
{
    if (cond) {
        printf("ok - %s\n", what);
    } else {
        va_list ap;
        failures++;
        printf("not ok - %s: ", what);
        va_start(ap, why_fmt);
        vprintf(why_fmt, ap);
        va_end(ap);
        printf("\n");
    }
    fflush(stdout);
    return cond;
}

/* A check that a call answered `want`. */
static int check_rv(CK_RV rv, CK_RV want, const char *what)
{
    return check(rv == want, what, "answers %s (0x%lX), not %s", rv_name(rv), rv, rv_name(want));
}

/* Reads a CK_ULONG attribute; CK_UNAVAILABLE_INFORMATION when it cannot. */
static __attribute__((unused)) CK_ULONG get_ulong(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type)
{
    CK_ULONG value = CK_UNAVAILABLE_INFORMATION;
    CK_ATTRIBUTE attribute = { type, &value, sizeof value };
    if (p11->C_GetAttributeValue(session, object, &attribute, 1) != CKR_OK) {
        return CK_UNAVAILABLE_INFORMATION;
    }
    return value;
}

/* Reads a byte-array attribute with the two-call convention; NULL on failure (*len: the length). */
static __attribute__((unused)) CK_BYTE *get_bytes(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                          CK_ULONG *len)
{
    CK_ATTRIBUTE attribute = { type, NULL, 0 };
    CK_RV rv = p11->C_GetAttributeValue(session, object, &attribute, 1);
    *len = 0;
    if (rv != CKR_OK || attribute.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
        printf("# C_GetAttributeValue(0x%lX) answers %s\n", type, rv_name(rv));
        return NULL;
    }
    attribute.pValue = malloc(attribute.ulValueLen ? attribute.ulValueLen : 1);
    if (attribute.pValue == NULL) {
        return NULL;
    }
    rv = p11->C_GetAttributeValue(session, object, &attribute, 1);
    if (rv != CKR_OK) {
        printf("# C_GetAttributeValue(0x%lX) answers %s\n", type, rv_name(rv));
        free(attribute.pValue);
        return NULL;
    }
    *len = attribute.ulValueLen;
    return attribute.pValue;
}

#endif
