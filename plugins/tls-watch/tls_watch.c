/*
 * Suspicious TLS: a client hello whose server name (SNI) matches a pattern
 * list, or whose JA3 or JA4 fingerprint is on a list. Example tapstream
 * plugin in C (see docs/plugins.md); built by scripts/build-plugins.sh:
 *
 *   clang --target=wasm32 -O2 -nostdlib -mbulk-memory -I ../../plugin-sdk/include \
 *         -Wl,--no-entry -Wl,--export-dynamic -o tls_watch.wasm tls_watch.c
 *
 * Config (manifest [config], lists one entry per item):
 *   sni_patterns  globs, case-insensitive: "*.evil.example", "c2-??.test"
 *   ja3           JA3 hashes (32 hex digits)
 *   ja4           JA4 fingerprints
 */
#include "tapstream.h"

#define MAX_ITEMS 256
#define CONFIG_BYTES 16384

typedef struct {
    char text[CONFIG_BYTES];
    const char *item[MAX_ITEMS];
    size_t len[MAX_ITEMS];
    int n;
} list;

static list sni, ja3, ja4;
static int ready;

/* Read a config list: entries separated by newlines (the host joins TOML
 * lists with newlines), blanks ignored. */
static int load(list *l, const char *key) {
    int32_t n = ts_config_get(key, ts_strlen(key), l->text, CONFIG_BYTES - 1);
    l->n = 0;
    if (n == TS_ENOTFOUND) return 0;
    if (n < 0 || n >= CONFIG_BYTES) {
        static const char msg[] = "a config list is longer than 16 KiB";
        ts_log(TS_ERROR, msg, sizeof msg - 1);
        return -1;
    }
    size_t start = 0;
    for (size_t i = 0; i <= (size_t)n; i++) {
        if (i == (size_t)n || l->text[i] == '\n') {
            size_t b = start, e = i;
            while (b < e && (l->text[b] == ' ' || l->text[b] == '\t')) b++;
            while (e > b && (l->text[e - 1] == ' ' || l->text[e - 1] == '\t' || l->text[e - 1] == '\r')) e--;
            if (e > b && l->n < MAX_ITEMS) {
                l->item[l->n] = l->text + b;
                l->len[l->n] = e - b;
                l->n++;
            }
            start = i + 1;
        }
    }
    return 0;
}

TS_EXPORT("tapstream_init") int32_t tapstream_init(void) {
    if (load(&sni, "sni_patterns") || load(&ja3, "ja3") || load(&ja4, "ja4")) return 1;
    if (sni.n + ja3.n + ja4.n == 0) {
        static const char msg[] = "no sni_patterns, ja3 or ja4 configured: nothing to watch for";
        ts_log(TS_WARN, msg, sizeof msg - 1);
    }
    ready = 1;
    return 0;
}

static char group[256], text[640], src[64], dst[64];

static void report(const ts_tls *t, const char *rule, const char *what, const char *value, size_t vl,
                  const char *sni_text, size_t sni_len) {
    size_t g = 0, x = 0, s = 0, d = 0;
    s = ts_cat_addr(src, sizeof src, s, t->orig_h, t->v6);
    d = ts_cat_addr(dst, sizeof dst, d, t->resp_h, t->v6);
    /* One alert per client and matched value. */
    g = ts_cat(group, sizeof group, g, src, s);
    g = ts_cat(group, sizeof group, g, " ", 1);
    g = ts_cat(group, sizeof group, g, value, vl);
    x = ts_cat(text, sizeof text, x, src, s);
    x = ts_cat(text, sizeof text, x, " opened TLS to ", 15);
    x = ts_cat(text, sizeof text, x, dst, d);
    x = ts_cat(text, sizeof text, x, ":", 1);
    x = ts_cat_u64(text, sizeof text, x, t->resp_p);
    if (sni_len) {
        x = ts_cat(text, sizeof text, x, " (server name ", 14);
        x = ts_cat(text, sizeof text, x, sni_text, sni_len);
        x = ts_cat(text, sizeof text, x, ")", 1);
    }
    x = ts_cat(text, sizeof text, x, "; its ", 6);
    x = ts_cat(text, sizeof text, x, what, ts_strlen(what));
    x = ts_cat(text, sizeof text, x, " ", 1);
    x = ts_cat(text, sizeof text, x, value, vl);
    x = ts_cat(text, sizeof text, x, " is on the watch list", 21);
    char uid[13];
    static const char a62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uint64_t u = t->uid;
    for (int i = 11; i >= 1; i--) { uid[i] = a62[u % 62]; u /= 62; }
    uid[0] = 'C';
    uid[12] = 0;
    ts_alert a = {0};
    a.severity = TS_HIGH;
    a.category = TS_CAT_INTEL;
    a.verdict = TS_SUSPICIOUS;
    a.rule = ts_ref_of(rule, ts_strlen(rule));
    a.group = ts_ref_of(group, g);
    a.explanation = ts_ref_of(text, x);
    a.src_ips = ts_ref_of(src, s);
    a.dst_ips = ts_ref_of(dst, d);
    a.sample_flows = ts_ref_of(uid, 12);
    a.flows = 1;
    a.ports[0] = t->resp_p;
    if (ts_alert_raise(&a) == 0) ts_counter_add("alerts_raised", 13, 1);
}

static int32_t on_batch(uint32_t kind, const uint8_t *base, int32_t count, int32_t bytes) {
    if (kind != TS_TLS || !ready) return 0;
    if ((size_t)count * sizeof(ts_tls) > (size_t)bytes) return TS_EBOUNDS;
    const ts_tls *recs = (const ts_tls *)base;
    for (int32_t i = 0; i < count; i++) {
        const ts_tls *t = &recs[i];
        const char *name = ts_text(base, count, sizeof(ts_tls), t->server_name);
        size_t nl = t->server_name.len;
        for (int k = 0; k < sni.n && nl; k++) {
            if (ts_glob(sni.item[k], sni.len[k], name, nl)) {
                report(t, "sni-match", "server name", name, nl, name, nl);
                break;
            }
        }
        const char *j3 = ts_text(base, count, sizeof(ts_tls), t->ja3);
        for (int k = 0; k < ja3.n && t->ja3.len; k++) {
            if (ts_eq(ja3.item[k], ja3.len[k], j3, t->ja3.len)) {
                report(t, "ja3-match", "JA3", j3, t->ja3.len, name, nl);
                break;
            }
        }
        const char *j4 = ts_text(base, count, sizeof(ts_tls), t->ja4);
        for (int k = 0; k < ja4.n && t->ja4.len; k++) {
            if (ts_eq(ja4.item[k], ja4.len[k], j4, t->ja4.len)) {
                report(t, "ja4-match", "JA4", j4, t->ja4.len, name, nl);
                break;
            }
        }
    }
    return 0;
}

TS_PLUGIN(on_batch)
