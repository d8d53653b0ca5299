/*
 * tapstream plugin SDK for C, C++ and Zig: ABI version 1.
 *
 * Build a plugin with Debian's clang and lld:
 *
 *   clang --target=wasm32 -O2 -nostdlib -fno-builtin -I plugin-sdk/include \
 *         -Wl,--no-entry -Wl,--export-dynamic -o my.wasm my.c
 *
 * A plugin defines its batch handler and uses TS_PLUGIN(...) once:
 *
 *   static int32_t on_batch(uint32_t kind, const uint8_t *base, int32_t count, int32_t bytes) { ... }
 *   TS_PLUGIN(on_batch)
 *
 * Records are the structs below (little-endian, offsets checked by
 * _Static_assert and by the host's tests against plugin-sdk/src/abi.rs).
 * A ts_str is an offset into the batch's string area (which follows the
 * records) and a length; the text is UTF-8 and not NUL-terminated.
 */
#ifndef TAPSTREAM_H
#define TAPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#define TS_ABI_VERSION 1
#define TS_BUFFER_BYTES (128 * 1024)
#define TS_BATCH_RECORDS 256

enum ts_kind { TS_FLOW = 1, TS_DNS = 2, TS_TLS = 3, TS_HTTP = 4, TS_WINDOW = 5 };
enum ts_severity { TS_INFO = 0, TS_LOW = 1, TS_MEDIUM = 2, TS_HIGH = 3, TS_CRITICAL = 4 };
enum ts_category {
    TS_CAT_DDOS = 0, TS_CAT_SCAN = 1, TS_CAT_FLOOD = 2, TS_CAT_POLICY = 3,
    TS_CAT_INTEL = 4, TS_CAT_ANOMALY = 5, TS_CAT_MALWARE = 6, TS_CAT_EXFILTRATION = 7
};
enum ts_verdict { TS_NORMAL = 0, TS_SUSPICIOUS = 1, TS_MALICIOUS = 2 };
enum ts_level { TS_ERROR = 0, TS_WARN = 1, TS_LOG_INFO = 2, TS_DEBUG = 3 };

/* Host return codes. */
#define TS_EBOUNDS (-1)
#define TS_EINVALID (-2)
#define TS_ELIMIT (-3)
#define TS_ENOTFOUND (-4)

/* DNS flags. */
#define TS_DNS_AA 1
#define TS_DNS_TC 2
#define TS_DNS_RD 4
#define TS_DNS_RA 8
#define TS_DNS_REJECTED 16
#define TS_DNS_HAS_RTT 32

typedef struct { uint32_t off; uint32_t len; } ts_str;
/* In an alert, strings point into the plugin's own memory. */
typedef struct { uint32_t ptr; uint32_t len; } ts_ref;

typedef struct {
    uint64_t ts_ns, uid;
    uint8_t orig_h[16], resp_h[16];
    uint16_t orig_p, resp_p;
    uint8_t proto, v6;
    uint16_t iface, vlan;
    uint8_t _pad0[2];
    uint8_t kind, _pad1, orig_flags, resp_flags;
    uint64_t first_ts, last_ts;
    uint64_t orig_bytes, resp_bytes, orig_pkts, resp_pkts;
    ts_str history, state, service;
} ts_flow;

typedef struct {
    uint64_t ts_ns, uid;
    uint8_t orig_h[16], resp_h[16];
    uint16_t orig_p, resp_p;
    uint8_t proto, v6;
    uint8_t _pad0[4];
    uint16_t qtype, qclass;
    uint8_t rcode, flags;
    uint16_t trans_id, answer_count;
    uint8_t _pad1[4];
    uint64_t rtt_ns;
    ts_str query, answers;
} ts_dns;

typedef struct {
    uint64_t ts_ns, uid;
    uint8_t orig_h[16], resp_h[16];
    uint16_t orig_p, resp_p;
    uint8_t proto, v6;
    uint8_t _pad0[4];
    uint16_t version, client_version, cipher;
    uint8_t established;
    uint8_t _pad1[7];
    ts_str server_name, ja3, ja4, alpn;
} ts_tls;

