//! The per-worker half of detection: which flows were touched this second,
//! and their deltas folded into conversations when the second ends.

use std::collections::HashMap;

use super::{ConvKey, ConvStat, NameKey, NameStat, SEC, WindowReport};
use crate::decode::PROTO_TCP;
use crate::flow::{Flow, FlowKey};

const SYN: u8 = 0x02;
const RST: u8 = 0x04;

/// A flow's counters when it was first touched in second `sec`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WinMark {
    pub sec: u64,
    pub pkts: [u64; 2],
    pub bytes: [u64; 2],
    /// A new attempt whose answer is judged when the next second closes.
    pub carry: bool,
}

impl WinMark {
    /// The originator and responder swapped (the protocol analyzer found
    /// the flow's direction was guessed wrong).
    pub fn flip(&mut self) {
        self.pkts.swap(0, 1);
        self.bytes.swap(0, 1);
    }
}

type Map = HashMap<ConvKey, ConvStat, foldhash::fast::FixedState>;

/// One worker's window state. Disabled (the default) it costs nothing.
pub(crate) struct WindowAcc {
    pub enabled: bool,
    worker: u16,
    /// The open second (0: none yet).
    pub sec: u64,
    /// Flows touched in `sec`: (entry, uid).
    pub active: Vec<(u32, u64)>,
    /// New flows of the previous second whose answer is still to be judged.
    pub carry: Vec<(u32, u64)>,
    carry_next: Vec<(u32, u64)>,
    convs: Map,
    max_convs: usize,
    overflow: u64,
    /// Closed seconds waiting to be sent.
    pub ready: Vec<WindowReport>,
}

impl WindowAcc {
    pub fn disabled() -> WindowAcc {
        WindowAcc {
            enabled: false,
            worker: 0,
            sec: 0,
            active: Vec::new(),
            carry: Vec::new(),
            carry_next: Vec::new(),
            convs: Map::default(),
            max_convs: 0,
            overflow: 0,
            ready: Vec::new(),
        }
    }

    pub fn new(worker: u16, max_convs: usize) -> WindowAcc {
        WindowAcc {
            enabled: true,
            worker,
            max_convs: max_convs.max(16),
            active: Vec::with_capacity(4096),
            carry: Vec::with_capacity(1024),
            carry_next: Vec::with_capacity(1024),
            convs: Map::with_capacity_and_hasher(4096, Default::default()),
            ..WindowAcc::disabled()
        }
    }

    /// The second of `ts` is later than the open one: close it (the caller
    /// then folds the touched flows with [`WindowAcc::fold`]).
    #[inline]
    pub fn passes(&self, ts: u64) -> bool {
        self.enabled && ts / SEC > self.sec
    }

    fn stat(&mut self, mut k: ConvKey) -> &mut ConvStat {
        if self.convs.len() >= self.max_convs && !self.convs.contains_key(&k) {
            self.overflow += 1;
            k.src = [0; 16];
        }
        self.convs.entry(k).or_default()
    }

    /// Fold the activity of flow `e` in the open second into its
    /// conversation. `ended`: the flow is being removed, so an unanswered
    /// attempt is judged now.
    pub fn fold(&mut self, e: u32, key: &FlowKey, f: &mut Flow, ended: bool) {
        let start = self.sec * SEC;
        let c = &f.conn;
        let (src, dst, dport) =
            if f.orig_is_lo { (key.lo, key.hi, key.hi_port) } else { (key.hi, key.lo, key.lo_port) };
        let k = ConvKey { src, dst, v6: key.v6, proto: key.proto, dport };
        let m = f.win;
        let tcp = key.proto == PROTO_TCP;
        let (orig_flags, resp_flags, resp_pkts, first_ts, uid) =
            (f.orig_flags, f.resp_flags, c.resp.pkts, c.first_ts, f.uid);
        let (op, rp) = (c.orig.pkts.saturating_sub(m.pkts[0]), c.resp.pkts.saturating_sub(m.pkts[1]));
        let (ob, rb) = (c.orig.ip_bytes.saturating_sub(m.bytes[0]), c.resp.ip_bytes.saturating_sub(m.bytes[1]));
        let mut carry = false;
        {
            let s = self.stat(k);
            s.pkts += op;
            s.rpkts += rp;
            s.bytes += ob;
            s.rbytes += rb;
            if first_ts >= start {
                s.flows += 1;
                if s.sample == 0 {
                    s.sample = uid;
                }
                let attempt = !tcp || orig_flags & SYN != 0;
                if attempt {
                    if tcp {
                        s.syn += 1;
                    }
                    let answered = if tcp { resp_flags & SYN != 0 } else { resp_pkts > 0 };
                    if answered {
                        s.answered += 1;
                    } else if tcp && resp_flags & RST != 0 {
                        s.rejected += 1;
                        s.failed += 1;
                    } else if ended {
                        s.failed += 1;
                    } else {
                        // Unanswered yet: judged when the next second closes
                        // (at least a second after it was sent), so a slow
                        // answer is never taken for a failure.
                        carry = true;
                    }
                }
            }
        }
        f.win.sec = 0;
        f.win.carry = carry;
        if carry {
            self.carry_next.push((e, uid));
        }
    }

