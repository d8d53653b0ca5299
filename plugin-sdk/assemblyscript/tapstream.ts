// tapstream plugin SDK for AssemblyScript: ABI version 1.
//
// A plugin's entry file re-exports the ABI marker and buffer, and defines
// `tapstream_batch` (and, if it wants, `tapstream_init` / `tapstream_tick`):
//
//   export { tapstream_abi, tapstream_buffer } from "tapstream-sdk/tapstream";
//   export function tapstream_batch(kind: i32, ptr: usize, count: i32, bytes: i32): i32 { ... }
//
// Build with `asc plugin.ts --runtime incremental --use abort=tapstream-sdk/tapstream/tsAbort -O3`
// (see docs/plugins.md). Offsets mirror plugin-sdk/src/abi.rs; the host's
// tests check this file against it.

export const ABI_VERSION: i32 = 1;
export const BUFFER_BYTES: i32 = 131072;

export const KIND_FLOW: i32 = 1;
export const KIND_DNS: i32 = 2;
export const KIND_TLS: i32 = 3;
export const KIND_HTTP: i32 = 4;
export const KIND_WINDOW: i32 = 5;

export const SEVERITY_INFO: u32 = 0;
export const SEVERITY_LOW: u32 = 1;
export const SEVERITY_MEDIUM: u32 = 2;
export const SEVERITY_HIGH: u32 = 3;
export const SEVERITY_CRITICAL: u32 = 4;

export const CATEGORY_DDOS: u32 = 0;
export const CATEGORY_SCAN: u32 = 1;
export const CATEGORY_FLOOD: u32 = 2;
export const CATEGORY_POLICY: u32 = 3;
export const CATEGORY_INTEL: u32 = 4;
export const CATEGORY_ANOMALY: u32 = 5;
export const CATEGORY_MALWARE: u32 = 6;
export const CATEGORY_EXFILTRATION: u32 = 7;

export const VERDICT_NORMAL: u32 = 0;
export const VERDICT_SUSPICIOUS: u32 = 1;
export const VERDICT_MALICIOUS: u32 = 2;

export const LOG_ERROR: i32 = 0;
export const LOG_WARN: i32 = 1;
export const LOG_INFO: i32 = 2;
export const LOG_DEBUG: i32 = 3;

// Record sizes and field offsets.
export const FLOW_SIZE: i32 = 136;
export const DNS_SIZE: i32 = 96;
export const TLS_SIZE: i32 = 104;
export const HTTP_SIZE: i32 = 128;
export const WINDOW_SIZE: i32 = 104;

// Connection fields, the same in flow, dns, tls and http records.
export const TS_NS: i32 = 0;
export const UID: i32 = 8;
export const ORIG_H: i32 = 16;
export const RESP_H: i32 = 32;
export const ORIG_P: i32 = 48;
export const RESP_P: i32 = 50;
export const PROTO: i32 = 52;
export const V6: i32 = 53;

export const FLOW_IFACE: i32 = 54;
export const FLOW_VLAN: i32 = 56;
export const FLOW_KIND: i32 = 60;
export const FLOW_ORIG_FLAGS: i32 = 62;
export const FLOW_RESP_FLAGS: i32 = 63;
export const FLOW_FIRST_TS: i32 = 64;
export const FLOW_LAST_TS: i32 = 72;
export const FLOW_ORIG_BYTES: i32 = 80;
export const FLOW_RESP_BYTES: i32 = 88;
export const FLOW_ORIG_PKTS: i32 = 96;
export const FLOW_RESP_PKTS: i32 = 104;
export const FLOW_HISTORY: i32 = 112;
export const FLOW_STATE: i32 = 120;
export const FLOW_SERVICE: i32 = 128;

export const DNS_QTYPE: i32 = 58;
export const DNS_QCLASS: i32 = 60;
export const DNS_RCODE: i32 = 62;
export const DNS_FLAGS: i32 = 63;
export const DNS_TRANS_ID: i32 = 64;
export const DNS_ANSWER_COUNT: i32 = 66;
export const DNS_RTT_NS: i32 = 72;
export const DNS_QUERY: i32 = 80;
export const DNS_ANSWERS: i32 = 88;

