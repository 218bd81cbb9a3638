/*
 * glint.c: the runtime of a glint C guest (see glint.h and docs/ABI.md).
 *
 * It does what the Rust library glint-guest does (docs/ABI.md, Appendix B), with the same checks
 * and the same messages: the entry point, the ABI note, the boot-info check, the function table,
 * the call loop, host calls, log, abort, the heap and the libc functions compilers call. Every
 * length read from the host is checked against the buffer it lies in before it is used.
 */
#include "glint.h"

#if !defined(__x86_64__) || !defined(__ELF__)
#error "a glint guest is an x86-64 ELF program: build it with the flags in glint.mk"
#endif

#define BOOT_INFO_SIZE 88
#define BOOT_MAGIC 0x746e696c675f6f62ULL /* "bo_glint" */
#define PORT_RETURN 0xE0
#define PORT_HOST_CALL 0xE1
#define PORT_ABORT 0xE2
#define PORT_LOG 0xE3
#define MAX_NAME_LEN 255
#define MAX_PARAMS 16
#define MAX_FUNCTIONS 1024
#define ABORT_PANIC 1

/* GCC may turn the loops of memcmp and strlen into calls to themselves. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_LOOP_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define NO_LOOP_CALLS
#endif

/* ---- Entry and ABI note ------------------------------------------------------------------ */

/* The ABI-version note (docs/ABI.md §2.4), 4-byte aligned so no 8-aligned PT_NOTE takes it. The
 * entry point: rdi holds the boot-info address, rsp the top of memory; align the stack, clear
 * the frame pointer so backtraces end here, and never return. */
__asm__(".pushsection .note.glint,\"a\",@note\n"
        ".balign 4\n"
        ".long 6, 4, 0x544e4c47\n" /* n_namesz, n_descsz, n_type "GLNT" */
        ".asciz \"glint\"\n"
        ".balign 4\n"
        ".long " GLINT__XSTR(GLINT_ABI_VERSION) "\n"
        ".popsection\n"
        ".pushsection .text\n"
        ".globl _start\n"
        ".type _start, @function\n"
        "_start:\n"
        "    xor %ebp, %ebp\n"
        "    and $-16, %rsp\n"
        "    call glint__start\n"
        "    ud2\n"
        ".size _start, . - _start\n"
        ".popsection\n");

/* One NULL in each table section, so the sections and their bounds exist in every program. */
__attribute__((used, section("glint_exports"))) static const glint_function *glint__no_export = 0;
__attribute__((used, section("glint_imports"))) static const glint_function *glint__no_import = 0;
extern const glint_function *__start_glint_exports[] __attribute__((visibility("hidden")));
extern const glint_function *__stop_glint_exports[] __attribute__((visibility("hidden")));
extern const glint_function *__start_glint_imports[] __attribute__((visibility("hidden")));
extern const glint_function *__stop_glint_imports[] __attribute__((visibility("hidden")));

static glint_boot boot;
_Static_assert(sizeof(glint_boot) == BOOT_INFO_SIZE, "glint_boot is the 88-byte boot info");
static uint8_t *input;   /* host -> guest */
static uint8_t *output;  /* guest -> host */
static size_t input_size, output_size;

/* Leaves the VM through `port` (one byte, `out dx, al`); returns when the host resumes us. The
 * "memory" clobber makes the compiler finish every buffer write before and re-read after. */
static void cross(uint16_t port) {
    __asm__ volatile("outb %%al, %%dx" : : "a"((uint8_t)0), "d"(port) : "memory");
}

_Noreturn static void ud2(void) {
    for (;;) __asm__ volatile("ud2");
}

const glint_boot *glint_boot_info(void) { return &boot; }

/* ---- libc functions compilers emit calls to ---------------------------------------------- */

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    void *d = dst;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    if ((uintptr_t)dst - (uintptr_t)src >= n) return memcpy(dst, src, n); /* no harmful overlap */
    /* dst lies inside [src, src + n): copy backwards. */
    uint8_t *d = (uint8_t *)dst + n - 1;
    const uint8_t *s = (const uint8_t *)src + n - 1;
    __asm__ volatile("std\n rep movsb\n cld" : "+D"(d), "+S"(s), "+c"(n) : : "memory", "cc");
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    void *d = dst;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

NO_LOOP_CALLS int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}

NO_LOOP_CALLS size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

/* ---- Heap -------------------------------------------------------------------------------- */

/*
 * First fit over an address-ordered free list, coalescing on free. Every block starts with a
 * 16-byte header: its size (header included, a multiple of 16) and, while in use, a tag; a free
 * block keeps the next free block there instead. Payloads are 16-byte aligned.
 */
#define HEADER 16u
#define MIN_BLOCK 32u
#define IN_USE 0x676c696e74757365ULL /* "glintuse" */

typedef struct block {
    size_t size;
    union {
        struct block *next; /* free */
        uint64_t tag;       /* in use: IN_USE */
    } u;
} block;

static block *free_list;
static uintptr_t heap_start, heap_end;

static void heap_init(uintptr_t addr, size_t size) {
    uintptr_t start = (addr + 15) & ~(uintptr_t)15;
    if (start < addr || size < start - addr) return; /* no usable heap */
    uintptr_t end = (addr + size) & ~(uintptr_t)15;
    if (end < start + MIN_BLOCK) return;
    heap_start = start;
    heap_end = end;
    free_list = (block *)start;
    free_list->size = end - start;
    free_list->u.next = 0;
}

/* The block size that holds `size` bytes, or 0 when that overflows. */
static size_t block_size(size_t size) {
    if (size > SIZE_MAX - HEADER - 15) return 0;
    size_t n = (size + HEADER + 15) & ~(size_t)15;
    return n < MIN_BLOCK ? MIN_BLOCK : n;
}

