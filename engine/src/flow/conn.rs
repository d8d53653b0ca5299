//! Per-connection accounting with Zeek's conn.log semantics: endpoint state
//! machine, `history` letters, `conn_state`, and TCP payload bytes measured
//! from sequence numbers (so retransmissions are not counted twice).

use crate::decode::{IpLayer, PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP, tcp_flags as F};

/// TCP endpoint states (Zeek's TCP_ENDPOINT_*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EpState {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

const H_SYN: u16 = 1;
const H_FIN: u16 = 2;
const H_RST: u16 = 4;
const H_ACK: u16 = 8;
const H_DATA: u16 = 16;
const H_MULTI: u16 = 32;
const H_FINRST: u16 = 64;

/// A letter whose appearance scales logarithmically (1st, 10th, 100th …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scaled {
    count: u32,
    threshold: u32,
}

impl Default for Scaled {
    fn default() -> Self {
        Scaled { count: 0, threshold: 1 }
    }
}

impl Scaled {
    #[inline]
    fn hit(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        if self.count == self.threshold {
            self.threshold = self.threshold.saturating_mul(10);
            true
        } else {
            false
        }
    }
}

/// One side of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub pkts: u64,
    pub ip_bytes: u64,
    /// Payload bytes for non-TCP protocols (UDP/ICMP/other).
    pub payload: u64,
    pub state: EpState,
    prev_state: EpState,
    /// TCP sequence tracking relative to the start sequence (the SYN, or one
    /// before the first byte seen).
    start_seq: u32,
    last_seq32: u32,
    last_rel: u64,
    ack_rel: u64,
    fin_cnt: u32,
    hist_once: u16,
    hist_last_syn: u32,
    hist_last_fin: u32,
    hist_last_rst: u32,
    rxmit: Scaled,
    gap: Scaled,
    /// Bytes acknowledged by the peer that we never saw.
    pub missed: u64,
    zero_win: Scaled,
    bad_csum: Scaled,
    pub did_close: bool,
    /// UDP/other: any packet seen.
    pub active: bool,
}

impl Endpoint {
    /// Payload size per Zeek's TCP_Endpoint::Size().
    fn tcp_size(&self, peer: &Endpoint) -> u64 {
        if self.prev_state == EpState::SynSent
            && self.state == EpState::Reset
            && peer.state == EpState::Inactive
            && self.ack_rel <= 1
        {
            return 0;
        }
        if self.state == EpState::Inactive {
            return 0;
        }
        let mut size = self.last_rel.max(self.ack_rel).saturating_sub(1);
        if self.fin_cnt > 0 && size > 0 {
            size -= 1;
        }
        size
    }

    #[inline]
    fn rel(&self, seq: u32) -> u64 {
        let d = seq.wrapping_sub(self.last_seq32) as i32 as i64;
        (self.last_rel as i64 + d).max(0) as u64
    }

    fn init_seq(&mut self, start: u32, last: u32) {
        self.start_seq = start;
        self.last_seq32 = last;
        self.last_rel = last.wrapping_sub(start) as u64;
        self.ack_rel = 0;
    }

    fn set_state(&mut self, s: EpState) {
        if self.state != s {
            self.prev_state = self.state;
            self.state = s;
        }
    }
}

/// Connection accounting state for one flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    pub orig: Endpoint,
    pub resp: Endpoint,
    pub proto: u8,
    history: [u8; 32],
    history_len: u8,
    /// Last time that counts for the duration.
    pub last_ts: u64,
    pub first_ts: u64,
}