typedef struct {
    uint64_t ts_ns, uid;
    uint8_t orig_h[16], resp_h[16];
    uint16_t orig_p, resp_p;
    uint8_t proto, v6;
    uint8_t _pad0[4];
    uint16_t status;
    uint32_t trans_depth;
    uint64_t request_body_len, response_body_len;
    ts_str method, host, uri, user_agent, referrer, status_msg;
} ts_http;

typedef struct {
    uint64_t sec_ns;
    uint8_t src[16], dst[16];
    uint8_t v6, proto;
    uint16_t dport;
    uint32_t flows;
    uint64_t pkts, bytes, rpkts, rbytes;
    uint32_t syn, answered, rejected, failed;
    uint64_t sample;
} ts_window;

typedef struct {
    uint32_t severity, category, verdict, _reserved;
    ts_ref rule, group, explanation, src_ips, dst_ips, sample_flows, rate_unit;
    uint64_t packets, bytes, flows;
    double rate;
    uint16_t ports[4];
} ts_alert;

#define TS_CHECK(T, F, O) _Static_assert(offsetof(T, F) == O, #T "." #F " is not at " #O)
TS_CHECK(ts_flow, ts_ns, 0); TS_CHECK(ts_flow, uid, 8); TS_CHECK(ts_flow, orig_h, 16); TS_CHECK(ts_flow, resp_h, 32);
TS_CHECK(ts_flow, orig_p, 48); TS_CHECK(ts_flow, resp_p, 50); TS_CHECK(ts_flow, proto, 52); TS_CHECK(ts_flow, v6, 53);
TS_CHECK(ts_flow, iface, 54); TS_CHECK(ts_flow, vlan, 56); TS_CHECK(ts_flow, kind, 60); TS_CHECK(ts_flow, orig_flags, 62);
TS_CHECK(ts_flow, resp_flags, 63); TS_CHECK(ts_flow, first_ts, 64); TS_CHECK(ts_flow, last_ts, 72);
TS_CHECK(ts_flow, orig_bytes, 80); TS_CHECK(ts_flow, resp_bytes, 88); TS_CHECK(ts_flow, orig_pkts, 96);
TS_CHECK(ts_flow, resp_pkts, 104); TS_CHECK(ts_flow, history, 112); TS_CHECK(ts_flow, state, 120);
TS_CHECK(ts_flow, service, 128);
_Static_assert(sizeof(ts_flow) == 136, "ts_flow is 136 bytes");
TS_CHECK(ts_dns, ts_ns, 0); TS_CHECK(ts_dns, uid, 8); TS_CHECK(ts_dns, orig_h, 16); TS_CHECK(ts_dns, resp_h, 32);
TS_CHECK(ts_dns, orig_p, 48); TS_CHECK(ts_dns, resp_p, 50); TS_CHECK(ts_dns, proto, 52); TS_CHECK(ts_dns, v6, 53);
TS_CHECK(ts_dns, qtype, 58); TS_CHECK(ts_dns, qclass, 60); TS_CHECK(ts_dns, rcode, 62); TS_CHECK(ts_dns, flags, 63);
TS_CHECK(ts_dns, trans_id, 64); TS_CHECK(ts_dns, answer_count, 66); TS_CHECK(ts_dns, rtt_ns, 72);
TS_CHECK(ts_dns, query, 80); TS_CHECK(ts_dns, answers, 88);
_Static_assert(sizeof(ts_dns) == 96, "ts_dns is 96 bytes");
TS_CHECK(ts_tls, ts_ns, 0); TS_CHECK(ts_tls, uid, 8); TS_CHECK(ts_tls, orig_h, 16); TS_CHECK(ts_tls, resp_h, 32);
TS_CHECK(ts_tls, orig_p, 48); TS_CHECK(ts_tls, resp_p, 50); TS_CHECK(ts_tls, proto, 52); TS_CHECK(ts_tls, v6, 53);
TS_CHECK(ts_tls, version, 58); TS_CHECK(ts_tls, client_version, 60); TS_CHECK(ts_tls, cipher, 62);
TS_CHECK(ts_tls, established, 64); TS_CHECK(ts_tls, server_name, 72); TS_CHECK(ts_tls, ja3, 80);
TS_CHECK(ts_tls, ja4, 88); TS_CHECK(ts_tls, alpn, 96);
_Static_assert(sizeof(ts_tls) == 104, "ts_tls is 104 bytes");
TS_CHECK(ts_http, ts_ns, 0); TS_CHECK(ts_http, uid, 8); TS_CHECK(ts_http, orig_h, 16); TS_CHECK(ts_http, resp_h, 32);
TS_CHECK(ts_http, orig_p, 48); TS_CHECK(ts_http, resp_p, 50); TS_CHECK(ts_http, proto, 52); TS_CHECK(ts_http, v6, 53);
TS_CHECK(ts_http, status, 58); TS_CHECK(ts_http, trans_depth, 60); TS_CHECK(ts_http, request_body_len, 64);
TS_CHECK(ts_http, response_body_len, 72); TS_CHECK(ts_http, method, 80); TS_CHECK(ts_http, host, 88);
TS_CHECK(ts_http, uri, 96); TS_CHECK(ts_http, user_agent, 104); TS_CHECK(ts_http, referrer, 112);
TS_CHECK(ts_http, status_msg, 120);
_Static_assert(sizeof(ts_http) == 128, "ts_http is 128 bytes");
TS_CHECK(ts_window, sec_ns, 0); TS_CHECK(ts_window, src, 8); TS_CHECK(ts_window, dst, 24); TS_CHECK(ts_window, v6, 40);
TS_CHECK(ts_window, proto, 41); TS_CHECK(ts_window, dport, 42); TS_CHECK(ts_window, flows, 44);
TS_CHECK(ts_window, pkts, 48); TS_CHECK(ts_window, bytes, 56); TS_CHECK(ts_window, rpkts, 64);
TS_CHECK(ts_window, rbytes, 72); TS_CHECK(ts_window, syn, 80); TS_CHECK(ts_window, answered, 84);
TS_CHECK(ts_window, rejected, 88); TS_CHECK(ts_window, failed, 92); TS_CHECK(ts_window, sample, 96);
_Static_assert(sizeof(ts_window) == 104, "ts_window is 104 bytes");
TS_CHECK(ts_alert, severity, 0); TS_CHECK(ts_alert, category, 4); TS_CHECK(ts_alert, verdict, 8);
TS_CHECK(ts_alert, rule, 16); TS_CHECK(ts_alert, group, 24); TS_CHECK(ts_alert, explanation, 32);
TS_CHECK(ts_alert, src_ips, 40); TS_CHECK(ts_alert, dst_ips, 48); TS_CHECK(ts_alert, sample_flows, 56);
TS_CHECK(ts_alert, rate_unit, 64); TS_CHECK(ts_alert, packets, 72); TS_CHECK(ts_alert, bytes, 80);
TS_CHECK(ts_alert, flows, 88); TS_CHECK(ts_alert, rate, 96); TS_CHECK(ts_alert, ports, 104);
_Static_assert(sizeof(ts_alert) == 112, "ts_alert is 112 bytes");