void *malloc(size_t size) {
    size_t need = block_size(size);
    if (need == 0) return 0;
    for (block **link = &free_list; *link; link = &(*link)->u.next) {
        block *b = *link;
        if (b->size < need) continue;
        if (b->size - need >= MIN_BLOCK) { /* split: the tail stays free */
            block *rest = (block *)((uintptr_t)b + need);
            rest->size = b->size - need;
            rest->u.next = b->u.next;
            *link = rest;
            b->size = need;
        } else {
            *link = b->u.next;
        }
        b->u.tag = IN_USE;
        return (uint8_t *)b + HEADER;
    }
    return 0;
}

/* The block of a payload pointer, checked: freeing what malloc did not return aborts. */
static block *block_of(void *ptr, const char *who) {
    uintptr_t p = (uintptr_t)ptr;
    block *b = (block *)(p - HEADER);
    if ((p & 15) != 0 || p < heap_start + HEADER || p >= heap_end || b->u.tag != IN_USE ||
        b->size < MIN_BLOCK || b->size > heap_end - (uintptr_t)b) {
        glint_abort(who);
    }
    return b;
}

void free(void *ptr) {
    if (!ptr) return;
    block *b = block_of(ptr, "free: not a pointer malloc returned, or freed twice");
    block **link = &free_list;
    block *prev = 0;
    while (*link && *link < b) {
        prev = *link;
        link = &(*link)->u.next;
    }
    b->u.next = *link;
    *link = b;
    if (b->u.next && (uintptr_t)b + b->size == (uintptr_t)b->u.next) { /* merge the next one */
        b->size += b->u.next->size;
        b->u.next = b->u.next->u.next;
    }
    if (prev && (uintptr_t)prev + prev->size == (uintptr_t)b) { /* merge into the previous one */
        prev->size += b->size;
        prev->u.next = b->u.next;
    }
}

