/* px_status: see px_status.h. The page is one HTML document with its CSS
 * and a small script inline (no asset, nothing fetched but /status.json
 * from the same listener). The server renders every table itself, so the
 * page reads without JavaScript; the script only refreshes the tables. */
#include "px_status.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pol_decide.h"
#include "px_ctx.h"
#include "px_config.h"
#include "px_fence.h"
#include "px_report.h"
#include "px_stats.h"
#include "px_upstream.h"
#include "st_store.h"

/* Resources listed, at most (the cache may hold a million). */
#define PX_STATUS_RESOURCES 200

struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 4096) + n;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* A string literal, its length from the compiler. */
#define SB_LIT(b, lit) sb_add((b), (lit), sizeof(lit) - 1)

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* s as a JSON string, quotes included. */
static void sb_json(struct sbuf *b, const char *s, size_t n)
{
    SB_LIT(b, "\"");
    if (!b->failed && pol_json_append_escaped(&b->p, &b->len, &b->cap, s, n) < 0)
        b->failed = 1;
    SB_LIT(b, "\"");
}

/* s as HTML text (the five special characters escaped; other bytes as
 * they are: the page is UTF-8 and control bytes are shown as '?'). */
static void sb_html(struct sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '<':
            SB_LIT(b, "&lt;");
            break;
        case '>':
            SB_LIT(b, "&gt;");
            break;
        case '&':
            SB_LIT(b, "&amp;");
            break;
        case '"':
            SB_LIT(b, "&quot;");
            break;
        case '\'':
            SB_LIT(b, "&#39;");
            break;
        default:
            sb_add(b, c < 0x20 || c == 0x7f ? "?" : (const char *)&s[i], 1);
        }
    }
}

static void sb_json_str(struct sbuf *b, const char *s)
{
    sb_json(b, s, strlen(s));
}

struct res_list {
    struct sbuf *b;
    int first;
    int html;
};

static void res_json(const struct px_fence_view *v, void *arg)
{
    struct res_list *l = arg;

    if (!l->first)
        SB_LIT(l->b, ",");
    l->first = 0;
    SB_LIT(l->b, "{\"resource\":");
    sb_json(l->b, v->key, v->klen);
    sb_printf(l->b, ",\"highest\":%" PRIu64 ",\"durable\":%" PRIu64 ",\"inflight\":%zu,"
                    "\"inflight_token\":%" PRIu64 ",\"waiting\":%zu}",
              v->highest, v->durable, v->inflight, v->inflight ? v->inflight_token : 0,
              v->waiting);
}

static void res_html(const struct px_fence_view *v, void *arg)
{
    struct res_list *l = arg;

    SB_LIT(l->b, "<tr><td class=k>");
    sb_html(l->b, v->key, v->klen);
    sb_printf(l->b, "</td><td>%" PRIu64 "</td><td>", v->highest);
    if (v->inflight > 0)
        sb_printf(l->b, "%zu &times; %" PRIu64, v->inflight, v->inflight_token);
    else
        SB_LIT(l->b, "-");
    sb_printf(l->b, "</td><td>%zu</td></tr>\n", v->waiting);
}

static uint64_t sum_rejections(void)
{
    uint64_t n = 0;

    for (int o = 0; o < PX_OUT_COUNT; o++)
        n += px_stats_reject_get((enum px_outcome)o);
    return n;
}

static uint64_t sum_requests(void)
{
    return px_stats_requests_total();
}

