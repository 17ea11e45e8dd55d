/*
 * checks.h - shared by the C consumers of pkcs11-test-suite/c: the module's 3.2 function table,
 * one "ok - " / "not ok - " line per check, CK_RV names, and attribute reads. Each program
 * includes it once (its functions are static).
 */
#ifndef B4AE_TEST_CHECKS_H
#define B4AE_TEST_CHECKS_H

#include "b4ae_pkcs11.h"
#include "rv_name.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int failures;
static CK_FUNCTION_LIST_3_2 *p11;

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