void *calloc(size_t count, size_t size) {
    if (size != 0 && count > SIZE_MAX / size) return 0;
    void *p = malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void *realloc(void *ptr, size_t size) {
    if (!ptr) return malloc(size);
    if (size == 0) {
        free(ptr);
        return 0;
    }
    block *b = block_of(ptr, "realloc: not a pointer malloc returned, or freed");
    size_t need = block_size(size);
    if (need == 0) return 0;
    if (need <= b->size) return ptr; /* shrinking keeps the block */
    /* Grow in place when the next block is free and large enough. */
    block **link = &free_list;
    while (*link && *link < b) link = &(*link)->u.next;
    block *next = *link;
    if (next && (uintptr_t)b + b->size == (uintptr_t)next && b->size + next->size >= need) {
        size_t total = b->size + next->size;
        if (total - need >= MIN_BLOCK) {
            block *rest = (block *)((uintptr_t)b + need);
            rest->size = total - need;
            rest->u.next = next->u.next;
            *link = rest;
            b->size = need;
        } else {
            *link = next->u.next;
            b->size = total;
        }
        return ptr;
    }
    void *p = malloc(size);
    if (!p) return 0;
    memcpy(p, ptr, b->size - HEADER);
    free(ptr);
    return p;
}

/* Memory that lives until the current call's outcome is written: a list of blocks, each with a
 * 16-byte link in front. */
typedef struct scratch {
    struct scratch *next;
    uint64_t pad;
} scratch;

static scratch *scratch_list;

void *glint_scratch(size_t size) {
    if (size > SIZE_MAX - sizeof(scratch)) return 0;
    scratch *s = malloc(sizeof(scratch) + size);
    if (!s) return 0;
    s->next = scratch_list;
    scratch_list = s;
    return s + 1;
}

static void scratch_free_all(void) {
    while (scratch_list) {
        scratch *s = scratch_list;
        scratch_list = s->next;
        free(s);
    }
}

/* ---- Text -------------------------------------------------------------------------------- */

glint_str glint_cstr(const char *s) { return (glint_str){s, strlen(s)}; }

bool glint_str_eq(glint_str a, const char *b) {
    size_t n = strlen(b);
    return a.len == n && (n == 0 || memcmp(a.ptr, b, n) == 0);
}

/* Whether the bytes are UTF-8 as Rust's core::str::from_utf8 defines it (no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static bool valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return false;
        }
        if (n - i < len) return false;
        if (s[i + 1] < lo || s[i + 1] > hi) return false;
        for (size_t k = 2; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
        }
        i += len;
    }
    return true;
}

/* Messages the runtime writes: a fixed buffer that keeps what fits (names are at most 255
 * bytes, so every message of the runtime fits whole). */
typedef struct msg {
    char text[768];
    size_t len;
} msg;

static void msg_put(msg *m, const char *s, size_t n) {
    size_t room = sizeof(m->text) - m->len;
    if (n > room) n = room;
    memcpy(m->text + m->len, s, n);
    m->len += n;
}

static void msg_cstr(msg *m, const char *s) { msg_put(m, s, strlen(s)); }

static void msg_u64(msg *m, uint64_t v) {
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    msg_put(m, digits + sizeof(digits) - n, n);
}

/* How Rust spells each wire type (glint_abi::ValueType::name). */
static const char *type_name(uint8_t tag) {
    static const char *const names[] = {"()", "i32", "u32", "i64", "u64", "f32", "f64", "bool", "String", "Vec<u8>"};
    return tag < 10 ? names[tag] : "?";
}

/* ---- Decoding (glint_abi::wire::Reader) -------------------------------------------------- */

/* glint_abi::wire::DecodeError. */
enum decode_error {
    OK = 0,
    TRUNCATED,
    FRAME_TOO_LARGE,
    UNKNOWN_TAG,
    BAD_BOOL,
    BAD_STATUS,
    BAD_UTF8,
    NAME_TOO_LONG,
    TOO_MANY,
    TRAILING_BYTES,
};

typedef struct reader {
    const uint8_t *p;
    size_t left;
    enum decode_error err; /* the first error; later reads fail too */
    uint64_t detail, detail2;
} reader;

static void fail_read(reader *r, enum decode_error e, uint64_t detail) {
    if (r->err == OK) {
        r->err = e;
        r->detail = detail;
    }
    r->left = 0;
}

static const uint8_t *take(reader *r, size_t n) {
    if (r->err != OK) return 0;
    if (n > r->left) {
        fail_read(r, TRUNCATED, 0);
        return 0;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static uint8_t read_u8(reader *r) {
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static uint32_t read_u32(reader *r) {
    const uint8_t *p = take(r, 4);
    return p ? rd32(p) : 0;
}

static uint64_t read_u64(reader *r) {
    const uint8_t *p = take(r, 8);
    return p ? rd64(p) : 0;
}

static const uint8_t *read_bytes(reader *r, size_t *len) {
    *len = read_u32(r);
    const uint8_t *p = take(r, *len);
    if (!p) *len = 0;
    return p;
}

/* A tagged value; str and bytes point into the reader's buffer. */
static uint8_t read_value(reader *r, glint_value *v) {
    uint8_t tag = read_u8(r);
    if (r->err != OK) return 0;
    size_t len;
    const uint8_t *p;
    uint32_t u;
    uint64_t w;
    switch (tag) {
    case GLINT_TYPE_UNIT: v->unit.unused = 0; break;
    case GLINT_TYPE_I32: v->i32 = (int32_t)read_u32(r); break;
    case GLINT_TYPE_U32: v->u32 = read_u32(r); break;
    case GLINT_TYPE_I64: v->i64 = (int64_t)read_u64(r); break;
    case GLINT_TYPE_U64: v->u64 = read_u64(r); break;
    case GLINT_TYPE_F32: u = read_u32(r); memcpy(&v->f32, &u, 4); break;
    case GLINT_TYPE_F64: w = read_u64(r); memcpy(&v->f64, &w, 8); break;
    case GLINT_TYPE_BOOL:
        u = read_u8(r);
        if (r->err == OK && u > 1) fail_read(r, BAD_BOOL, u);
        v->b = u == 1;
        break;
    case GLINT_TYPE_STR:
        p = read_bytes(r, &len);
        if (r->err == OK && !valid_utf8(p, len)) fail_read(r, BAD_UTF8, 0);
        v->str = (glint_str){(const char *)p, len};
        break;
    case GLINT_TYPE_BYTES:
        p = read_bytes(r, &len);
        v->bytes = (glint_bytes){p, len};
        break;
    default: fail_read(r, UNKNOWN_TAG, tag); break;
    }
    return tag;
}

static void read_finish(reader *r) {
    if (r->err == OK && r->left) {
        uint64_t n = r->left;
        fail_read(r, TRAILING_BYTES, n);
    }
}

/* The body of the frame at the start of `buf` (glint_abi::wire::frame_len). */
static reader frame(const uint8_t *buf, size_t size) {
    reader r = {0, 0, OK, 0, 0};
    if (size < 4) {
        r.err = TRUNCATED;
        return r;
    }
    uint32_t len = rd32(buf);
    if (len > size - 4) {
        r.err = FRAME_TOO_LARGE;
        r.detail = len;
        r.detail2 = size - 4;
        return r;
    }
    r.p = buf + 4;
    r.left = len;
    return r;
}

/* The Display text of glint_abi::wire::DecodeError. */
static void msg_decode_error(msg *m, const reader *r) {
    switch (r->err) {
    case OK: break;
    case TRUNCATED: msg_cstr(m, "message is truncated"); break;
    case FRAME_TOO_LARGE:
        msg_cstr(m, "frame announces ");
        msg_u64(m, r->detail);
        msg_cstr(m, " bytes but the buffer holds ");
        msg_u64(m, r->detail2);
        break;
    case UNKNOWN_TAG: msg_cstr(m, "unknown value tag "); msg_u64(m, r->detail); break;
    case BAD_BOOL:
        msg_cstr(m, "boolean byte ");
        msg_u64(m, r->detail);
        msg_cstr(m, " is neither 0 nor 1");
        break;
    case BAD_STATUS: msg_cstr(m, "unknown status byte "); msg_u64(m, r->detail); break;
    case BAD_UTF8: msg_cstr(m, "text is not valid UTF-8"); break;
    case NAME_TOO_LONG:
        msg_cstr(m, "name of ");
        msg_u64(m, r->detail);
        msg_cstr(m, " bytes exceeds the limit of 255");
        break;
    case TOO_MANY: msg_cstr(m, "count "); msg_u64(m, r->detail); msg_cstr(m, " exceeds the limit"); break;
    case TRAILING_BYTES: msg_u64(m, r->detail); msg_cstr(m, " unexpected bytes after the message"); break;
    }
}

/* ---- Encoding into the output buffer ----------------------------------------------------- */

typedef struct writer {
    size_t pos;
    bool full;
} writer;

static writer begin(void) {
    writer w = {4, output_size < 4};
    return w;
}

static void put(writer *w, const void *p, size_t n) {
    if (w->full) return;
    if (n > output_size - w->pos) {
        w->full = true;
        return;
    }
    memcpy(output + w->pos, p, n);
    w->pos += n;
}

static void put_u8(writer *w, uint8_t v) { put(w, &v, 1); }

static void put_u32(writer *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}

static void put_u64(writer *w, uint64_t v) {
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

static void put_bytes(writer *w, const void *p, size_t n) {
    if (n > UINT32_MAX) {
        w->full = true;
        return;
    }
    put_u32(w, (uint32_t)n);
    put(w, p, n);
}

static void put_value(writer *w, uint8_t tag, const glint_value *v) {
    uint32_t u;
    uint64_t x;
    put_u8(w, tag);
    switch (tag) {
    case GLINT_TYPE_I32: put_u32(w, (uint32_t)v->i32); break;
    case GLINT_TYPE_U32: put_u32(w, v->u32); break;
    case GLINT_TYPE_I64: put_u64(w, (uint64_t)v->i64); break;
    case GLINT_TYPE_U64: put_u64(w, v->u64); break;
    case GLINT_TYPE_F32: memcpy(&u, &v->f32, 4); put_u32(w, u); break;
    case GLINT_TYPE_F64: memcpy(&x, &v->f64, 8); put_u64(w, x); break;
    case GLINT_TYPE_BOOL: put_u8(w, v->b ? 1 : 0); break;
    case GLINT_TYPE_STR: put_bytes(w, v->str.ptr, v->str.len); break;
    case GLINT_TYPE_BYTES: put_bytes(w, v->bytes.ptr, v->bytes.len); break;
    default: break; /* unit */
    }
}

/* Writes the length prefix; false when the frame did not fit. */
static bool end(writer *w) {
    if (w->full || w->pos - 4 > UINT32_MAX) return false;
    uint32_t len = (uint32_t)(w->pos - 4);
    uint8_t b[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16), (uint8_t)(len >> 24)};
    memcpy(output, b, 4);
    return true;
}

static bool write_err(uint32_t code, const char *text, size_t len) {
    writer w = begin();
    put_u8(&w, 1);
    put_u32(&w, code);
    put_bytes(&w, text, len);
    return end(&w);
}

/* How many bytes of `s` to keep so that `n` fit, cut at a UTF-8 character boundary (as Rust's
 * Truncating writer does). */
static size_t cut(const char *s, size_t len, size_t room) {
    if (len <= room) return len;
    size_t n = room;
    while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80) n--;
    return n;
}

/* A log or abort frame: `head` bytes, then the text as bytes, cut to what fits. */
static bool write_text(const uint8_t *head, size_t head_len, const char *text, size_t len) {
    if (!output || output_size < 4 + head_len + 4) return false;
    size_t keep = cut(text, len, output_size - 4 - head_len - 4);
    writer w = begin();
    put(&w, head, head_len);
    put_bytes(&w, text, keep);
    return end(&w);
}

/* ---- Log, abort, failing a call ---------------------------------------------------------- */

void glint_log_str(enum glint_log_level level, glint_str message) {
    uint8_t head = (uint8_t)level;
    if (write_text(&head, 1, message.ptr, message.len)) cross(PORT_LOG);
}

void glint_log(enum glint_log_level level, const char *message) { glint_log_str(level, glint_cstr(message)); }

_Noreturn void glint_abort_str(glint_str message) {
    uint8_t head[4] = {ABORT_PANIC, 0, 0, 0};
    if (write_text(head, 4, message.ptr, message.len)) cross(PORT_ABORT);
    ud2(); /* the host never resumes an aborted call */
}

_Noreturn void glint_abort(const char *message) { glint_abort_str(glint_cstr(message)); }

static struct {
    bool set;
    uint32_t code;
    glint_str message;
} failure;

static glint_error last_error;

/* A copy of `len` bytes in scratch memory, or the text "out of memory". */
static glint_str keep(const void *p, size_t len) {
    char *copy = glint_scratch(len ? len : 1);
    if (!copy) return GLINT_STR("out of memory");
    if (len) memcpy(copy, p, len);
    return (glint_str){copy, len};
}

void glint_fail_str(glint_str message) {
    failure.set = true;
    failure.code = GLINT_FUNCTION_FAILED;
    failure.message = keep(message.ptr, message.len);
}

void glint_fail(const char *message) { glint_fail_str(glint_cstr(message)); }

void glint_fail_host(void) {
    /* The text of Rust's HostCallError: "host call failed (code N): message". */
    glint_buf b = GLINT_BUF_INIT;
    glint_buf_cstr(&b, "host call failed (code ");
    glint_buf_u64(&b, last_error.code);
    glint_buf_cstr(&b, "): ");
    glint_buf_str(&b, last_error.message);
    failure.set = true;
    failure.code = GLINT_HOST_CALL_FAILED;
    failure.message = glint_buf_finish(&b);
}

const glint_error *glint_last_error(void) { return &last_error; }

/* ---- Growing buffers --------------------------------------------------------------------- */

/* A glint_buf's memory is a scratch block in waiting: room for the scratch link, then data. */
void glint_buf_put(glint_buf *b, const void *data, size_t len) {
    if (len == 0) return;
    if (len > b->cap - b->len) {
        size_t want = b->cap ? b->cap : 64;
        while (want - b->len < len) {
            if (want > SIZE_MAX / 2) glint_abort("glint_buf: size overflow");
            want *= 2;
        }
        uint8_t *base = b->data ? b->data - sizeof(scratch) : 0;
        if (want > SIZE_MAX - sizeof(scratch)) glint_abort("glint_buf: size overflow");
        base = realloc(base, sizeof(scratch) + want);
        if (!base) {
            msg m = {{0}, 0};
            msg_cstr(&m, "memory allocation of ");
            msg_u64(&m, sizeof(scratch) + want);
            msg_cstr(&m, " bytes failed");
            glint_abort_str((glint_str){m.text, m.len});
        }
        b->data = base + sizeof(scratch);
        b->cap = want;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

void glint_buf_byte(glint_buf *b, uint8_t byte) { glint_buf_put(b, &byte, 1); }
void glint_buf_cstr(glint_buf *b, const char *s) { glint_buf_put(b, s, strlen(s)); }
void glint_buf_str(glint_buf *b, glint_str s) { glint_buf_put(b, s.ptr, s.len); }
void glint_buf_bytes(glint_buf *b, glint_bytes s) { glint_buf_put(b, s.ptr, s.len); }

void glint_buf_u64(glint_buf *b, uint64_t v) {
    msg m = {{0}, 0};
    msg_u64(&m, v);
    glint_buf_put(b, m.text, m.len);
}

void glint_buf_i64(glint_buf *b, int64_t v) {
    if (v < 0) {
        glint_buf_byte(b, '-');
        glint_buf_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        glint_buf_u64(b, (uint64_t)v);
    }
}

glint_bytes glint_buf_finish_bytes(glint_buf *b) {
    glint_bytes out = {b->data, b->len};
    if (b->data) {
        scratch *s = (scratch *)(b->data - sizeof(scratch));
        s->next = scratch_list;
        scratch_list = s;
    }
    *b = (glint_buf)GLINT_BUF_INIT;
    return out;
}

glint_str glint_buf_finish(glint_buf *b) {
    glint_bytes out = glint_buf_finish_bytes(b);
    return (glint_str){(const char *)out.ptr, out.len};
}

void glint_buf_free(glint_buf *b) {
    if (b->data) free(b->data - sizeof(scratch));
    *b = (glint_buf)GLINT_BUF_INIT;
}

/* ---- Host calls -------------------------------------------------------------------------- */

static bool local_error(msg *m) {
    last_error.code = GLINT_HOST_LOCAL;
    last_error.message = keep(m->text, m->len);
    return false;
}

bool glint_host_call(const glint_function *f, const glint_value *args, glint_value *result) {
    msg m = {{0}, 0};
    size_t name_len = strlen(f->name);
    if (name_len > MAX_NAME_LEN) {
        msg_cstr(&m, "host function name exceeds 255 bytes");
        return local_error(&m);
    }
    if (f->nparams > MAX_PARAMS) {
        msg_cstr(&m, "host calls take at most 16 arguments");
        return local_error(&m);
    }
    for (size_t i = 0; i < f->nparams; i++) {
        uint8_t tag = (uint8_t)f->params[i];
        if ((tag == GLINT_TYPE_STR || tag == GLINT_TYPE_BYTES) && !args[i].bytes.ptr && args[i].bytes.len) {
            msg_cstr(&m, "argument ");
            msg_u64(&m, i);
            msg_cstr(&m, " of `");
            msg_cstr(&m, f->name);
            msg_cstr(&m, "` is a NULL pointer");
            return local_error(&m);
        }
        if (tag == GLINT_TYPE_STR && !valid_utf8((const uint8_t *)args[i].str.ptr, args[i].str.len)) {
            msg_cstr(&m, "argument ");
            msg_u64(&m, i);
            msg_cstr(&m, " of `");
            msg_cstr(&m, f->name);
            msg_cstr(&m, "` is not valid UTF-8");
            return local_error(&m);
        }
    }
    writer w = begin();
    put_bytes(&w, f->name, name_len);
    put_u32(&w, f->nparams);
    for (size_t i = 0; i < f->nparams; i++) put_value(&w, (uint8_t)f->params[i], &args[i]);
    if (!end(&w)) {
        msg_cstr(&m, "host call arguments do not fit in the output buffer");
        return local_error(&m);
    }
    cross(PORT_HOST_CALL);

    /* The response is in the input buffer until the next crossing: check it, and copy out what
     * the caller keeps. */
    reader r = frame(input, input_size);
    uint8_t status = r.err == OK ? read_u8(&r) : 0;
    glint_value v;
    uint8_t tag = 0;
    uint32_t code = 0;
    const uint8_t *text = 0;
    size_t text_len = 0;
    if (r.err == OK && status == 0) {
        tag = read_value(&r, &v);
    } else if (r.err == OK && status == 1) {
        code = read_u32(&r);
        text = read_bytes(&r, &text_len);
    } else if (r.err == OK) {
        fail_read(&r, BAD_STATUS, status);
    }
    read_finish(&r);
    if (r.err != OK) {
        msg_cstr(&m, "bad response: ");
        msg_decode_error(&m, &r);
        return local_error(&m);
    }
    if (status == 1) {
        last_error.code = code;
        last_error.message = keep(text, text_len);
        return false;
    }
    if (tag != f->result) {
        msg_cstr(&m, "`");
        msg_cstr(&m, f->name);
        msg_cstr(&m, "` returned ");
        msg_cstr(&m, type_name(tag));
        msg_cstr(&m, ", expected ");
        msg_cstr(&m, type_name(f->result));
        return local_error(&m);
    }
    if (tag == GLINT_TYPE_STR || tag == GLINT_TYPE_BYTES) {
        size_t len = v.bytes.len;
        uint8_t *copy = glint_scratch(len ? len : 1);
        if (!copy) {
            msg_cstr(&m, "no memory for the ");
            msg_u64(&m, len);
            msg_cstr(&m, "-byte result of `");
            msg_cstr(&m, f->name);
            msg_cstr(&m, "`");
            return local_error(&m);
        }
        if (len) memcpy(copy, v.bytes.ptr, len);
        v.bytes.ptr = copy;
    }
    if (result) *result = v;
    return true;
}

/* ---- HTTP (docs/ABI.md, Appendix C; glint_abi::http) ------------------------------------ */

#define MAX_METHOD_LEN 32
#define MAX_HEADER_NAME_LEN 256
#define MIN_HEADER_BYTES 8

/* glint_abi::http::Invalid. */
enum http_invalid { INVALID_METHOD, INVALID_TARGET, INVALID_HEADER_NAME, INVALID_HEADER_VALUE, INVALID_STATUS,
                    INVALID_HEADER_COUNT };

static bool is_token(const char *s, size_t n) {
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool other = false;
        for (size_t k = 0; k < sizeof(extra) - 1; k++) other |= c == extra[k];
        if (!alnum && !other) return false;
    }
    return true;
}

static bool is_method(glint_str s) { return s.len <= MAX_METHOD_LEN && is_token(s.ptr, s.len); }

static bool is_target(glint_str s) {
    if (s.len == 0) return false;
    for (size_t i = 0; i < s.len; i++) {
        if ((uint8_t)s.ptr[i] < 0x21 || (uint8_t)s.ptr[i] > 0x7E) return false;
    }
    return true;
}

static bool is_header_name(glint_str s) { return s.len <= MAX_HEADER_NAME_LEN && is_token(s.ptr, s.len); }

static bool is_header_value(glint_bytes v) {
    for (size_t i = 0; i < v.len; i++) {
        if (v.ptr[i] == '\r' || v.ptr[i] == '\n' || v.ptr[i] == 0) return false;
    }
    return true;
}

/* The Display text of glint_abi::http::Invalid. */
static void msg_invalid(msg *m, enum http_invalid what, uint64_t detail) {
    switch (what) {
    case INVALID_METHOD: msg_cstr(m, "method is not a token of at most 32 bytes"); break;
    case INVALID_TARGET: msg_cstr(m, "target is empty or not visible ASCII"); break;
    case INVALID_HEADER_NAME:
        msg_cstr(m, "header ");
        msg_u64(m, detail);
        msg_cstr(m, " has an invalid name");
        break;
    case INVALID_HEADER_VALUE:
        msg_cstr(m, "header ");
        msg_u64(m, detail);
        msg_cstr(m, " has CR, LF or NUL in its value");
        break;
    case INVALID_STATUS:
        msg_cstr(m, "status ");
        msg_u64(m, detail);
        msg_cstr(m, " is outside 100..=999");
        break;
    case INVALID_HEADER_COUNT:
        msg_cstr(m, "header count ");
        msg_u64(m, detail);
        msg_cstr(m, " does not match the headers");
        break;
    }
}

static bool http_invalid(glint_str *error, const char *prefix, enum http_invalid what, uint64_t detail) {
    msg m = {{0}, 0};
    msg_cstr(&m, prefix);
    msg_invalid(&m, what, detail);
    if (error) *error = keep(m.text, m.len);
    return false;
}

static bool http_wire_error(glint_str *error, const reader *r) {
    msg m = {{0}, 0};
    msg_cstr(&m, "malformed HTTP message: ");
    msg_decode_error(&m, r);
    if (error) *error = keep(m.text, m.len);
    return false;
}

/* A `str` field: a u32 length and UTF-8 (glint_abi::wire::Reader::str). */
static glint_str read_str(reader *r) {
    size_t len;
    const uint8_t *p = read_bytes(r, &len);
    if (r->err == OK && !valid_utf8(p, len)) fail_read(r, BAD_UTF8, 0);
    return (glint_str){(const char *)p, r->err == OK ? len : 0};
}

#define DECODE_INVALID(what, detail) http_invalid(error, "invalid HTTP message: ", what, detail)

static bool read_headers(reader *r, const glint_header **headers, size_t *count, glint_str *error) {
    uint32_t n = read_u32(r);
    if (r->err != OK) return http_wire_error(error, r);
    if (n > r->left / MIN_HEADER_BYTES) return DECODE_INVALID(INVALID_HEADER_COUNT, n);
    glint_header *h = glint_scratch(n ? n * sizeof(glint_header) : 1);
    if (!h) {
        if (error) *error = GLINT_STR("out of memory");
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        h[i].name = read_str(r);
        if (r->err != OK) return http_wire_error(error, r);
        if (!is_header_name(h[i].name)) return DECODE_INVALID(INVALID_HEADER_NAME, i);
        size_t len;
        const uint8_t *p = read_bytes(r, &len);
        if (r->err != OK) return http_wire_error(error, r);
        h[i].value = (glint_bytes){p, len};
        if (!is_header_value(h[i].value)) return DECODE_INVALID(INVALID_HEADER_VALUE, i);
    }
    *headers = h;
    *count = n;
    return true;
}

static bool read_body(reader *r, glint_bytes *body, glint_str *error) {
    size_t len;
    const uint8_t *p = read_bytes(r, &len);
    read_finish(r);
    if (r->err != OK) return http_wire_error(error, r);
    *body = (glint_bytes){p, len};
    return true;
}

bool glint_http_decode_request(glint_bytes bytes, glint_http_request *req, glint_str *error) {
    reader r = {bytes.ptr, bytes.len, OK, 0, 0};
    glint_http_request out = {{0, 0}, {0, 0}, 0, 0, {0, 0}};
    out.method = read_str(&r);
    if (r.err != OK) return http_wire_error(error, &r);
    if (!is_method(out.method)) return DECODE_INVALID(INVALID_METHOD, 0);
    out.target = read_str(&r);
    if (r.err != OK) return http_wire_error(error, &r);
    if (!is_target(out.target)) return DECODE_INVALID(INVALID_TARGET, 0);
    if (!read_headers(&r, &out.headers, &out.header_count, error)) return false;
    if (!read_body(&r, &out.body, error)) return false;
    *req = out;
    return true;
}

bool glint_http_decode_response(glint_bytes bytes, glint_http_response *res, glint_str *error) {
    reader r = {bytes.ptr, bytes.len, OK, 0, 0};
    glint_http_response out = {0, 0, 0, {0, 0}};
    out.status = read_u32(&r);
    if (r.err != OK) return http_wire_error(error, &r);
    if (out.status < 100 || out.status > 999) return DECODE_INVALID(INVALID_STATUS, out.status);
    if (!read_headers(&r, &out.headers, &out.header_count, error)) return false;
    if (!read_body(&r, &out.body, error)) return false;
    *res = out;
    return true;
}

#define ENCODE_INVALID(what, detail) http_invalid(error, "cannot encode HTTP message: ", what, detail)

static void buf_u32(glint_buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    glint_buf_put(b, x, 4);
}

/* A u32 length and the bytes; false when the length does not fit a u32. */
static bool buf_field(glint_buf *b, const void *p, size_t len) {
    if (len > UINT32_MAX) return false;
    buf_u32(b, (uint32_t)len);
    glint_buf_put(b, p, len);
    return true;
}

static bool check_fields(const glint_header *h, size_t n, glint_bytes body, glint_str *error) {
    if (n > UINT32_MAX) return ENCODE_INVALID(INVALID_HEADER_COUNT, n);
    if (n && !h) return ENCODE_INVALID(INVALID_HEADER_COUNT, n);
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name.ptr && h[i].name.len) return ENCODE_INVALID(INVALID_HEADER_NAME, i);
        if (!is_header_name(h[i].name)) return ENCODE_INVALID(INVALID_HEADER_NAME, i);
        if (!h[i].value.ptr && h[i].value.len) return ENCODE_INVALID(INVALID_HEADER_VALUE, i);
        if (!is_header_value(h[i].value)) return ENCODE_INVALID(INVALID_HEADER_VALUE, i);
    }
    if ((!body.ptr && body.len) || body.len > UINT32_MAX) {
        if (error) *error = GLINT_STR("HTTP message does not fit in the buffer");
        return false;
    }
    return true;
}

static bool put_headers_and_body(glint_buf *b, const glint_header *h, size_t n, glint_bytes body, glint_bytes *out) {
    buf_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        buf_field(b, h[i].name.ptr, h[i].name.len);
        buf_field(b, h[i].value.ptr, h[i].value.len);
    }
    buf_field(b, body.ptr, body.len);
    *out = glint_buf_finish_bytes(b);
    return true;
}

bool glint_http_encode_request(const glint_http_request *req, glint_bytes *out, glint_str *error) {
    if ((!req->method.ptr && req->method.len) || !is_method(req->method)) return ENCODE_INVALID(INVALID_METHOD, 0);
    if ((!req->target.ptr && req->target.len) || !is_target(req->target)) return ENCODE_INVALID(INVALID_TARGET, 0);
    if (!check_fields(req->headers, req->header_count, req->body, error)) return false;
    glint_buf b = GLINT_BUF_INIT;
    buf_field(&b, req->method.ptr, req->method.len);
    buf_field(&b, req->target.ptr, req->target.len);
    return put_headers_and_body(&b, req->headers, req->header_count, req->body, out);
}

bool glint_http_encode_response(const glint_http_response *res, glint_bytes *out, glint_str *error) {
    if (res->status < 100 || res->status > 999) return ENCODE_INVALID(INVALID_STATUS, res->status);
    if (!check_fields(res->headers, res->header_count, res->body, error)) return false;
    glint_buf b = GLINT_BUF_INIT;
    buf_u32(&b, res->status);
    return put_headers_and_body(&b, res->headers, res->header_count, res->body, out);
}

static char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

const glint_bytes *glint_http_header(const glint_header *headers, size_t count, const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < count; i++) {
        if (headers[i].name.len != n) continue;
        size_t k = 0;
        while (k < n && ascii_lower(headers[i].name.ptr[k]) == ascii_lower(name[k])) k++;
        if (k == n) return &headers[i].value;
    }
    return 0;
}

