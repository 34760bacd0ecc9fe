/* libFuzzer harness: response heads, as the answer to a HEAD request and to
 * anything else, then the body: decoded as chunked when the head says so,
 * and checked against Content-Length otherwise. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct px_h1_limits def = {16384, 8192, 100};
    static const struct px_h1_limits tiny = {200, 40, 4};
    const char *in = (const char *)data;
    struct head_run r, rh;

    head_all(0, 1, &def, in, size, &rh);
    head_all(0, 0, &tiny, in, size, &r);
    head_all(0, 0, &def, in, size, &r);
    CHECK(strcmp(px_h1_reason(r.h.status), "") != 0);
    if (r.st == PX_H1_DONE) {
        CHECK(rh.st == PX_H1_DONE && rh.h.head_len == r.h.head_len);
        CHECK(rh.h.body == PX_H1_BODY_NONE);
        if (r.h.body == PX_H1_BODY_CHUNKED)
            chunked_all(in + r.h.head_len, size - r.h.head_len);
        if (r.h.body == PX_H1_BODY_EOF)
            CHECK(r.h.keep_alive == 0);
    } else {
        CHECK(rh.st == r.st);
        chunked_all(in, size);
    }
    return 0;
}
