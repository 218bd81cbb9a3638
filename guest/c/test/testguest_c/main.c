/*
 * The C runtime's test guest: every value type, sixteen parameters, host calls, failures, the
 * heap, and a door to the dispatcher for frames the host would never send (tests/c_guest.rs).
 */
#include "glint.h"

/* Round trips of every value type. */
GLINT_EXPORT(unit, rt_unit) {}
GLINT_EXPORT(i32, rt_i32, (i32, v)) { return v; }
GLINT_EXPORT(u32, rt_u32, (u32, v)) { return v; }
GLINT_EXPORT(i64, rt_i64, (i64, v)) { return v; }
GLINT_EXPORT(u64, rt_u64, (u64, v)) { return v; }
GLINT_EXPORT(f32, rt_f32, (f32, v)) { return v; }
GLINT_EXPORT(f64, rt_f64, (f64, v)) { return v; }
GLINT_EXPORT(bool, rt_bool, (bool, v)) { return v; }
GLINT_EXPORT(str, rt_string, (str, v)) { return v; }
GLINT_EXPORT(bytes, rt_bytes, (bytes, v)) { return v; }

/* A unit parameter between others, and an export under a name that is not a C identifier. */
GLINT_EXPORT(i32, unit_param, (i32, a), (unit, nothing), (i32, b)) {
    (void)nothing;
    return a - b;
}
GLINT_EXPORT_AS("rt:i32", i32, rt_i32_renamed, (i32, v)) { return v; }

/* Several parameters of different types, folded into one string (the float truncated). */
GLINT_EXPORT(str, mix, (i32, a), (u64, b), (str, c), (bool, d), (f64, e), (bytes, f)) {
    glint_buf out = GLINT_BUF_INIT;
    glint_buf_i64(&out, a);
    glint_buf_cstr(&out, "|");
    glint_buf_u64(&out, b);
    glint_buf_cstr(&out, "|");
    glint_buf_str(&out, c);
    glint_buf_cstr(&out, d ? "|true|" : "|false|");
    glint_buf_i64(&out, (int64_t)e);
    glint_buf_cstr(&out, "|");
    glint_buf_u64(&out, f.len);
    return glint_buf_finish(&out);
}

/* The most parameters a function may have. */
GLINT_EXPORT(u64, sum16, (u32, a0), (u32, a1), (u32, a2), (u32, a3), (u32, a4), (u32, a5), (u32, a6),
             (u32, a7), (u32, a8), (u32, a9), (u32, a10), (u32, a11), (u32, a12), (u32, a13), (u32, a14),
             (u32, a15)) {
    /* Weighted, so that arguments in the wrong order give another sum. */
    uint32_t v[16] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
    uint64_t sum = 0;
    for (int i = 0; i < 16; i++) sum += (uint64_t)(i + 1) * v[i];
    return sum;
}

/* A large result built in the guest. */
GLINT_EXPORT(bytes, make_bytes, (u64, len), (u32, fill)) {
    uint8_t *p = glint_scratch(len);
    if (!p) {
        glint_fail("out of memory");
        return (glint_bytes){0, 0};
    }
    memset(p, (int)fill, len);
    return (glint_bytes){p, len};
}

/* State. */
static uint64_t state;
GLINT_EXPORT(unit, set_state, (u64, v)) { state = v; }
GLINT_EXPORT(u64, get_state) { return state; }

/* Calls the host function `name` with no arguments, expecting a String, and reports what came
 * back: the dynamic form of a host call. */
GLINT_EXPORT(str, host_probe, (str, name)) {
    char *cname = glint_scratch(name.len + 1);
    if (!cname) {
        glint_fail("out of memory");
        return GLINT_STR("");
    }
    memcpy(cname, name.ptr, name.len);
    cname[name.len] = 0;
    glint_function f = {cname, "", 0, GLINT_TYPE_STR, 0};
    glint_value result;
    glint_buf out = GLINT_BUF_INIT;
    if (glint_host_call(&f, 0, &result)) {
        glint_buf_cstr(&out, "ok:");
        glint_buf_str(&out, result.str);
    } else {
        glint_buf_cstr(&out, "err:");
        glint_buf_u64(&out, glint_last_error()->code);
        glint_buf_cstr(&out, ":");
        glint_buf_str(&out, glint_last_error()->message);
    }
    return glint_buf_finish(&out);
}

/* Passes the host's error on (code HOST_CALL_FAILED): the caller gets the host function's. */
GLINT_EXPORT(str, host_fail_propagates) {
    glint_function f = {"fail", "", 0, GLINT_TYPE_STR, 0};
    glint_value result;
    if (!glint_host_call(&f, 0, &result)) glint_fail_host();
    return GLINT_STR("");
}

/* Handles the host's error and fails for a reason of its own that quotes it. */
GLINT_EXPORT(str, host_fail_own_error) {
    glint_function f = {"fail", "", 0, GLINT_TYPE_STR, 0};
    glint_value result;
    if (glint_host_call(&f, 0, &result)) return result.str;
    glint_buf b = GLINT_BUF_INIT;
    glint_buf_cstr(&b, "gave up after: ");
    glint_buf_str(&b, glint_last_error()->message);
    glint_fail_str(glint_buf_finish(&b));
    return GLINT_STR("");
}

/* A host call whose response has another type than the declared one: a local error. */
GLINT_EXPORT(str, host_wrong_type) {
    glint_function f = {"hello", "", 0, GLINT_TYPE_U64, 0}; /* `hello` returns a String */
    glint_value result;
    if (glint_host_call(&f, 0, &result)) return GLINT_STR("ok");
    glint_buf b = GLINT_BUF_INIT;
    glint_buf_u64(&b, glint_last_error()->code);
    glint_buf_cstr(&b, ":");
    glint_buf_str(&b, glint_last_error()->message);
    return glint_buf_finish(&b);
}

