/* The etcd gateway client (etcd/ec_client) against a real single-member etcd:
 * binary keys and values through base64, txn on create revision, leases
 * (grant, keepalive, expiry seen as a keepalive without TTL, revoke), a
 * watch that fires on deletion and times out at its deadline, and an
 * endpoint list whose first member is down. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ec_client.h"
#include "ts_etcd.h"

static struct ts_etcd E;
static char *DIR_;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    DIR_ = ts_tempdir("ecclient");
    cr_assert_not_null(DIR_);
    cr_assert_eq(ts_etcd_start(&E, DIR_, 1), 0, "etcd fixture failed");
}

static void teardown(void)
{
    ts_etcd_stop(&E);
    if (DIR_)
        ts_rmrf(DIR_);
    free(DIR_);
    DIR_ = NULL;
}

TestSuite(ecclient, .init = setup, .fini = teardown, .timeout = 60);

static struct ec_client *client(const char *eps)
{
    char err[256];
    struct ec_client *c = ec_client_new(eps, err, sizeof err);

    cr_assert_not_null(c, "ec_client_new(%s): %s", eps, err);
    return c;
}

#define DL (ec_now_ms() + 3000)

Test(ecclient, put_range_binary_and_prefix)
{
    struct ec_client *c = client(E.endpoints);
    struct ec_range_req q = {.key = "p/", .prefix = 1, .sort_create = 1};
    struct ec_kvs r;
    int64_t rev1 = 0, rev2 = 0;
    static const char bin[] = {'a', 0, (char)0xff, '\n', '"'};

    cr_assert_eq(ec_put(c, "p/one", bin, sizeof bin, 0, DL, &rev1), EC_OK, "%s",
                 ec_client_error(c));
    cr_assert_eq(ec_put(c, "p/two", "", 0, 0, DL, &rev2), EC_OK);
    cr_assert_eq(ec_put(c, "q/other", "x", 1, 0, DL, NULL), EC_OK);
    cr_expect_gt(rev2, rev1);
    cr_assert_eq(ec_range(c, &q, DL, &r, NULL), EC_OK, "%s", ec_client_error(c));
    cr_assert_eq(r.n, 2);
    cr_expect_eq(r.count, 2);
    cr_expect_str_eq(r.kv[0].key, "p/one");
    cr_expect_eq(r.kv[0].value_len, sizeof bin);
    cr_expect_eq(memcmp(r.kv[0].value, bin, sizeof bin), 0);
    cr_expect_eq(r.kv[0].create_revision, rev1);
    cr_expect_eq(r.kv[1].value_len, 0, "empty value is an omitted field");
    ec_kvs_free(&r);
    q.limit = 1;
    q.sort_create = -1;
    cr_assert_eq(ec_range(c, &q, DL, &r, NULL), EC_OK);
    cr_assert_eq(r.n, 1);
    cr_expect_str_eq(r.kv[0].key, "p/two");
    cr_expect(r.more);
    ec_kvs_free(&r);
    {
        struct ec_range_req d = {.key = "p/", .prefix = 1};
        int64_t n = 0;

        cr_assert_eq(ec_delete(c, &d, DL, &n), EC_OK);
        cr_expect_eq(n, 2);
        cr_assert_eq(ec_range(c, &q, DL, &r, NULL), EC_OK);
        cr_expect_eq(r.n, 0);
        cr_expect_eq(r.count, 0, "missing count is 0");
        ec_kvs_free(&r);
    }
    ec_client_free(&c);
    cr_expect_null(c);
}

Test(ecclient, txn_put_if_absent)
{
    struct ec_client *c = client(E.endpoints);
    struct ec_cmp cmp = {.key = "t/k", .target = EC_TARGET_CREATE, .op = EC_EQUAL, .n = 0};
    struct ec_op put = {.type = EC_OP_PUT, .range = {.key = "t/k"}, .value = "v", .value_len = 1};
    struct ec_op get = {.type = EC_OP_RANGE, .range = {.key = "t/k"}};
    struct ec_txn_result t;
    int64_t first;

    cr_assert_eq(ec_txn(c, &cmp, 1, &put, 1, &get, 1, DL, &t), EC_OK, "%s", ec_client_error(c));
    cr_expect(t.succeeded);
    first = t.revision;
    ec_txn_result_free(&t);
    cr_assert_eq(ec_txn(c, &cmp, 1, &put, 1, &get, 1, DL, &t), EC_OK);
    cr_expect_not(t.succeeded, "a failed txn has no succeeded field: false");
    cr_assert_eq(t.n, 1);
    cr_assert_eq(t.res[0].kvs.n, 1);
    cr_expect_eq(t.res[0].kvs.kv[0].create_revision, first);
    ec_txn_result_free(&t);
    ec_client_free(&c);
}

Test(ecclient, lease_keepalive_expiry_and_revoke)
{
    struct ec_client *c = client(E.endpoints);
    int64_t id = 0, ttl = 0, id2 = 0;

    cr_assert_eq(ec_lease_grant(c, 1, DL, &id, &ttl), EC_OK, "%s", ec_client_error(c));
    cr_expect_eq(ttl, 1);
    cr_assert_eq(ec_lease_keepalive(c, id, DL, &ttl), EC_OK, "%s", ec_client_error(c));
    cr_expect_eq(ttl, 1);
    cr_assert_eq(ec_lease_timetolive(c, id, DL, &ttl), EC_OK);
    cr_expect_geq(ttl, 0);
    ts_sleep_ms(2500);
    cr_assert_eq(ec_lease_keepalive(c, id, DL, &ttl), EC_OK, "%s", ec_client_error(c));
    cr_expect_eq(ttl, 0, "an expired lease's keepalive has no TTL");
    cr_assert_eq(ec_lease_timetolive(c, id, DL, &ttl), EC_OK);
    cr_expect_eq(ttl, -1);
    cr_expect_eq(ec_lease_revoke(c, id, DL), EC_ERR_SERVER);
    cr_expect_eq(ec_client_code(c), EC_CODE_NOT_FOUND, "%s", ec_client_error(c));
    cr_assert_eq(ec_lease_grant(c, 30, DL, &id2, &ttl), EC_OK);
    cr_expect_eq(ec_lease_revoke(c, id2, DL), EC_OK, "%s", ec_client_error(c));
    ec_client_free(&c);
}

Test(ecclient, watch_fires_on_delete_and_times_out)
{
    struct ec_client *c = client(E.endpoints), *d = client(E.endpoints);
    struct ec_range_req q = {.key = "w/k"};
    int64_t rev = 0, t0;
    int fired = -1;

    cr_assert_eq(ec_put(c, "w/k", "", 0, 0, DL, &rev), EC_OK);
    t0 = ec_now_ms();
    cr_assert_eq(ec_watch(c, "w/k", rev + 1, EC_WATCH_DELETE, ec_now_ms() + 400, &fired), EC_OK,
                 "%s", ec_client_error(c));
    cr_expect_eq(fired, 0);
    cr_expect_geq(ec_now_ms() - t0, 390);
    cr_expect_lt(ec_now_ms() - t0, 1500);
    /* A delete before the watch starts is replayed from start_rev. */
    cr_assert_eq(ec_delete(d, &q, DL, NULL), EC_OK);
    t0 = ec_now_ms();
    cr_assert_eq(ec_watch(c, "w/k", rev + 1, EC_WATCH_DELETE, ec_now_ms() + 3000, &fired), EC_OK);
    cr_expect_eq(fired, 1);
    cr_expect_lt(ec_now_ms() - t0, 1000);
    /* The request connection still works after the watch was cut. */
    cr_expect_eq(ec_put(c, "w/k", "", 0, 0, DL, NULL), EC_OK, "%s", ec_client_error(c));
    ec_client_free(&c);
    ec_client_free(&d);
}

Test(ecclient, endpoints_tried_in_turn_and_all_down_named)
{
    char eps[400], dead[64];
    struct ec_client *c;
    struct ec_kvs r;
    struct ec_range_req q = {.key = "x"};
    int port = ts_free_port();
    char err[256] = "";

    snprintf(dead, sizeof dead, "127.0.0.1:%d", port);
    snprintf(eps, sizeof eps, "%s,%s", dead, E.endpoints);
    c = client(eps);
    cr_expect_eq(ec_range(c, &q, DL, &r, NULL), EC_OK, "%s", ec_client_error(c));
    ec_kvs_free(&r);
    ec_client_free(&c);
    c = client(dead);
    cr_expect_eq(ec_range(c, &q, DL, &r, NULL), EC_ERR_UNAVAILABLE);
    cr_expect(strstr(ec_client_error(c), dead) != NULL, "%s", ec_client_error(c));
    ec_kvs_free(&r);
    ec_client_free(&c);
    cr_expect_null(ec_client_new("nohostport", err, sizeof err));
    cr_expect_neq(err[0], '\0');
    cr_expect_null(ec_client_new("h:0", NULL, 0));
    cr_expect_null(ec_client_new("", NULL, 0));
}
