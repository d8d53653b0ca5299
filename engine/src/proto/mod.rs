//! Application protocol analyzers: DNS, TLS, HTTP/1.x, DHCP.
//!
//! Each flow carries an [`AppState`]; the worker's [`Analyzers`] feeds it the
//! transport payload of every packet and writes protocol records into the
//! worker's [`Sinks`]. Analyzers never panic on bad bytes: malformed messages
//! are counted as anomalies and analysis of that flow stops or resynchronises.

pub mod dhcp;
pub mod dns;
pub mod http;
pub mod tls;

use crate::decode::{Anomaly, IpLayer, PROTO_TCP, PROTO_UDP};
use crate::flow::{FlowKey, Service};
use crate::records::{ConnId, Sinks};

/// What a packet's analyzers need to know about it.
pub struct ProtoCtx<'a> {
    pub ts: u64,
    pub uid: u64,
    pub key: FlowKey,
    pub orig_is_lo: bool,
    pub is_orig: bool,
    pub layer: &'a IpLayer,
}

impl ProtoCtx<'_> {
    pub fn conn_id(&self, ts: u64) -> ConnId {
        conn_id(ts, self.uid, &self.key, self.orig_is_lo)
    }
}

pub fn conn_id(ts: u64, uid: u64, k: &FlowKey, orig_is_lo: bool) -> ConnId {
    let (oh, op, rh, rp) =
        if orig_is_lo { (k.lo, k.lo_port, k.hi, k.hi_port) } else { (k.hi, k.hi_port, k.lo, k.lo_port) };
    ConnId { ts, uid, v6: k.v6, orig_h: oh, orig_p: op, resp_h: rh, resp_p: rp, ip_proto: k.proto }
}

/// Per-flow application state.
#[derive(Clone, Debug, Default)]
pub enum AppState {
    /// Not yet classified.
    #[default]
    Unknown,
    /// Classified as nothing we analyze (or given up on).
    Ignored,
    Dns(dns::DnsFlow),
    Tls(Box<tls::TlsFlow>),
    Http(Box<http::HttpFlow>),
    Dhcp,
}

/// One worker's analyzers and their shared state.
pub struct Analyzers {
    pub dns: dns::DnsPending,
    /// Set when an analyzer found the flow's roles reversed; the tracker
    /// takes it (see [`Analyzers::take_flip`]).
    flip: bool,
}

impl Default for Analyzers {
    fn default() -> Self {
        Self::new()
    }
}

impl Analyzers {
    pub fn new() -> Analyzers {
        Analyzers { dns: dns::DnsPending::new(1024), flip: false }
    }

    /// Did the last packet show that originator and responder are swapped?
    pub fn take_flip(&mut self) -> bool {
        std::mem::take(&mut self.flip)
    }

    /// Feed one packet's payload. Returns the service if the flow was (or is) classified.
    pub fn analyze(&mut self, st: &mut AppState, ctx: &ProtoCtx, payload: &[u8], sinks: &mut Sinks) -> Option<Service> {
        if matches!(st, AppState::Unknown) {
            *st = classify(ctx, payload);
        } else if matches!(st, AppState::Ignored) && ctx.layer.proto == PROTO_TCP && tls::looks_like(payload) {
            // STARTTLS: a TLS handshake after a plaintext start (SMTP, IMAP, POP3, IRC, FTP …)
            *st = AppState::Tls(Box::default());
        }
        match st {
            AppState::Unknown | AppState::Ignored => None,
            AppState::Dns(d) => {
                let was_flipped = d.flip;
                let ok = dns::analyze(&mut self.dns, d, ctx, payload, sinks);
                if d.flip && !was_flipped {
                    self.flip = true;
                }
                ok.then_some(Service::Dns)
            }
            AppState::Tls(t) => {
                t.feed(ctx, payload, sinks);
                if t.is_tls() { Some(Service::Ssl) } else { None }
            }
            AppState::Http(h) => {
                h.feed(ctx, payload, sinks);
                if h.is_http() { Some(Service::Http) } else { None }
            }
            AppState::Dhcp => {
                if dhcp::analyze(ctx, payload, sinks) {
                    Some(Service::Dhcp)
                } else {
                    None
                }
            }
        }
    }