    /// Judge a carried attempt: failed unless answered by now.
    pub fn judge_carried(&mut self, key: &FlowKey, f: &mut Flow) {
        if !f.win.carry {
            return;
        }
        f.win.carry = false;
        let tcp = key.proto == PROTO_TCP;
        let answered = if tcp { f.resp_flags & SYN != 0 } else { f.conn.resp.pkts > 0 };
        if answered {
            return;
        }
        let (src, dst, dport) =
            if f.orig_is_lo { (key.lo, key.hi, key.hi_port) } else { (key.hi, key.lo, key.lo_port) };
        let s = self.stat(ConvKey { src, dst, v6: key.v6, proto: key.proto, dport });
        s.failed += 1;
        if tcp && f.resp_flags & RST != 0 {
            s.rejected += 1;
        }
    }

    /// End the open second (its flows already folded; `names`, the names
    /// used in it) and open `new_sec`.
    pub fn close(&mut self, new_sec: u64, names: &mut NameAcc) {
        if self.sec != 0 {
            let convs: Vec<(ConvKey, ConvStat)> = self.convs.drain().collect();
            self.ready.push(WindowReport {
                worker: self.worker,
                sec: self.sec,
                through: new_sec,
                convs,
                names: names.take(),
                overflow: std::mem::take(&mut self.overflow),
                findings: Vec::new(),
            });
        }
        std::mem::swap(&mut self.carry, &mut self.carry_next);
        self.carry_next.clear();
        self.sec = new_sec;
    }

    /// End of input: the open second is complete and so is all time after it.
    pub fn finish(&mut self, names: &mut NameAcc) {
        if self.enabled && self.sec != 0 {
            self.close(u64::MAX, names);
        }
    }
}

/// Names used this second, kept by a worker's record sinks (the DNS, TLS and
/// HTTP analyzers report through them). Disabled, it costs one branch per
/// record.
#[derive(Default)]
pub struct NameAcc {
    pub enabled: bool,
    names: HashMap<NameKey, NameStat, foldhash::fast::FixedState>,
    max: usize,
    pub dropped: u64,
    key: NameKey,
}

impl NameAcc {
    pub fn new(max: usize) -> NameAcc {
        NameAcc { enabled: true, max: max.max(16), ..NameAcc::default() }
    }

    /// The stats of `name` used by `client`, made on first use (None when
    /// the second's table is full: counted in `dropped`).
    fn stat(&mut self, name: &str, client: [u8; 16], v6: bool, server: [u8; 16], uid: u64) -> Option<&mut NameStat> {
        if !self.enabled || name.is_empty() {
            return None;
        }
        // Reuse one key buffer: a map insert copies it only for a new name.
        self.key.name.clear();
        self.key.name.extend(name.trim_end_matches('.').chars().map(|c| c.to_ascii_lowercase()));
        self.key.client = client;
        self.key.v6 = v6;
        if !self.names.contains_key(&self.key) && self.names.len() >= self.max {
            self.dropped += 1;
            return None;
        }
        let s = self.names.entry(self.key.clone()).or_default();
        if s.sample == 0 {
            s.sample = uid;
            s.server = server;
        }
        Some(s)
    }

    /// A name in a TLS handshake or HTTP request (`kind`: a `NAME_*` bit).
    pub fn note(&mut self, name: &str, client: [u8; 16], v6: bool, server: [u8; 16], uid: u64, kind: u8) {
        if let Some(s) = self.stat(name, client, v6, server, uid) {
            s.seen_in |= kind;
            s.other += 1;
        }
    }

    /// A DNS query `client` sent to `server`.
    pub fn dns_query(&mut self, name: &str, client: [u8; 16], v6: bool, server: [u8; 16], uid: u64) {
        if let Some(s) = self.stat(name, client, v6, server, uid) {
            s.seen_in |= super::NAME_DNS;
            s.queries += 1;
        }
    }

    /// A DNS response to `client`; `lone`: no query of it was seen (counted as one).
    #[allow(clippy::too_many_arguments)]
    pub fn dns_answer(
        &mut self,
        name: &str,
        client: [u8; 16],
        v6: bool,
        server: [u8; 16],
        uid: u64,
        nx: bool,
        lone: bool,
    ) {
        if let Some(s) = self.stat(name, client, v6, server, uid) {
            s.seen_in |= super::NAME_DNS;
            s.nxdomain += nx as u32;
            s.queries += lone as u32;
        }
    }

    pub fn take(&mut self) -> Vec<(NameKey, NameStat)> {
        self.names.drain().collect()
    }
}
