/* ec_client: see ec_client.h. Owns two curl easy handles (requests, watch),
 * the endpoint list and the response buffer; builds requests and reads
 * answers with json-c, base64 by hand. */
#include "ec_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EC_MAX_ENDPOINTS 16
#define EC_MAX_BODY      (64u << 20) /* largest answer accepted */

struct buf {
    char *p;
    size_t len, cap;
};

struct ec_client {
    CURL *req;   /* request connection */
    CURL *watch; /* watch connection */
    char *list;  /* as given */
    char *ep[EC_MAX_ENDPOINTS];
    size_t nep, cur; /* cur: the endpoint that answered last */
    int tls;         /* https to every member (ec_client_set_tls) */
    char *ca, *cert, *key; /* PEM files; ca NULL: the system store */
    struct buf body;
    int code;
    char err[1024];
};

int64_t ec_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;

static void curl_init_once(void)
{
    curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

/* ---- base64 (RFC 4648, with padding) ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Returns a malloc'd NUL-terminated encoding of p[0..n), or NULL. */
static char *b64_encode(const void *p, size_t n)
{
    const unsigned char *s = p;
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;

        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        *o++ = b64[(v >> 18) & 63];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

static int b64_val(char c)
{
    const char *q = c ? strchr(b64, c) : NULL;

    return q ? (int)(q - b64) : -1;
}

/* Decodes s into a malloc'd NUL-terminated buffer, *n its length. NULL on bad
 * input or no memory. */
static char *b64_decode(const char *s, size_t *n)
{
    size_t len = strlen(s), k = 0;
    char *out = malloc(len / 4 * 3 + 4);
    unsigned v = 0;
    int bits = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        int d;

        if (s[i] == '=')
            break;
        if ((d = b64_val(s[i])) < 0) {
            free(out);
            return NULL;
        }
        v = (v << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (char)((v >> bits) & 0xff);
        }
    }
    out[k] = '\0';
    *n = k;
    return out;
}

/* ---- JSON helpers: 64-bit integers as strings, missing = 0/false ---- */

static int64_t j_int(json_object *o, const char *field)
{
    json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, field, &v) || v == NULL)
        return 0;
    if (json_object_is_type(v, json_type_string))
        return strtoll(json_object_get_string(v), NULL, 10);
    return json_object_get_int64(v);
}

static int j_bool(json_object *o, const char *field)
{
    json_object *v;

    if (o == NULL || !json_object_object_get_ex(o, field, &v) || v == NULL)
        return 0;
    return json_object_get_boolean(v);
}

static json_object *j_get(json_object *o, const char *field)
{
    json_object *v = NULL;

    if (o == NULL || !json_object_object_get_ex(o, field, &v))
        return NULL;
    return v;
}

static void j_add_int(json_object *o, const char *field, int64_t v)
{
    char s[24];

    snprintf(s, sizeof s, "%" PRId64, v);
    json_object_object_add(o, field, json_object_new_string(s));
}

/* Adds field = base64(p[0..n)). 0 / -1. */
static int j_add_b64(json_object *o, const char *field, const void *p, size_t n)
{
    char *e = b64_encode(p, n);

    if (e == NULL)
        return -1;
    json_object_object_add(o, field, json_object_new_string(e));
    free(e);
    return 0;
}

/* ---- the client ---- */

struct ec_client *ec_client_new(const char *endpoints, char *err, size_t errlen)
{
    char dummy[8], *save = NULL, *tok, *copy = NULL;
    struct ec_client *c = NULL;

    if (err == NULL) {
        err = dummy;
        errlen = sizeof dummy;
    }
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ok) {
        snprintf(err, errlen, "curl_global_init failed");
        goto fail;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL || (c->list = strdup(endpoints)) == NULL || (copy = strdup(endpoints)) == NULL)
        goto oom;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        const char *colon = strrchr(tok, ':');
        char *end;
        long port;

        if (colon == NULL || colon == tok) {
            snprintf(err, errlen, "bad etcd endpoint '%s' (want host:port)", tok);
            goto fail;
        }
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (errno || *end != '\0' || port < 1 || port > 65535 || end == colon + 1) {
            snprintf(err, errlen, "bad port in etcd endpoint '%s'", tok);
            goto fail;
        }
        if (c->nep == EC_MAX_ENDPOINTS) {
            snprintf(err, errlen, "more than %d etcd endpoints", EC_MAX_ENDPOINTS);
            goto fail;
        }
        if ((c->ep[c->nep++] = strdup(tok)) == NULL)
            goto oom;
    }
    if (c->nep == 0) {
        snprintf(err, errlen, "no etcd endpoint in '%s'", endpoints);
        goto fail;
    }
    c->req = curl_easy_init();
    c->watch = curl_easy_init();
    if (c->req == NULL || c->watch == NULL)
        goto oom;
    free(copy);
    return c;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    free(copy);
    ec_client_free(&c);
    return NULL;
}