/* Host functions. */
#define TS_IMPORT(name) __attribute__((import_module("tapstream"), import_name(name)))
TS_IMPORT("alert") int32_t ts_alert_raise(const ts_alert *a);
TS_IMPORT("log") void ts_log(int32_t level, const char *msg, size_t len);
TS_IMPORT("config_get") int32_t ts_config_get(const char *key, size_t key_len, char *out, size_t cap);
TS_IMPORT("counter_add") void ts_counter_add(const char *name, size_t len, int64_t delta);
TS_IMPORT("kv_get") int32_t ts_kv_get(const void *key, size_t key_len, void *out, size_t cap);
TS_IMPORT("kv_set") int32_t ts_kv_set(const void *key, size_t key_len, const void *val, size_t val_len);
TS_IMPORT("kv_del") void ts_kv_del(const void *key, size_t key_len);
/* Only with grants = ["clock"] / ["random"] / ["files"] in the manifest. */
TS_IMPORT("now_ns") int64_t ts_now_ns(void);
TS_IMPORT("random") int32_t ts_random(void *out, size_t len);
TS_IMPORT("read_file") int32_t ts_read_file(const char *name, size_t name_len, void *out, size_t cap);

#define TS_EXPORT(name) __attribute__((export_name(name)))

/* The exports every plugin has: ABI marker, batch buffer, dispatch. */
#define TS_PLUGIN(handler)                                                                     \
    static uint8_t ts_buffer_[TS_BUFFER_BYTES] __attribute__((aligned(8)));                    \
    TS_EXPORT("tapstream_abi") int32_t tapstream_abi(void) { return TS_ABI_VERSION; }          \
    TS_EXPORT("tapstream_buffer") int32_t tapstream_buffer(int32_t min) {                      \
        return min >= 0 && min <= TS_BUFFER_BYTES ? (int32_t)(uintptr_t)ts_buffer_ : 0;        \
    }                                                                                          \
    TS_EXPORT("tapstream_batch") int32_t tapstream_batch(int32_t kind, int32_t ptr, int32_t count, int32_t bytes) { \
        if ((uintptr_t)ptr != (uintptr_t)ts_buffer_ || bytes < 0 || bytes > TS_BUFFER_BYTES) return TS_EBOUNDS; \
        return handler((uint32_t)kind, ts_buffer_, count, bytes);                              \
    }

