/*
 * glint.h: write glint guests in C.
 *
 * A guest is a freestanding, statically linked x86-64 program that the glint host runs at CPL3 in
 * its own tiny VM. This header and glint.c (the runtime) give it what the Rust library
 * glint-guest gives a Rust guest: the entry point, the ABI note, the function table, the call
 * dispatcher, typed host calls, log, abort, a heap, and the few libc functions compilers call.
 * No libc is needed. The byte-level contract is docs/ABI.md; the numbers are those of the Rust
 * crate glint-abi.
 *
 *     #include "glint.h"
 *
 *     GLINT_IMPORT(str, greeting, (str, name));      // a host function, checked at init
 *
 *     GLINT_EXPORT(i32, add, (i32, a), (i32, b)) {   // int32_t add(int32_t a, int32_t b)
 *         return a + b;
 *     }
 *
 *     GLINT_EXPORT(str, greet, (str, name)) {
 *         glint_str prefix;
 *         if (!greeting(name, &prefix)) {             // the host call failed
 *             glint_fail_host();                      // pass the host's error on
 *             return GLINT_STR("");
 *         }
 *         glint_buf out = GLINT_BUF_INIT;
 *         glint_buf_str(&out, prefix);
 *         glint_buf_cstr(&out, "!");
 *         return glint_buf_finish(&out);              // freed by the runtime after the call
 *     }
 *
 * Types are written by their wire names: unit, i32, u32, i64, u64, f32, f64, bool, str
 * (glint_str: UTF-8 text, not NUL-terminated) and bytes (glint_bytes). A function takes at most
 * 16 parameters (MAX_PARAMS). Build with the flags in glint.mk (docs/ABI.md, Appendix A).
 *
 * Lifetimes. Arguments of type str and bytes, the results of host calls, glint_scratch() memory
 * and what glint_buf_finish() returns stay valid until the runtime has written the current
 * call's outcome; copy what must outlive the call (with malloc). Statics and the heap persist
 * from call to call, until the embedder restores a snapshot.
 */
#ifndef GLINT_H
#define GLINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this runtime implements (glint_abi::ABI_VERSION); carried in the ABI note. */
#define GLINT_ABI_VERSION 2

/* ---- Values ------------------------------------------------------------------------------ */

/* UTF-8 text: `len` bytes at `ptr`, no terminator. */
typedef struct glint_str {
    const char *ptr;
    size_t len;
} glint_str;

/* Bytes: `len` bytes at `ptr`. */
typedef struct glint_bytes {
    const uint8_t *ptr;
    size_t len;
} glint_bytes;

/* The unit type `()` as a parameter. (A unit result is `void`.) */
typedef struct glint_unit {
    uint8_t unused;
} glint_unit;

/* A value of any wire type; which member is live follows from the signature. */
typedef union glint_value {
    glint_unit unit;
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f32;
    double f64;
    bool b;
    glint_str str;
    glint_bytes bytes;
} glint_value;

/* The wire tags (docs/ABI.md §6.1). */
enum glint_type {
    GLINT_TYPE_UNIT = 0,
    GLINT_TYPE_I32 = 1,
    GLINT_TYPE_U32 = 2,
    GLINT_TYPE_I64 = 3,
    GLINT_TYPE_U64 = 4,
    GLINT_TYPE_F32 = 5,
    GLINT_TYPE_F64 = 6,
    GLINT_TYPE_BOOL = 7,
    GLINT_TYPE_STR = 8,
    GLINT_TYPE_BYTES = 9,
};

/* A string literal as a glint_str. */
#define GLINT_STR(literal) ((glint_str){(literal), sizeof(literal) - 1})
/* A NUL-terminated string as a glint_str (without the NUL). */
glint_str glint_cstr(const char *s);
/* Whether `a` holds exactly the bytes of the NUL-terminated `b`. */
bool glint_str_eq(glint_str a, const char *b);

/* ---- Exports and imports ----------------------------------------------------------------- */

