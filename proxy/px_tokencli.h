/* px_tokencli: `fenceproxy tokens -c FILE list [PREFIX] [--limit N] |
 * get RESOURCE | set RESOURCE TOKEN --reason TEXT`, the operator's client of
 * the admin API (list prints one JSON object per resource a line, paging
 * through GET /tokens?prefix=; at most N with --limit).
 * The admin address (admin_listen) and the bearer secret (admin_token_file)
 * come from the config file; set sends the caller's identity (user@host)
 * for the audit record. */
#ifndef PX_TOKENCLI_H
#define PX_TOKENCLI_H

#define PX_TOKENCLI_UNREACHABLE 69 /* EX_UNAVAILABLE: the admin API did not answer */

/* Runs `fenceproxy tokens ...`; argv[0] is "tokens". The admin's answer
 * goes to stdout, diagnostics to stderr. Returns the exit status: 0 done,
 * 1 refused (by the admin API, or a usage or config error),
 * PX_TOKENCLI_UNREACHABLE when the admin API cannot be reached. */
int px_tokencli_main(int argc, char **argv);

#endif
