/*
 * The example C guest: the functions of the Rust example guest (guest/bins/examples/hello),
 * written against glint.h. The host's hello test suite (tests/hello.rs) runs against both.
 */
#include "glint.h"

/* The embedder registers this: it returns a greeting prefix for `name`. */
GLINT_IMPORT(str, greeting, (str, name));

GLINT_EXPORT(i32, add, (i32, a), (i32, b)) {
    return (int32_t)((uint32_t)a + (uint32_t)b); /* wraps, as Rust's wrapping_add */
}

/* Asks the host for a greeting prefix, so the call crosses the boundary twice. */
GLINT_EXPORT(str, greet, (str, name)) {
    glint_str prefix;
    if (!greeting(name, &prefix)) {
        glint_fail_host(); /* the caller gets the host function's own error */
        return GLINT_STR("");
    }
    glint_buf line = GLINT_BUF_INIT;
    glint_buf_cstr(&line, "greeting ");
    glint_buf_str(&line, name);
    glint_log_str(GLINT_LOG_INFO, glint_buf_finish(&line));

    glint_buf out = GLINT_BUF_INIT;
    glint_buf_str(&out, prefix);
    glint_buf_cstr(&out, ", ");
    glint_buf_str(&out, name);
    glint_buf_cstr(&out, "!");
    return glint_buf_finish(&out);
}

GLINT_EXPORT(bytes, echo, (bytes, data)) {
    return data; /* valid until the outcome is written */
}

/* Floats work: SSE is available at CPL3. Newton's square root, as the Rust guest computes it. */
GLINT_EXPORT(f64, hypot, (f64, a), (f64, b)) {
    double s = a * a + b * b;
    if (s == 0.0) return 0.0;
    double x = s;
    for (int i = 0; i < 64; i++) x = 0.5 * (x + s / x);
    return x;
}

/* State persists across calls on the same sandbox, until it is restored. */
static uint64_t counter;

GLINT_EXPORT(u64, count) {
    return ++counter;
}

GLINT_EXPORT(i32, fail, (str, message)) {
    glint_abort_str(message);
}

/* Reads the u64 at `addr`: an address the guest has no page for faults, which the host reports
 * as Error::GuestFault. */
GLINT_EXPORT(u64, peek, (u64, addr)) {
    return *(volatile const uint64_t *)(uintptr_t)addr;
}