/* One entry of the function table: an export (with `thunk`) or an import (`thunk` is NULL). */
typedef struct glint_function {
    const char *name;    /* NUL-terminated, at most 255 bytes */
    const char *params;  /* `nparams` wire tags */
    uint8_t nparams;     /* at most 16 */
    uint8_t result;      /* wire tag */
    void (*thunk)(const glint_value *args, glint_value *result);
} glint_function;

/*
 * GLINT_EXPORT(result_type, name, (type, param)...) { body }
 *
 * Defines `static <C result type> name(<C params>)` and lists it in the function table as
 * "name". Parameters are (type, name) pairs; C types: unit -> glint_unit, i32 -> int32_t,
 * u32 -> uint32_t, i64 -> int64_t, u64 -> uint64_t, f32 -> float, f64 -> double, bool -> bool,
 * str -> glint_str, bytes -> glint_bytes; a unit result is void.
 *
 * To fail the call instead of returning a value, call glint_fail() or glint_fail_host() and
 * return anything: the runtime reports the failure and ignores the value.
 */
#define GLINT_EXPORT(result_type, name, ...) GLINT_EXPORT_AS(#name, result_type, name, ##__VA_ARGS__)
/* As GLINT_EXPORT, under another name in the table (any UTF-8 of at most 255 bytes). */
#define GLINT_EXPORT_AS(export_name, result_type, name, ...)                                            \
    GLINT__EXPORT(export_name, result_type, name,                                                      \
                  GLINT__COUNT(_, ##__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), \
                  ##__VA_ARGS__)

/*
 * GLINT_IMPORT(result_type, name, (type, param)...);
 *
 * Declares the host function "name", which the host checks at initialisation (a missing one or
 * one with other types refuses the guest, naming it), and defines a typed wrapper:
 *
 *     static bool name(<C params>, <C result type> *result);
 *
 * It returns true with the result stored in *result (when `result` is not NULL), or false when
 * the call failed: glint_last_error() then says why. For a unit result, `result` is a void *
 * and ignored. Declare an import once per file that calls it; identical declarations in several
 * files are listed once.
 */
#define GLINT_IMPORT(result_type, name, ...) GLINT_IMPORT_AS(#name, result_type, name, ##__VA_ARGS__)
/* As GLINT_IMPORT, for a host function whose name is not a C identifier ("glint:kv/get@1"). */
#define GLINT_IMPORT_AS(import_name, result_type, name, ...)                                            \
    GLINT__IMPORT(import_name, result_type, name,                                                      \
                  GLINT__COUNT(_, ##__VA_ARGS__, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), \
                  ##__VA_ARGS__)

/*
 * Calls the host function `f` describes (an import, or any descriptor made at run time for a
 * dynamic call) with `f->nparams` arguments of its parameter types. Returns true and stores the
 * result (of type `f->result`) in *result, or returns false; glint_last_error() then holds the
 * host's code and message, or code GLINT_HOST_LOCAL when the runtime itself could not make the
 * call (arguments too large, a response that does not decode or has another type).
 */
bool glint_host_call(const glint_function *f, const glint_value *args, glint_value *result);

/* Host-call error codes (glint_abi::code::HostCallError) and the local one (code 0). */
enum glint_host_error {
    GLINT_HOST_LOCAL = 0,
    GLINT_HOST_NOT_FOUND = 1,
    GLINT_HOST_BAD_ARGUMENTS = 2,
    GLINT_HOST_FAILED = 3,
    GLINT_HOST_REFUSED = 4,
};

/* Why the last failed host call failed: the code and the host's message (bytes, as sent). */
typedef struct glint_error {
    uint32_t code;
    glint_str message;
} glint_error;

const glint_error *glint_last_error(void);

/* ---- Failing a call, log, abort ---------------------------------------------------------- */

/* Call error codes (glint_abi::code::CallError). */
enum glint_call_error {
    GLINT_NO_SUCH_FUNCTION = 1,
    GLINT_BAD_ARGUMENTS = 2,
    GLINT_FUNCTION_FAILED = 3,
    GLINT_RESULT_TOO_LARGE = 4,
    GLINT_HOST_CALL_FAILED = 5,
};

/* Fails the current call with a message of its own: the caller gets Error::GuestFunction. The
 * message is copied. The last call of glint_fail* in a call wins. */
void glint_fail(const char *message);
void glint_fail_str(glint_str message);
/* Fails the current call because the last host call failed, passing its error on: the caller
 * gets the host function's own error (Error::HostFunction), as `?` does in Rust. */
void glint_fail_host(void);

/* Log levels (glint_abi::code::LogLevel). */
enum glint_log_level {
    GLINT_LOG_ERROR = 1,
    GLINT_LOG_WARN = 2,
    GLINT_LOG_INFO = 3,
    GLINT_LOG_DEBUG = 4,
    GLINT_LOG_TRACE = 5,
};

/* Writes a log line; a line longer than the output buffer is cut. */
void glint_log(enum glint_log_level level, const char *message);
void glint_log_str(enum glint_log_level level, glint_str message);

/* Gives up: the call fails with Error::GuestPanic carrying the message, and the sandbox is
 * poisoned until it is restored. Never returns. */
_Noreturn void glint_abort(const char *message);
_Noreturn void glint_abort_str(glint_str message);

/* Aborts with "assertion failed: <cond> (at <file>:<line>)" when `cond` is false. */
#define GLINT_ASSERT(cond) \
    ((cond) ? (void)0 : glint_abort("assertion failed: " #cond " (at " GLINT__FILE ":" GLINT__XSTR(__LINE__) ")"))
#ifdef __FILE_NAME__
#define GLINT__FILE __FILE_NAME__ /* without the directories */
#else
#define GLINT__FILE __FILE__
#endif

/* ---- Memory ------------------------------------------------------------------------------ */

/* The heap: the memory the host reserves for it (boot info), 16-byte aligned blocks. */
void *malloc(size_t size);
void *calloc(size_t count, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);

/* `size` bytes that the runtime frees once the current call's outcome is written (NULL when the
 * heap is exhausted). */
void *glint_scratch(size_t size);

/* A growing buffer for building text or bytes; aborts when the heap is exhausted, as Rust's
 * String does. Start from GLINT_BUF_INIT. */
typedef struct glint_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} glint_buf;

#define GLINT_BUF_INIT {0, 0, 0}

void glint_buf_put(glint_buf *b, const void *data, size_t len);
void glint_buf_byte(glint_buf *b, uint8_t byte);
void glint_buf_cstr(glint_buf *b, const char *s);
void glint_buf_str(glint_buf *b, glint_str s);
void glint_buf_bytes(glint_buf *b, glint_bytes s);
void glint_buf_u64(glint_buf *b, uint64_t v); /* in decimal */
void glint_buf_i64(glint_buf *b, int64_t v);  /* in decimal */
/* Hands the buffer's memory to the runtime, which frees it after the current call, and returns
 * its contents; the buffer is empty again. */
glint_str glint_buf_finish(glint_buf *b);
glint_bytes glint_buf_finish_bytes(glint_buf *b);
/* Frees the buffer's memory. */
void glint_buf_free(glint_buf *b);

/* What compilers emit calls to (the runtime defines them). */
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* ---- HTTP handlers (docs/ABI.md, Appendix C) --------------------------------------------- */

/*
 * An HTTP handler guest exports `handle(bytes) -> bytes`: the argument is an encoded request,
 * the result an encoded response (glint serve routes requests to it). GLINT_HTTP_HANDLER defines
 * that export around a function of yours:
 *
 *     GLINT_HTTP_HANDLER(handle, req) {
 *         glint_header type = {GLINT_STR("content-type"), GLINT_BYTES("text/plain")};
 *         glint_http_response res = {200, &type, 1, GLINT_BYTES("hi\n")};
 *         return res;                                 // encoded by the runtime
 *     }
 *
 * The request is decoded and checked before your function runs (a malformed one fails the call),
 * its fields stay valid until the call ends, and the response is checked as it is encoded (a
 * status outside 100..=999, a header name that is not a token, CR, LF or NUL in a value fail the
 * call). To fail the call yourself (the server answers 500 and logs the message), call
 * glint_fail() and return anything. The same types serve outbound requests (the capability
 * `glint:http/send@1`) through the encode/decode functions below.
 */
typedef struct glint_header {
    glint_str name;    /* a token; the server sends lowercase names */
    glint_bytes value; /* anything but CR, LF and NUL */
} glint_header;

typedef struct glint_http_request {
    glint_str method; /* a token of at most 32 bytes, e.g. "GET" */
    glint_str target; /* visible ASCII: the path and query as received, or an absolute URL outbound */
    const glint_header *headers;
    size_t header_count;
    glint_bytes body;
} glint_http_request;

typedef struct glint_http_response {
    uint32_t status; /* 100..=999 */
    const glint_header *headers;
    size_t header_count;
    glint_bytes body;
} glint_http_response;

/* A string literal as glint_bytes. */
#define GLINT_BYTES(literal) ((glint_bytes){(const uint8_t *)(literal), sizeof(literal) - 1})

#define GLINT_HTTP_HANDLER(name, request)                                                                  \
    static glint_http_response name(const glint_http_request *request);                                   \
    GLINT_EXPORT_AS("handle", bytes, glint__http_##name, (bytes, glint__request)) {                       \
        return glint__http_serve(glint__request, name);                                                   \
    }                                                                                                      \
    static glint_http_response name(const glint_http_request *request)

/* Decode and check a request or response (headers in scratch memory, fields pointing into
 * `bytes`); false with the reason in *error (glint_abi::http's message). */
bool glint_http_decode_request(glint_bytes bytes, glint_http_request *request, glint_str *error);
bool glint_http_decode_response(glint_bytes bytes, glint_http_response *response, glint_str *error);
/* Check and encode a request or response into scratch memory; false with the reason in *error. */
bool glint_http_encode_request(const glint_http_request *request, glint_bytes *bytes, glint_str *error);
bool glint_http_encode_response(const glint_http_response *response, glint_bytes *bytes, glint_str *error);

/* The value of the first header named `name` (ASCII case-insensitive), or NULL. */
const glint_bytes *glint_http_header(const glint_header *headers, size_t count, const char *name);
/* The target up to `?`, and the part after it (false when there is no `?`). */
glint_str glint_http_path(glint_str target);
bool glint_http_query(glint_str target, glint_str *query);
/* Percent-decodes `s` (`%XX`, `+` as space) into scratch memory; false for a bad escape or a
 * result that is not UTF-8. */
bool glint_http_percent_decode(glint_str s, glint_str *out);

glint_bytes glint__http_serve(glint_bytes request, glint_http_response (*handler)(const glint_http_request *));

/* ---- Boot info --------------------------------------------------------------------------- */

/* What the host tells the guest about its memory (docs/ABI.md §3.4), checked at entry. */
typedef struct glint_boot {
    uint64_t magic, abi_version, memory_size;
    uint64_t input_addr, input_size, output_addr, output_size;
    uint64_t heap_addr, heap_size, stack_top, stack_size;
} glint_boot;

const glint_boot *glint_boot_info(void);

/* ---- Internals of the macros above ------------------------------------------------------- */

#define GLINT__STR(x) #x
#define GLINT__XSTR(x) GLINT__STR(x)
#define GLINT__CAT(a, b) GLINT__CAT_(a, b)
#define GLINT__CAT_(a, b) a##b
#define GLINT__CALL(m, args) m args
#define GLINT__COUNT(_, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, n, ...) n

/* Per wire type: tag (as a one-byte string and as a number), parameter C type, result C type, union member, how
 * a thunk stores a result, and how an import wrapper hands one back. `bool` also as `_Bool`,
 * which it becomes when <stdbool.h> defines it as a macro and an argument is expanded. */
#define GLINT__TAG_unit "\x00"
#define GLINT__TAG_i32 "\x01"
#define GLINT__TAG_u32 "\x02"
#define GLINT__TAG_i64 "\x03"
#define GLINT__TAG_u64 "\x04"
#define GLINT__TAG_f32 "\x05"
#define GLINT__TAG_f64 "\x06"
#define GLINT__TAG_bool "\x07"
#define GLINT__TAG__Bool "\x07"
#define GLINT__TAG_str "\x08"
#define GLINT__TAG_bytes "\x09"

#define GLINT__N_unit 0
#define GLINT__N_i32 1
#define GLINT__N_u32 2
#define GLINT__N_i64 3
#define GLINT__N_u64 4
#define GLINT__N_f32 5
#define GLINT__N_f64 6
#define GLINT__N_bool 7
#define GLINT__N__Bool 7
#define GLINT__N_str 8
#define GLINT__N_bytes 9

#define GLINT__PT_unit glint_unit
#define GLINT__PT_i32 int32_t
#define GLINT__PT_u32 uint32_t
#define GLINT__PT_i64 int64_t
#define GLINT__PT_u64 uint64_t
#define GLINT__PT_f32 float
#define GLINT__PT_f64 double
#define GLINT__PT_bool _Bool
#define GLINT__PT__Bool _Bool
#define GLINT__PT_str glint_str
#define GLINT__PT_bytes glint_bytes

#define GLINT__RT_unit void
#define GLINT__RT_i32 int32_t
#define GLINT__RT_u32 uint32_t
#define GLINT__RT_i64 int64_t
#define GLINT__RT_u64 uint64_t
#define GLINT__RT_f32 float
#define GLINT__RT_f64 double
#define GLINT__RT_bool _Bool
#define GLINT__RT__Bool _Bool
#define GLINT__RT_str glint_str
#define GLINT__RT_bytes glint_bytes

#define GLINT__F_unit unit
#define GLINT__F_i32 i32
#define GLINT__F_u32 u32
#define GLINT__F_i64 i64
#define GLINT__F_u64 u64
#define GLINT__F_f32 f32
#define GLINT__F_f64 f64
#define GLINT__F_bool b
#define GLINT__F__Bool b
#define GLINT__F_str str
#define GLINT__F_bytes bytes

#define GLINT__STORE_unit(r, call) (void)(r), (call)
#define GLINT__STORE_i32(r, call) (r)->i32 = (call)
#define GLINT__STORE_u32(r, call) (r)->u32 = (call)
#define GLINT__STORE_i64(r, call) (r)->i64 = (call)
#define GLINT__STORE_u64(r, call) (r)->u64 = (call)
#define GLINT__STORE_f32(r, call) (r)->f32 = (call)
#define GLINT__STORE_f64(r, call) (r)->f64 = (call)
#define GLINT__STORE_bool(r, call) (r)->b = (call)
#define GLINT__STORE__Bool(r, call) (r)->b = (call)
#define GLINT__STORE_str(r, call) (r)->str = (call)
#define GLINT__STORE_bytes(r, call) (r)->bytes = (call)

#define GLINT__OUT_unit void
#define GLINT__OUT_i32 int32_t
#define GLINT__OUT_u32 uint32_t
#define GLINT__OUT_i64 int64_t
#define GLINT__OUT_u64 uint64_t
#define GLINT__OUT_f32 float
#define GLINT__OUT_f64 double
#define GLINT__OUT_bool _Bool
#define GLINT__OUT__Bool _Bool
#define GLINT__OUT_str glint_str
#define GLINT__OUT_bytes glint_bytes

#define GLINT__GIVE_unit(out, v) (void)(out)
#define GLINT__GIVE_i32(out, v) *(out) = (v).i32
#define GLINT__GIVE_u32(out, v) *(out) = (v).u32
#define GLINT__GIVE_i64(out, v) *(out) = (v).i64
#define GLINT__GIVE_u64(out, v) *(out) = (v).u64
#define GLINT__GIVE_f32(out, v) *(out) = (v).f32
#define GLINT__GIVE_f64(out, v) *(out) = (v).f64
#define GLINT__GIVE_bool(out, v) *(out) = (v).b
#define GLINT__GIVE__Bool(out, v) *(out) = (v).b
#define GLINT__GIVE_str(out, v) *(out) = (v).str
#define GLINT__GIVE_bytes(out, v) *(out) = (v).bytes

#define GLINT__VOID_IF_0 void
#define GLINT__COMMA_IF_0
#define GLINT__VOID_IF_1
#define GLINT__COMMA_IF_1 ,
#define GLINT__VOID_IF_2
#define GLINT__COMMA_IF_2 ,
#define GLINT__VOID_IF_3
#define GLINT__COMMA_IF_3 ,
#define GLINT__VOID_IF_4
#define GLINT__COMMA_IF_4 ,
#define GLINT__VOID_IF_5
#define GLINT__COMMA_IF_5 ,
#define GLINT__VOID_IF_6
#define GLINT__COMMA_IF_6 ,
#define GLINT__VOID_IF_7
#define GLINT__COMMA_IF_7 ,
#define GLINT__VOID_IF_8
#define GLINT__COMMA_IF_8 ,
#define GLINT__VOID_IF_9
#define GLINT__COMMA_IF_9 ,
#define GLINT__VOID_IF_10
#define GLINT__COMMA_IF_10 ,
#define GLINT__VOID_IF_11
#define GLINT__COMMA_IF_11 ,
#define GLINT__VOID_IF_12
#define GLINT__COMMA_IF_12 ,
#define GLINT__VOID_IF_13
#define GLINT__COMMA_IF_13 ,
#define GLINT__VOID_IF_14
#define GLINT__COMMA_IF_14 ,
#define GLINT__VOID_IF_15
#define GLINT__COMMA_IF_15 ,
#define GLINT__VOID_IF_16
#define GLINT__COMMA_IF_16 ,

/* Maps m(index, pair) over up to 16 (type, name) pairs, separated by commas (C) or not (S). */
#define GLINT__MAPC(n, m, ...) GLINT__CAT(GLINT__MAPC_, n)(m, 0, ##__VA_ARGS__)
#define GLINT__MAPS(n, m, ...) GLINT__CAT(GLINT__MAPS_, n)(m, 0, ##__VA_ARGS__)
#define GLINT__MAPC_0(m, i)
#define GLINT__MAPC_1(m, i, a) m(i, a)
#define GLINT__MAPC_2(m, i, a, ...) m(i, a), GLINT__MAPC_1(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_3(m, i, a, ...) m(i, a), GLINT__MAPC_2(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_4(m, i, a, ...) m(i, a), GLINT__MAPC_3(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_5(m, i, a, ...) m(i, a), GLINT__MAPC_4(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_6(m, i, a, ...) m(i, a), GLINT__MAPC_5(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_7(m, i, a, ...) m(i, a), GLINT__MAPC_6(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_8(m, i, a, ...) m(i, a), GLINT__MAPC_7(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_9(m, i, a, ...) m(i, a), GLINT__MAPC_8(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_10(m, i, a, ...) m(i, a), GLINT__MAPC_9(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_11(m, i, a, ...) m(i, a), GLINT__MAPC_10(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_12(m, i, a, ...) m(i, a), GLINT__MAPC_11(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_13(m, i, a, ...) m(i, a), GLINT__MAPC_12(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_14(m, i, a, ...) m(i, a), GLINT__MAPC_13(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_15(m, i, a, ...) m(i, a), GLINT__MAPC_14(m, i + 1, __VA_ARGS__)
#define GLINT__MAPC_16(m, i, a, ...) m(i, a), GLINT__MAPC_15(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_0(m, i)
#define GLINT__MAPS_1(m, i, a) m(i, a)
#define GLINT__MAPS_2(m, i, a, ...) m(i, a) GLINT__MAPS_1(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_3(m, i, a, ...) m(i, a) GLINT__MAPS_2(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_4(m, i, a, ...) m(i, a) GLINT__MAPS_3(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_5(m, i, a, ...) m(i, a) GLINT__MAPS_4(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_6(m, i, a, ...) m(i, a) GLINT__MAPS_5(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_7(m, i, a, ...) m(i, a) GLINT__MAPS_6(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_8(m, i, a, ...) m(i, a) GLINT__MAPS_7(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_9(m, i, a, ...) m(i, a) GLINT__MAPS_8(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_10(m, i, a, ...) m(i, a) GLINT__MAPS_9(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_11(m, i, a, ...) m(i, a) GLINT__MAPS_10(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_12(m, i, a, ...) m(i, a) GLINT__MAPS_11(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_13(m, i, a, ...) m(i, a) GLINT__MAPS_12(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_14(m, i, a, ...) m(i, a) GLINT__MAPS_13(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_15(m, i, a, ...) m(i, a) GLINT__MAPS_14(m, i + 1, __VA_ARGS__)
#define GLINT__MAPS_16(m, i, a, ...) m(i, a) GLINT__MAPS_15(m, i + 1, __VA_ARGS__)

/* What each (type, name) pair becomes. */
#define GLINT__PDECL(i, p) GLINT__CALL(GLINT__PDECL_, (i, GLINT__UNPACK p))
#define GLINT__PDECL_(i, t, n) GLINT__PT_##t n
#define GLINT__PTAG(i, p) GLINT__CALL(GLINT__PTAG_, (i, GLINT__UNPACK p))
#define GLINT__PTAG_(i, t, n) GLINT__TAG_##t
#define GLINT__PARG(i, p) GLINT__CALL(GLINT__PARG_, (i, GLINT__UNPACK p))
#define GLINT__PARG_(i, t, n) glint__a[i].GLINT__F_##t
#define GLINT__PINIT(i, p) GLINT__CALL(GLINT__PINIT_, (i, GLINT__UNPACK p))
#define GLINT__PINIT_(i, t, n) {.GLINT__F_##t = (n)}
#define GLINT__UNPACK(t, n) t, n

/* GCC keeps the entries in source order only when asked (clang always does). */
#if defined(__GNUC__) && !defined(__clang__)
#define GLINT__NO_REORDER , no_reorder
#else
#define GLINT__NO_REORDER
#endif

/* The function table is collected from two link sections of pointers, one per entry, wherever
 * the entries are defined; glint.c adds a NULL to each, so both exist in every program. */
#define GLINT__ENTRY(sec, id, fn)                                                                   \
    __attribute__((used, section(sec) GLINT__NO_REORDER)) static const glint_function *GLINT__CAT(glint__entry_, id) = &(fn)

#define GLINT__EXPORT(export_name, rt, name, n, ...)                                                   \
    static GLINT__RT_##rt name(GLINT__CAT(GLINT__VOID_IF_, n) GLINT__MAPC(n, GLINT__PDECL, ##__VA_ARGS__)); \
    static void glint__thunk_##name(const glint_value *glint__a, glint_value *glint__r) {              \
        (void)glint__a;                                                                                 \
        GLINT__STORE_##rt(glint__r, name(GLINT__MAPC(n, GLINT__PARG, ##__VA_ARGS__)));                 \
    }                                                                                                   \
    static const glint_function glint__export_##name = {                                                \
        export_name, "" GLINT__MAPS(n, GLINT__PTAG, ##__VA_ARGS__), n, GLINT__N_##rt, glint__thunk_##name}; \
    GLINT__ENTRY("glint_exports", export_##name, glint__export_##name);                                \
    static GLINT__RT_##rt name(GLINT__CAT(GLINT__VOID_IF_, n) GLINT__MAPC(n, GLINT__PDECL, ##__VA_ARGS__))

#define GLINT__IMPORT(import_name, rt, name, n, ...)                                                   \
    static const glint_function glint__import_##name = {                                                \
        import_name, "" GLINT__MAPS(n, GLINT__PTAG, ##__VA_ARGS__), n, GLINT__N_##rt, 0};          \
    GLINT__ENTRY("glint_imports", import_##name, glint__import_##name);                                \
    __attribute__((unused)) static bool name(GLINT__MAPC(n, GLINT__PDECL, ##__VA_ARGS__)                \
                                                 GLINT__CAT(GLINT__COMMA_IF_, n) GLINT__OUT_##rt *glint__out) { \
        const glint_value glint__args[] = {GLINT__MAPC(n, GLINT__PINIT, ##__VA_ARGS__) GLINT__CAT(GLINT__COMMA_IF_, n){{0}}}; \
        glint_value glint__res;                                                                         \
        if (!glint_host_call(&glint__import_##name, glint__args, &glint__res)) return 0;               \
        if (glint__out) GLINT__GIVE_##rt(glint__out, glint__res);                                       \
        return 1;                                                                                       \
    }                                                                                                   \
    typedef int glint__import_semicolon_##name

#ifdef __cplusplus
}
#endif

#endif /* GLINT_H */
