/* pol_uri: Destination values and absolute-form targets reduced to the
 * origin-form path they name, after checking that they name this proxy. The
 * check is deliberately literal: a URI that might name this proxy under
 * another spelling (an IP for a name, an escaped host) is refused rather
 * than guessed at, because a Destination the proxy does not classify could
 * write a fenced object unchecked (S1, S5). */
#include "pol_uri.h"

#include <string.h>

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int ieq_prefix(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);

    if (n < k)
        return 0;
    for (size_t i = 0; i < k; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

/* Splits host[":" port]: *hlen is the host's length, *port the port (or
 * default_port without one). Returns 0, or -1 when malformed: an empty host,
 * an unclosed "[", a port that is empty, not 1..65535 or not digits. */
static int split_authority(const char *a, size_t n, unsigned default_port, size_t *hlen,
                           unsigned *port)
{
    size_t i = 0;
    unsigned long v = 0;

    if (n == 0)
        return -1;
    if (a[0] == '[') {
        const char *rb = memchr(a, ']', n);
        if (rb == NULL || rb == a + 1)
            return -1;
        i = (size_t)(rb - a) + 1;
    } else {
        while (i < n && a[i] != ':')
            i++;
        if (i == 0)
            return -1;
    }
    *hlen = i;
    if (i == n) {
        *port = default_port;
        return 0;
    }
    if (a[i] != ':' || i + 1 == n || n - i - 1 > 5)
        return -1;
    for (i++; i < n; i++) {
        if (a[i] < '0' || a[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(a[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (unsigned)v;
    return 0;
}

int pol_uri_authority_is(const char *authority, size_t len, unsigned default_port,
                         const char *self, size_t self_len)
{
    size_t ah, sh;
    unsigned ap, sp;

    if (authority == NULL || self == NULL ||
        split_authority(authority, len, default_port, &ah, &ap) != 0 ||
        split_authority(self, self_len, default_port, &sh, &sp) != 0)
        return 0;
    if (ah != sh || ap != sp)
        return 0;
    for (size_t i = 0; i < ah; i++)
        if (lower((unsigned char)authority[i]) != lower((unsigned char)self[i]))
            return 0;
    /* No userinfo or other byte a Host cannot hold in the authority. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)authority[i];
        if (c == '@' || c == '/' || c == '?' || c == '#' || c <= 0x20 || c >= 0x7F)
            return 0;
    }
    return 1;
}

/* A byte that may appear in a URI reference (RFC 3986 reserved, unreserved,
 * '%'); everything else means the value is not a URI. */
static int uri_byte(unsigned char c)
{
    return c > 0x20 && c < 0x7F && strchr("\"<>\\^`{|}", c) == NULL;
}

/* "http[s]://authority/path?query" naming self: 0 and the path, else -1.
 * The value is known to hold URI bytes only and no '#'. */
static int absolute(const char *v, size_t n, const char *self, size_t self_len,
                    const char **path, size_t *path_len)
{
    size_t a, e;
    unsigned def;

    if (ieq_prefix(v, n, "http://")) {
        a = 7;
        def = 80;
    } else if (ieq_prefix(v, n, "https://")) {
        a = 8;
        def = 443;
    } else {
        return -1;
    }
    for (e = a; e < n && v[e] != '/' && v[e] != '?'; e++)
        ;
    if (e == n || v[e] != '/')
        return -1; /* no path: nothing to write to */
    if (!pol_uri_authority_is(v + a, e - a, def, self, self_len))
        return -1;
    *path = v + e;
    *path_len = n - e;
    return 0;
}

static int uri_only(const char *v, size_t n)
{
    if (v == NULL || n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!uri_byte((unsigned char)v[i]) || v[i] == '#')
            return 0;
    return 1;
}

int pol_uri_destination(const char *v, size_t n, const char *self, size_t self_len,
                        const char **path, size_t *path_len)
{
    *path = NULL;
    *path_len = 0;
    if (!uri_only(v, n))
        return -1;
    if (v[0] == '/') {
        /* path-absolute: "//host/..." is a network-path reference, which a
         * server could resolve against another host: refused. */
        if (n > 1 && v[1] == '/')
            return -1;
        *path = v;
        *path_len = n;
        return 0;
    }
    return absolute(v, n, self, self_len, path, path_len);
}

int pol_uri_absolute_target(const char *t, size_t n, const char *self, size_t self_len,
                            const char **path, size_t *path_len)
{
    *path = NULL;
    *path_len = 0;
    if (!uri_only(t, n))
        return -1;
    return absolute(t, n, self, self_len, path, path_len);
}