/// Ports Zeek treats as likely server ports (analyzers register them), used
/// to guess the originator when the first packet is not a SYN.
pub fn likely_server_port(proto: u8, port: u16) -> bool {
    match proto {
        PROTO_TCP => matches!(
            port,
            21 | 22
                | 23
                | 25
                | 53
                | 80
                | 81
                | 88
                | 110
                | 111
                | 135
                | 139
                | 143
                | 179
                | 389
                | 443
                | 445
                | 465
                | 502
                | 563
                | 585
                | 587
                | 614
                | 636
                | 989
                | 990
                | 992
                | 993
                | 994
                | 995
                | 1080
                | 1433
                | 1521
                | 1883
                | 2049
                | 3128
                | 3306
                | 3389
                | 5060
                | 5061
                | 5222
                | 5269
                | 5432
                | 5671
                | 5672
                | 5900
                | 6379
                | 6666..=6669 | 8000 | 8080 | 8443 | 8883 | 8888 | 9200 | 11211 | 27017
        ),
        PROTO_UDP => matches!(
            port,
            53 | 67
                | 68
                | 69
                | 88
                | 111
                | 123
                | 137
                | 138
                | 161
                | 162
                | 443
                | 500
                | 514
                | 547
                | 546
                | 1812
                | 1813
                | 2123
                | 2152
                | 3478
                | 3544
                | 4500
                | 4789
                | 5060
                | 5072
                | 5353
                | 5355
                | 6081
                | 8472
        ),
        _ => false,
    }
}

/// Should a new connection whose first packet is `l` (src→dst) be flipped
/// so that dst becomes the originator? (Zeek's WantConnection.)
pub fn flip_first(l: &IpLayer) -> bool {
    match l.proto {
        PROTO_TCP if l.l4_ok => {
            let syn = l.tcp_flags & F::SYN != 0;
            let ack = l.tcp_flags & F::ACK != 0;
            if (!syn || ack) && likely_server_port(PROTO_TCP, l.sport) {
                return !likely_server_port(PROTO_TCP, l.dport) || l.sport < l.dport;
            }
            false
        }
        PROTO_UDP if l.l4_ok => likely_server_port(PROTO_UDP, l.sport) && !likely_server_port(PROTO_UDP, l.dport),
        _ => false,
    }
}

impl Conn {
    pub fn new(proto: u8, ts: u64, flipped: bool) -> Conn {
        let mut c = Conn { proto, first_ts: ts, last_ts: ts, ..Conn::default() };
        if flipped {
            c.push('^');
        }
        c
    }

    fn push(&mut self, ch: char) {
        if (self.history_len as usize) < self.history.len() {
            self.history[self.history_len as usize] = ch as u8;
            self.history_len += 1;
        }
    }

    fn add_hist(&mut self, is_orig: bool, ch: u8) {
        let c = if is_orig { ch.to_ascii_uppercase() } else { ch.to_ascii_lowercase() };
        self.push(c as char);
    }

    /// Returns true if already seen (no letter added).
    fn check_hist(&mut self, is_orig: bool, mask: u16, ch: u8) -> bool {
        let ep = if is_orig { &mut self.orig } else { &mut self.resp };
        if ep.hist_once & mask != 0 {
            return true;
        }
        ep.hist_once |= mask;
        self.add_hist(is_orig, ch);
        false
    }

    /// Swap originator and responder (an analyzer found them reversed):
    /// history letters change case and gain Zeek's `^` mark.
    pub fn flip(&mut self) {
        std::mem::swap(&mut self.orig, &mut self.resp);
        let n = self.history_len as usize;
        for c in &mut self.history[..n] {
            if c.is_ascii_uppercase() {
                c.make_ascii_lowercase();
            } else {
                c.make_ascii_uppercase();
            }
        }
        if self.history[..n].first() != Some(&b'^') {
            if n == self.history.len() {
                self.history_len -= 1;
            }
            self.history.copy_within(0..self.history_len as usize, 1);
            self.history[0] = b'^';
            self.history_len += 1;
        }
    }

    pub fn history(&self) -> &str {
        std::str::from_utf8(&self.history[..self.history_len as usize]).unwrap_or("")
    }

    /// Account one packet of this connection. `l` is the IP layer the
    /// connection lives at; `is_orig` the packet's direction.
    fn ep(&mut self, is_orig: bool) -> &mut Endpoint {
        if is_orig { &mut self.orig } else { &mut self.resp }
    }