    /// The flow is over: emit whatever is pending for it.
    pub fn finish(&mut self, st: &mut AppState, uid: u64, key: &FlowKey, orig_is_lo: bool, sinks: &mut Sinks) {
        match st {
            AppState::Dns(_) => self.dns.finish_flow(uid, key, orig_is_lo, sinks),
            AppState::Tls(t) => t.finish(uid, key, orig_is_lo, sinks),
            AppState::Http(h) => h.finish(uid, key, orig_is_lo, sinks),
            _ => {}
        }
        *st = AppState::Ignored;
    }
}

fn classify(ctx: &ProtoCtx, payload: &[u8]) -> AppState {
    let k = &ctx.key;
    let has = |p: u16| k.lo_port == p || k.hi_port == p;
    match k.proto {
        PROTO_UDP => {
            if has(53) || has(5353) || has(5355) || has(137) {
                AppState::Dns(dns::DnsFlow::default())
            } else if (has(67) || has(68)) && dhcp::looks_like(payload) {
                AppState::Dhcp
            } else if tls::looks_like_dtls(payload) {
                AppState::Tls(Box::new(tls::TlsFlow::dtls()))
            } else if dns::looks_like(payload) && (has(53) || k.lo_port > 1023 && k.hi_port > 1023) {
                AppState::Unknown // too weak a signal: wait
            } else {
                AppState::Ignored
            }
        }
        PROTO_TCP => {
            if tls::looks_like(payload) {
                AppState::Tls(Box::default())
            } else if http::looks_like_request(payload) || (!ctx.is_orig && http::looks_like_response(payload)) {
                AppState::Http(Box::default())
            } else if has(53) {
                AppState::Dns(dns::DnsFlow::default())
            } else if ctx.is_orig && (has(80) || has(8080) || has(8000) || has(3128)) {
                AppState::Http(Box::new(http::HttpFlow::on_http_port()))
            } else {
                // the first payload of a flow tells: SSH, a midstream pickup, …
                AppState::Ignored
            }
        }
        _ => AppState::Ignored,
    }
}

/// Bounded byte accumulator for a message split over TCP segments.
#[derive(Clone, Debug, Default)]
pub struct Reassembly {
    pub buf: Vec<u8>,
    /// The next expected sequence number, once known.
    pub next_seq: Option<u32>,
    pub overflow: bool,
}

impl Reassembly {
    /// Append in-order bytes (drops retransmissions, stops at gaps).
    /// Returns false if the segment could not be added in order.
    pub fn push(&mut self, seq: u32, data: &[u8], limit: usize) -> bool {
        let mut data = data;
        let start = match self.next_seq {
            Some(n) => {
                let d = seq.wrapping_sub(n) as i32;
                if d > 0 {
                    return false; // gap
                }
                let skip = d.unsigned_abs() as usize;
                if skip >= data.len() {
                    return true; // pure retransmission
                }
                data = &data[skip..];
                n
            }
            None => seq,
        };
        self.next_seq = Some(start.wrapping_add(data.len() as u32));
        let room = limit.saturating_sub(self.buf.len());
        if data.len() > room {
            self.overflow = true;
            data = &data[..room];
        }
        self.buf.extend_from_slice(data);
        true
    }
}

/// Note a malformed message of some protocol.
pub fn malformed(sinks: &mut Sinks, a: Anomaly) {
    sinks.anomalies.bump(a);
}

#[cfg(test)]
mod tests {
    use super::Reassembly;

    #[test]
    fn reassembly_in_order_and_retransmit() {
        let mut r = Reassembly::default();
        assert!(r.push(100, b"abc", 64));
        assert!(r.push(103, b"def", 64));
        assert!(r.push(101, b"bcdefg", 64)); // overlaps: only "g" is new
        assert_eq!(r.buf, b"abcdefg");
        assert!(!r.push(200, b"x", 64)); // gap
        assert_eq!(r.next_seq, Some(107));
    }
}
