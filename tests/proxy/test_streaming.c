/* Bodies stream both ways in both framings (issue 3): a 32 MiB upload with
 * Content-Length and one chunked reach the upstream whole (length and hash),
 * and large responses, sized and chunked, reach the client whole. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pxt.h"

#define UPLOAD (32u * 1024 * 1024)
#define PIECE (256u * 1024)

TestSuite(streaming, .fini = pxt_teardown, .timeout = 90);

/* The client gets 200 and the upstream got the whole upload, UPLOAD bytes
 * hashing to hash, in the framing the proxy chose (chunked or not). */
static void expect_upload(int fd, uint64_t hash, int chunked)
{
    struct ts_resp r;
    struct ts_upstream_req *q;

    cr_assert_eq(ts_http_read(fd, &r, 20000, 0), 0);
    cr_assert_eq(r.status, 200);
    ts_resp_free(&r);
    close(fd);
    pxt_wait_count(1, 5000);
    q = pxt_get(0);
    cr_assert_eq(q->body_len, UPLOAD);
    cr_assert_eq(q->body_hash, hash, "body differs");
    cr_assert_eq(q->chunked, chunked);
    free(q);
}

Test(streaming, upload_content_length_32m)
{
    unsigned char *buf = malloc(PIECE);
    uint64_t hash = TS_FNV_OFFSET;
    char head[256];
    int fd;

    pxt_setup(NULL);
    ts_upstream_set_sink(pxt.up, 1);
    fd = pxt_connect();
    snprintf(head, sizeof(head), "PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: %u\r\n\r\n",
             UPLOAD);
    pxt_sends(fd, head);
    for (uint64_t off = 0; off < UPLOAD; off += PIECE) {
        pxt_pattern(buf, PIECE, off);
        hash = ts_upstream_hash_update(hash, buf, PIECE);
        pxt_send(fd, buf, PIECE);
    }
    expect_upload(fd, hash, 0);
    free(buf);
    pxt_pass();
}

Test(streaming, upload_chunked_32m)
{
    unsigned char *buf = malloc(PIECE);
    uint64_t hash = TS_FNV_OFFSET, off = 0;
    char line[64];
    size_t sizes[] = {1, 4095, PIECE, 17, 65536, 100000};
    unsigned k = 0;
    int fd;

    pxt_setup(NULL);
    ts_upstream_set_sink(pxt.up, 1);
    fd = pxt_connect();
    pxt_sends(fd, "PUT /bigc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    while (off < UPLOAD) {
        size_t n = sizes[k++ % (sizeof(sizes) / sizeof(sizes[0]))];
        if (n > UPLOAD - off)
            n = UPLOAD - off;
        pxt_pattern(buf, n, off);
        hash = ts_upstream_hash_update(hash, buf, n);
        snprintf(line, sizeof(line), "%zx%s\r\n", n, (k % 7) == 0 ? ";ext=1" : "");
        pxt_sends(fd, line);
        pxt_send(fd, buf, n);
        pxt_sends(fd, "\r\n");
        off += n;
    }
    pxt_sends(fd, "0\r\n\r\n");
    expect_upload(fd, hash, 1);
    free(buf);
    pxt_pass();
}

static char *sized_response(size_t n, uint64_t *hash)
{
    char *raw = malloc(n + 128);
    int h = sprintf(raw, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n);

    pxt_pattern((unsigned char *)raw + h, n, 0);
    *hash = ts_upstream_hash(raw + h, n);
    raw[h + n] = '\0'; /* ts_upstream_set_response copies a C string */
    return raw;
}

Test(streaming, download_content_length_16m)
{
    size_t n = 16u * 1024 * 1024;
    uint64_t hash;
    char *raw = sized_response(n, &hash);
    struct ts_resp r;
    char *z;

    /* The pattern has NUL bytes; the upstream takes a C string, so replace
     * them by a byte that stays in the hash. */
    z = strstr(raw, "\r\n\r\n") + 4;
    for (size_t i = 0; i < n; i++)
        if (z[i] == '\0')
            z[i] = 'Z';
    hash = ts_upstream_hash(z, n);
    pxt_setup(NULL);
    cr_assert_eq(ts_upstream_set_response(pxt.up, raw), 0);
    free(raw);
    cr_assert_eq(ts_http_get(pxt.px.port, "/download", &r), 200);
    cr_assert_eq(r.body_len, n);
    cr_assert_eq(ts_upstream_hash(r.body, r.body_len), hash, "body differs");
    ts_resp_free(&r);
    pxt_pass();
}

Test(streaming, download_chunked_4m)
{
    size_t total = 4u * 1024 * 1024, off = 0, pos;
    char *raw = malloc(total + total / 100 + 4096);
    unsigned char *piece = malloc(70000);
    uint64_t hash = TS_FNV_OFFSET;
    struct ts_resp r;
    char val[64];
    unsigned k = 0;

    pos = (size_t)sprintf(raw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    while (off < total) {
        size_t n = (k++ % 2) ? 65536 : 1000 + k;
        if (n > total - off)
            n = total - off;
        pxt_pattern(piece, n, off);
        for (size_t i = 0; i < n; i++)
            if (piece[i] == 0)
                piece[i] = 'Z';
        hash = ts_upstream_hash_update(hash, piece, n);
        pos += (size_t)sprintf(raw + pos, "%zx\r\n", n);
        memcpy(raw + pos, piece, n);
        pos += n;
        memcpy(raw + pos, "\r\n", 2);
        pos += 2;
        off += n;
    }
    pos += (size_t)sprintf(raw + pos, "0\r\n\r\n");
    pxt_setup(NULL);
    cr_assert_eq(ts_upstream_set_response(pxt.up, raw), 0);
    free(raw);
    free(piece);
    cr_assert_eq(ts_http_get(pxt.px.port, "/downloadc", &r), 200);
    cr_assert(ts_resp_header(&r, "Transfer-Encoding", val, sizeof(val)), "%s", r.head);
    cr_assert_str_eq(val, "chunked");
    cr_assert_eq(r.body_len, total);
    cr_assert_eq(ts_upstream_hash(r.body, r.body_len), hash, "body differs");
    ts_resp_free(&r);
    pxt_pass();
}

/* An HTTP/1.0 client cannot take chunked: it gets the body until close. */
Test(streaming, download_chunked_to_http10)
{
    struct ts_resp r;
    static const char req[] = "GET /old HTTP/1.0\r\n\r\n";

    pxt_setup(NULL);
    ts_upstream_set_response(pxt.up, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    cr_assert_eq(ts_http_raw(pxt.px.port, req, sizeof(req) - 1, &r, 5000), 200);
    cr_assert_null(strstr(r.head, "chunked"), "%s", r.head);
    cr_assert_str_eq(r.body, "hello world");
    cr_assert(r.closed);
    ts_resp_free(&r);
    pxt_pass();
}
