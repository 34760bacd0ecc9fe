/* px_tls: see px_tls.h. The TLS transport over libevent's bufferevent_openssl:
 * an SSL_CTX built from the config (rebuilt whole on reload and swapped, so
 * connections already open keep the context they hold a reference to), one
 * SSL per connection with a small per-connection record in its ex data (the
 * client certificate's subject, whether the handshake was counted), and an
 * info callback that counts handshakes, names the reason of an upstream
 * refusal in the log and answers plaintext HTTP on a TLS port with a 400
 * in plaintext. Resumption: a server-side session cache, and stateless
 * session tickets under two keys of our own (the current one, and the
 * previous one still accepted for a period), rotated on a schedule and on
 * every reload; the client side keeps the upstream's last session and
 * offers it on the next connection. OCSP stapling from a DER file read with
 * the certificate. Writes go out as whole records from the flush op. The
 * only file of proxy/ that includes OpenSSL's TLS headers (px_audit.c uses
 * its hashes). */
#include "px_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "px_config.h"
#include "px_log.h"
#include "px_stats.h"
#include "px_transport.h"

/* The largest TLS record's payload: what one SSL_write of the flush sends
 * as one record. */
#define TLS_RECORD 16384

/* A session ticket key: tickets carry its name, are encrypted with aes and
 * authenticated with hmac (what OpenSSL's own ticket keys are). Made from
 * RAND_bytes, never written anywhere, cleansed when dropped. */
struct ticket_key {
    unsigned char name[16], aes[32], hmac[32];
    int64_t born_ms;  /* CLOCK_MONOTONIC: start of the period it makes tickets in */
    int64_t until_ms; /* the previous key: accepted until then */
    int set;
};

struct tls_impl {
    struct px_transport tr;      /* tr.impl points here */
    const struct px_config *cfg; /* &own: the TLS keys only */
    struct px_config own;        /* copies (a reload frees the snapshot) */
    int server;
    int host_is_ip;              /* client: name check by address */
    SSL_CTX *ctx;                /* current; every SSL holds its own reference */
    SSL_SESSION *session;        /* client: the upstream's last session */
    /* server with session_tickets: [0] makes tickets, [1] is the previous
     * key, still accepted (a ticket it opens is replaced by a new one).
     * Kept across reloads (every context uses them); a reload rotates. */
    struct ticket_key tk[2];
    unsigned char scratch[TLS_RECORD]; /* tls_flush: a record's bytes in one piece */
};

/* What a context built from the [tls] files carries, in its ex data: the
 * OCSP response to staple (DER), read with the certificate, so a reload
 * swaps both together. Freed with the context. */
struct tls_staple {
    unsigned char *der;
    size_t len;
    time_t next_update; /* 0: none given; after it nothing is stapled */
    int expired_logged;
};

/* Per connection, in the SSL's ex data; freed with the SSL. */
struct tls_conn {
    char *subject; /* verified client certificate's subject, or NULL */
    int done;      /* handshake counted */
    int failed;    /* failure counted and logged */
};

static int conn_idx = -1;
static int staple_idx = -1;

static void staple_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct tls_staple *st = ptr;

    if (st != NULL) {
        OPENSSL_free(st->der);
        free(st);
    }
}

static void conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                      void *argp)
{
    struct tls_conn *tc = ptr;

    if (tc != NULL) {
        free(tc->subject);
        free(tc);
    }
}

/* The first queued OpenSSL error as text into buf; clears the queue. */
static const char *ssl_error(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        snprintf(buf, cap, "unknown error");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

static char *name_of(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL, *out = NULL;
    long n;

    if (b == NULL)
        return NULL;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        n = BIO_get_mem_data(b, &p);
        if (n >= 0)
            out = strndup(p, (size_t)n);
    }
    BIO_free(b);
    return out;
}

/* Plain HTTP on the TLS port: a plaintext 400 says why, then the same
 * lingering end as a refusal (a close with unread input would reset). */
