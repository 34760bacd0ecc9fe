/* libFuzzer harness: request heads (default and tiny limits) and chunked
 * bodies. The body after a complete head is decoded as chunked whatever the
 * head said, and so is the whole input when the head is not complete, so
 * the fuzzer reaches the decoder from both ends. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct px_h1_limits def = {16384, 8192, 100};
    static const struct px_h1_limits tiny = {200, 40, 4};
    const char *in = (const char *)data;
    struct head_run r;
    size_t body;

    head_all(1, 0, &tiny, in, size, &r);
    head_all(1, 0, &def, in, size, &r);
    body = r.st == PX_H1_DONE ? r.h.head_len : 0;
    chunked_all(in + body, size - body);
    return 0;
}