char *px_status_json(const struct px_ctx *ctx, size_t *len)
{
    struct sbuf b = {0};
    struct res_list l = {&b, 1, 0};
    struct px_report_recent rec[PX_REPORT_RECENT];
    size_t nrec = px_report_recent(rec, PX_REPORT_RECENT);
    double commits = (double)px_stats_hist_count(PX_H_STORE_COMMIT_DURATION);

    sb_printf(&b, "{\"generation\":%" PRIu64 ",\"reload\":", ctx->cfg_generation);
    sb_json_str(&b, ctx->reload_result);
    sb_printf(&b, ",\"requests\":%" PRIu64 ",\"rejections\":%" PRIu64 ",\"connections\":%" PRId64,
              sum_requests(), sum_rejections(), px_stats_gauge_get(PX_G_CONNECTIONS));
    sb_printf(&b, ",\"store\":{\"up\":%d,\"commits\":%.0f,\"commit_seconds_avg\":%.6f}",
              st_store_failed(ctx->store) ? 0 : 1, commits,
              commits > 0 ? px_stats_hist_sum(PX_H_STORE_COMMIT_DURATION) / commits : 0.0);
    sb_printf(&b, ",\"upstream\":{\"address\":");
    sb_json_str(&b, ctx->cfg->upstream);
    sb_printf(&b, ",\"open\":%zu,\"idle\":%zu,\"queued\":%zu}", px_upool_open(ctx->upool),
              px_upool_idle(ctx->upool), px_upool_waiting(ctx->upool));
    SB_LIT(&b, ",\"resources\":[");
    px_fence_each(ctx->fence, PX_STATUS_RESOURCES, res_json, &l);
    SB_LIT(&b, "],\"recent\":[");
    for (size_t i = 0; i < nrec; i++) {
        sb_printf(&b, "%s{\"ts_ms\":%" PRIu64 ",\"event\":", i ? "," : "", rec[i].ts_ms);
        sb_json_str(&b, rec[i].event);
        SB_LIT(&b, ",\"route\":");
        sb_json_str(&b, rec[i].route);
        SB_LIT(&b, ",\"resource\":");
        sb_json_str(&b, rec[i].resource);
        SB_LIT(&b, ",\"token\":");
        sb_json_str(&b, rec[i].token);
        sb_printf(&b, ",\"highest\":%" PRIu64 ",\"method\":", rec[i].highest);
        sb_json_str(&b, rec[i].method);
        SB_LIT(&b, ",\"path\":");
        sb_json_str(&b, rec[i].path);
        SB_LIT(&b, ",\"client\":");
        sb_json_str(&b, rec[i].client);
        SB_LIT(&b, "}");
    }
    SB_LIT(&b, "]}\n");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* The page's style and script. The script fetches /status.json every 2 s
 * and rewrites the tables with textContent (never innerHTML of data). */
static const char page_head[] =
    "<!doctype html>\n<html lang=en><head><meta charset=utf-8>\n"
    "<meta name=viewport content=\"width=device-width,initial-scale=1\">\n"
    "<title>fenceproxy status</title>\n<style>\n"
    "body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60em;padding:.8em;"
    "color:#1b1b1b;background:#fafafa}\n"
    "h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.05em;margin:1.2em 0 .3em}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:.5em}.card{background:#fff;border:1px solid #ddd;"
    "border-radius:6px;padding:.4em .7em;min-width:8em}.card b{display:block;font-size:1.3em}\n"
    "table{border-collapse:collapse;width:100%;background:#fff}"
    "td,th{border-bottom:1px solid #e4e4e4;padding:.25em .4em;text-align:left;vertical-align:top}"
    "th{font-weight:600;background:#f0f0f0}\n"
    ".k{font-family:ui-monospace,monospace;word-break:break-all}.scroll{overflow-x:auto}\n"
    ".bad{color:#a40000}.ok{color:#1a6d1a}small{color:#666}\n"
    "</style></head><body>\n<h1>fenceproxy</h1>\n";

static const char page_script[] =
    "<script>\n"
    "(function(){var prev=null;\n"
    "function cell(tr,t,c){var td=document.createElement('td');td.textContent=t;"
    "if(c)td.className=c;tr.appendChild(td);}\n"
    "function fill(id,rows){var tb=document.getElementById(id);if(!tb)return;"
    "while(tb.firstChild)tb.removeChild(tb.firstChild);rows.forEach(function(r){"
    "var tr=document.createElement('tr');r.forEach(function(c){cell(tr,c[0],c[1]);});"
    "tb.appendChild(tr);});}\n"
    "function set(id,t){var e=document.getElementById(id);if(e)e.textContent=t;}\n"
    "function tick(){fetch('/status.json',{cache:'no-store'}).then(function(r){return r.json();})"
    ".then(function(s){var now=Date.now();\n"
    "set('gen',s.generation);set('reload',s.reload);set('conns',s.connections);"
    "set('store',s.store.up?'up':'FAILED');"
    "set('commit',(s.store.commit_seconds_avg*1000).toFixed(2)+' ms');"
    "set('pool',s.upstream.open+' open, '+s.upstream.idle+' idle, '+s.upstream.queued+' queued');\n"
    "if(prev){var dt=(now-prev.t)/1000;set('rate',((s.requests-prev.q)/dt).toFixed(1)+'/s');"
    "set('rrate',((s.rejections-prev.j)/dt).toFixed(1)+'/s');}\n"
    "prev={t:now,q:s.requests,j:s.rejections};\n"
    "fill('res',s.resources.map(function(r){return [[r.resource,'k'],[String(r.highest)],"
    "[r.inflight?r.inflight+' \\u00d7 '+r.inflight_token:'-'],[String(r.waiting)]];}));\n"
    "fill('rej',s.recent.map(function(e){return [[new Date(e.ts_ms).toISOString()"
    ".substr(11,12)],[e.event,'bad'],[e.resource,'k'],[e.token],[String(e.highest)],"
    "[e.method+' '+e.path,'k'],[e.client]];}));\n"
    "set('updated','updated '+new Date(now).toISOString().substr(11,8)+' UTC');"
    "}).catch(function(){set('updated','status.json unreachable');});}\n"
    "tick();setInterval(tick,2000);})();\n</script>\n";

char *px_status_html(const struct px_ctx *ctx, size_t *len)
{
    struct sbuf b = {0};
    struct res_list l = {&b, 1, 1};
    struct px_report_recent rec[PX_REPORT_RECENT];
    size_t nrec = px_report_recent(rec, PX_REPORT_RECENT);
    double commits = (double)px_stats_hist_count(PX_H_STORE_COMMIT_DURATION);

    sb_add(&b, page_head, sizeof(page_head) - 1);
    SB_LIT(&b, "<div class=cards>\n");
    sb_printf(&b, "<div class=card>requests<b id=rate>%" PRIu64 "</b><small>total, then per s"
                  "</small></div>\n",
              sum_requests());
    sb_printf(&b, "<div class=card>rejections<b id=rrate>%" PRIu64 "</b><small>total, then per s"
                  "</small></div>\n",
              sum_rejections());
    sb_printf(&b, "<div class=card>connections<b id=conns>%" PRId64 "</b></div>\n",
              px_stats_gauge_get(PX_G_CONNECTIONS));
    sb_printf(&b, "<div class=card>token store<b id=store class=%s>%s</b><small>commit "
                  "<span id=commit>%.2f ms</span></small></div>\n",
              st_store_failed(ctx->store) ? "bad" : "ok", st_store_failed(ctx->store) ? "FAILED" : "up",
              commits > 0 ? px_stats_hist_sum(PX_H_STORE_COMMIT_DURATION) / commits * 1000 : 0.0);
    sb_printf(&b, "<div class=card>upstream <span class=k>");
    sb_html(&b, ctx->cfg->upstream, strlen(ctx->cfg->upstream));
    sb_printf(&b, "</span><b id=pool>%zu open, %zu idle, %zu queued</b></div>\n",
              px_upool_open(ctx->upool), px_upool_idle(ctx->upool), px_upool_waiting(ctx->upool));
    sb_printf(&b, "<div class=card>config generation<b id=gen>%" PRIu64 "</b><small>last reload: "
                  "<span id=reload>",
              ctx->cfg_generation);
    sb_html(&b, ctx->reload_result, strlen(ctx->reload_result));
    SB_LIT(&b, "</span></small></div>\n</div>\n");
    SB_LIT(&b, "<h2>Resources</h2><div class=scroll><table><thead><tr><th>resource</th>"
               "<th>highest token</th><th>in flight</th><th>waiting</th></tr></thead>"
               "<tbody id=res>\n");
    px_fence_each(ctx->fence, PX_STATUS_RESOURCES, res_html, &l);
    SB_LIT(&b, "</tbody></table></div>\n");
    SB_LIT(&b, "<h2>Recent rejections</h2><div class=scroll><table><thead><tr><th>time</th>"
               "<th>reason</th><th>resource</th><th>token</th><th>highest</th><th>request</th>"
               "<th>client</th></tr></thead><tbody id=rej>\n");
    for (size_t i = 0; i < nrec; i++) {
        time_t secs = (time_t)(rec[i].ts_ms / 1000);
        struct tm tm;
        char ts[16];
        gmtime_r(&secs, &tm);
        strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
        sb_printf(&b, "<tr><td>%s.%03u</td><td class=bad>", ts, (unsigned)(rec[i].ts_ms % 1000));
        sb_html(&b, rec[i].event, strlen(rec[i].event));
        SB_LIT(&b, "</td><td class=k>");
        sb_html(&b, rec[i].resource, strlen(rec[i].resource));
        SB_LIT(&b, "</td><td>");
        sb_html(&b, rec[i].token, strlen(rec[i].token));
        sb_printf(&b, "</td><td>%" PRIu64 "</td><td class=k>", rec[i].highest);
        sb_html(&b, rec[i].method, strlen(rec[i].method));
        SB_LIT(&b, " ");
        sb_html(&b, rec[i].path, strlen(rec[i].path));
        SB_LIT(&b, "</td><td>");
        sb_html(&b, rec[i].client, strlen(rec[i].client));
        SB_LIT(&b, "</td></tr>\n");
    }
    SB_LIT(&b, "</tbody></table></div>\n<p><small id=updated>rendered by the proxy</small> "
               "<small>&middot; <a href=/status.json>status.json</a> &middot; "
               "<a href=/metrics>metrics</a></small></p>\n");
    sb_add(&b, page_script, sizeof(page_script) - 1);
    SB_LIT(&b, "</body></html>\n");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
