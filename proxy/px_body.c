/* px_body: see px_body.h. */
#include "px_body.h"

#include <event2/buffer.h>

/* Most bytes decoded from one pulled-up run of a chunked body. */
#define PX_CHUNK_RUN (64 * 1024)

void px_body_init(struct px_body *b, enum px_h1_body framing, uint64_t length, int rechunk)
{
    b->framing = framing;
    b->left = framing == PX_H1_BODY_LENGTH ? length : 0;
    b->rechunk = rechunk;
    b->wire = b->data = 0;
    b->done = framing == PX_H1_BODY_NONE || (framing == PX_H1_BODY_LENGTH && length == 0);
    px_h1_chunked_init(&b->dec);
}

/* Decodes up to PX_CHUNK_RUN bytes of a chunked body from in and appends
 * the data to out, as chunks again when rechunk is set. The terminating
 * chunk is written after the last one when rechunk is set. */
static enum px_h1_status relay_chunked(struct px_body *b, struct evbuffer *in,
                                       struct evbuffer *out)
{
    size_t avail = evbuffer_get_length(in);
    size_t n = avail < PX_CHUNK_RUN ? avail : PX_CHUNK_RUN;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
    size_t used = 0, consumed, off, dlen;
    enum px_h1_status st = PX_H1_NEED_MORE;

    while (used < n) {
        st = px_h1_chunked_feed(&b->dec, p + used, n - used, &consumed, &off, &dlen);
        if (st == PX_H1_ERROR)
            return st;
        if (dlen > 0) {
            if (b->rechunk)
                evbuffer_add_printf(out, "%zx\r\n", dlen);
            evbuffer_add(out, p + used + off, dlen);
            if (b->rechunk)
                evbuffer_add(out, "\r\n", 2);
            b->data += dlen;
        }
        used += consumed;
        if (st == PX_H1_DONE)
            break;
    }
    evbuffer_drain(in, used);
    b->wire += used;
    if (st == PX_H1_DONE && b->rechunk)
        evbuffer_add(out, "0\r\n\r\n", 5);
    return st;
}

enum px_body_status px_body_relay(struct px_body *b, struct evbuffer *in, struct evbuffer *out,
                                  size_t high)
{
    size_t avail;

    while (!b->done && (avail = evbuffer_get_length(in)) > 0 &&
           evbuffer_get_length(out) < high) {
        if (b->framing == PX_H1_BODY_LENGTH) {
            size_t n = avail < b->left ? avail : (size_t)b->left;
            evbuffer_remove_buffer(in, out, n);
            b->left -= n;
            b->wire += n;
            b->data += n;
            b->done = b->left == 0;
        } else if (b->framing == PX_H1_BODY_EOF) {
            evbuffer_remove_buffer(in, out, avail);
            b->wire += avail;
            b->data += avail;
        } else {
            enum px_h1_status st = relay_chunked(b, in, out);
            if (st == PX_H1_ERROR)
                return PX_BODY_ERROR;
            b->done = st == PX_H1_DONE;
        }
    }
    return b->done ? PX_BODY_DONE : PX_BODY_MORE;
}
