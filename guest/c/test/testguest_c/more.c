/* A second declaration of an import main.c's neighbour declares too. */
#include "glint.h"

GLINT_IMPORT(i32, add, (i32, a), (i32, b));

GLINT_EXPORT(i32, import_add_twice, (i32, a)) {
    int32_t once = 0, twice = 0;
    if (!add(a, a, &once) || !add(once, once, &twice)) glint_fail_host();
    return twice;
}
