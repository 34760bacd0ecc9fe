/* px_stats: values reach the rendered /metrics text, histograms are
 * cumulative, label values are escaped, and a reload keeps route counts. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "px_stats.h"

static void fini(void)
{
    px_stats_free();
}

static char *render(void)
{
    size_t len = 0;
    char *t = px_stats_render(&len);

    cr_assert_not_null(t);
    cr_assert_eq(strlen(t), len);
    return t;
}

/* Asserts that line (without '\n') is one whole line of text. */
static void expect_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
        p++;
    }
    cr_expect_fail("missing line: %s", line);
}

Test(stats, counters_and_labels, .fini = fini)
{
    const char *routes[] = {"objects", "logs"};

    cr_assert_eq(px_stats_init(routes, 2), 0);
    px_stats_request(0, PX_OUT_FORWARDED);
    px_stats_request(0, PX_OUT_FORWARDED);
    px_stats_request(1, PX_OUT_STALE_TOKEN);
    px_stats_request(PX_STATS_NO_ROUTE, PX_OUT_BAD_REQUEST);
    px_stats_request(7, PX_OUT_FORWARDED); /* out of range: ignored */
    px_stats_reject(PX_OUT_STALE_TOKEN);
    px_stats_reject(PX_OUT_TOO_MANY_CONNECTIONS);
    px_stats_reject(PX_OUT_TOO_MANY_CONNECTIONS);
    px_stats_inc(PX_ST_AUDIT_DROPPED);
    px_stats_add(PX_ST_BYTES_IN, 1000);
    px_stats_add(PX_ST_BYTES_IN, 24);
    px_stats_gauge_add(PX_G_CONNECTIONS, 3);
    px_stats_gauge_add(PX_G_CONNECTIONS, -1);
    px_stats_gauge_set(PX_G_INFLIGHT, 5);

    cr_expect_eq(px_stats_request_get(0, PX_OUT_FORWARDED), 2);
    cr_expect_eq(px_stats_request_get(1, PX_OUT_STALE_TOKEN), 1);
    cr_expect_eq(px_stats_request_get(PX_STATS_NO_ROUTE, PX_OUT_BAD_REQUEST), 1);
    cr_expect_eq(px_stats_reject_get(PX_OUT_TOO_MANY_CONNECTIONS), 2);
    cr_expect_eq(px_stats_get(PX_ST_BYTES_IN), 1024);
    cr_expect_eq(px_stats_gauge_get(PX_G_CONNECTIONS), 2);

    char *t = render();
    expect_line(t, "# HELP fence_requests_total Finished requests by route and outcome "
                   "(route=\"-\": no route matched).");
    expect_line(t, "# TYPE fence_requests_total counter");
    expect_line(t, "fence_requests_total{route=\"objects\",outcome=\"forwarded\"} 2");
    expect_line(t, "fence_requests_total{route=\"objects\",outcome=\"stale_token\"} 0");
    expect_line(t, "fence_requests_total{route=\"logs\",outcome=\"stale_token\"} 1");
    expect_line(t, "fence_requests_total{route=\"-\",outcome=\"bad_request\"} 1");
    expect_line(t, "fence_requests_total{route=\"-\",outcome=\"upstream_error\"} 0");
    expect_line(t, "fence_rejections_total{reason=\"stale_token\"} 1");
    expect_line(t, "fence_rejections_total{reason=\"too_many_connections\"} 2");
    expect_line(t, "fence_rejections_total{reason=\"header_timeout\"} 0");
    expect_line(t, "# TYPE fence_audit_dropped_total counter");
    expect_line(t, "fence_audit_dropped_total 1");
    expect_line(t, "fence_bytes_in_total 1024");
    expect_line(t, "# TYPE fence_connections gauge");
    expect_line(t, "fence_connections 2");
    expect_line(t, "fence_inflight_requests 5");
    expect_line(t, "# TYPE fence_store_commit_batch_size histogram");
    free(t);
}

/* Every metric family has exactly one HELP and one TYPE line, each sample
 * line belongs to the family announced last, and the text ends in '\n'. */
Test(stats, exposition_shape, .fini = fini)
{
    cr_assert_eq(px_stats_init(NULL, 0), 0);
    char *t = render();
    char family[128] = "";
    int samples = 0;

    cr_assert_eq(t[strlen(t) - 1], '\n');
    for (char *line = strtok(t, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            cr_assert(sscanf(line + 7, "%127s", family) == 1);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            cr_expect_eq(strncmp(line + 7, family, strlen(family)), 0, "%s", line);
        } else {
            cr_expect_eq(strncmp(line, family, strlen(family)), 0, "%s after %s", line, family);
            samples++;
        }
    }
    cr_expect_gt(samples, 40);
    free(t);
}

