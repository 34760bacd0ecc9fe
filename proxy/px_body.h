/* px_body: one body relay for both directions and both framings. It moves
 * a message body from an input buffer to an output buffer: a Content-Length
 * body byte for byte, a chunked body decoded and (when asked) re-chunked, so
 * the framing the other side sees is always the proxy's own, with its
 * trailer fields carried after the last chunk (hop-by-hop and framing ones
 * dropped; nothing of the last chunk goes out before the whole trailer
 * section is in and valid), and a body that ends with the connection as it
 * comes. It stops when the input is empty,
 * the body is complete, or the output holds more than the caller's
 * high-water mark (backpressure). Owns nothing but its small state, which
 * the caller embeds. No callbacks; loop thread. */
#ifndef PX_BODY_H
#define PX_BODY_H

#include <stddef.h>
#include <stdint.h>

#include "px_http1.h"

struct evbuffer;

struct px_body {
    enum px_h1_body framing;
    uint64_t left;             /* LENGTH: bytes still to come */
    struct px_h1_chunked dec;  /* CHUNKED: the decoder */
    int rechunk;               /* CHUNKED: write chunks (else the data alone) */
    int done;
    char *trailer;             /* CHUNKED: the trailer section so far; owned */
    size_t trailer_len;
    uint64_t wire;             /* bytes taken from the input so far */
    uint64_t data;             /* body bytes passed on so far */
};

enum px_body_status {
    PX_BODY_MORE,   /* more input is needed (or the output is full) */
    PX_BODY_DONE,   /* the body is complete: nothing more is read */
    PX_BODY_ERROR   /* malformed chunked framing: nothing more may be relayed */
};

/* Sets b up for a body of the given framing; length for LENGTH. A NONE
 * body, or a LENGTH body of 0 bytes, is done at once. */
void px_body_init(struct px_body *b, enum px_h1_body framing, uint64_t length, int rechunk);

/* Frees what px_body_init() and px_body_relay() allocated (the trailer
 * section). Accepts a zeroed b. */
void px_body_clear(struct px_body *b);

/* Relays from in to out until in is empty, the body is done, or out holds
 * at least high bytes. Each round takes at least one byte, so the call is
 * bounded by the input. An EOF body is never DONE here: the caller ends it
 * when the connection closes. */
enum px_body_status px_body_relay(struct px_body *b, struct evbuffer *in, struct evbuffer *out,
                                  size_t high);

#endif
