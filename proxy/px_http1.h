/* px_http1: a strict, incremental HTTP/1.1 message parser (RFC 9112) for
 * both sides of the proxy: request heads from clients, response heads from
 * the upstream, and chunked bodies either way. It does no I/O and no
 * allocation: the caller hands it the bytes, it hands back slices of them.
 * Anything ambiguous is an error (see px_h1_parse_head), because a proxy and
 * an upstream that disagree on framing let a request ride inside another. */
#ifndef PX_HTTP1_H
#define PX_HTTP1_H

#include <stddef.h>
#include <stdint.h>

enum px_h1_status {
    PX_H1_ERROR = -1,    /* malformed: see head->error_status / error */
    PX_H1_NEED_MORE = 0, /* all input scanned, message part not complete */
    PX_H1_DONE = 1       /* the head (or the chunked body) is complete */
};

#define PX_H1_MAX_FIELDS_CAP 128

/* Field flags set by the parser. */
#define PX_H1_F_HOP     0x01u /* hop-by-hop: never forwarded (Connection, the
                                 fields it names, Keep-Alive, TE, Trailer,
                                 Upgrade, Proxy-Connection) */
#define PX_H1_F_FRAMING 0x02u /* Content-Length / Transfer-Encoding: the proxy
                                 writes its own */
#define PX_H1_F_EXPECT  0x04u /* Expect: relayed only while the proxy waits for the 100 */
#define PX_H1_F_TRAILER 0x08u /* Trailer: names the trailer fields; meaningful
                                only while the message stays chunked */

struct px_h1_field {
    const char *name;  size_t name_len;   /* slice of the caller's buffer */
    const char *value; size_t value_len;  /* OWS trimmed */
    unsigned flags;
};

enum px_h1_body {
    PX_H1_BODY_NONE,     /* no body */
    PX_H1_BODY_LENGTH,   /* content_length bytes */
    PX_H1_BODY_CHUNKED,  /* chunked: use px_h1_chunked_* */
    PX_H1_BODY_EOF       /* response only: until the upstream closes */
};

/* Limits of one parser. Requests and responses have their own: the caller
 * keeps one px_h1_limits per side (a response head is typically allowed to
 * be larger: max_response_header_bytes). Over any limit a request gets the
 * status below, a response 502. */
struct px_h1_limits {
    size_t max_head;      /* whole head incl. start line; over: 431 */
    size_t max_line;      /* start line; over: 414 */
    unsigned max_fields;  /* header fields; over: 431 (<= PX_H1_MAX_FIELDS_CAP) */
};

/* The limits px_h1_parser_init() uses for lim == NULL. */
#define PX_H1_DEFAULT_MAX_HEAD          16384u /* request heads */
#define PX_H1_DEFAULT_MAX_RESPONSE_HEAD 65536u /* response heads */
#define PX_H1_DEFAULT_MAX_LINE          8192u
#define PX_H1_DEFAULT_MAX_FIELDS        100u

/* The form of a request target (RFC 9112 3.2). */
enum px_h1_target_form {
    PX_H1_TARGET_ORIGIN,   /* "/path?query": origin == target */
    PX_H1_TARGET_ABSOLUTE, /* "http://authority/path?query": authority and
                              origin ("/path?query") are slices of target */
    PX_H1_TARGET_ASTERISK  /* "*", method OPTIONS: origin is NULL */
};

/* A parsed head. Every pointer is a slice of the buffer given to
 * px_h1_parse_head() and is valid only while that buffer is unchanged. */
struct px_h1_head {
    /* request line */
    const char *method; size_t method_len;
    const char *target; size_t target_len;   /* as sent */
    enum px_h1_target_form target_form;
    const char *authority; size_t authority_len; /* absolute-form: host[:port]
                                                    of the target, else NULL */
    const char *origin; size_t origin_len;   /* the target as origin-form:
                                                "/path?query", starting with
                                                '/'; NULL for asterisk-form */
    /* status line */
    int status;
    const char *reason; size_t reason_len;
    int minor;                     /* HTTP/1.<minor>: 0 or 1 */
    unsigned n_fields;
    enum px_h1_body body;
    uint64_t content_length;       /* for PX_H1_BODY_LENGTH; also set for a
                                      body-less response (HEAD, 304) that
                                      carried a valid Content-Length */
    int keep_alive;                /* persistent per version and Connection */
    int expect_continue;           /* request had Expect: 100-continue */
    const char *host; size_t host_len; /* request's Host value */
    size_t head_len;               /* bytes of the head, final CRLF included */
    int error_status;              /* on PX_H1_ERROR: 400, 414, 417, 431, 501
                                      for requests; 502 for responses */
    const char *error;             /* on PX_H1_ERROR: static text for logs */
    /* Last, so that the fixed part above is one prefix: a DONE writes
     * fields[0..n_fields) and leaves the slots past it as they were, and a
     * copy needs only PX_H1_HEAD_USED(h) bytes. */
    struct px_h1_field fields[PX_H1_MAX_FIELDS_CAP];
};