void ec_client_free(struct ec_client **cp)
{
    struct ec_client *c;

    if (cp == NULL || (c = *cp) == NULL)
        return;
    if (c->req)
        curl_easy_cleanup(c->req);
    if (c->watch)
        curl_easy_cleanup(c->watch);
    for (size_t i = 0; i < c->nep; i++)
        free(c->ep[i]);
    free(c->list);
    free(c->ca);
    free(c->cert);
    free(c->key);
    free(c->body.p);
    free(c);
    *cp = NULL;
}

const char *ec_client_error(const struct ec_client *c)
{
    return c->err;
}

int ec_client_code(const struct ec_client *c)
{
    return c->code;
}

const char *ec_client_endpoints(const struct ec_client *c)
{
    return c->list;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t len = size * n;

    if (b->len + len + 1 > EC_MAX_BODY)
        return 0;
    if (b->len + len + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        char *q;

        while (nc < b->len + len + 1)
            nc *= 2;
        if ((q = realloc(b->p, nc)) == NULL)
            return 0;
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->len, p, len);
    b->len += len;
    b->p[b->len] = '\0';
    return len;
}

/* Appends "ep: what" to the message listing the members tried. */
static void note_failure(struct ec_client *c, const char *ep, const char *what)
{
    size_t n = strlen(c->err);

    snprintf(c->err + n, sizeof c->err - n, "%s%s: %s", n ? "; " : "", ep, what);
}

/* Time for one attempt: the rest of the deadline for the last endpoint to
 * try, else a share of it (at least 500 ms) so one hung member does not use
 * up the whole call. */
static int64_t attempt_ms(int64_t deadline_ms, size_t left_to_try)
{
    int64_t rest = deadline_ms - ec_now_ms(), share;

    if (left_to_try <= 1)
        return rest;
    share = rest / (int64_t)left_to_try;
    if (share < 500)
        share = 500;
    return share < rest ? share : rest;
}

static void setup_post(const struct ec_client *c, CURL *h, const char *url, const char *body,
                       size_t len, int64_t ms)
{
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(ms < 1000 ? ms : 1000));
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->tls ? "https" : "http");
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    if (c->tls) {
        /* The member's certificate is verified and must name it. */
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (c->ca != NULL)
            curl_easy_setopt(h, CURLOPT_CAINFO, c->ca);
        if (c->cert != NULL) {
            curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert);
            curl_easy_setopt(h, CURLOPT_SSLKEY, c->key);
        }
    }
}

