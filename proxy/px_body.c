/* px_body: see px_body.h. */
#include "px_body.h"

#include <stdlib.h>
#include <string.h>

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
    b->trailer = NULL;
    b->trailer_len = 0;
    px_h1_chunked_init(&b->dec);
}

void px_body_clear(struct px_body *b)
{
    free(b->trailer);
    b->trailer = NULL;
    b->trailer_len = 0;
}

/* Keeps trailer bytes until the section is complete (at most the decoder's
 * 16 KiB). 0, or -1 when out of memory. */
static int keep_trailer(struct px_body *b, const char *p, size_t n)
{
    char *t;

    if (n == 0)
        return 0;
    t = realloc(b->trailer, b->trailer_len + n);
    if (t == NULL)
        return -1;
    memcpy(t + b->trailer_len, p, n);
    b->trailer = t;
    b->trailer_len += n;
    return 0;
}

/* The last chunk, the trailer fields a relay passes on, the end. */
static void end_chunked(struct px_body *b, struct evbuffer *out)
{
    struct px_h1_field f;
    size_t pos = 0;

    evbuffer_add(out, "0\r\n", 3);
    while (px_h1_trailer_next(b->trailer, b->trailer_len, &pos, &f) == 1) {
        if (f.flags & (PX_H1_F_HOP | PX_H1_F_FRAMING))
            continue;
        evbuffer_add(out, f.name, f.name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, f.value, f.value_len);
        evbuffer_add(out, "\r\n", 2);
    }
    evbuffer_add(out, "\r\n", 2);
    px_body_clear(b);
}

/* Decodes up to PX_CHUNK_RUN bytes of a chunked body from in and appends
 * the data to out, as chunks again when rechunk is set; then, after the last
 * chunk, the trailer fields and the end. */
static enum px_h1_status relay_chunked(struct px_body *b, struct evbuffer *in,
                                       struct evbuffer *out)
{
    size_t avail = evbuffer_get_length(in);
    size_t n = avail < PX_CHUNK_RUN ? avail : PX_CHUNK_RUN;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
    size_t used = 0;
    struct px_h1_chunk_run run;
    enum px_h1_status st = PX_H1_NEED_MORE;

    while (used < n) {
        st = px_h1_chunked_step(&b->dec, p + used, n - used, &run);
        if (st == PX_H1_ERROR)
            return st;
        if (run.data_len > 0) {
            if (b->rechunk)
                evbuffer_add_printf(out, "%zx\r\n", run.data_len);
            evbuffer_add(out, p + used + run.data_off, run.data_len);
            if (b->rechunk)
                evbuffer_add(out, "\r\n", 2);
            b->data += run.data_len;
        }
        if (b->rechunk && keep_trailer(b, p + used + run.trailer_off, run.trailer_len) < 0)
            return PX_H1_ERROR;
        used += run.consumed;
        if (st == PX_H1_DONE)
            break;
    }
    evbuffer_drain(in, used);
    b->wire += used;
    if (st == PX_H1_DONE && b->rechunk)
        end_chunked(b, out);
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
