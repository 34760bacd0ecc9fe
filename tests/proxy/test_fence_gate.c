/* The fencing gate (px_fence) on its own, over the memory store: each
 * transition of S1 (stale refused), S2 (forwarded only once durable) and S3
 * (never two tokens in flight per resource), driven step by step. The store
 * completes only when the test dispatches it, so every intermediate state can
 * be observed. */
#include <criterion/criterion.h>

#include <poll.h>
#include <string.h>

#include "st_store.h"
#include "px_fence.h"

static struct st_store *store;
static struct px_fence *fence;

struct req {
    struct px_fence_ticket t;
    int called;                 /* callbacks received */
    enum px_fence_result last;  /* the result at the callback */
};

static void cb(struct px_fence_ticket *t, void *arg)
{
    struct req *r = arg;

    r->called++;
    r->last = t->result;
}

static void setup(void)
{
    struct st_store_config cfg = {.backend = ST_STORE_MEMORY};
    char err[256];

    store = st_store_open(&cfg, err, sizeof(err));
    cr_assert_not_null(store, "%s", err);
    fence = px_fence_new(store);
    cr_assert_not_null(fence);
}

static void teardown(void)
{
    px_fence_free(fence);
    st_store_close(&store);
}

/* Runs the store's completions (bounded wait for the notify fd). */
static void settle(void)
{
    struct pollfd p = {st_store_notify_fd(store), POLLIN, 0};

    for (int i = 0; i < 10 && poll(&p, 1, 50) > 0; i++)
        st_store_dispatch(store);
}

static enum px_fence_result admit(const char *key, uint64_t token, struct req *r)
{
    memset(r, 0, sizeof(*r));
    return px_fence_admit(fence, key, strlen(key), token, &r->t, cb, r);
}

TestSuite(gate, .init = setup, .fini = teardown, .timeout = 10);

Test(gate, first_request_waits_for_the_load_then_goes)
{
    struct req a;

    cr_assert_eq(admit("/r", 5, &a), PX_FENCE_WAIT, "the store has not answered yet");
    cr_assert_eq(a.called, 0);
    settle();
    cr_assert_eq(a.called, 1);
    cr_assert_eq(a.last, PX_FENCE_GO, "token 5 above 0 goes once durable");
    cr_assert_eq(px_fence_inflight(fence), 1);
    px_fence_done(fence, &a.t);
    cr_assert_eq(px_fence_inflight(fence), 0);
}

Test(gate, stale_token_is_refused_at_once_with_the_highest)
{
    struct req a, b;
    uint64_t h;

    admit("/r", 7, &a);
    settle();
    cr_assert_eq(a.last, PX_FENCE_GO);
    px_fence_done(fence, &a.t);
    cr_assert_eq(admit("/r", 6, &b), PX_FENCE_STALE);       /* S1 */
    cr_assert_eq(b.t.highest, 7);
    cr_assert_eq(b.called, 0, "decided at once, no callback");
    cr_assert_eq(px_fence_peek(fence, "/r", 2, &h), 0);
    cr_assert_eq(h, 7);
}

Test(gate, advance_is_not_forwarded_before_it_is_durable)
{
    struct req a, b;

    admit("/r", 1, &a);
    settle();
    px_fence_done(fence, &a.t);
    cr_assert_eq(admit("/r", 2, &b), PX_FENCE_WAIT, "S2: the advance is not durable yet");
    cr_assert_eq(b.called, 0);
    settle();
    cr_assert_eq(b.called, 1);
    cr_assert_eq(b.last, PX_FENCE_GO);
    px_fence_done(fence, &b.t);
}

Test(gate, equal_tokens_go_together)
{
    struct req a, b, c;

    admit("/r", 3, &a);
    settle();
    cr_assert_eq(a.last, PX_FENCE_GO);
    cr_assert_eq(admit("/r", 3, &b), PX_FENCE_GO, "same token, same holder: no wait");
    cr_assert_eq(admit("/r", 3, &c), PX_FENCE_GO);
    cr_assert_eq(px_fence_inflight(fence), 3);
    px_fence_done(fence, &a.t);
    px_fence_done(fence, &b.t);
    px_fence_done(fence, &c.t);
    cr_assert_eq(px_fence_inflight(fence), 0);
}

