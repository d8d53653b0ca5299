// DNS exfiltration by per-domain volume: data smuggled out in DNS queries
// shows up as many distinct, long names under one domain. For each
// registered domain this counts the bytes of *distinct* names below it per
// window (repeated lookups of the same names add nothing), and alerts when
// a window's volume passes the threshold. Example tapstream plugin in
// AssemblyScript (docs/plugins.md).

import {
  Alert, Batch, CATEGORY_EXFILTRATION, DNS_QUERY, DNS_SIZE, KIND_DNS, LOG_INFO, ORIG_H, SEVERITY_CRITICAL,
  SEVERITY_HIGH, TS_NS, UID, V6, VERDICT_MALICIOUS, addrAt, configF64, counter, log, u64At, u8At, uidText,
} from "../../../plugin-sdk/assemblyscript/tapstream";

export { tapstream_abi, tapstream_buffer } from "../../../plugin-sdk/assemblyscript/tapstream";

// Config.
let bytesPerWindow: f64 = 20000;
let windowSecs: i64 = 60;
let maxDomains: i32 = 10000;
let maxNames: i32 = 20000;

class Domain {
  windowStart: i64 = 0;
  bytes: i64 = 0;
  queries: i64 = 0;
  names: Set<u64> = new Set<u64>();
  clients: Map<string, i64> = new Map<string, i64>();
  sample: u64 = 0;
  alerted: bool = false;
  lastSeen: i64 = 0;
}

let domains = new Map<string, Domain>();

export function tapstream_init(): i32 {
  bytesPerWindow = configF64("bytes_per_window", 20000);
  windowSecs = <i64>configF64("window_secs", 60);
  maxDomains = <i32>configF64("max_domains", 10000);
  maxNames = <i32>configF64("max_names_per_domain", 20000);
  if (bytesPerWindow <= 0 || windowSecs <= 0) {
    log(0, "bytes_per_window and window_secs must be positive");
    return 1;
  }
  log(LOG_INFO, "watching DNS volume: " + bytesPerWindow.toString() + " bytes of distinct names per " +
    windowSecs.toString() + " s per domain");
  return 0;
}

// FNV-1a over the name's bytes.
function hashName(p: usize, n: i32): u64 {
  let h: u64 = 0xcbf29ce484222325;
  for (let i = 0; i < n; i++) {
    let c = <u64>load<u8>(p + i);
    if (c >= 65 && c <= 90) c += 32;
    h = (h ^ c) * 0x100000001b3;
  }
  return h;
}

// Where the registered domain starts: the last two labels, or three under
// a short second-level label of a country code (example.co.uk).
function registeredStart(p: usize, n: i32): i32 {
  let dots = 0;
  let cut: i32 = 0;
  let lastDot: i32 = -1;
  let prevDot: i32 = -1;
  let end = n;
  if (end > 0 && load<u8>(p + end - 1) == 46) end--; // trailing dot
  for (let i = end - 1; i >= 0; i--) {
    if (load<u8>(p + i) == 46) {
      dots++;
      if (dots == 1) lastDot = i;
      if (dots == 2) { prevDot = i; cut = i + 1; }
      if (dots == 3) {
        // example.co.uk: TLD of 2 letters and a second level of at most 3.
        const tld = end - lastDot - 1;
        const sld = lastDot - prevDot - 1;
        if (tld == 2 && sld <= 3) return i + 1;
        return cut;
      }
    }
  }
  if (dots < 2) return 0;
  const tld = end - lastDot - 1;
  const sld = lastDot - prevDot - 1;
  if (dots == 2 && tld == 2 && sld <= 3) return 0;
  return cut;
}

function evictStale(now: i64): void {
  const keys = domains.keys();
  for (let i = 0; i < keys.length; i++) {
    const d = domains.get(keys[i]);
    if (now - d.lastSeen > 2 * windowSecs) domains.delete(keys[i]);
  }
}

export function tapstream_batch(kind: i32, ptr: usize, count: i32, bytes: i32): i32 {
  if (kind != KIND_DNS) return 0;
  if (count * DNS_SIZE > bytes) return -1;
  const b = new Batch(ptr, count, DNS_SIZE);
  for (let i = 0; i < count; i++) {
    const r = b.record(i);
    const qn = b.strLen(r, DNS_QUERY);
    if (qn == 0) continue;
    const qp = b.strPtr(r, DNS_QUERY);
    const start = registeredStart(qp, qn);
    if (start == 0) continue; // no subdomain: nothing carried
    const now = <i64>(u64At(r, TS_NS) / 1000000000);
    let end = qn;
    if (load<u8>(qp + end - 1) == 46) end--;
    const domain = String.UTF8.decodeUnsafe(qp + start, end - start).toLowerCase();
    let d: Domain;
    if (domains.has(domain)) {
      d = domains.get(domain);
    } else {
      if (domains.size >= maxDomains) evictStale(now);
      if (domains.size >= maxDomains) { counter("domains_dropped", 1); continue; }
      d = new Domain();
      d.windowStart = now;
      domains.set(domain, d);
    }
    d.lastSeen = now;
    if (now - d.windowStart >= windowSecs) {
      d.windowStart = now;
      d.bytes = 0;
      d.queries = 0;
      d.names.clear();
      d.clients.clear();
      d.alerted = false;
    }
    d.queries++;
    const h = hashName(qp, start);
    if (d.names.has(h) || d.names.size >= maxNames) continue;
    d.names.add(h);
    d.bytes += start; // the bytes below the registered domain
    d.sample = u64At(r, UID);
    const client = addrAt(r, ORIG_H, u8At(r, V6) != 0);
    d.clients.set(client, (d.clients.has(client) ? d.clients.get(client) : 0) + start);
    if (<f64>d.bytes >= bytesPerWindow && !d.alerted) {
      d.alerted = true;
      currentDomain = domain;
      report(domain, d, now);
    }
  }
  return 0;
}

function report(domain: string, d: Domain, now: i64): void {
  const a = new Alert("dns-exfil");
  a.category = CATEGORY_EXFILTRATION;
  a.verdict = VERDICT_MALICIOUS;
  a.severity = <f64>d.bytes >= 4 * bytesPerWindow ? SEVERITY_CRITICAL : SEVERITY_HIGH;
  a.group = domain;
  // Heaviest clients first.
  const clients = d.clients.keys();
  clients.sort((x: string, y: string): i32 => {
    const dx = domains.get(currentDomain).clients.get(x);
    const dy = domains.get(currentDomain).clients.get(y);
    return dx > dy ? -1 : dx < dy ? 1 : 0;
  });
  let src = "";
  for (let i = 0; i < clients.length && i < 5; i++) {
    if (i > 0) src += ",";
    src += clients[i];
  }
  a.srcIps = src;
  a.sampleFlows = uidText(d.sample);
  a.bytes = <u64>d.bytes;
  a.packets = <u64>d.queries;
  a.rate = <f64>d.bytes / <f64>windowSecs;
  a.rateUnit = "bytes/s";
  a.explanation = d.bytes.toString() + " bytes in " + d.names.size.toString() + " distinct names under " + domain +
    " within " + (now - d.windowStart + 1).toString() + " s from " + clients.length.toString() +
    " client(s) (threshold " + (<i64>bytesPerWindow).toString() + " per " + windowSecs.toString() +
    " s): data may be leaving in DNS queries";
  if (a.emit() == 0) counter("alerts", 1);
}

// Sorting closures cannot capture locals in AssemblyScript: the domain
// being reported is passed through this global.
let currentDomain: string = "";