glint_str glint_http_path(glint_str target) {
    for (size_t i = 0; i < target.len; i++) {
        if (target.ptr[i] == '?') return (glint_str){target.ptr, i};
    }
    return target;
}

bool glint_http_query(glint_str target, glint_str *query) {
    glint_str path = glint_http_path(target);
    if (path.len == target.len) return false;
    *query = (glint_str){target.ptr + path.len + 1, target.len - path.len - 1};
    return true;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool glint_http_percent_decode(glint_str s, glint_str *out) {
    char *p = glint_scratch(s.len ? s.len : 1);
    if (!p) return false;
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (c == '%') {
            if (s.len - i < 3) return false;
            int hi = hex_digit(s.ptr[i + 1]), lo = hex_digit(s.ptr[i + 2]);
            if (hi < 0 || lo < 0) return false;
            p[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            p[n++] = c == '+' ? ' ' : c;
        }
    }
    if (!valid_utf8((const uint8_t *)p, n)) return false;
    *out = (glint_str){p, n};
    return true;
}

glint_bytes glint__http_serve(glint_bytes bytes, glint_http_response (*handler)(const glint_http_request *)) {
    glint_http_request req;
    glint_str error;
    glint_bytes out = {0, 0};
    if (!glint_http_decode_request(bytes, &req, &error)) {
        glint_fail_str(error);
        return out;
    }
    glint_http_response res = handler(&req);
    if (failure.set) return out; /* the handler failed the call */
    if (!glint_http_encode_response(&res, &out, &error)) glint_fail_str(error);
    return out;
}

/* ---- The function table and the call loop ------------------------------------------------ */

static const glint_function **exports_begin(void) { return __start_glint_exports; }
static size_t export_slots(void) { return (size_t)(__stop_glint_exports - __start_glint_exports); }

/* The export with this index among the non-NULL entries, or NULL. */
static const glint_function *export_at(uint32_t index) {
    const glint_function **e = exports_begin();
    for (size_t i = 0, n = export_slots(); i < n; i++) {
        if (!e[i]) continue;
        if (index == 0) return e[i];
        index--;
    }
    return 0;
}

static bool same_function(const glint_function *a, const glint_function *b) {
    return a == b || (strlen(a->name) == strlen(b->name) && memcmp(a->name, b->name, strlen(a->name)) == 0 &&
                      a->nparams == b->nparams && a->result == b->result &&
                      memcmp(a->params, b->params, a->nparams) == 0);
}

static void put_entry(writer *w, const glint_function *f) {
    put_bytes(w, f->name, strlen(f->name));
    put_u8(w, f->nparams);
    put(w, f->params, f->nparams);
    put_u8(w, f->result);
}

/* Exports, then imports (identical declarations from several files once). */
static bool write_table(void) {
    writer w = begin();
    const glint_function **e = exports_begin();
    size_t n = export_slots(), count = 0;
    for (size_t i = 0; i < n; i++) count += e[i] != 0;
    put_u32(&w, (uint32_t)count);
    for (size_t i = 0; i < n; i++) {
        if (e[i]) put_entry(&w, e[i]);
    }
    const glint_function **im = __start_glint_imports;
    n = (size_t)(__stop_glint_imports - __start_glint_imports);
    count = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) put_u32(&w, (uint32_t)count);
        for (size_t i = 0; i < n; i++) {
            if (!im[i]) continue;
            bool seen = false;
            for (size_t k = 0; k < i && !seen; k++) seen = im[k] && same_function(im[k], im[i]);
            if (seen) continue;
            if (pass == 0) {
                count++;
            } else {
                put_entry(&w, im[i]);
            }
        }
    }
    return end(&w);
}


