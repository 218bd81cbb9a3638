/* A glint guest: `hello` is exported to the host; `greeting` is a host function it imports. */
#include "glint.h"

/* Provided by the embedder (SandboxBuilder::host_fn("greeting", ...)); the host checks at
 * initialisation that it exists with this signature. */
GLINT_IMPORT(str, greeting, (str, name));

/* Greets `name`, with the host's greeting when the host provides one. */
GLINT_EXPORT(str, hello, (str, name)) {
    glint_buf line = GLINT_BUF_INIT;
    glint_buf_cstr(&line, "hello(");
    glint_buf_str(&line, name);
    glint_buf_cstr(&line, ")");
    glint_log_str(GLINT_LOG_INFO, glint_buf_finish(&line)); /* goes to the host's log */

    glint_buf out = GLINT_BUF_INIT;
    glint_str prefix;
    if (greeting(name, &prefix)) {
        glint_buf_str(&out, prefix);
        glint_buf_cstr(&out, ", ");
        glint_buf_str(&out, name);
        glint_buf_cstr(&out, "!");
    } else {
        /* `glint run` provides no host functions: the import is a stub that fails. */
        glint_buf_cstr(&out, "Hello, ");
        glint_buf_str(&out, name);
        glint_buf_cstr(&out, "! (the host says: ");
        glint_buf_str(&out, glint_last_error()->message);
        glint_buf_cstr(&out, ")");
    }
    return glint_buf_finish(&out); /* the runtime frees it after the call */
}