export const TLS_VERSION: i32 = 58;
export const TLS_CLIENT_VERSION: i32 = 60;
export const TLS_CIPHER: i32 = 62;
export const TLS_ESTABLISHED: i32 = 64;
export const TLS_SERVER_NAME: i32 = 72;
export const TLS_JA3: i32 = 80;
export const TLS_JA4: i32 = 88;
export const TLS_ALPN: i32 = 96;

export const HTTP_STATUS: i32 = 58;
export const HTTP_TRANS_DEPTH: i32 = 60;
export const HTTP_REQUEST_BODY_LEN: i32 = 64;
export const HTTP_RESPONSE_BODY_LEN: i32 = 72;
export const HTTP_METHOD: i32 = 80;
export const HTTP_HOST: i32 = 88;
export const HTTP_URI: i32 = 96;
export const HTTP_USER_AGENT: i32 = 104;
export const HTTP_REFERRER: i32 = 112;
export const HTTP_STATUS_MSG: i32 = 120;

export const WINDOW_SEC_NS: i32 = 0;
export const WINDOW_SRC: i32 = 8;
export const WINDOW_DST: i32 = 24;
export const WINDOW_V6: i32 = 40;
export const WINDOW_PROTO: i32 = 41;
export const WINDOW_DPORT: i32 = 42;
export const WINDOW_FLOWS: i32 = 44;
export const WINDOW_PKTS: i32 = 48;
export const WINDOW_BYTES: i32 = 56;
export const WINDOW_RPKTS: i32 = 64;
export const WINDOW_RBYTES: i32 = 72;
export const WINDOW_SYN: i32 = 80;
export const WINDOW_ANSWERED: i32 = 84;
export const WINDOW_REJECTED: i32 = 88;
export const WINDOW_FAILED: i32 = 92;
export const WINDOW_SAMPLE: i32 = 96;

export const ALERT_SIZE: i32 = 112;

// Host functions.
@external("tapstream", "alert") declare function host_alert(ptr: usize): i32;
@external("tapstream", "log") declare function host_log(level: i32, ptr: usize, len: usize): void;
@external("tapstream", "config_get") declare function host_config_get(kp: usize, kl: usize, op: usize, oc: usize): i32;
@external("tapstream", "counter_add") declare function host_counter_add(np: usize, nl: usize, delta: i64): void;
@external("tapstream", "kv_get") declare function host_kv_get(kp: usize, kl: usize, op: usize, oc: usize): i32;
@external("tapstream", "kv_set") declare function host_kv_set(kp: usize, kl: usize, vp: usize, vl: usize): i32;
@external("tapstream", "kv_del") declare function host_kv_del(kp: usize, kl: usize): void;
// Only with the matching grant in the manifest (clock, random, files).
@external("tapstream", "now_ns") export declare function host_now_ns(): i64;
@external("tapstream", "random") export declare function host_random(ptr: usize, len: usize): i32;
@external("tapstream", "read_file") export declare function host_read_file(np: usize, nl: usize, op: usize, oc: usize): i32;

const BUFFER: usize = memory.data(131072, 8);

export function tapstream_abi(): i32 {
  return ABI_VERSION;
}

export function tapstream_buffer(min: i32): usize {
  return min >= 0 && min <= BUFFER_BYTES ? BUFFER : 0;
}

/// Aborts (failed assertions, out-of-bounds) trap: the host restarts the
/// instance. Pass `--use abort=tapstream-sdk/tapstream/tsAbort` to asc.
export function tsAbort(msg: string | null, file: string | null, line: u32, col: u32): void {
  unreachable();
}

/// One batch: `count` records of `stride` bytes at `ptr`, then strings.
export class Batch {
  constructor(public ptr: usize, public count: i32, public stride: i32) {}

  /// Address of record `i`.
  @inline record(i: i32): usize {
    return this.ptr + <usize>(i * this.stride);
  }

  /// The string field at `off` of record `rec`, decoded.
  str(rec: usize, off: i32): string {
    const o = load<u32>(rec + off);
    const n = load<u32>(rec + off + 4);
    return String.UTF8.decodeUnsafe(this.strPtr(rec, off), n);
  }

  /// Where the string field's bytes are, and how many (no decoding).
  @inline strPtr(rec: usize, off: i32): usize {
    return this.ptr + <usize>(this.count * this.stride) + <usize>load<u32>(rec + off);
  }
  @inline strLen(rec: usize, off: i32): i32 {
    return <i32>load<u32>(rec + off + 4);
  }
}

