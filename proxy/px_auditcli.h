/* px_auditcli: the `fenceproxy audit` subcommands. `verify FILE...` walks the
 * hash chain of px_audit across the files given oldest first; `tail` shows
 * the latest records as a table. Also holds the small parser for the flat
 * JSON objects the audit log is made of (strings, numbers, null, booleans;
 * no nesting), which the tests use to check that every line is valid JSON. */
#ifndef PX_AUDITCLI_H
#define PX_AUDITCLI_H

#include <stddef.h>
#include <stdint.h>

/* Runs `fenceproxy audit ...`; argv[0] is "audit". Output goes to stdout,
 * diagnostics to stderr. Returns the exit status: 0 ok (gap records
 * included: they are reported, one line each, before the summary), 1 chain
 * broken, 2 usage error or unreadable file. */
int px_auditcli_main(int argc, char **argv);

/* The outcome of px_auditcli_verify(). */
struct px_auditcli_verdict {
    uint64_t records;  /* lines checked and good (gap records included) */
    uint64_t gaps;     /* good gap records: the proxy's account of a loss */
    uint64_t lost;     /* records those gap records say were lost */
    size_t bad_file;   /* index of the file with the break or the read error */
    uint64_t bad_line; /* 1-based line of the first bad line (rc 1) */
};

/* Called for each good gap record (file index, 1-based line, the record's
 * bytes without the newline). */
typedef void (*px_auditcli_gap_fn)(void *arg, size_t file, uint64_t line, const char *rec,
                                   size_t len);

/* Verifies the chain through files[0..n) in order. A gap record (written by
 * the proxy when records could not be written) is chained like any other
 * line: it is accepted and counted, and an edit anywhere still breaks the
 * chain. Returns 0 (all good), 1 (broken at v->bad_file:v->bad_line) or 2
 * (files[v->bad_file] could not be read; errno is set). Prints nothing. */
int px_auditcli_verify(const char *const *files, size_t n, struct px_auditcli_verdict *v);

/* The same, calling gap (may be NULL) for each gap record. */
int px_auditcli_verify_gaps(const char *const *files, size_t n, struct px_auditcli_verdict *v,
                            px_auditcli_gap_fn gap, void *arg);

enum px_jtype { PX_J_STRING, PX_J_NUMBER, PX_J_NULL, PX_J_BOOL };

/* One member of a flat object. key and val point into the parsed text and
 * are raw: a string's bytes between its quotes, still escaped. */
struct px_jfield {
    const char *key;
    size_t key_len;
    enum px_jtype type;
    const char *val;
    size_t val_len;
};

/* Parses s (len bytes) as one flat JSON object (RFC 8259 syntax, strings
 * valid UTF-8, no nested values, no duplicate keys). Fills up to max
 * fields and their count in *n. Returns 0, or -1 when s is not such an
 * object or holds more than max members. */
int px_auditcli_json_parse(const char *s, size_t len, struct px_jfield *f, size_t max, size_t *n);

/* Decodes the raw inside of a JSON string already accepted by the parser
 * into UTF-8 (a lone surrogate becomes U+FFFD). *out is malloc'd and
 * NUL-terminated (the caller frees it); *out_len excludes the NUL (the
 * text may hold NUL bytes from \u0000). Returns 0 or -1. */
int px_auditcli_json_unescape(const char *raw, size_t len, char **out, size_t *out_len);

/* The member named key (compared after unescaping), or NULL. */
const struct px_jfield *px_auditcli_json_get(const struct px_jfield *f, size_t n, const char *key);

#endif