static void plaintext_refuse(int fd)
{
    static const char msg[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                              "Content-Length: 41\r\nConnection: close\r\n\r\n"
                              "plain HTTP request sent to the TLS port\r\n";
    char sink[4096];

    (void)send(fd, msg, sizeof(msg) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)shutdown(fd, SHUT_WR);
    for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
}

/* Counts finished handshakes once per connection (TLS 1.3 reports "done"
 * again for each post-handshake message) and records the client's
 * subject; on a failed handshake, counts and explains it. Called by
 * OpenSSL from inside libevent's handshake: no freeing here. */
static void info_cb(const SSL *ssl, int where, int ret)
{
    struct tls_conn *tc = SSL_get_ex_data(ssl, conn_idx);
    const struct tls_impl *impl = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    int server = SSL_is_server((SSL *)ssl);

    if (tc == NULL || impl == NULL)
        return;
    if ((where & SSL_CB_HANDSHAKE_DONE) && !tc->done) {
        X509 *peer = SSL_get0_peer_certificate(ssl);
        tc->done = 1;
        px_stats_inc(server ? PX_ST_TLS_HANDSHAKES : PX_ST_UPSTREAM_TLS_HANDSHAKES);
        if (SSL_session_reused((SSL *)ssl))
            px_stats_inc(server ? PX_ST_TLS_RESUMED : PX_ST_UPSTREAM_TLS_RESUMED);
        if (server && peer != NULL && SSL_get_verify_result(ssl) == X509_V_OK)
            tc->subject = name_of(peer);
        return;
    }
    if (!(where & SSL_CB_EXIT) || ret > 0 || tc->failed || tc->done)
        return;
    unsigned long e = ERR_peek_error(); /* libevent still reads the queue */
    if (e == 0)
        return; /* only wants more bytes */
    tc->failed = 1;
    if (server) {
        px_stats_inc(PX_ST_TLS_FAILED);
        if (ERR_GET_LIB(e) == ERR_LIB_SSL && (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST ||
                                              ERR_GET_REASON(e) == SSL_R_HTTPS_PROXY_REQUEST)) {
            px_log_info("plain HTTP on the TLS port refused (400)");
            plaintext_refuse(SSL_get_fd(ssl));
        } else {
            px_log_debug("client TLS handshake failed: %s", ERR_reason_error_string(e));
        }
    } else {
        long v = SSL_get_verify_result(ssl);
        px_stats_inc(PX_ST_UPSTREAM_TLS_FAILED);
        if (v != X509_V_OK)
            px_log_error("upstream %s: TLS certificate refused: %s", impl->cfg->upstream,
                         X509_verify_cert_error_string(v));
        else
            px_log_error("upstream %s: TLS handshake failed: %s", impl->cfg->upstream,
                         ERR_reason_error_string(e));
    }
}

/* ALPN: HTTP/1.1 is all the proxy speaks. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char protos[] = "\x08http/1.1";
    unsigned char *sel = NULL;

    if (SSL_select_next_proto(&sel, outlen, protos, sizeof(protos) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* The upstream's new session replaces the one kept for the next connect.
 * A copy: OpenSSL marks the connection's own session unresumable when the
 * connection is freed without a close_notify (the pool closes connections
 * that way), which would spoil it for every later connection. Returns 0:
 * OpenSSL keeps its reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_impl *impl = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    SSL_SESSION *copy = SSL_SESSION_dup(sess);

    if (copy != NULL) {
        SSL_SESSION_free(impl->session);
        impl->session = copy;
    }
    return 0;
}

/* ---- session tickets ------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void key_drop(struct ticket_key *k)
{
    OPENSSL_cleanse(k, sizeof(*k));
}

/* A fresh key born at born. -1 when the random source fails (the key is
 * then unset: no tickets are made, resumption falls back to the cache). */
static int key_new(struct ticket_key *k, int64_t born)
{
    key_drop(k);
    if (RAND_bytes(k->name, sizeof k->name) != 1 || RAND_bytes(k->aes, sizeof k->aes) != 1 ||
        RAND_bytes(k->hmac, sizeof k->hmac) != 1) {
        key_drop(k);
        ERR_clear_error();
        return -1;
    }
    k->born_ms = born;
    k->set = 1;
    return 0;
}

/* The current key becomes the previous one, accepted until until; a new
 * key, born at born, makes tickets from now on. */
static void rotate(struct tls_impl *impl, int64_t born, int64_t until, const char *why)
{
    key_drop(&impl->tk[1]);
    if (impl->tk[0].set) {
        impl->tk[1] = impl->tk[0];
        impl->tk[1].until_ms = until;
    }
    if (key_new(&impl->tk[0], born) < 0) {
        px_log_error("TLS session ticket key: no random bytes; no tickets until the next rotation");
        return;
    }
    px_stats_inc(PX_ST_TLS_TICKET_ROTATIONS);
    px_log_info("TLS session ticket key rotated (%s)", why);
}

/* Brings the keys to the period now falls in: the key of period k makes
 * tickets during it and is accepted during the next one. Checked whenever a
 * ticket is made or opened, so an idle proxy rotates at its next
 * handshake: no key is ever used outside its periods. */
static void keys_at(struct tls_impl *impl, int64_t now)
{
    int64_t p = (int64_t)impl->cfg->tls_ticket_rotate_ms;
    struct ticket_key *cur = &impl->tk[0];
    int64_t periods;

    if (!cur->set) {
        if (key_new(cur, now) == 0)
            px_stats_inc(PX_ST_TLS_TICKET_ROTATIONS);
        return;
    }
    if (now < cur->born_ms + p)
        return;
    periods = (now - cur->born_ms) / p;
    if (periods >= 2) {
        key_drop(cur); /* its last period of acceptance is over too */
        key_drop(&impl->tk[1]);
    }
    rotate(impl, cur->set ? cur->born_ms + p : now, cur->set ? cur->born_ms + 2 * p : now,
           "schedule");
}

static int ticket_mac(EVP_MAC_CTX *hctx, unsigned char *key)
{
    OSSL_PARAM params[3];

    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb):
 * enc = 1 seals a new ticket with the current key (0: none made); enc = 0
 * opens one by its key name: 1 current, 2 the previous key or any TLS 1.3
 * ticket (OpenSSL then issues a new ticket under the current one), 0
 * unknown or expired (a full handshake). -1 on an internal error. Called inside the handshake. */
static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct tls_impl *impl = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    int64_t now = mono_ms();
    struct ticket_key *k = NULL;
    int rc = 1;

    keys_at(impl, now);
    if (enc) {
        k = &impl->tk[0];
        if (!k->set)
            return 0; /* no ticket this time (the random source failed) */
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1)
            return -1;
        memcpy(name, k->name, sizeof k->name);
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1 ||
            ticket_mac(hctx, k->hmac) < 0)
            return -1;
        return 1;
    }
    if (impl->tk[0].set && memcmp(name, impl->tk[0].name, 16) == 0) {
        k = &impl->tk[0];
        /* TLS 1.3 tickets are for one use (RFC 8446 C.4), and OpenSSL sends
         * none after a resumption it was not asked to renew: a client that
         * resumes with its last session would make every other handshake a
         * full one. TLS 1.2 keeps its ticket. */
        if (SSL_version(ssl) >= TLS1_3_VERSION)
            rc = 2;
    } else if (impl->tk[1].set && now < impl->tk[1].until_ms &&
               memcmp(name, impl->tk[1].name, 16) == 0) {
        k = &impl->tk[1];
        rc = 2;
    } else {
        return 0;
    }
    if (ticket_mac(hctx, k->hmac) < 0 ||
        EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
        return -1;
    return rc;
}