@inline export function u8At(rec: usize, off: i32): u8 { return load<u8>(rec + off); }
@inline export function u16At(rec: usize, off: i32): u16 { return load<u16>(rec + off); }
@inline export function u32At(rec: usize, off: i32): u32 { return load<u32>(rec + off); }
@inline export function u64At(rec: usize, off: i32): u64 { return load<u64>(rec + off); }

/// An address field as text.
export function addrAt(rec: usize, off: i32, v6: bool): string {
  if (!v6) {
    return load<u8>(rec + off).toString() + "." + load<u8>(rec + off + 1).toString() + "." +
      load<u8>(rec + off + 2).toString() + "." + load<u8>(rec + off + 3).toString();
  }
  let s = "";
  for (let i = 0; i < 16; i += 2) {
    if (i > 0) s += ":";
    const w = (<u32>load<u8>(rec + off + i) << 8) | load<u8>(rec + off + i + 1);
    s += w.toString(16);
  }
  return s;
}

/// A flow uid as the appliance prints it.
export function uidText(uid: u64): string {
  const A = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  let out = "";
  let n = uid;
  for (let i = 0; i < 11; i++) {
    out = A.charAt(<i32>(n % 62)) + out;
    n /= 62;
  }
  return "C" + out;
}

export function log(level: i32, msg: string): void {
  const b = String.UTF8.encode(msg);
  host_log(level, changetype<usize>(b), b.byteLength);
}

export function counter(name: string, delta: i64): void {
  const b = String.UTF8.encode(name);
  host_counter_add(changetype<usize>(b), b.byteLength, delta);
}

/// A config value, or `null` when missing.
export function config(key: string): string | null {
  const k = String.UTF8.encode(key);
  let cap = 256;
  for (let tries = 0; tries < 2; tries++) {
    const out = new ArrayBuffer(cap);
    const n = host_config_get(changetype<usize>(k), k.byteLength, changetype<usize>(out), cap);
    if (n < 0) return null;
    if (n <= cap) return String.UTF8.decodeUnsafe(changetype<usize>(out), n);
    cap = n;
  }
  return null;
}

export function configF64(key: string, fallback: f64): f64 {
  const v = config(key);
  if (v == null) return fallback;
  const x = parseFloat(v);
  return isNaN(x) ? fallback : x;
}

const ALERT: usize = memory.data(112, 8);

/// An alert under construction; `emit()` sends it.
export class Alert {
  severity: u32 = SEVERITY_MEDIUM;
  category: u32 = CATEGORY_ANOMALY;
  verdict: u32 = VERDICT_SUSPICIOUS;
  group: string = "";
  explanation: string = "";
  srcIps: string = "";
  dstIps: string = "";
  sampleFlows: string = "";
  rateUnit: string = "";
  packets: u64 = 0;
  bytes: u64 = 0;
  flows: u64 = 0;
  rate: f64 = 0;
  ports: StaticArray<u16> = new StaticArray<u16>(4);

  constructor(public rule: string) {}

  /// 0, or the host's refusal code.
  emit(): i32 {
    const parts: ArrayBuffer[] = [
      String.UTF8.encode(this.rule), String.UTF8.encode(this.group), String.UTF8.encode(this.explanation),
      String.UTF8.encode(this.srcIps), String.UTF8.encode(this.dstIps), String.UTF8.encode(this.sampleFlows),
      String.UTF8.encode(this.rateUnit),
    ];
    store<u32>(ALERT, this.severity, 0);
    store<u32>(ALERT, this.category, 4);
    store<u32>(ALERT, this.verdict, 8);
    store<u32>(ALERT, 0, 12);
    for (let i = 0; i < 7; i++) {
      store<u32>(ALERT + 16 + i * 8, <u32>changetype<usize>(parts[i]));
      store<u32>(ALERT + 20 + i * 8, <u32>parts[i].byteLength);
    }
    store<u64>(ALERT, this.packets, 72);
    store<u64>(ALERT, this.bytes, 80);
    store<u64>(ALERT, this.flows, 88);
    store<f64>(ALERT, this.rate, 96);
    for (let i = 0; i < 4; i++) store<u16>(ALERT + 104 + i * 2, this.ports[i]);
    return host_alert(ALERT);
  }
}