Test(gate, higher_token_waits_until_lower_ones_in_flight_are_done)
{
    struct req a1, a2, b, late;

    admit("/r", 5, &a1);
    settle();
    cr_assert_eq(admit("/r", 5, &a2), PX_FENCE_GO);
    cr_assert_eq(admit("/r", 6, &b), PX_FENCE_WAIT);
    settle(); /* 6 is durable now, but two requests with 5 are in flight */
    cr_assert_eq(b.called, 0, "S3: token 6 let through while 5 was in flight");
    cr_assert_eq(admit("/r", 5, &late), PX_FENCE_STALE, "6 was admitted: 5 is stale now");
    px_fence_done(fence, &a1.t);
    cr_assert_eq(b.called, 0, "one request with 5 is still in flight");
    px_fence_done(fence, &a2.t);
    cr_assert_eq(b.called, 1);
    cr_assert_eq(b.last, PX_FENCE_GO);
    px_fence_done(fence, &b.t);
}

Test(gate, queued_lower_token_is_refused_when_a_higher_one_arrives)
{
    struct req a, b, c;

    admit("/r", 1, &a);
    settle();
    cr_assert_eq(admit("/r", 2, &b), PX_FENCE_WAIT); /* waits for 1 in flight */
    settle();
    cr_assert_eq(b.called, 0);
    cr_assert_eq(admit("/r", 3, &c), PX_FENCE_WAIT);
    cr_assert_eq(b.called, 1, "the waiting 2 is decided when 3 is admitted");
    cr_assert_eq(b.last, PX_FENCE_STALE, "2 never reached the upstream and is stale now");
    cr_assert_eq(b.t.highest, 3);
    settle();
    cr_assert_eq(c.called, 0, "1 is still in flight");
    px_fence_done(fence, &a.t);
    cr_assert_eq(c.called, 1);
    cr_assert_eq(c.last, PX_FENCE_GO);
    px_fence_done(fence, &c.t);
}

Test(gate, other_resources_are_never_delayed)
{
    struct req a, b, o;

    admit("/r", 1, &a);
    settle();
    admit("/r", 2, &b);
    settle();
    cr_assert_eq(b.called, 0);
    cr_assert_eq(admit("/other", 1, &o), PX_FENCE_WAIT); /* only the first load */
    settle();
    cr_assert_eq(o.last, PX_FENCE_GO, "another resource waited for /r");
    px_fence_done(fence, &o.t);
    px_fence_done(fence, &a.t);
    px_fence_done(fence, &b.t);
}

Test(gate, withdrawn_ticket_never_calls_back)
{
    struct req a, b;

    admit("/r", 1, &a);
    settle();
    admit("/r", 2, &b);
    px_fence_done(fence, &b.t); /* the client went away while waiting */
    settle();
    px_fence_done(fence, &a.t);
    cr_assert_eq(b.called, 0);
    cr_assert_eq(px_fence_inflight(fence), 0);
}

Test(gate, idle_resources_beyond_the_cache_size_are_reloaded_from_the_store)
{
    static const char *keys[] = {"/a", "/b", "/c", "/d"};
    struct req r, busy, s;
    uint64_t h;

    px_fence_set_max_resources(fence, 2);
    admit("/busy", 9, &busy); /* stays in flight: never evicted */
    settle();
    cr_assert_eq(busy.last, PX_FENCE_GO);
    for (int i = 0; i < 4; i++) {
        admit(keys[i], 10 + (uint64_t)i, &r);
        settle();
        cr_assert_eq(r.last, PX_FENCE_GO);
        px_fence_done(fence, &r.t);
    }
    cr_assert_eq(px_fence_peek(fence, "/busy", 5, &h), 0, "a resource in flight was dropped");
    cr_assert_eq(h, 9);
    cr_assert_eq(px_fence_peek(fence, "/d", 2, &h), 0, "the most recent idle one stays");
    cr_assert_eq(px_fence_peek(fence, "/a", 2, &h), -1, "the oldest idle one was dropped");
    /* Its highest comes back from the store: a stale token is still refused. */
    cr_assert_eq(admit("/a", 9, &s), PX_FENCE_WAIT);
    settle();
    cr_assert_eq(s.called, 1);
    cr_assert_eq(s.last, PX_FENCE_STALE);
    cr_assert_eq(s.t.highest, 10);
    px_fence_done(fence, &busy.t);
}