/* Runs the call in the input buffer and writes its outcome; false when the outcome did not fit. */
static bool handle_call(void) {
    msg m = {{0}, 0};
    reader in = frame(input, input_size);
    if (in.err != OK) {
        msg_cstr(&m, "malformed call frame: ");
        msg_decode_error(&m, &in);
        return write_err(GLINT_BAD_ARGUMENTS, m.text, m.len);
    }
    /* Copy the call out first: the function's host calls overwrite the input buffer. */
    size_t len = in.left;
    uint8_t *body = malloc(len ? len : 1);
    if (!body) {
        msg_cstr(&m, "memory allocation of ");
        msg_u64(&m, len);
        msg_cstr(&m, " bytes failed");
        glint_abort_str((glint_str){m.text, m.len});
    }
    memcpy(body, in.p, len);
    reader r = {body, len, OK, 0, 0};

    bool written;
    uint32_t index = read_u32(&r);
    uint32_t argc = read_u32(&r);
    if (r.err == OK && argc > MAX_PARAMS) fail_read(&r, TOO_MANY, argc);
    const glint_function *f = r.err == OK ? export_at(index) : 0;
    glint_value args[MAX_PARAMS];
    if (r.err != OK) {
        msg_cstr(&m, "malformed call: ");
        msg_decode_error(&m, &r);
        written = write_err(GLINT_BAD_ARGUMENTS, m.text, m.len);
        goto done;
    }
    if (!f) {
        msg_cstr(&m, "no exported function has index ");
        msg_u64(&m, index);
        written = write_err(GLINT_NO_SUCH_FUNCTION, m.text, m.len);
        goto done;
    }
    msg_cstr(&m, "`");
    msg_cstr(&m, f->name);
    msg_cstr(&m, "` ");
    if (argc != f->nparams) {
        msg_cstr(&m, "takes ");
        msg_u64(&m, f->nparams);
        msg_cstr(&m, " arguments, got ");
        msg_u64(&m, argc);
        written = write_err(GLINT_BAD_ARGUMENTS, m.text, m.len);
        goto done;
    }
    for (uint32_t i = 0; i < argc; i++) {
        uint8_t tag = read_value(&r, &args[i]);
        if (r.err == OK && tag != (uint8_t)f->params[i]) {
            msg_cstr(&m, "argument ");
            msg_u64(&m, i);
            msg_cstr(&m, " must be ");
            msg_cstr(&m, type_name((uint8_t)f->params[i]));
            msg_cstr(&m, ", got ");
            msg_cstr(&m, type_name(tag));
            written = write_err(GLINT_BAD_ARGUMENTS, m.text, m.len);
            goto done;
        }
    }
    read_finish(&r);
    if (r.err != OK) {
        msg_cstr(&m, "arguments do not decode: ");
        msg_decode_error(&m, &r);
        written = write_err(GLINT_BAD_ARGUMENTS, m.text, m.len);
        goto done;
    }

    glint_value result;
    memset(&result, 0, sizeof(result));
    failure.set = false;
    f->thunk(args, &result);
    if (!failure.set && f->result == GLINT_TYPE_STR) {
        if (!result.str.ptr && result.str.len) {
            glint_fail("returned a String with a NULL pointer");
        } else if (!valid_utf8((const uint8_t *)result.str.ptr, result.str.len)) {
            glint_fail("returned a String that is not valid UTF-8");
        }
    } else if (!failure.set && f->result == GLINT_TYPE_BYTES && !result.bytes.ptr && result.bytes.len) {
        glint_fail("returned bytes with a NULL pointer");
    }
    if (failure.set) {
        written = write_err(failure.code, failure.message.ptr, failure.message.len);
    } else {
        writer w = begin();
        put_u8(&w, 0);
        put_value(&w, f->result, &result);
        written = end(&w);
    }
    failure.set = false;
done:
    free(body);
    return written;
}