    pub fn update(&mut self, l: &IpLayer, is_orig: bool, ts: u64) {
        let ep = self.ep(is_orig);
        ep.pkts += 1;
        ep.ip_bytes += l.ip_len as u64;
        if l.bad_checksum {
            if self.ep(is_orig).bad_csum.hit() {
                self.add_hist(is_orig, b'c');
            }
            return;
        }
        if self.proto == PROTO_TCP && l.l4_ok {
            return self.tcp(l, is_orig, ts);
        }
        self.last_ts = ts;
        let proto = self.proto;
        let ep = self.ep(is_orig);
        ep.active = true;
        // Payload for UDP and ICMP; other IP protocols (and TCP without a
        // readable header) count packets and IP bytes only, as in Zeek.
        if matches!(proto, PROTO_UDP | PROTO_ICMP | PROTO_ICMP6) {
            ep.payload += l.payload_len as u64;
        }
        if self.proto == PROTO_UDP && l.l4_ok {
            self.check_hist(is_orig, H_DATA, b'd');
        }
    }

    fn tcp(&mut self, l: &IpLayer, is_orig: bool, ts: u64) {
        let flags = l.tcp_flags;
        let syn = flags & F::SYN != 0;
        let fin = flags & F::FIN != 0;
        let rst = flags & F::RST != 0;
        let ackf = flags & F::ACK != 0;
        let len = l.payload_len;
        let base = l.seq;
        let seg = len.wrapping_add(syn as u32).wrapping_add(fin as u32);
        let one_past = base.wrapping_add(seg);

        let ep = if is_orig { &mut self.orig } else { &mut self.resp };
        // init_endpoint
        match ep.state {
            EpState::Inactive => {
                if syn {
                    ep.init_seq(base, one_past);
                } else {
                    ep.init_seq(base.wrapping_sub(1), base);
                }
            }
            EpState::SynSent | EpState::SynAckSent => {
                if syn && base != ep.start_seq {
                    ep.init_seq(base, one_past);
                }
            }
            EpState::Established | EpState::Partial => {
                if syn {
                    ep.init_seq(base, one_past);
                }
            }
            EpState::Reset => {
                if syn && ep.prev_state == EpState::Inactive {
                    ep.init_seq(base, one_past);
                }
            }
            EpState::Closed => {}
        }
        let rel_seq = base.wrapping_sub(ep.start_seq);

        // history
        let bits = syn as u8 + fin as u8 + rst as u8;
        let mut letters: [u8; 4] = [0; 4];
        let mut nl = 0;
        let once = |ep: &mut Endpoint, mask: u16, ch: u8, letters: &mut [u8; 4], nl: &mut usize| {
            if ep.hist_once & mask == 0 {
                ep.hist_once |= mask;
                letters[*nl] = ch;
                *nl += 1;
                false
            } else {
                true
            }
        };
        if bits > 1 {
            if fin && rst {
                once(ep, H_FINRST, b'i', &mut letters, &mut nl);
            } else {
                once(ep, H_MULTI, b'q', &mut letters, &mut nl);
            }
        } else if bits == 1 {
            if syn {
                let code = if ackf { b'h' } else { b's' };
                if once(ep, H_SYN, code, &mut letters, &mut nl) && rel_seq != ep.hist_last_syn {
                    letters[nl] = code;
                    nl += 1;
                }
                ep.hist_last_syn = rel_seq;
            }
            if fin {
                let r = rel_seq.wrapping_add(len);
                if once(ep, H_FIN, b'f', &mut letters, &mut nl) && r != ep.hist_last_fin {
                    letters[nl] = b'f';
                    nl += 1;
                }
                ep.hist_last_fin = r;
            }
            if rst {
                if once(ep, H_RST, b'r', &mut letters, &mut nl) && rel_seq != ep.hist_last_rst {
                    letters[nl] = b'r';
                    nl += 1;
                }
                ep.hist_last_rst = rel_seq;
            }
        } else if len > 0 {
            once(ep, H_DATA, b'd', &mut letters, &mut nl);
        } else if ackf {
            once(ep, H_ACK, b'a', &mut letters, &mut nl);
        }
        // zero window
        let zw = l.window == 0 && !rst && ep.zero_win.hit();

        let both_closed_before = self.orig.did_close && self.resp.did_close;
        let (ep, peer) = if is_orig { (&mut self.orig, &mut self.resp) } else { (&mut self.resp, &mut self.orig) };
        // update_last_seq
        let delta_last = one_past.wrapping_sub(ep.last_seq32) as i32;
        let mut rx = false;
        let huge = (syn || rst) && (delta_last == i32::MIN || delta_last.unsigned_abs() > 0x7fff_ffff);
        if !huge {
            if delta_last > 0 {
                ep.last_rel = ep.rel(one_past);
                ep.last_seq32 = one_past;
            } else if len > 0 && ep.rxmit.hit() {
                rx = true;
            }
        }
        if fin {
            ep.fin_cnt += 1;
        }
        // state machine
        let ep_state = ep.state;
        match ep_state {
            EpState::Inactive => {
                if syn {
                    if is_orig {
                        ep.set_state(if ackf { EpState::SynAckSent } else { EpState::SynSent });
                    } else {
                        if peer.state == EpState::SynSent {
                            peer.set_state(EpState::Established);
                        }
                        ep.set_state(EpState::Established);
                    }
                }
                if fin {
                    ep.set_state(EpState::Closed);
                }
                if rst {
                    ep.set_state(EpState::Reset);
                }
                if ep.state == EpState::Inactive {
                    if !is_orig && len == 0 && peer.state == EpState::SynSent {
                        // an ACK to the initial SYN before the SYN-ACK: not partial
                    } else if ackf && peer.state == EpState::Established {
                        ep.set_state(EpState::Established);
                    } else {
                        ep.set_state(EpState::Partial);
                    }
                }
            }
            EpState::SynSent | EpState::SynAckSent => {
                if fin {
                    ep.set_state(EpState::Closed);
                }
                if rst {
                    ep.set_state(EpState::Reset);
                } else if !syn && ackf && peer.state == EpState::Established {
                    // The final ACK of the handshake.
                    ep.set_state(EpState::Established);
                }
            }
            EpState::Established | EpState::Partial => {
                if syn && ep_state == EpState::Partial && peer.state == EpState::Inactive && !ackf {
                    ep.set_state(EpState::SynSent);
                }
                if fin && !rst {
                    ep.set_state(EpState::Closed);
                    if peer.state == EpState::Reset && peer.prev_state == EpState::Closed {
                        peer.set_state(EpState::Closed);
                    }
                }
                if rst {
                    ep.set_state(EpState::Reset);
                }
            }
            EpState::Closed => {
                // A RST after both sides closed changes nothing: the
                // connection already ended normally.
                if rst && peer.state != EpState::Closed {
                    ep.set_state(EpState::Reset);
                }
            }
            EpState::Reset => {}
        }
        if matches!(ep.state, EpState::Closed | EpState::Reset) {
            ep.did_close = true;
        }
        // ack of the peer's data
        let mut peer_gap = false;
        if ackf && peer.state != EpState::Inactive {
            let a = peer.rel(l.ack);
            let d = l.ack.wrapping_sub(peer.last_seq32) as i32;
            // ignore acks wildly beyond anything the peer sent
            if a > peer.ack_rel && (d as i64) < (1 << 30) {
                // Acked bytes we never saw: a content gap (not flagged on
                // FIN/RST packets, whose acks are unreliable, as in Zeek).
                let seen = peer.last_rel.max(peer.ack_rel);
                if a > seen && !fin && !rst && peer.last_rel > 1 {
                    self_missed_add(peer, a - seen);
                    peer_gap = peer.gap.hit();
                }
                peer.ack_rel = a;
            }
        }
        if !both_closed_before {
            self.last_ts = ts;
        }
        for &ch in &letters[..nl] {
            self.add_hist(is_orig, ch);
        }
        if rx {
            self.add_hist(is_orig, b't');
        }
        if peer_gap {
            self.add_hist(!is_orig, b'g');
        }
        if zw {
            self.add_hist(is_orig, b'w');
        }
    }

