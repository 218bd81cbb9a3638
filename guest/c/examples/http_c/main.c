/*
 * The example C HTTP handler guest (docs/ABI.md, Appendix C), for `glint serve`:
 *
 *   any method /echo/...   200, `x-echo: 1`, body "METHOD TARGET\n" and the request body; logs the line
 *   GET /hello/:name       200 "Hello, <name>!\n" (percent-decoded), 400 for a bad segment
 *   GET /status/:code      answers with that status (the runtime refuses one outside 100..=999)
 *   GET /fail              fails the call: the server answers 500
 *   anything else          404
 *
 * plus a typed export, add(i32, i32) -> i32, next to the handler.
 */
#include "glint.h"

static const glint_header TEXT = {{"content-type", 12}, {(const uint8_t *)"text/plain; charset=utf-8", 25}};

static glint_http_response text(uint32_t status, glint_str body) {
    glint_http_response res = {status, &TEXT, 1, {(const uint8_t *)body.ptr, body.len}};
    return res;
}

static bool starts_with(glint_str s, const char *prefix) {
    size_t n = strlen(prefix);
    return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

static glint_http_response echo(const glint_http_request *req) {
    glint_buf line = GLINT_BUF_INIT;
    glint_buf_str(&line, req->method);
    glint_buf_cstr(&line, " ");
    glint_buf_str(&line, req->target);
    glint_str request_line = glint_buf_finish(&line);

    glint_buf log = GLINT_BUF_INIT;
    glint_buf_cstr(&log, "echo ");
    glint_buf_str(&log, request_line);
    glint_log_str(GLINT_LOG_INFO, glint_buf_finish(&log));

    glint_buf body = GLINT_BUF_INIT;
    glint_buf_str(&body, request_line);
    glint_buf_cstr(&body, "\n");
    glint_buf_bytes(&body, req->body);
    static const glint_header x_echo = {{"x-echo", 6}, {(const uint8_t *)"1", 1}};
    glint_http_response res = {200, &x_echo, 1, glint_buf_finish_bytes(&body)};
    return res;
}

static glint_http_response hello(glint_str segment) {
    glint_str name;
    if (segment.len == 0 || !glint_http_percent_decode(segment, &name) || name.len == 0) {
        return text(400, GLINT_STR("bad path segment\n"));
    }
    glint_buf body = GLINT_BUF_INIT;
    glint_buf_cstr(&body, "Hello, ");
    glint_buf_str(&body, name);
    glint_buf_cstr(&body, "!\n");
    return text(200, glint_buf_finish(&body));
}

GLINT_HTTP_HANDLER(handle, req) {
    glint_str path = glint_http_path(req->target);
    bool get = glint_str_eq(req->method, "GET");
    if (starts_with(path, "/echo/") || glint_str_eq(path, "/echo")) return echo(req);
    if (get && starts_with(path, "/hello/")) {
        glint_str rest = {path.ptr + 7, path.len - 7};
        for (size_t i = 0; i < rest.len; i++) {
            if (rest.ptr[i] == '/') return text(404, GLINT_STR("no such route\n"));
        }
        return hello(rest);
    }
    if (get && starts_with(path, "/status/")) {
        uint32_t code = 0;
        for (size_t i = 8; i < path.len && code < 100000; i++) {
            if (path.ptr[i] < '0' || path.ptr[i] > '9') return text(400, GLINT_STR("not a number\n"));
            code = code * 10 + (uint32_t)(path.ptr[i] - '0');
        }
        glint_http_response res = {code, 0, 0, {0, 0}};
        return res;
    }
    if (get && glint_str_eq(path, "/fail")) {
        glint_fail("the handler failed on purpose");
        return text(500, GLINT_STR(""));
    }
    return text(404, GLINT_STR("no such route\n"));
}

GLINT_EXPORT(i32, add, (i32, a), (i32, b)) {
    return (int32_t)((uint32_t)a + (uint32_t)b);
}