Test(stats, histogram_is_cumulative, .fini = fini)
{
    cr_assert_eq(px_stats_init(NULL, 0), 0);
    px_stats_observe(PX_H_UPSTREAM_DURATION, 0.0003);  /* <= 0.0005 */
    px_stats_observe(PX_H_UPSTREAM_DURATION, 0.0005);  /* le is inclusive */
    px_stats_observe(PX_H_UPSTREAM_DURATION, 0.2);     /* <= 0.25 */
    px_stats_observe(PX_H_UPSTREAM_DURATION, 30);      /* +Inf only */
    px_stats_observe(PX_H_UPSTREAM_DURATION, -1);      /* ignored */
    px_stats_observe(PX_H_STORE_COMMIT_BATCH, 3);
    px_stats_observe(PX_H_STORE_COMMIT_BATCH, 1);
    px_stats_observe(PX_H_STORE_COMMIT_BATCH, 5000);

    cr_expect_eq(px_stats_hist_count(PX_H_UPSTREAM_DURATION), 4);
    cr_expect_float_eq(px_stats_hist_sum(PX_H_UPSTREAM_DURATION), 30.2008, 1e-9);

    char *t = render();
    expect_line(t, "fence_upstream_duration_seconds_bucket{le=\"0.0005\"} 2");
    expect_line(t, "fence_upstream_duration_seconds_bucket{le=\"0.001\"} 2");
    expect_line(t, "fence_upstream_duration_seconds_bucket{le=\"0.1\"} 2");
    expect_line(t, "fence_upstream_duration_seconds_bucket{le=\"0.25\"} 3");
    expect_line(t, "fence_upstream_duration_seconds_bucket{le=\"10\"} 3");
    expect_line(t, "fence_upstream_duration_seconds_bucket{le=\"+Inf\"} 4");
    expect_line(t, "fence_upstream_duration_seconds_sum 30.2008");
    expect_line(t, "fence_upstream_duration_seconds_count 4");
    expect_line(t, "fence_store_commit_batch_size_bucket{le=\"1\"} 1");
    expect_line(t, "fence_store_commit_batch_size_bucket{le=\"2\"} 1");
    expect_line(t, "fence_store_commit_batch_size_bucket{le=\"4\"} 2");
    expect_line(t, "fence_store_commit_batch_size_bucket{le=\"1024\"} 2");
    expect_line(t, "fence_store_commit_batch_size_bucket{le=\"+Inf\"} 3");
    expect_line(t, "fence_store_commit_duration_seconds_bucket{le=\"+Inf\"} 0");
    expect_line(t, "fence_store_commit_duration_seconds_count 0");

    /* Bucket counts never decrease along a histogram. */
    unsigned long long last = 0, v;
    for (char *p = t; (p = strstr(p, "fence_upstream_duration_seconds_bucket{")) != NULL; p++) {
        cr_assert(sscanf(strchr(p, '}') + 1, " %llu", &v) == 1);
        cr_expect_geq(v, last);
        last = v;
    }
    free(t);
}

Test(stats, label_values_are_escaped, .fini = fini)
{
    const char *routes[] = {"a\"b\\c\nd"};

    cr_assert_eq(px_stats_init(routes, 1), 0);
    px_stats_request(0, PX_OUT_FORWARDED);
    char *t = render();
    expect_line(t, "fence_requests_total{route=\"a\\\"b\\\\c\\nd\",outcome=\"forwarded\"} 1");
    free(t);
}

Test(stats, reload_keeps_counts_by_route_name, .fini = fini)
{
    const char *before[] = {"a", "b"};
    const char *after[] = {"c", "a"};

    cr_assert_eq(px_stats_init(before, 2), 0);
    px_stats_request(0, PX_OUT_FORWARDED);
    px_stats_request(1, PX_OUT_FORWARDED);
    px_stats_request(PX_STATS_NO_ROUTE, PX_OUT_FORWARDED);
    px_stats_inc(PX_ST_STORE_ADVANCES);
    cr_assert_eq(px_stats_init(after, 2), 0);
    cr_expect_eq(px_stats_request_get(0, PX_OUT_FORWARDED), 0); /* c is new */
    cr_expect_eq(px_stats_request_get(1, PX_OUT_FORWARDED), 1); /* a kept */
    cr_expect_eq(px_stats_request_get(PX_STATS_NO_ROUTE, PX_OUT_FORWARDED), 1);
    cr_expect_eq(px_stats_get(PX_ST_STORE_ADVANCES), 1);
    char *t = render();
    cr_expect_null(strstr(t, "route=\"b\""));
    free(t);
}