/* Runs the call in the input buffer and leaves its outcome in the output buffer. (Not static:
 * the runtime's own tests call it from a guest function, on frames they write themselves.) */
void glint__dispatch(void);

void glint__dispatch(void) {
    if (!handle_call()) {
        msg m = {{0}, 0};
        msg_cstr(&m, "result does not fit in the ");
        msg_u64(&m, output_size);
        msg_cstr(&m, "-byte output buffer");
        write_err(GLINT_RESULT_TOO_LARGE, m.text, m.len);
    }
}

__attribute__((used, noreturn)) void glint__start(const void *boot_addr);

__attribute__((used, noreturn)) void glint__start(const void *boot_addr) {
    memcpy(&boot, boot_addr, BOOT_INFO_SIZE);
    /* Until the boot info checks out, its addresses cannot be trusted, so we cannot report. */
    if (boot.magic != BOOT_MAGIC || boot.abi_version != GLINT_ABI_VERSION) ud2();
    input = (uint8_t *)(uintptr_t)boot.input_addr;
    input_size = boot.input_size;
    output = (uint8_t *)(uintptr_t)boot.output_addr;
    output_size = boot.output_size;
    heap_init(boot.heap_addr, boot.heap_size);

    if (!write_table()) glint_abort("export table does not fit in the output buffer");
    scratch_free_all();
    cross(PORT_RETURN);
    for (;;) {
        glint__dispatch();
        scratch_free_all();
        cross(PORT_RETURN);
    }
}