    /// Payload bytes of the originator and responder.
    pub fn bytes(&self) -> (u64, u64) {
        match self.proto {
            PROTO_TCP => (self.orig.tcp_size(&self.resp), self.resp.tcp_size(&self.orig)),
            _ => (self.orig.payload, self.resp.payload),
        }
    }

    /// Content gap bytes in both directions (Zeek's missed_bytes).
    pub fn missed_bytes(&self) -> u64 {
        self.orig.missed + self.resp.missed
    }

    pub fn duration_ns(&self) -> u64 {
        self.last_ts.saturating_sub(self.first_ts)
    }

    /// Zeek's conn_state.
    pub fn conn_state(&self) -> &'static str {
        let (os, rs) = (self.orig.state, self.resp.state);
        match self.proto {
            PROTO_TCP => {
                let o_inactive = matches!(os, EpState::Inactive | EpState::Partial);
                let r_inactive = matches!(rs, EpState::Inactive | EpState::Partial);
                if rs == EpState::Reset {
                    if matches!(os, EpState::SynSent | EpState::SynAckSent) {
                        "REJ"
                    } else if o_inactive {
                        "RSTRH"
                    } else {
                        "RSTR"
                    }
                } else if os == EpState::Reset {
                    if r_inactive { if rstos0_history(self.history()) { "RSTOS0" } else { "OTH" } } else { "RSTO" }
                } else if rs == EpState::Closed && os == EpState::Closed {
                    "SF"
                } else if os == EpState::Closed {
                    if r_inactive { "SH" } else { "S2" }
                } else if rs == EpState::Closed {
                    if o_inactive { "SHR" } else { "S3" }
                } else if os == EpState::SynSent && rs == EpState::Inactive {
                    "S0"
                } else if os == EpState::Established && rs == EpState::Established {
                    "S1"
                } else {
                    "OTH"
                }
            }
            PROTO_UDP => match (self.orig.active, self.resp.active) {
                (true, true) => "SF",
                (true, false) => "S0",
                (false, true) => "SHR",
                _ => "OTH",
            },
            PROTO_ICMP | PROTO_ICMP6 => "OTH",
            _ => "OTH",
        }
    }

    /// True once the TCP connection is over (both FINs, or a RST), so Zeek's
    /// close/reset delay applies instead of the inactivity timeout.
    pub fn tcp_closed(&self) -> bool {
        self.proto == PROTO_TCP
            && (self.orig.state == EpState::Reset
                || self.resp.state == EpState::Reset
                || (self.orig.state == EpState::Closed && self.resp.state == EpState::Closed))
    }

    /// A TCP connection attempt not (yet) answered.
    pub fn tcp_attempt(&self) -> bool {
        self.proto == PROTO_TCP
            && matches!(self.orig.state, EpState::SynSent | EpState::SynAckSent)
            && self.resp.state == EpState::Inactive
    }

    /// Would a SYN from `is_orig` start a new connection (Zeek's IsReuse)?
    pub fn is_reuse(&self, l: &IpLayer) -> bool {
        self.proto == PROTO_TCP
            && l.l4_ok
            && l.tcp_flags & F::SYN != 0
            && l.tcp_flags & F::ACK == 0
            && self.tcp_closed()
    }
}

fn self_missed_add(ep: &mut Endpoint, n: u64) {
    ep.missed = ep.missed.saturating_add(n);
}

/// `^?S[^HAFGIQ]*R` matched against the start of the history.
fn rstos0_history(h: &str) -> bool {
    let h = h.strip_prefix('^').unwrap_or(h);
    let Some(rest) = h.strip_prefix('S') else {
        return false;
    };
    for c in rest.chars() {
        if c == 'R' {
            return true;
        }
        if "HAFGIQ".contains(c) {
            return false;
        }
    }
    false
}
