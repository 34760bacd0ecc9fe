/* The connection state machine's transition table, and that an illegal
 * transition is caught: px_conn_state_check() aborts in debug builds (the
 * ASan tree) and reports -1 in release builds. */
#include <criterion/criterion.h>
#include <signal.h>

#include "px_conn.h"
#include "px_log.h"

struct edge {
    enum px_conn_state from, to;
};

/* Every legal change, and why it happens. */
static const struct edge legal[] = {
    {C_HEAD, C_HEAD},        /* accept: the first head */
    {C_HEAD, C_DECIDE},      /* a head parsed */
    {C_HEAD, C_CLOSING},     /* a malformed head answered, or a half-close */
    {C_HEAD, C_DEAD},        /* idle timeout, a head cut short */
    {C_DECIDE, C_HEAD},      /* a local answer on a kept-alive connection */
    {C_DECIDE, C_CONNECT},   /* admitted, a new upstream connection */
    {C_DECIDE, C_FORWARD},   /* admitted, a pooled upstream connection */
    {C_DECIDE, C_CLOSING},   /* a local answer that ends the connection */
    {C_DECIDE, C_DEAD},      /* the client went away while waiting */
    {C_CONNECT, C_CONNECT},  /* granted a queued upstream connection: connecting */
    {C_CONNECT, C_FORWARD},  /* connected */
    {C_CONNECT, C_CLOSING},  /* connect failed or timed out: 502/504 */
    {C_CONNECT, C_DEAD},     /* the client went away */
    {C_FORWARD, C_HEAD},     /* response done, kept alive */
    {C_FORWARD, C_CLOSING},  /* response done, or failed before it began */
    {C_FORWARD, C_DEAD},     /* failed mid-response, or the client went away */
    {C_CLOSING, C_LINGER},   /* output written, write side shut */
    {C_CLOSING, C_DEAD},     /* idle timeout while writing */
    {C_LINGER, C_DEAD},      /* linger over */
};

static int listed(enum px_conn_state f, enum px_conn_state t)
{
    for (size_t i = 0; i < sizeof(legal) / sizeof(legal[0]); i++)
        if (legal[i].from == f && legal[i].to == t)
            return 1;
    return 0;
}

Test(conn_state, table_is_exactly_the_listed_changes)
{
    for (int f = 0; f < C_COUNT; f++)
        for (int t = 0; t < C_COUNT; t++)
            cr_expect_eq(px_conn_state_legal(f, t), listed(f, t), "%s -> %s",
                         px_conn_state_name(f), px_conn_state_name(t));
    cr_expect_eq(px_conn_state_legal(C_COUNT, C_HEAD), 0);
    cr_expect_eq(px_conn_state_legal(C_HEAD, C_COUNT), 0);
}

Test(conn_state, nothing_leaves_dead)
{
    for (int t = 0; t < C_COUNT; t++)
        cr_expect_eq(px_conn_state_legal(C_DEAD, t), 0);
}

Test(conn_state, legal_change_passes)
{
    cr_expect_eq(px_conn_state_check(1, "test", C_HEAD, C_DECIDE), 0);
}

#ifdef NDEBUG
Test(conn_state, illegal_change_reported_in_release)
{
    px_log_init(PX_LOG_ERROR);
    cr_expect_eq(px_conn_state_check(1, "test", C_LINGER, C_FORWARD), -1);
}
#else
Test(conn_state, illegal_change_aborts_in_debug, .signal = SIGABRT)
{
    px_log_init(PX_LOG_ERROR);
    px_conn_state_check(1, "test", C_LINGER, C_FORWARD);
}
#endif