int ec_client_set_tls(struct ec_client *c, const char *ca, const char *cert, const char *key,
                      char *err, size_t errlen)
{
    const char *files[3] = {ca, cert, key};

    if ((cert == NULL) != (key == NULL)) {
        snprintf(err, errlen, "a client certificate needs its key and a key its certificate");
        return -1;
    }
    for (size_t i = 0; i < 3; i++) {
        if (files[i] != NULL && access(files[i], R_OK) != 0) {
            snprintf(err, errlen, "%s: %s", files[i], strerror(errno));
            return -1;
        }
    }
    free(c->ca);
    free(c->cert);
    free(c->key);
    c->ca = ca != NULL ? strdup(ca) : NULL;
    c->cert = cert != NULL ? strdup(cert) : NULL;
    c->key = key != NULL ? strdup(key) : NULL;
    if ((ca != NULL && c->ca == NULL) || (cert != NULL && (c->cert == NULL || c->key == NULL))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->tls = 1;
    return 0;
}

/* POSTs req to path on the members in turn until one answers. On EC_OK *resp
 * is the parsed answer (caller puts it). Takes no ownership of req. */
static int call(struct ec_client *c, const char *path, json_object *req, int64_t deadline_ms,
                json_object **resp)
{
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    const char *body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
    int rc = EC_ERR_UNAVAILABLE;

    *resp = NULL;
    c->err[0] = '\0';
    c->code = 0;
    if (hdr == NULL || body == NULL) {
        snprintf(c->err, sizeof c->err, "out of memory");
        rc = EC_ERR_INTERNAL;
        goto out;
    }
    for (size_t i = 0; i < c->nep; i++) {
        size_t idx = (c->cur + i) % c->nep;
        int64_t ms = attempt_ms(deadline_ms, c->nep - i);
        char url[512];
        long status = 0;
        CURLcode cc;
        json_object *j, *e;

        if (ms <= 0) {
            note_failure(c, c->ep[idx], "deadline passed");
            break;
        }
        snprintf(url, sizeof url, "%s://%s%s", c->tls ? "https" : "http", c->ep[idx], path);
        c->body.len = 0;
        setup_post(c, c->req, url, body, strlen(body), ms);
        curl_easy_setopt(c->req, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c->req, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c->req, CURLOPT_WRITEDATA, &c->body);
        cc = curl_easy_perform(c->req);
        if (cc != CURLE_OK) {
            note_failure(c, c->ep[idx], curl_easy_strerror(cc));
            continue;
        }
        curl_easy_getinfo(c->req, CURLINFO_RESPONSE_CODE, &status);
        j = c->body.len ? json_tokener_parse(c->body.p) : NULL;
        if (j == NULL) {
            char what[64];

            snprintf(what, sizeof what, "HTTP %ld with a body that is not JSON", status);
            note_failure(c, c->ep[idx], what);
            continue;
        }
        if (status != 200 || (e = j_get(j, "error")) != NULL) {
            int code = (int)j_int(j, "code");
            const char *msg = json_object_get_string(j_get(j, "message"));
            char what[512];

            snprintf(what, sizeof what, "HTTP %ld: %s", status, msg ? msg : "error");
            json_object_put(j);
            /* 14 Unavailable (no leader, member stopping), 4 deadline
             * exceeded (request timed out in raft): another member may do. */
            if (code == 14 || code == 4 || status == 503) {
                note_failure(c, c->ep[idx], what);
                continue;
            }
            c->err[0] = '\0';
            note_failure(c, c->ep[idx], what);
            c->code = code;
            rc = EC_ERR_SERVER;
            goto out;
        }
        c->cur = idx;
        c->err[0] = '\0';
        *resp = j;
        rc = EC_OK;
        goto out;
    }
    {
        char tmp[sizeof c->err];

        snprintf(tmp, sizeof tmp, "no etcd member answered (%.900s)", c->err);
        snprintf(c->err, sizeof c->err, "%s", tmp);
    }
out:
    curl_slist_free_all(hdr);
    return rc;
}

/* ---- requests ---- */

/* Fills the key fields of a range/delete/put request. 0 / -1. */
static int add_range_keys(json_object *o, const struct ec_range_req *q)
{
    size_t klen = strlen(q->key);

    if (j_add_b64(o, "key", q->key, klen) < 0)
        return -1;
    if (q->prefix) {
        char *end = strdup(q->key);
        size_t n = klen;
        int rc;

        if (end == NULL)
            return -1;
        /* The end of a prefix: drop trailing 0xff bytes, add one to the last. */
        while (n > 0 && (unsigned char)end[n - 1] == 0xff)
            n--;
        if (n == 0) {
            rc = j_add_b64(o, "range_end", "\0", 1);
        } else {
            end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
            rc = j_add_b64(o, "range_end", end, n);
        }
        free(end);
        return rc;
    }
    if (q->range_end)
        return j_add_b64(o, "range_end", q->range_end, strlen(q->range_end));
    return 0;
}

static json_object *range_json(const struct ec_range_req *q)
{
    json_object *o = json_object_new_object();

    if (o == NULL || add_range_keys(o, q) < 0) {
        json_object_put(o);
        return NULL;
    }
    if (q->limit)
        j_add_int(o, "limit", q->limit);
    if (q->sort_create) {
        json_object_object_add(o, "sort_target", json_object_new_string("CREATE"));
        json_object_object_add(o, "sort_order",
                               json_object_new_string(q->sort_create > 0 ? "ASCEND" : "DESCEND"));
    }
    if (q->max_create_revision)
        j_add_int(o, "max_create_revision", q->max_create_revision);
    if (q->count_only)
        json_object_object_add(o, "count_only", json_object_new_boolean(1));
    if (q->keys_only)
        json_object_object_add(o, "keys_only", json_object_new_boolean(1));
    return o;
}

void ec_kvs_free(struct ec_kvs *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++) {
        free(r->kv[i].key);
        free(r->kv[i].value);
    }
    free(r->kv);
    memset(r, 0, sizeof *r);
}

