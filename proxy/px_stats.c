/* px_stats: storage and Prometheus rendering for the metrics listed in
 * px_stats.h. Everything lives in one static object touched only by the
 * event loop's thread. Histograms keep per-bucket counts and render them
 * cumulatively, as the exposition format wants. The per-route request
 * counters are the only dynamic part: one row of outcomes per route plus one
 * for unrouted requests (label route="-"). */
#include "px_stats.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double buckets_DURATION[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const double buckets_BATCH[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
#define NB_DURATION (sizeof buckets_DURATION / sizeof buckets_DURATION[0])
#define NB_BATCH    (sizeof buckets_BATCH / sizeof buckets_BATCH[0])
#define NB_MAX      (NB_DURATION > NB_BATCH ? NB_DURATION : NB_BATCH)

struct hist_def {
    const char *name, *help;
    const double *bounds;
    size_t nb;
};

#define C_DEF(e, n, h)    {n, h},
#define H_DEF(e, n, h, b) {n, h, buckets_##b, NB_##b},
static const struct {
    const char *name, *help;
} counter_defs[] = {PX_STATS_TABLE(C_DEF, PX_STATS_NONE, PX_STATS_NONE)},
  gauge_defs[] = {PX_STATS_TABLE(PX_STATS_NONE, C_DEF, PX_STATS_NONE)};
static const struct hist_def hist_defs[] = {PX_STATS_TABLE(PX_STATS_NONE, PX_STATS_NONE, H_DEF)};
#undef C_DEF
#undef H_DEF

#define OUTCOME_DEF(e, label, req, rej, aud) {label, req, rej, aud},
static const struct {
    const char *label;
    int request, rejection, audited;
} outcomes[] = {PX_OUTCOMES(OUTCOME_DEF)};
#undef OUTCOME_DEF

struct hist {
    uint64_t counts[NB_MAX + 1]; /* the last one is +Inf */
    uint64_t count;
    double sum;
};

static struct {
    int initialized;
    uint64_t counters[PX_ST_COUNT];
    int64_t gauges[PX_G_COUNT];
    struct hist hists[PX_H_COUNT];
    uint64_t rejections[PX_OUT_COUNT];
    char **routes; /* n_routes names */
    size_t n_routes;
    uint64_t (*requests)[PX_OUT_COUNT]; /* n_routes + 1 rows; the last is "-" */
} st;

static void free_routes(char **names, size_t n)
{
    for (size_t i = 0; i < n && names != NULL; i++)
        free(names[i]);
    free(names);
}

int px_stats_init(const char *const *route_names, size_t n_routes)
{
    char **names = NULL;
    uint64_t(*rows)[PX_OUT_COUNT] = NULL;
    size_t made = 0;
    int rc = -1;

    names = calloc(n_routes ? n_routes : 1, sizeof *names);
    rows = calloc(n_routes + 1, sizeof *rows);
    if (names == NULL || rows == NULL)
        goto out;
    for (made = 0; made < n_routes; made++) {
        names[made] = strdup(route_names[made] ? route_names[made] : "");
        if (names[made] == NULL)
            goto out;
    }
    if (!st.initialized) {
        memset(&st, 0, sizeof st);
        st.initialized = 1;
    } else {
        /* A reload: keep the counts of routes that are still there. */
        for (size_t i = 0; i < n_routes; i++)
            for (size_t j = 0; j < st.n_routes; j++)
                if (strcmp(names[i], st.routes[j]) == 0) {
                    memcpy(rows[i], st.requests[j], sizeof rows[i]);
                    break;
                }
        memcpy(rows[n_routes], st.requests[st.n_routes], sizeof rows[n_routes]);
        free_routes(st.routes, st.n_routes);
        free(st.requests);
    }
    st.routes = names;
    st.requests = rows;
    st.n_routes = n_routes;
    names = NULL;
    rows = NULL;
    rc = 0;
out:
    free_routes(names, made);
    free(rows);
    return rc;
}

void px_stats_free(void)
{
    free_routes(st.routes, st.n_routes);
    free(st.requests);
    memset(&st, 0, sizeof st);
}

void px_stats_inc(enum px_stat s)
{
    px_stats_add(s, 1);
}

void px_stats_add(enum px_stat s, uint64_t v)
{
    if ((unsigned)s < PX_ST_COUNT)
        st.counters[s] += v;
}

void px_stats_gauge_add(enum px_gauge g, int64_t d)
{
    if ((unsigned)g < PX_G_COUNT)
        st.gauges[g] += d;
}

void px_stats_gauge_set(enum px_gauge g, int64_t v)
{
    if ((unsigned)g < PX_G_COUNT)
        st.gauges[g] = v;
}

/* Row of route_idx, or NULL when out of range or before px_stats_init(). */
static uint64_t *request_row(size_t route_idx)
{
    if (st.requests == NULL)
        return NULL;
    if (route_idx == PX_STATS_NO_ROUTE)
        return st.requests[st.n_routes];
    if (route_idx >= st.n_routes)
        return NULL;
    return st.requests[route_idx];
}

void px_stats_request(size_t route_idx, enum px_outcome o)
{
    uint64_t *row = request_row(route_idx);

    if (row != NULL && (unsigned)o < PX_OUT_COUNT && outcomes[o].request)
        row[o]++;
}

const char *px_stats_outcome_label(enum px_outcome o)
{
    return (unsigned)o < PX_OUT_COUNT ? outcomes[o].label : "?";
}

int px_stats_outcome_audited(enum px_outcome o)
{
    return (unsigned)o < PX_OUT_COUNT && outcomes[o].audited;
}