/* The bytes of *h that a DONE wrote: the fixed part and fields[0..n_fields). */
#define PX_H1_HEAD_USED(h)                                                                         \
    (offsetof(struct px_h1_head, fields) + (size_t)(h)->n_fields * sizeof(struct px_h1_field))

/* Parser state for one head. Plain data: init, then feed. */
struct px_h1_parser {
    int is_request;
    int head_request;         /* response to a HEAD request: no body */
    struct px_h1_limits lim;
    size_t scanned;           /* bytes already scanned for line ends */
    size_t line_start;        /* offset where the current line starts */
    size_t first_line_start;  /* 2 after an ignored leading CRLF, else 0 */
    size_t first_line_len;    /* 0 until the start line is complete */
    unsigned lines;           /* field lines seen so far */
    int final;                /* DONE or ERROR once decided, else 0: a later
                                 call repeats the answer, never rescans */
    int error_status;         /* kept for that repeat */
    const char *error;
};

/* Prepares p to parse a request head (is_request = 1) or a response head
 * (is_request = 0; head_request = 1 when it answers a HEAD request). lim is
 * copied; NULL means the defaults (PX_H1_DEFAULT_*: 16384 or, for a response,
 * 65536 head bytes; 8192 for the start line; 100 fields). max_fields is
 * capped at PX_H1_MAX_FIELDS_CAP. A caller that reads at most max_head + 1
 * bytes before parsing takes max_head from p->lim (plain data). */
void px_h1_parser_init(struct px_h1_parser *p, int is_request, int head_request,
                       const struct px_h1_limits *lim);

/* buf holds every byte of the message received so far, from its first byte
 * (len bytes). Each call scans only what is new since the last one, so the
 * caller may feed one byte at a time. Returns NEED_MORE, DONE (h filled,
 * h->head_len bytes belong to the head, the body follows), or ERROR
 * (h->error_status and h->error set; the connection must be closed).
 *
 * Requests are refused for: bare CR or bare LF; obs-fold; whitespace before
 * the colon; an empty or non-token field name; NUL or control bytes in a
 * value; a request line that is not exactly "method SP target SP HTTP/1.x"
 * (version other than 1.0/1.1, HTTP/0.9, double spaces, tabs, spaces or
 * controls in the target); missing (1.1), duplicate or invalid Host;
 * Content-Length with Transfer-Encoding; Content-Length not 1*DIGIT, a list
 * or several differing values, overflow; Transfer-Encoding on HTTP/1.0, with
 * chunked twice or not last (400), or an unknown coding (501). Leading zeros
 * in Content-Length and "Chunked" in any case are accepted. Several
 * Content-Length fields are refused even when they agree. An unknown coding
 * anywhere in the list is 501 first; a known one other than chunked (gzip,
 * deflate, compress, identity) is 501 once the list is otherwise valid. An
 * Expect other than "100-continue" is 417 (100-continue in an HTTP/1.0
 * request is ignored, RFC 9110 10.1.1). One empty line (CRLF) before a
 * request line is ignored (RFC 9112 2.2: it is then part of head_len and the
 * slices start after it); a second one, or one before a status line, is
 * refused. The target must be origin-form, absolute-form (scheme http or
 * https, a valid Host as authority, no userinfo, a non-empty path) or "*"
 * with OPTIONS (see enum px_h1_target_form); anything else is 400.
 * Responses get the same framing rules and must use chunked alone when they
 * use Transfer-Encoding; any error is 502. 1xx, 204, 304 and responses to
 * HEAD have no body; a response without framing is read until EOF (and is
 * then not keep-alive). h is written only on DONE (filled from scratch up to
 * fields[n_fields]; the slots past it are not touched) and ERROR
 * (error_status and error), so a fresh, uninitialised h per call is fine. Once DONE
 * or ERROR, further calls return the same (DONE refills h from buf[0..
 * head_len)); parse the next message with a freshly initialised parser. */