/* Reads a range answer ({kvs, count, more}) into *out. 0 / -1. */
static int read_kvs(json_object *o, struct ec_kvs *out)
{
    json_object *arr = j_get(o, "kvs");
    size_t n = arr && json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;

    memset(out, 0, sizeof *out);
    out->count = j_int(o, "count");
    out->more = j_bool(o, "more");
    if (n == 0)
        return 0;
    if ((out->kv = calloc(n, sizeof *out->kv)) == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_object *kv = json_object_array_get_idx(arr, i);
        const char *k = json_object_get_string(j_get(kv, "key"));
        const char *v = json_object_get_string(j_get(kv, "value"));
        struct ec_kv *e = &out->kv[out->n];
        size_t klen;

        e->key = b64_decode(k ? k : "", &klen);
        e->value = b64_decode(v ? v : "", &e->value_len);
        out->n++;
        if (e->key == NULL || e->value == NULL)
            return -1;
        e->create_revision = j_int(kv, "create_revision");
        e->mod_revision = j_int(kv, "mod_revision");
        e->version = j_int(kv, "version");
        e->lease = j_int(kv, "lease");
    }
    return 0;
}

static int malformed(struct ec_client *c, const char *what)
{
    snprintf(c->err, sizeof c->err, "etcd at %s: malformed answer to %s", c->ep[c->cur], what);
    return EC_ERR_INTERNAL;
}

static int oom(struct ec_client *c)
{
    snprintf(c->err, sizeof c->err, "out of memory");
    return EC_ERR_INTERNAL;
}

