/* S3 clients through an `opaque` fenced route with `error_format = s3` in
 * front of s3rver, which checks SigV4 signatures: boto3 with the token it
 * adds itself, and aws-cli (which cannot add a header) under
 * `fencelock run --http-proxy`, whose multipart upload succeeds until the
 * lock passes to another holder; then its next write is refused (409, the
 * S3 error parsed by the CLI, audited). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sf_fixture.h"

static struct sf S;
static int passed;

static const char routes[] = "[route s3]\nprefix = /bkt/\nresource = segments:2\n"
                             "path_semantics = opaque\nerror_format = s3\n";

static void setup(void)
{
    cr_assert_eq(sf_init(&S, "s3"), 0);
    cr_assert_eq(sf_redis_start(&S), 0);
    cr_assert_eq(sf_s3rver_start(&S), 0);
    cr_assert_eq(sf_proxy_start(&S, S.s3_port, routes), 0);
}

static void teardown(void)
{
    sf_stop(&S, !passed);
}

/* One timeout for the suite (a per-test one leaks in Criterion's runner). */
TestSuite(s3, .init = setup, .fini = teardown, .timeout = 90);

static char *boto(const char *tag, const char *token, char *const more[])
{
    char script[1100], port[16], *out = NULL;
    char *argv[16] = {"/usr/bin/python3", script, port, (char *)token};
    size_t n = 4;
    int rc;

    cr_assert_not_null(sf_need("/usr/bin/python3", "python3"));
    cr_assert(access("/usr/lib/python3/dist-packages/boto3", R_OK) == 0,
              "boto3 not found: apt-get install python3-boto3 (scripts/deps.sh)");
    snprintf(script, sizeof script, "%s/tests/storage/s3_client.py", S.src);
    snprintf(port, sizeof port, "%d", S.px.port);
    for (size_t i = 0; more[i] && n < 15; i++)
        argv[n++] = more[i];
    argv[n] = NULL;
    rc = sf_run(&S, tag, argv, NULL, 30000, &out);
    cr_assert_eq(rc, 0, "%s: exit %d:\n%s", tag, rc, out ? out : "");
    return out;
}

Test(s3, opaque_keys_and_an_s3_error_parsed_by_boto3)
{
    char *out;
    int ok = 1;

    /* Keys a normalized route refuses: through the opaque route each reaches
     * s3rver (which checks the signature over the path as sent) and reads
     * back. s3rver itself answers 404 for an empty segment: that answer is
     * the store's, relayed, not a 400 of the proxy. */
    out = boto("boto-keys", "5",
               (char *[]){"put", "user42/plain", "user42/a/./b", "user42/x\\y", "user42/k//c", NULL});
    cr_expect(strstr(out, "'user42/plain' ok\n"), "%s", out);
    cr_expect(strstr(out, "'user42/a/./b' ok\n"), "%s", out);
    cr_expect(strstr(out, "'user42/x\\\\y' ok\n"), "%s", out);
    cr_expect(strstr(out, "'user42/k//c' ERR 404 "), "%s", out);
    ok &= strstr(out, "'user42/a/./b' ok\n") && strstr(out, "'user42/x\\\\y' ok\n") &&
          strstr(out, "'user42/k//c' ERR 404 ") && !strstr(out, "InvalidURI");
    free(out);
    {
        const char *const n1[] = {"\"PUT /bkt/user42/x%5Cy ", "200", NULL};
        const char *const n2[] = {"\"PUT /bkt/user42/a/./b ", "200", NULL};

        cr_expect_eq(sf_count_lines(S.px.access, n1), 1, "the %%5C key not forwarded as sent");
        cr_expect_eq(sf_count_lines(S.px.access, n2), 1, "the ./ key not forwarded as sent");
        ok &= sf_count_lines(S.px.access, n1) == 1 && sf_count_lines(S.px.access, n2) == 1;
    }
    /* A stale token: 409 with an S3 XML body that botocore parses into a
     * ClientError with its code; audited. */
    out = boto("boto-stale", "4", (char *[]){"stale", "user42/t", NULL});
    cr_expect(strstr(out, "ERR 409 StaleFencingToken "), "boto3 did not parse the refusal: %s", out);
    ok &= strstr(out, "ERR 409 StaleFencingToken ") != NULL;
    free(out);
    {
        const char *const n[] = {"\"stale_token\"", "\"/bkt/user42\"", "\"token\":4",
                                 "\"highest\":5", NULL};

        cr_expect_eq(sf_count_lines(S.px.audit, n), 1, "no stale_token audit record");
        ok &= sf_count_lines(S.px.audit, n) == 1;
    }
    passed = ok;
}

