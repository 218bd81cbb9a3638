/* Imports, declared in two files: identical declarations are listed once. */
#include "glint.h"

/* Registered by the tests' builder (tests/common): `add(i32, i32) -> i32`. */
GLINT_IMPORT(i32, add, (i32, a), (i32, b));
/* A name that is not a C identifier, registered by tests/c_guest.rs. */
GLINT_IMPORT_AS("glint:test/concat@1", str, concat, (str, a), (bytes, b));
/* With a unit result (registered by tests/c_guest.rs as `nop`). */
GLINT_IMPORT(unit, nop);

GLINT_EXPORT(i32, import_add, (i32, a), (i32, b)) {
    int32_t sum = 0;
    if (!add(a, b, &sum)) glint_fail_host();
    return sum;
}

GLINT_EXPORT(str, import_concat, (str, a), (bytes, b)) {
    glint_str joined;
    if (!nop(0) || !concat(a, b, &joined)) {
        glint_fail_host();
        return GLINT_STR("");
    }
    return joined;
}