int ec_range(struct ec_client *c, const struct ec_range_req *q, int64_t deadline_ms,
             struct ec_kvs *out, int64_t *revision)
{
    json_object *req = range_json(q), *resp = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    if (req == NULL)
        return oom(c);
    rc = call(c, "/v3/kv/range", req, deadline_ms, &resp);
    if (rc == EC_OK && read_kvs(resp, out) < 0)
        rc = malformed(c, "range");
    if (rc == EC_OK && revision)
        *revision = j_int(j_get(resp, "header"), "revision");
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

static json_object *put_json(const char *key, const void *value, size_t value_len, int64_t lease)
{
    json_object *o = json_object_new_object();

    if (o == NULL || j_add_b64(o, "key", key, strlen(key)) < 0 ||
        j_add_b64(o, "value", value, value_len) < 0) {
        json_object_put(o);
        return NULL;
    }
    if (lease)
        j_add_int(o, "lease", lease);
    return o;
}

int ec_put(struct ec_client *c, const char *key, const void *value, size_t value_len,
           int64_t lease, int64_t deadline_ms, int64_t *revision)
{
    json_object *req = put_json(key, value, value_len, lease), *resp = NULL;
    int rc;

    if (req == NULL)
        return oom(c);
    rc = call(c, "/v3/kv/put", req, deadline_ms, &resp);
    if (rc == EC_OK && revision)
        *revision = j_int(j_get(resp, "header"), "revision");
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

static json_object *delete_json(const struct ec_range_req *q)
{
    json_object *o = json_object_new_object();

    if (o == NULL || add_range_keys(o, q) < 0) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

int ec_delete(struct ec_client *c, const struct ec_range_req *q, int64_t deadline_ms,
              int64_t *deleted)
{
    json_object *req = delete_json(q), *resp = NULL;
    int rc;

    if (req == NULL)
        return oom(c);
    rc = call(c, "/v3/kv/deleterange", req, deadline_ms, &resp);
    if (rc == EC_OK && deleted)
        *deleted = j_int(resp, "deleted");
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

static const char *const cmp_targets[] = {"CREATE", "MOD", "VERSION", "LEASE", "VALUE"};
static const char *const cmp_fields[] = {"create_revision", "mod_revision", "version", "lease",
                                         "value"};
static const char *const cmp_ops[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static json_object *txn_json(const struct ec_txn_req *q);

static json_object *ops_json(const struct ec_op *ops, size_t n)
{
    json_object *arr = json_object_new_array();

    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        json_object *w = json_object_new_object(), *inner = NULL;
        const char *kind = "request_range";

        if (w == NULL)
            goto fail;
        json_object_array_add(arr, w);
        switch (ops[i].type) {
        case EC_OP_RANGE:
            inner = range_json(&ops[i].range);
            break;
        case EC_OP_PUT:
            inner = put_json(ops[i].range.key, ops[i].value ? ops[i].value : "", ops[i].value_len,
                             ops[i].lease);
            kind = "request_put";
            break;
        case EC_OP_DELETE:
            inner = delete_json(&ops[i].range);
            kind = "request_delete_range";
            break;
        case EC_OP_TXN:
            inner = ops[i].txn != NULL ? txn_json(ops[i].txn) : NULL;
            kind = "request_txn";
            break;
        }
        if (inner == NULL)
            goto fail;
        json_object_object_add(w, kind, inner);
    }
    return arr;
fail:
    json_object_put(arr);
    return NULL;
}

/* {"compare": [...], "success": [...], "failure": [...]}, or NULL. */
static json_object *txn_json(const struct ec_txn_req *q)
{
    json_object *req = json_object_new_object(), *cmps = NULL, *t, *e;

    if (req == NULL || (cmps = json_object_new_array()) == NULL)
        goto fail;
    json_object_object_add(req, "compare", cmps);
    for (size_t i = 0; i < q->ncmp; i++) {
        const struct ec_cmp *c = &q->cmp[i];
        json_object *o = json_object_new_object();

        if (o == NULL)
            goto fail;
        json_object_array_add(cmps, o);
        if (j_add_b64(o, "key", c->key, strlen(c->key)) < 0)
            goto fail;
        json_object_object_add(o, "target", json_object_new_string(cmp_targets[c->target]));
        json_object_object_add(o, "result", json_object_new_string(cmp_ops[c->op]));
        if (c->target == EC_TARGET_VALUE) {
            if (j_add_b64(o, "value", c->value ? c->value : "", c->value_len) < 0)
                goto fail;
        } else {
            j_add_int(o, cmp_fields[c->target], c->n);
        }
    }
    if ((t = ops_json(q->then, q->nthen)) == NULL)
        goto fail;
    json_object_object_add(req, "success", t);
    if ((e = ops_json(q->els, q->nelse)) == NULL)
        goto fail;
    json_object_object_add(req, "failure", e);
    return req;
fail:
    json_object_put(req);
    return NULL;
}

void ec_txn_result_free(struct ec_txn_result *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n; i++) {
        ec_kvs_free(&r->res[i].kvs);
        if (r->res[i].txn != NULL) {
            ec_txn_result_free(r->res[i].txn);
            free(r->res[i].txn);
        }
    }
    free(r->res);
    memset(r, 0, sizeof *r);
}

/* Reads a txn answer for q into out (recursively for nested txns). 0, or -1
 * malformed (*oom_out set when it was out of memory instead). */
static int read_txn(json_object *resp, const struct ec_txn_req *q, struct ec_txn_result *out,
                    int depth, int *oom_out)
{
    json_object *arr = j_get(resp, "responses");
    const struct ec_op *ops;
    size_t n;

    out->succeeded = j_bool(resp, "succeeded");
    ops = out->succeeded ? q->then : q->els;
    n = arr && json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
    if (depth > 16 || n != (out->succeeded ? q->nthen : q->nelse))
        return -1;
    if (n && (out->res = calloc(n, sizeof *out->res)) == NULL) {
        *oom_out = 1;
        return -1;
    }
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        json_object *r = json_object_array_get_idx(arr, i), *x;

        if ((x = j_get(r, "response_range")) != NULL && read_kvs(x, &out->res[i].kvs) < 0)
            return -1;
        if ((x = j_get(r, "response_delete_range")) != NULL)
            out->res[i].deleted = j_int(x, "deleted");
        if (ops[i].type == EC_OP_TXN) {
            if ((x = j_get(r, "response_txn")) == NULL)
                return -1;
            if ((out->res[i].txn = calloc(1, sizeof *out->res[i].txn)) == NULL) {
                *oom_out = 1;
                return -1;
            }
            if (read_txn(x, ops[i].txn, out->res[i].txn, depth + 1, oom_out) < 0)
                return -1;
        }
    }
    return 0;
}

int ec_txn_nested(struct ec_client *c, const struct ec_txn_req *q, int64_t deadline_ms,
                  struct ec_txn_result *out)
{
    json_object *req, *resp = NULL;
    int rc, nomem = 0;

    memset(out, 0, sizeof *out);
    if ((req = txn_json(q)) == NULL)
        return oom(c);
    rc = call(c, "/v3/kv/txn", req, deadline_ms, &resp);
    if (rc != EC_OK)
        goto out;
    out->revision = j_int(j_get(resp, "header"), "revision");
    if (read_txn(resp, q, out, 0, &nomem) < 0)
        rc = nomem ? oom(c) : malformed(c, "txn");
out:
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

int ec_txn(struct ec_client *c, const struct ec_cmp *cmp, size_t ncmp, const struct ec_op *then,
           size_t nthen, const struct ec_op *els, size_t nelse, int64_t deadline_ms,
           struct ec_txn_result *out)
{
    struct ec_txn_req q = {.cmp = cmp, .ncmp = ncmp, .then = then, .nthen = nthen, .els = els,
                           .nelse = nelse};

    return ec_txn_nested(c, &q, deadline_ms, out);
}

/* Builds {"ID": id} or {"TTL": ttl}. */
static json_object *one_int(const char *field, int64_t v)
{
    json_object *o = json_object_new_object();

    if (o)
        j_add_int(o, field, v);
    return o;
}

int ec_lease_grant(struct ec_client *c, int64_t ttl_s, int64_t deadline_ms, int64_t *id,
                   int64_t *ttl_out)
{
    json_object *req = one_int("TTL", ttl_s), *resp = NULL;
    int rc;

    if (req == NULL)
        return oom(c);
    rc = call(c, "/v3/lease/grant", req, deadline_ms, &resp);
    if (rc == EC_OK) {
        *id = j_int(resp, "ID");
        *ttl_out = j_int(resp, "TTL");
        if (*id == 0 || *ttl_out <= 0)
            rc = malformed(c, "lease grant");
    }
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

int ec_lease_keepalive(struct ec_client *c, int64_t id, int64_t deadline_ms, int64_t *ttl_out)
{
    json_object *req = one_int("ID", id), *resp = NULL;
    int rc;

    if (req == NULL)
        return oom(c);
    /* The gateway streams: the answer is {"result": {...}} (or {"error"}). */
    rc = call(c, "/v3/lease/keepalive", req, deadline_ms, &resp);
    if (rc == EC_OK)
        *ttl_out = j_int(j_get(resp, "result"), "TTL");
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

int ec_lease_revoke(struct ec_client *c, int64_t id, int64_t deadline_ms)
{
    json_object *req = one_int("ID", id), *resp = NULL;
    int rc;

    if (req == NULL)
        return oom(c);
    rc = call(c, "/v3/lease/revoke", req, deadline_ms, &resp);
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

int ec_lease_timetolive(struct ec_client *c, int64_t id, int64_t deadline_ms, int64_t *ttl_out)
{
    json_object *req = one_int("ID", id), *resp = NULL;
    int rc;

    if (req == NULL)
        return oom(c);
    rc = call(c, "/v3/lease/timetolive", req, deadline_ms, &resp);
    /* An unknown lease answers TTL -1; a missing TTL is 0 s left. */
    if (rc == EC_OK)
        *ttl_out = j_int(resp, "TTL");
    json_object_put(req);
    json_object_put(resp);
    return rc;
}

/* ---- watch ---- */

struct watch_state {
    struct buf line; /* bytes of the current message */
    int mask;
    int created, fired, bad;
};

/* Handles one streamed message ({"result": {...}}); sets fired when an event
 * of the wanted kind (PUT is the default and omitted) or a cancel arrives. */
static void watch_message(struct watch_state *w, const char *text)
{
    json_object *j = json_tokener_parse(text), *r, *evs;
    size_t n;

    if (j == NULL) {
        w->bad = 1;
        return;
    }
    if (j_get(j, "error")) {
        w->bad = 1;
        goto out;
    }
    r = j_get(j, "result");
    if (j_bool(r, "created"))
        w->created = 1;
    if (j_bool(r, "canceled") || j_int(r, "compact_revision") > 0)
        w->fired = 1;
    evs = j_get(r, "events");
    n = evs && json_object_is_type(evs, json_type_array) ? json_object_array_length(evs) : 0;
    for (size_t i = 0; i < n; i++) {
        const char *type = json_object_get_string(j_get(json_object_array_get_idx(evs, i), "type"));
        int del = type && strcmp(type, "DELETE") == 0;

        if ((del && (w->mask & EC_WATCH_DELETE)) || (!del && (w->mask & EC_WATCH_PUT)))
            w->fired = 1;
    }
out:
    json_object_put(j);
}

static size_t on_watch(char *p, size_t size, size_t n, void *arg)
{
    struct watch_state *w = arg;
    size_t len = size * n;

    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n') {
            if (w->line.len)
                watch_message(w, w->line.p);
            w->line.len = 0;
            if (w->fired || w->bad)
                return 0; /* done: abort the transfer (and drop the connection) */
            continue;
        }
        if (on_body(p + i, 1, 1, &w->line) != 1)
            return 0;
    }
    return len;
}

int ec_watch(struct ec_client *c, const char *key, int64_t start_rev, int mask,
             int64_t deadline_ms, int *fired)
{
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    json_object *req = json_object_new_object(), *cr = json_object_new_object(), *filters;
    struct watch_state w;
    const char *body;
    int rc = EC_ERR_UNAVAILABLE;

    *fired = 0;
    memset(&w, 0, sizeof w);
    w.mask = mask;
    c->err[0] = '\0';
    c->code = 0;
    if (hdr == NULL || req == NULL || cr == NULL || j_add_b64(cr, "key", key, strlen(key)) < 0) {
        json_object_put(cr);
        rc = oom(c);
        goto out;
    }
    if (start_rev > 0)
        j_add_int(cr, "start_revision", start_rev);
    if ((filters = json_object_new_array()) != NULL) {
        if (!(mask & EC_WATCH_PUT))
            json_object_array_add(filters, json_object_new_string("NOPUT"));
        if (!(mask & EC_WATCH_DELETE))
            json_object_array_add(filters, json_object_new_string("NODELETE"));
        json_object_object_add(cr, "filters", filters);
    }
    json_object_object_add(req, "create_request", cr);
    body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN);
    /* Each member at most once; a member that drops the stream (killed,
     * say) is replaced by the next with the same start revision. */
    for (size_t i = 0; i < c->nep; i++) {
        size_t idx = (c->cur + i) % c->nep;
        int64_t ms = deadline_ms - ec_now_ms();
        char url[512];
        CURLcode cc;

        if (ms <= 0) {
            rc = EC_OK; /* the deadline came: nothing fired */
            goto out;
        }
        snprintf(url, sizeof url, "%s://%s/v3/watch", c->tls ? "https" : "http", c->ep[idx]);
        w.line.len = 0;
        w.created = w.fired = w.bad = 0;
        setup_post(c, c->watch, url, body, strlen(body), ms);
        curl_easy_setopt(c->watch, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c->watch, CURLOPT_WRITEFUNCTION, on_watch);
        curl_easy_setopt(c->watch, CURLOPT_WRITEDATA, &w);
        cc = curl_easy_perform(c->watch);
        if (w.fired) {
            *fired = 1;
            rc = EC_OK;
            goto out;
        }
        if (cc == CURLE_OPERATION_TIMEDOUT && w.created) {
            rc = EC_OK;
            goto out;
        }
        note_failure(c, c->ep[idx], w.bad ? "watch answered an error" : curl_easy_strerror(cc));
    }
    {
        char tmp[sizeof c->err];

        snprintf(tmp, sizeof tmp, "no etcd member kept a watch (%.900s)", c->err);
        snprintf(c->err, sizeof c->err, "%s", tmp);
    }
out:
    free(w.line.p);
    json_object_put(req);
    curl_slist_free_all(hdr);
    return rc;
}