enum px_h1_status px_h1_parse_head(struct px_h1_parser *p, const char *buf,
                                   size_t len, struct px_h1_head *h);

/* Case-insensitive comparison of a field name with a NUL-terminated name. */
int px_h1_name_is(const struct px_h1_field *f, const char *name);

/* Chunked body decoder state. Plain data. */
struct px_h1_chunked {
    int state;
    uint64_t remaining;        /* data bytes left in the current chunk */
    size_t line_len;           /* bytes of the current size/trailer line */
    size_t trailer_len;        /* bytes of trailer section so far */
    unsigned digits;           /* hex digits in the current size */
    const char *error;         /* on PX_H1_ERROR: static text for logs */
};

void px_h1_chunked_init(struct px_h1_chunked *c);

/* Decodes up to len bytes of a chunked body from in. Sets *consumed to the
 * bytes used; when *data_len > 0, in[*data_off .. *data_off + *data_len) is
 * body data (within the consumed bytes) for the caller to pass on. A call
 * returns after at most one data run: the caller loops, advancing by
 * *consumed, until all input is consumed or the result is not NEED_MORE.
 * Returns NEED_MORE, DONE (last chunk and trailer section ended; bytes after
 * *consumed belong to the next message) or ERROR (c->error set). Data is only
 * ever returned with NEED_MORE, and NEED_MORE with len > 0 always consumes
 * at least one byte. After DONE or ERROR, later calls return the same with
 * *consumed 0. Chunk extensions
 * may be preceded by BWS ("5 ;x=1"); whitespace before the CRLF without an
 * extension is refused. Refused: a size line with a
 * sign, "0x", leading whitespace, junk, more than 16 hex digits, bare LF or
 * bare CR; a chunk extension with control bytes or over 4 KiB; missing CRLF
 * after data; a malformed trailer field or a trailer section over 16 KiB.
 * Trailer fields are validated like header fields (name a token, ':' right
 * after it, no obs-fold, no controls in the value) and not returned: use
 * px_h1_chunked_step() to get them. */
enum px_h1_status px_h1_chunked_feed(struct px_h1_chunked *c, const char *in,
                                     size_t len, size_t *consumed,
                                     size_t *data_off, size_t *data_len);

/* What one px_h1_chunked_step() call found in its input. Offsets are into
 * the in buffer of that call and lie within its consumed bytes. */
struct px_h1_chunk_run {
    size_t consumed;                 /* bytes of in used */
    size_t data_off, data_len;       /* a run of body data (data_len may be 0) */
    size_t trailer_off, trailer_len; /* a run of trailer-section bytes */
};

/* px_h1_chunked_feed() that also hands back the trailer section. Trailer
 * bytes are the field lines after the last chunk, each with its CRLF, in
 * order, without the final empty line; runs of successive calls concatenate
 * to the whole section (at most 16 KiB), which is complete and validated
 * only when the call that ends it returns DONE: hold the bytes until then
 * (copy them: in is the caller's buffer) and re-emit them after "0\r\n", or
 * walk them with px_h1_trailer_next(). A call returns trailer bytes with
 * NEED_MORE or DONE, never data and trailer bytes together. Otherwise as
 * px_h1_chunked_feed(); run is overwritten. */
enum px_h1_status px_h1_chunked_step(struct px_h1_chunked *c, const char *in,
                                     size_t len, struct px_h1_chunk_run *run);

/* Walks the field lines of a trailer section that px_h1_chunked_step()
 * returned (sec, len bytes; borrowed), from *pos (start at 0). Returns 1 and
 * fills f (slices of sec; flags as for header fields: PX_H1_F_FRAMING for
 * Content-Length / Transfer-Encoding, PX_H1_F_HOP for hop-by-hop names, which
 * a relay should not re-emit), 0 at the end, or -1 when sec is not a valid
 * section (not possible for bytes the decoder accepted). */
int px_h1_trailer_next(const char *sec, size_t len, size_t *pos, struct px_h1_field *f);

/* The standard reason phrase of a status code ("OK", "Bad Request", ...), or
 * "Unknown". Static. */
const char *px_h1_reason(int status);

#endif