/* ---- OCSP stapling ---------------------------------------------------------- */

/* Reads cfg->tls_ocsp_file (DER) for the certificate ctx now holds and
 * checks it: a successful response with a status for that certificate
 * (matched by issuer and serial when the chain file carries the issuer,
 * else by serial) whose nextUpdate, if any, has not passed. The context
 * takes it (ex data). 0, or -1 with err set. */
static int load_staple(SSL_CTX *ctx, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    unsigned char *der = NULL;
    const unsigned char *p;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *basic = NULL;
    OCSP_CERTID *id = NULL;
    struct tls_staple *st = NULL;
    X509 *leaf = SSL_CTX_get0_certificate(ctx), *issuer = NULL;
    STACK_OF(X509) *chain = NULL;
    ASN1_GENERALIZEDTIME *this_upd = NULL, *next_upd = NULL;
    long n = 0;
    int rc = -1, status = -1, reason;

    if (f == NULL) {
        snprintf(err, errlen, "ocsp_file %s: %s", path, strerror(errno));
        goto out;
    }
    der = OPENSSL_malloc(1 << 20);
    if (der == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    n = (long)fread(der, 1, 1 << 20, f);
    if (n <= 0 || n >= 1 << 20 || ferror(f)) {
        snprintf(err, errlen, "ocsp_file %s: empty, unreadable or over 1 MiB", path);
        goto out;
    }
    p = der;
    resp = d2i_OCSP_RESPONSE(NULL, &p, n);
    if (resp == NULL || p != der + n) {
        snprintf(err, errlen, "ocsp_file %s: not a DER OCSP response", path);
        goto out;
    }
    if (OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
        (basic = OCSP_response_get1_basic(resp)) == NULL) {
        snprintf(err, errlen, "ocsp_file %s: response status %s", path,
                 OCSP_response_status_str(OCSP_response_status(resp)));
        goto out;
    }
    if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1) {
        for (int i = 0; i < sk_X509_num(chain) && issuer == NULL; i++)
            if (X509_check_issued(sk_X509_value(chain, i), leaf) == X509_V_OK)
                issuer = sk_X509_value(chain, i);
    }
    if (issuer != NULL) {
        id = OCSP_cert_to_id(NULL, leaf, issuer);
        if (id == NULL ||
            OCSP_resp_find_status(basic, id, &status, &reason, NULL, &this_upd, &next_upd) != 1) {
            snprintf(err, errlen, "ocsp_file %s: no status for the certificate in %s", path,
                     "[tls] cert");
            goto out;
        }
    } else {
        const ASN1_INTEGER *serial = X509_get0_serialNumber(leaf);
        for (int i = 0; i < OCSP_resp_count(basic) && status < 0; i++) {
            OCSP_SINGLERESP *one = OCSP_resp_get0(basic, i);
            const OCSP_CERTID *cid = OCSP_SINGLERESP_get0_id(one);
            ASN1_INTEGER *sn = NULL;
            if (OCSP_id_get0_info(NULL, NULL, NULL, &sn, (OCSP_CERTID *)cid) == 1 &&
                ASN1_INTEGER_cmp(sn, serial) == 0)
                status = OCSP_single_get0_status(one, &reason, NULL, &this_upd, &next_upd);
        }
        if (status < 0) {
            snprintf(err, errlen, "ocsp_file %s: no status for the serial number of [tls] cert",
                     path);
            goto out;
        }
    }
    if (OCSP_check_validity(this_upd, next_upd, 300, -1) != 1) {
        snprintf(err, errlen, "ocsp_file %s: outside its validity (thisUpdate/nextUpdate)", path);
        goto out;
    }
    st = calloc(1, sizeof(*st));
    if (st != NULL)
        st->der = OPENSSL_memdup(der, (size_t)n); /* the response's size, not the read buffer's */
    if (st == NULL || st->der == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (next_upd != NULL) {
        struct tm tm;
        if (ASN1_TIME_to_tm(next_upd, &tm) == 1)
            st->next_update = timegm(&tm);
    }
    st->len = (size_t)n;
    if (!SSL_CTX_set_ex_data(ctx, staple_idx, st)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    st = NULL;
    if (status != V_OCSP_CERTSTATUS_GOOD)
        px_log_warn("ocsp_file %s: the response says the certificate is %s; stapled as it is",
                    path, OCSP_cert_status_str(status));
    rc = 0;
out:
    if (f != NULL)
        fclose(f);
    if (st != NULL)
        OPENSSL_free(st->der);
    free(st);
    OPENSSL_free(der);
    OCSP_CERTID_free(id);
    OCSP_BASICRESP_free(basic);
    OCSP_RESPONSE_free(resp);
    ERR_clear_error();
    return rc;
}

/* Staples the context's response for a client that asked (status_request).
 * Called inside the handshake. */
static int status_cb(SSL *ssl, void *arg)
{
    struct tls_staple *st = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), staple_idx);
    unsigned char *copy;

    if (st == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (st->next_update != 0 && time(NULL) > st->next_update) {
        if (!st->expired_logged) {
            st->expired_logged = 1;
            px_log_warn("ocsp_file: the response's nextUpdate has passed; not stapled until a "
                        "new one is loaded (reload)");
        }
        return SSL_TLSEXT_ERR_NOACK;
    }
    copy = OPENSSL_memdup(st->der, st->len);
    if (copy == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)st->len) != 1) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    px_stats_inc(PX_ST_TLS_OCSP_STAPLED);
    return SSL_TLSEXT_ERR_OK;
}

