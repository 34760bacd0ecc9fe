/* px_storecli: the `fenceproxy store` subcommands. `init -c FILE [--floor N]`
 * creates a new file token store at the configured path (and its marker next
 * to the config); `check -c FILE` verifies the store (marker, header, file
 * size, every record's checksum) without changing it. See docs/operations.md,
 * "Token store faults". */
#ifndef PX_STORECLI_H
#define PX_STORECLI_H

/* Runs `fenceproxy store ...`; argv[0] is "store". Output goes to stdout,
 * diagnostics to stderr. Returns the exit status: 0 ok (check: clean),
 * 1 failed (check: damaged or missing), 2 usage error or bad config. */
int px_storecli_main(int argc, char **argv);

#endif