void px_stats_reject(enum px_outcome r)
{
    if ((unsigned)r < PX_OUT_COUNT && outcomes[r].rejection)
        st.rejections[r]++;
}

void px_stats_observe(enum px_hist h, double v)
{
    const struct hist_def *d;
    struct hist *hs;
    size_t i;

    if ((unsigned)h >= PX_H_COUNT || isnan(v) || v < 0)
        return;
    d = &hist_defs[h];
    hs = &st.hists[h];
    for (i = 0; i < d->nb && v > d->bounds[i]; i++)
        ;
    hs->counts[i]++; /* i == nb: the +Inf bucket */
    hs->count++;
    hs->sum += v;
}

uint64_t px_stats_get(enum px_stat s)
{
    return (unsigned)s < PX_ST_COUNT ? st.counters[s] : 0;
}

int64_t px_stats_gauge_get(enum px_gauge g)
{
    return (unsigned)g < PX_G_COUNT ? st.gauges[g] : 0;
}

uint64_t px_stats_request_get(size_t route_idx, enum px_outcome o)
{
    uint64_t *row = request_row(route_idx);

    return row != NULL && (unsigned)o < PX_OUT_COUNT ? row[o] : 0;
}

uint64_t px_stats_requests_total(void)
{
    uint64_t n = 0;

    for (size_t r = 0; st.requests != NULL && r <= st.n_routes; r++)
        for (size_t o = 0; o < PX_OUT_COUNT; o++)
            n += st.requests[r][o];
    return n;
}

uint64_t px_stats_reject_get(enum px_outcome r)
{
    return (unsigned)r < PX_OUT_COUNT ? st.rejections[r] : 0;
}

uint64_t px_stats_hist_count(enum px_hist h)
{
    return (unsigned)h < PX_H_COUNT ? st.hists[h].count : 0;
}

double px_stats_hist_sum(enum px_hist h)
{
    return (unsigned)h < PX_H_COUNT ? st.hists[h].sum : 0;
}

/* A growing text buffer; after an allocation failure it only records it. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static int sb_reserve(struct sbuf *b, size_t more)
{
    if (b->oom)
        return -1;
    if (b->cap - b->len > more)
        return 0;
    size_t ncap = b->cap ? b->cap : 4096;
    while (ncap - b->len <= more)
        ncap *= 2;
    char *np = realloc(b->p, ncap);
    if (np == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = np;
    b->cap = ncap;
    return 0;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_reserve(b, (size_t)n + 1) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value: backslash, double quote and newline escaped (format 0.0.4). */
static void sb_label(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (sb_reserve(b, 3) != 0)
            return;
        if (*s == '\\' || *s == '"') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = *s;
        } else if (*s == '\n') {
            b->p[b->len++] = '\\';
            b->p[b->len++] = 'n';
        } else {
            b->p[b->len++] = *s;
        }
    }
    b->p[b->len] = '\0';
}

static void sb_head(struct sbuf *b, const char *name, const char *help, const char *type)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void render_requests(struct sbuf *b)
{
    const char *name = "fence_requests_total";

    sb_head(b, name, "Finished requests by route and outcome (route=\"-\": no route matched).",
            "counter");
    for (size_t r = 0; r <= st.n_routes; r++) {
        for (size_t o = 0; o < PX_OUT_COUNT; o++) {
            if (!outcomes[o].request)
                continue;
            sb_printf(b, "%s{route=\"", name);
            sb_label(b, r < st.n_routes ? st.routes[r] : "-");
            sb_printf(b, "\",outcome=\"%s\"} %llu\n", outcomes[o].label,
                      (unsigned long long)(st.requests ? st.requests[r][o] : 0));
        }
    }
}

static void render_rejections(struct sbuf *b)
{
    const char *name = "fence_rejections_total";

    sb_head(b, name, "Requests and connections refused, by reason.", "counter");
    for (size_t i = 0; i < PX_OUT_COUNT; i++)
        if (outcomes[i].rejection)
            sb_printf(b, "%s{reason=\"%s\"} %llu\n", name, outcomes[i].label,
                      (unsigned long long)st.rejections[i]);
}

static void render_hist(struct sbuf *b, size_t h)
{
    const struct hist_def *d = &hist_defs[h];
    const struct hist *hs = &st.hists[h];
    uint64_t cum = 0;

    sb_head(b, d->name, d->help, "histogram");
    for (size_t i = 0; i < d->nb; i++) {
        cum += hs->counts[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", d->name, d->bounds[i], (unsigned long long)cum);
    }
    cum += hs->counts[d->nb];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", d->name, (unsigned long long)cum);
    sb_printf(b, "%s_sum %.12g\n", d->name, hs->sum);
    sb_printf(b, "%s_count %llu\n", d->name, (unsigned long long)hs->count);
}

char *px_stats_render(size_t *len)
{
    struct sbuf b = {0};

    render_requests(&b);
    render_rejections(&b);
    for (size_t i = 0; i < PX_G_COUNT; i++) {
        sb_head(&b, gauge_defs[i].name, gauge_defs[i].help, "gauge");
        sb_printf(&b, "%s %lld\n", gauge_defs[i].name, (long long)st.gauges[i]);
    }
    for (size_t i = 0; i < PX_ST_COUNT; i++) {
        sb_head(&b, counter_defs[i].name, counter_defs[i].help, "counter");
        sb_printf(&b, "%s %llu\n", counter_defs[i].name, (unsigned long long)st.counters[i]);
    }
    for (size_t i = 0; i < PX_H_COUNT; i++)
        render_hist(&b, i);
    if (b.oom || b.p == NULL) {
        free(b.p);
        return NULL;
    }
    if (len != NULL)
        *len = b.len;
    return b.p;
}