static int use_pair(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen)
{
    char e[256];

    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "certificate %s: %s", cert, ssl_error(e, sizeof e));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "key %s: %s", key, ssl_error(e, sizeof e));
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "key %s does not match certificate %s", key, cert);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

/* A context for impl from its config and files. NULL with err set. */
static SSL_CTX *build_ctx(struct tls_impl *impl, char *err, size_t errlen)
{
    const struct px_config *cfg = impl->cfg;
    SSL_CTX *ctx = SSL_CTX_new(impl->server ? TLS_server_method() : TLS_client_method());
    char e[256];

    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new: %s", ssl_error(e, sizeof e));
        goto fail;
    }
    SSL_CTX_set_app_data(ctx, impl);
    SSL_CTX_set_min_proto_version(ctx, cfg->tls_min_version == PX_TLS_1_3 ? TLS1_3_VERSION
                                                                          : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle connections hold no buffers */
    SSL_CTX_set_info_callback(ctx, info_cb);
    if (!impl->server) {
        if (strcmp(cfg->upstream_ca, "system") == 0
                ? SSL_CTX_set_default_verify_paths(ctx) != 1
                : SSL_CTX_load_verify_locations(ctx, cfg->upstream_ca, NULL) != 1) {
            snprintf(err, errlen, "upstream_ca %s: %s", cfg->upstream_ca, ssl_error(e, sizeof e));
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cfg->upstream_cert != NULL &&
            use_pair(ctx, cfg->upstream_cert, cfg->upstream_key, err, errlen) < 0)
            goto fail;
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                                SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
        (void)SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x08http/1.1", 9);
        return ctx;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (cfg->tls_session_tickets) {
        /* Stateless tickets under our rotated keys (ticket_cb), never
         * OpenSSL's built-in key, which lives as long as the context. */
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    } else {
        /* TLS 1.3 then issues stateful tickets that point into the cache. */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
        snprintf(err, errlen, "ciphers '%s': %s", cfg->tls_ciphers, ssl_error(e, sizeof e));
        goto fail;
    }
    if (SSL_CTX_set_ciphersuites(ctx, cfg->tls_ciphersuites) != 1) {
        snprintf(err, errlen, "ciphersuites '%s': %s", cfg->tls_ciphersuites,
                 ssl_error(e, sizeof e));
        goto fail;
    }
    if (use_pair(ctx, cfg->tls_cert, cfg->tls_key, err, errlen) < 0)
        goto fail;
    if (cfg->tls_ocsp_file != NULL) {
        if (load_staple(ctx, cfg->tls_ocsp_file, err, errlen) < 0)
            goto fail;
        SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    (void)SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"fenceproxy", 10);
    if (cfg->tls_session_cache > 0) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
        SSL_CTX_sess_set_cache_size(ctx, (long)cfg->tls_session_cache);
        SSL_CTX_set_timeout(ctx, (long)(cfg->tls_session_timeout_ms / 1000));
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    if (cfg->tls_verify_client != PX_VERIFY_OFF) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(err, errlen, "client_ca %s: %s", cfg->tls_client_ca,
                     ssl_error(e, sizeof e));
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
        SSL_CTX_set_verify(ctx,
                           SSL_VERIFY_PEER | (cfg->tls_verify_client == PX_VERIFY_ON
                                                  ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                                  : 0),
                           NULL);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

/* A new SSL for one connection with its record; NULL when out of memory. */
static SSL *new_ssl(struct tls_impl *impl)
{
    SSL *ssl = SSL_new(impl->ctx);
    struct tls_conn *tc = calloc(1, sizeof(*tc));
    const char *host = impl->cfg->upstream_host;

    if (ssl == NULL || tc == NULL || !SSL_set_ex_data(ssl, conn_idx, tc))
        goto fail;
    tc = NULL; /* the SSL owns it now */
    if (!impl->server) {
        /* The name check: by address for an IP literal, else by name, and
         * the name goes out as SNI. */
        if (impl->host_is_ip
                ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1
                : SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1)
            goto fail;
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (impl->session != NULL)
            (void)SSL_set_session(ssl, impl->session);
    }
    return ssl;
fail:
    free(tc);
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
}

static void nodelay(int fd)
{
    int one = 1;

    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* When libevent cannot make the bufferevent (out of memory) it may already
 * have freed the SSL and closed fd with it, or not; we cannot tell, so
 * neither is touched again (a leak under OOM rather than a double free). */
static struct bufferevent *tls_accept(void *arg, struct event_base *base, int fd)
{
    struct tls_impl *impl = arg;
    SSL *ssl = new_ssl(impl);
    struct bufferevent *bev;

    if (ssl == NULL) {
        close(fd);
        return NULL;
    }
    nodelay(fd);
    bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev != NULL)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

static struct bufferevent *tls_connect(void *arg, struct event_base *base,
                                       const struct sockaddr *sa, socklen_t salen)
{
    struct tls_impl *impl = arg;
    SSL *ssl = new_ssl(impl);
    struct bufferevent *bev;

    if (ssl == NULL)
        return NULL;
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        return NULL;
    /* Many servers end a response delimited by close without close_notify. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    if (bufferevent_socket_connect(bev, sa, (int)salen) < 0) {
        bufferevent_free(bev);
        return NULL;
    }
    nodelay(bufferevent_getfd(bev));
    return bev;
}

/* Writes what is queued now, as whole TLS records, while the socket takes
 * them: nginx does the same (a 16 KiB buffer, one SSL_write). Left to
 * itself, bufferevent_openssl writes only from its write event, one
 * SSL_write (one record, one write(2)) per evbuffer chain: a response head
 * and its body went out as two records, a loop iteration later, with
 * EPOLLOUT switched on and off around them.
 *
 * Written here only while libevent has no write of its own in progress:
 * the handshake is over, write interest is off, and OpenSSL has no record
 * half sent (SSL_want is not SSL_WRITING; a read may have left one). A
 * record is written from the first chain when it holds the record's bytes,
 * else from a copy in the transport's scratch buffer (no allocation per
 * response). A record the socket did not take whole stays pending inside
 * OpenSSL, which wants the next SSL_write to be at least as long (the
 * bytes' address may move: libevent sets SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
 * libevent's next write offers the first chain whole, so the record's bytes
 * are pulled up into it first. Errors are left for libevent to find on that
 * write, as the plain transport does. */
static void tls_flush(struct bufferevent *bev)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    struct tls_impl *impl;
    size_t len = evbuffer_get_length(out);

    if (len == 0 || (bufferevent_get_enabled(bev) & EV_WRITE))
        return;
    if (ssl != NULL && SSL_is_init_finished(ssl) && SSL_want(ssl) != SSL_WRITING) {
        impl = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
        /* Bounded: 16 records (256 KiB, the output's high-water mark) per
         * call; the rest from the write event. */
        for (int i = 0; i < 16 && len > 0; i++) {
            size_t n = len < TLS_RECORD ? len : TLS_RECORD;
            struct evbuffer_iovec v;
            const void *p;
            int w;

            if (evbuffer_peek(out, -1, NULL, &v, 1) >= 1 && v.iov_len >= n)
                p = v.iov_base;
            else if (evbuffer_copyout(out, impl->scratch, n) == (ev_ssize_t)n)
                p = impl->scratch;
            else
                break;
            w = SSL_write(ssl, p, (int)n);
            if (w <= 0) {
                ERR_clear_error(); /* libevent's retry asks again */
                if (p == impl->scratch)
                    (void)evbuffer_pullup(out, (ev_ssize_t)n);
                break;
            }
            evbuffer_drain(out, (size_t)w);
            len -= (size_t)w;
        }
        if (len == 0) {
            /* Adding to the empty output armed libevent's write event;
             * disarmed in the same loop iteration, the epoll changelist
             * (px_server.c) makes no system call of the pair. */
            bufferevent_disable(bev, EV_WRITE);
            return;
        }
    }
    bufferevent_enable(bev, EV_WRITE);
}

/* close_notify, then the TCP half-close; reading goes on (linger). */
static void tls_shutdown_write(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);

    if (ssl != NULL && SSL_is_init_finished(ssl))
        (void)SSL_shutdown(ssl);
    ERR_clear_error();
    (void)shutdown(bufferevent_getfd(bev), SHUT_WR);
}

static int tls_alive(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    char c;
    ssize_t n;

    if (ssl != NULL && SSL_pending(ssl) > 0)
        return 0;
    n = recv(bufferevent_getfd(bev), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* A TLS client cannot read a plaintext answer before its handshake, so the
 * refusal is the lingering close alone; msg is not sent. */
static int tls_refuse(int fd, const char *msg, size_t len)
{
    char sink[4096];

    (void)shutdown(fd, SHUT_WR);
    for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
    return 0;
}

static const char *tls_subject(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    const struct tls_conn *tc = ssl != NULL ? SSL_get_ex_data(ssl, conn_idx) : NULL;

    return tc != NULL ? tc->subject : NULL;
}

static const struct px_transport_ops tls_ops = {
    .name = "tls",
    .accept = tls_accept,
    .connect = tls_connect,
    .flush = tls_flush,
    .shutdown_write = tls_shutdown_write,
    .alive = tls_alive,
    .refuse = tls_refuse,
    .subject = tls_subject,
};

static void own_free(struct px_config *o)
{
    char **s[] = {&o->upstream, &o->upstream_host, &o->upstream_ca, &o->upstream_cert,
                  &o->upstream_key, &o->tls_cert, &o->tls_key, &o->tls_ciphers,
                  &o->tls_ciphersuites, &o->tls_client_ca, &o->tls_ocsp_file};

    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        free(*s[i]);
        *s[i] = NULL;
    }
}

/* Copies the keys this module reads from cfg into o (zeroed). 0 / -1. */
static int own_copy(struct px_config *o, const struct px_config *cfg)
{
    const char *from[] = {cfg->upstream, cfg->upstream_host, cfg->upstream_ca,
                          cfg->upstream_cert, cfg->upstream_key, cfg->tls_cert, cfg->tls_key,
                          cfg->tls_ciphers, cfg->tls_ciphersuites, cfg->tls_client_ca,
                          cfg->tls_ocsp_file};
    char **to[] = {&o->upstream, &o->upstream_host, &o->upstream_ca, &o->upstream_cert,
                   &o->upstream_key, &o->tls_cert, &o->tls_key, &o->tls_ciphers,
                   &o->tls_ciphersuites, &o->tls_client_ca, &o->tls_ocsp_file};

    memset(o, 0, sizeof(*o));
    o->upstream_tls = cfg->upstream_tls;
    o->tls_min_version = cfg->tls_min_version;
    o->tls_verify_client = cfg->tls_verify_client;
    o->tls_session_cache = cfg->tls_session_cache;
    o->tls_session_timeout_ms = cfg->tls_session_timeout_ms;
    o->tls_session_tickets = cfg->tls_session_tickets;
    o->tls_ticket_rotate_ms = cfg->tls_ticket_rotate_ms;
    for (size_t i = 0; i < sizeof to / sizeof to[0]; i++) {
        if (from[i] != NULL && (*to[i] = strdup(from[i])) == NULL) {
            own_free(o);
            return -1;
        }
    }
    return 0;
}

static struct px_transport *tls_new(const struct px_config *cfg, int server, char *err,
                                    size_t errlen)
{
    struct tls_impl *impl = NULL;
    unsigned char a[16];

    if (conn_idx < 0)
        conn_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_free);
    if (staple_idx < 0)
        staple_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, staple_free);
    impl = calloc(1, sizeof(*impl));
    if (impl == NULL || conn_idx < 0 || staple_idx < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    impl->tr.ops = &tls_ops;
    impl->tr.impl = impl;
    if (own_copy(&impl->own, cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    impl->cfg = &impl->own;
    cfg = impl->cfg;
    impl->server = server;
    if (!server)
        impl->host_is_ip = inet_pton(AF_INET, cfg->upstream_host, a) == 1 ||
                           inet_pton(AF_INET6, cfg->upstream_host, a) == 1;
    impl->ctx = build_ctx(impl, err, errlen);
    if (impl->ctx == NULL)
        goto fail;
    return &impl->tr;
fail:
    if (impl != NULL)
        own_free(&impl->own);
    free(impl);
    return NULL;
}

struct px_transport *px_tls_server_new(const struct px_config *cfg, char *err, size_t errlen)
{
    return tls_new(cfg, 1, err, errlen);
}

struct px_transport *px_tls_client_new(const struct px_config *cfg, char *err, size_t errlen)
{
    return tls_new(cfg, 0, err, errlen);
}

int px_tls_reload(struct px_transport *t, char *err, size_t errlen)
{
    struct tls_impl *impl = t->impl;
    char why[768];
    SSL_CTX *ctx;
    int64_t now = mono_ms();

    /* The ticket key rotates on every reload, also one that keeps the old
     * certificates: tickets made before are accepted one period more. */
    if (impl->server && impl->cfg->tls_session_tickets)
        rotate(impl, now, now + (int64_t)impl->cfg->tls_ticket_rotate_ms, "reload");
    ctx = build_ctx(impl, why, sizeof why);
    if (ctx == NULL) {
        px_stats_inc(PX_ST_TLS_RELOAD_FAILURES);
        snprintf(err, errlen, "TLS reload (%s): %s; keeping the previous certificates",
                 impl->server ? "listeners" : "upstream", why);
        px_log_error("%s", err);
        return -1;
    }
    SSL_CTX_free(impl->ctx); /* open connections hold their own reference */
    impl->ctx = ctx;
    SSL_SESSION_free(impl->session); /* resumed against the new context */
    impl->session = NULL;
    px_stats_inc(PX_ST_TLS_RELOADS);
    px_log_info("TLS reload (%s): new connections use %s", impl->server ? "listeners" : "upstream",
                impl->server ? impl->cfg->tls_cert
                             : (impl->cfg->upstream_cert != NULL ? impl->cfg->upstream_cert
                                                                 : impl->cfg->upstream_ca));
    return 0;
}

void px_tls_free(struct px_transport **t)
{
    struct tls_impl *impl;

    if (t == NULL || *t == NULL)
        return;
    impl = (*t)->impl;
    SSL_SESSION_free(impl->session);
    SSL_CTX_free(impl->ctx);
    key_drop(&impl->tk[0]);
    key_drop(&impl->tk[1]);
    own_free(&impl->own);
    free(impl);
    *t = NULL;
}