GLINT_EXPORT(u32, log_lines, (u32, n)) {
    for (uint32_t i = 0; i < n; i++) {
        glint_buf b = GLINT_BUF_INIT;
        glint_buf_cstr(&b, "line ");
        glint_buf_u64(&b, i);
        glint_log_str(GLINT_LOG_INFO, glint_buf_finish(&b));
    }
    return n;
}

/* Failures. */
GLINT_EXPORT(i32, returns_err, (str, message)) {
    glint_fail_str(message);
    return 0;
}
GLINT_EXPORT(i32, panics, (str, message)) { glint_abort_str(message); }
GLINT_EXPORT(unit, asserts, (i32, v)) { GLINT_ASSERT(v == 1); }
GLINT_EXPORT(str, bad_utf8) { return (glint_str){"\xff", 1}; }
GLINT_EXPORT(unit, double_free) {
    void *p = malloc(16);
    free(p);
    free(p);
}

/*
 * The heap: `rounds` random steps over 64 slots (malloc, calloc, realloc and free of 0 B to
 * 256 KiB), each block filled with a pattern that is checked before it is freed or moved. At the
 * end everything is freed and one block of nearly the whole heap must fit again, so freed blocks
 * were merged. Returns the number of bytes checked.
 */
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static uint64_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static bool filled(const uint8_t *p, size_t len, uint8_t seed) {
    for (size_t i = 0; i < len; i++) {
        if (p[i] != (uint8_t)(seed + i * 7)) return false;
    }
    return true;
}

static void fill(uint8_t *p, size_t from, size_t len, uint8_t seed) {
    for (size_t i = from; i < len; i++) p[i] = (uint8_t)(seed + i * 7);
}

GLINT_EXPORT(u64, heap, (u32, rounds)) {
    enum { SLOTS = 64 };
    uint8_t *ptr[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    uint8_t seed[SLOTS] = {0};
    uint64_t checked = 0;
    for (uint32_t round = 0; round < rounds; round++) {
        uint64_t r = next_random();
        size_t s = r % SLOTS;
        size_t size = (r >> 8) % 16 == 0 ? (size_t)((r >> 16) % (256 << 10)) : (size_t)((r >> 16) % 4096);
        if (ptr[s] && !filled(ptr[s], len[s], seed[s])) {
            glint_fail("a block's contents changed");
            return checked;
        }
        checked += len[s];
        if (ptr[s] && (r >> 40) % 2 == 0) { /* realloc keeps the common prefix */
            uint8_t *p = realloc(ptr[s], size);
            if (!p && size) continue; /* out of memory: the old block stays */
            size_t keep = size < len[s] ? size : len[s];
            if (size && !filled(p, keep, seed[s])) {
                glint_fail("realloc lost contents");
                return checked;
            }
            ptr[s] = size ? p : 0;
            len[s] = size;
            if (p) fill(p, keep, size, seed[s]);
        } else {
            free(ptr[s]);
            ptr[s] = (r >> 41) % 2 ? calloc(1, size) : malloc(size);
            len[s] = ptr[s] ? size : 0;
            seed[s] = (uint8_t)(r >> 48);
            if (ptr[s] && ((uintptr_t)ptr[s] % 16) != 0) {
                glint_fail("a block is not 16-byte aligned");
                return checked;
            }
            if (ptr[s] && (r >> 41) % 2) {
                for (size_t i = 0; i < size; i++) {
                    if (ptr[s][i]) {
                        glint_fail("calloc returned memory that is not zero");
                        return checked;
                    }
                }
            }
            if (ptr[s]) fill(ptr[s], 0, size, seed[s]);
        }
    }
    for (size_t s = 0; s < SLOTS; s++) {
        if (ptr[s] && !filled(ptr[s], len[s], seed[s])) {
            glint_fail("a block's contents changed");
            return checked;
        }
        free(ptr[s]);
    }
    size_t most = glint_boot_info()->heap_size - 64;
    void *all = malloc(most);
    if (!all) {
        glint_fail("the freed heap is fragmented");
        return checked;
    }
    free(all);
    if (malloc(glint_boot_info()->heap_size)) {
        glint_fail("malloc returned more than the heap");
        return checked;
    }
    return checked;
}

/* Faults. */
GLINT_EXPORT(u64, read_unmapped, (u64, addr)) { return *(volatile const uint64_t *)(uintptr_t)addr; }

/*
 * Puts `frame` (length prefix included, as given) at the start of the input buffer, runs the
 * runtime's dispatcher on it, and returns the frame it wrote to the output buffer. The current
 * call's own frame was copied out before this function ran, so overwriting it is harmless.
 */
void glint__dispatch(void);

GLINT_EXPORT(bytes, raw_call, (bytes, frame)) {
    const glint_boot *b = glint_boot_info();
    if (frame.len > b->input_size) {
        glint_fail("frame does not fit in the input buffer");
        return (glint_bytes){0, 0};
    }
    memcpy((void *)(uintptr_t)b->input_addr, frame.ptr, frame.len);
    glint__dispatch();
    const uint8_t *out = (const uint8_t *)(uintptr_t)b->output_addr;
    size_t n = 4 + ((size_t)out[0] | (size_t)out[1] << 8 | (size_t)out[2] << 16 | (size_t)out[3] << 24);
    uint8_t *copy = glint_scratch(n);
    if (!copy) {
        glint_fail("out of memory");
        return (glint_bytes){0, 0};
    }
    memcpy(copy, out, n);
    return (glint_bytes){copy, n};
}