Test(s3, aws_cli_multipart_under_fencelock_http_proxy)
{
    const char *aws = sf_need("/usr/bin/aws", "awscli");
    char big[1100], small[1100], ready[1100], go[1100], home[1100], script[8192], ep[64];
    char buf[256], *out = NULL;
    struct ts_proc a;
    int ok = 1, st = 0, rc;
    long long deadline;

    cr_assert_not_null(aws);
    sf_path(&S, "big", big, sizeof big);
    sf_path(&S, "small", small, sizeof small);
    sf_path(&S, "ready", ready, sizeof ready);
    sf_path(&S, "go", go, sizeof go);
    sf_path(&S, "home", home, sizeof home);
    cr_assert_eq(sf_write_file(big, 12u << 20, 1), 0); /* 2 parts at aws-cli's 8 MiB */
    cr_assert_eq(sf_write_file(small, 1000, 2), 0);
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", S.px.port);
    char env_home[1200];
    snprintf(env_home, sizeof env_home, "HOME=%s", home);
    char *env[] = {"AWS_ACCESS_KEY_ID=" SF_S3_KEY, "AWS_SECRET_ACCESS_KEY=" SF_S3_KEY,
                   "AWS_DEFAULT_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true",
                   "AWS_PAGER=", env_home, NULL};

    /* Holder A: a multipart upload, then (told to go on) one more write. Its
     * renewals come every 20 s, after this test is over, so it goes on
     * believing it holds the lock: the paused-holder case. */
    snprintf(script, sizeof script,
             "%s --endpoint-url %s --no-progress s3 cp %s s3://bkt/user42/big && echo first-ok; "
             "touch %s; i=0; while [ ! -e %s ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; "
             "%s --endpoint-url %s --no-progress s3 cp %s s3://bkt/user42/late; echo second=$?",
             aws, ep, big, ready, go, aws, ep, small);
    {
        char log[1100];
        char *argv[] = {(char *)S.fencelock, "--backend", S.backend, "run", "/bkt/user42",
                        "--ttl", "60s", "--http-proxy", "--", "/bin/sh", "-c", script, NULL};

        sf_path(&S, "holder-a.log", log, sizeof log);
        cr_assert_eq(ts_proc_start(&a, "holder-a", argv, env, log), 0);
    }
    deadline = ts_now_ms() + 60000;
    while (access(ready, F_OK) != 0 && ts_proc_alive(&a) && ts_now_ms() < deadline)
        ts_sleep_ms(50);
    out = ts_read_file(a.log, NULL);
    cr_assert(access(ready, F_OK) == 0, "holder A did not finish its upload:\n%s", out ? out : "");
    cr_expect(out && strstr(out, "first-ok"), "multipart upload failed:\n%s", out ? out : "");
    ok &= out && strstr(out, "first-ok") != NULL;
    free(out);
    {
        const char *const n1[] = {"\"POST /bkt/user42/big?uploads ", "200", NULL};
        const char *const n2[] = {"partNumber=2 ", "200", NULL};

        cr_expect_eq(sf_count_lines(S.px.access, n1), 1, "no multipart initiation");
        cr_expect_eq(sf_count_lines(S.px.access, n2), 1, "no second part");
        ok &= sf_count_lines(S.px.access, n1) == 1 && sf_count_lines(S.px.access, n2) == 1;
    }
    /* The lock passes to B (a higher token) without A noticing: its key vanishes
     * (an expiry A's clock did not see), B takes it and writes. */
    cr_assert_eq(sf_redis(&S, (char *[]){"DEL", "fence:{/bkt/user42}:lock", NULL}, buf, sizeof buf),
                 0);
    cr_assert_str_eq(buf, ":1");
    snprintf(script, sizeof script, "%s --endpoint-url %s --no-progress s3 cp %s s3://bkt/user42/b",
             aws, ep, small);
    {
        char *argv[] = {(char *)S.fencelock, "--backend", S.backend, "run", "/bkt/user42",
                        "--http-proxy", "--", "/bin/sh", "-c", script, NULL};

        rc = sf_run(&S, "holder-b", argv, env, 30000, &out);
        cr_expect_eq(rc, 0, "holder B's write failed:\n%s", out ? out : "");
        ok &= rc == 0;
        free(out);
    }
    /* A's next write: forwarded by A's injector (A still holds, it thinks),
     * refused by the proxy. */
    cr_assert_eq(sf_write_file(go, 1, 3), 0);
    cr_assert_eq(ts_proc_wait(&a, 30000, &st), 0, "holder A did not finish");
    out = ts_read_file(a.log, NULL);
    cr_expect(out && strstr(out, "second=1"), "A's stale write was not refused:\n%s", out);
    cr_expect(out && strstr(out, "StaleFencingToken"), "aws-cli did not show the S3 code:\n%s", out);
    ok &= out && strstr(out, "second=1") && strstr(out, "StaleFencingToken");
    free(out);
    {
        /* Redis tokens are max(last + 1, Redis clock in µs): A's is below
         * B's, which the stale_token event itself says (token < highest). */
        const char *const n[] = {"\"stale_token\"", "\"/bkt/user42\"", "/bkt/user42/late",
                                 NULL};
        char obj[1200];

        cr_expect_eq(sf_count_lines(S.px.audit, n), 1, "no stale_token audit record for A");
        ok &= sf_count_lines(S.px.audit, n) == 1;
        snprintf(obj, sizeof obj, "%s/s3/bkt/user42/late._S3rver_object", S.dir);
        cr_expect(access(obj, F_OK) != 0, "the stale write reached the store");
        ok &= access(obj, F_OK) != 0;
    }
    passed = ok;
}