/* ---- small helpers (no libc) ---- */

static inline size_t ts_strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }

static inline int ts_eq(const char *a, size_t al, const char *b, size_t bl) {
    if (al != bl) return 0;
    for (size_t i = 0; i < al; i++) if (a[i] != b[i]) return 0;
    return 1;
}

static inline char ts_lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* Case-insensitive glob: `*` any run of characters, `?` one character. */
static inline int ts_glob(const char *p, size_t pl, const char *s, size_t sl) {
    size_t pi = 0, si = 0, star = (size_t)-1, mark = 0;
    while (si < sl) {
        if (pi < pl && (p[pi] == '?' || ts_lower(p[pi]) == ts_lower(s[si]))) { pi++; si++; }
        else if (pi < pl && p[pi] == '*') { star = pi++; mark = si; }
        else if (star != (size_t)-1) { pi = star + 1; si = ++mark; }
        else return 0;
    }
    while (pi < pl && p[pi] == '*') pi++;
    return pi == pl;
}

/* The text of a string field: `base` is the batch, `stride` the record size. */
static inline const char *ts_text(const uint8_t *base, int32_t count, size_t stride, ts_str s) {
    return (const char *)base + (size_t)count * stride + s.off;
}

/* Append to a fixed buffer; returns the new length. */
static inline size_t ts_cat(char *buf, size_t cap, size_t n, const char *s, size_t sl) {
    for (size_t i = 0; i < sl && n + 1 < cap; i++) buf[n++] = s[i];
    buf[n] = 0;
    return n;
}

static inline size_t ts_cat_u64(char *buf, size_t cap, size_t n, uint64_t v) {
    char t[21]; size_t k = 0;
    do { t[k++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (k && n + 1 < cap) buf[n++] = t[--k];
    buf[n] = 0;
    return n;
}

/* An address as text (IPv4 dotted quad; IPv6 as 8 groups of hex). */
static inline size_t ts_cat_addr(char *buf, size_t cap, size_t n, const uint8_t a[16], int v6) {
    if (!v6) {
        for (int i = 0; i < 4; i++) {
            if (i) n = ts_cat(buf, cap, n, ".", 1);
            n = ts_cat_u64(buf, cap, n, a[i]);
        }
        return n;
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i += 2) {
        if (i) n = ts_cat(buf, cap, n, ":", 1);
        unsigned w = (unsigned)a[i] << 8 | a[i + 1];
        int started = 0;
        for (int sh = 12; sh >= 0; sh -= 4) {
            unsigned d = (w >> sh) & 15;
            if (d || started || sh == 0) { char c = hex[d]; n = ts_cat(buf, cap, n, &c, 1); started = 1; }
        }
    }
    return n;
}

static inline ts_ref ts_ref_of(const char *s, size_t len) { ts_ref r = { (uint32_t)(uintptr_t)s, (uint32_t)len }; return r; }

#endif
