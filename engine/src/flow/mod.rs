//! Flow tracking: one [`FlowTracker`] per worker, owning its table.

pub mod community_id;
pub mod conn;
pub mod key;
pub mod table;

use crate::decode::{Decoded, IpLayer, PROTO_TCP, PROTO_UDP, Tunnel};
use crate::proto::{self, AppState, ProtoCtx};
use crate::records::{FlowRecord, RecordKind, Sinks};
use crate::source::{Desc, Layers};
pub use conn::Conn;
pub use key::{FlowKey, PacketKey};
use table::{FlowTable, Lookup};

const SEC: u64 = 1_000_000_000;

/// Timeouts and limits of a flow table.
#[derive(Clone, Copy, Debug)]
pub struct FlowConfig {
    pub tcp_idle_ns: u64,
    pub udp_idle_ns: u64,
    pub other_idle_ns: u64,
    /// After both FINs or a RST (Zeek's tcp_close_delay / tcp_reset_delay).
    pub tcp_closed_ns: u64,
    /// An unanswered SYN (Zeek's tcp_attempt_delay).
    pub tcp_attempt_ns: u64,
    /// Emit an interim record for flows older than this (0 = never).
    pub active_timeout_ns: u64,
    /// Most flows one worker tracks at once.
    pub max_flows: usize,
    /// Keep flows on different VLANs apart. Off by default, as in Zeek: a
    /// mirror port often sees one routed connection on two VLANs.
    pub vlan_in_key: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            tcp_idle_ns: 300 * SEC,
            udp_idle_ns: 60 * SEC,
            other_idle_ns: 60 * SEC,
            tcp_closed_ns: 5 * SEC,
            tcp_attempt_ns: 5 * SEC,
            active_timeout_ns: 0,
            max_flows: 1 << 18,
            vlan_in_key: false,
        }
    }
}

// Expiry lists (each keeps a single timeout so it stays deadline-ordered).
const L_TCP: u8 = 0;
const L_UDP_OTHER: u8 = 1;
const L_CLOSED: u8 = 2;
const L_ATTEMPT: u8 = 3;

/// Service guessed for a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Service {
    #[default]
    Unknown,
    Dns,
    Http,
    Ssl,
    Dhcp,
    Ssh,
    Ntp,
    Tunnel(Tunnel),
}

impl Service {
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Service::Unknown => return None,
            Service::Dns => "dns",
            Service::Http => "http",
            Service::Ssl => "ssl",
            Service::Dhcp => "dhcp",
            Service::Ssh => "ssh",
            Service::Ntp => "ntp",
            Service::Tunnel(t) => t.name(),
        })
    }
}

/// Everything kept per flow.
#[derive(Clone, Debug, Default)]
pub struct Flow {
    pub conn: Conn,
    pub uid: u64,
    /// The originator is the key's `lo` endpoint.
    pub orig_is_lo: bool,
    pub service: Service,
    pub iface: u16,
    /// First VLAN id of the flow's first packet (0 = untagged).
    pub vlan: u16,
    pub orig_flags: u8,
    pub resp_flags: u8,
    /// Outer flows that carried this one (tunnel parents), up to two.
    pub parents: [Option<FlowKey>; 2],
    pub app: AppState,
    /// Totals already reported by interim records.
    pub reported: Reported,
    pub period_start: u64,
    /// Detection's mark of the second this flow was last touched in.
    pub(crate) win: crate::detect::WinMark,
}

/// Counters already exported for a flow (for interim deltas).
#[derive(Clone, Copy, Debug, Default)]
pub struct Reported {
    pub orig_pkts: u64,
    pub resp_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_ip_bytes: u64,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
}

/// Counters of one tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub created: u64,
    pub expired: u64,
    pub evicted: u64,
    pub interim: u64,
    pub active: u64,
}

/// One worker's flow state.
pub struct FlowTracker {
    cfg: FlowConfig,
    table: FlowTable<Flow>,
    pub stats: FlowStats,
    now: u64,
    worker: u16,
    pub proto: proto::Analyzers,
    /// Detection's per-second view of the flows (disabled unless detection runs).
    pub(crate) win: crate::detect::WindowAcc,
}

impl FlowTracker {
    pub fn new(cfg: FlowConfig, worker: u16) -> FlowTracker {
        FlowTracker {
            cfg,
            table: FlowTable::new(cfg.max_flows),
            stats: FlowStats::default(),
            now: 0,
            worker,
            proto: proto::Analyzers::new(),
            win: crate::detect::WindowAcc::disabled(),
        }
    }

    /// Keep detection's per-second conversation counters (see
    /// [`crate::detect`]); `sinks` then keeps the names used each second.
    pub fn enable_windows(&mut self, max_convs: usize, sinks: &mut Sinks) {
        self.win = crate::detect::WindowAcc::new(self.worker, max_convs);
        sinks.names = crate::detect::NameAcc::new(max_convs / 8);
    }

    /// Closed seconds for detection, oldest first.
    pub fn take_windows(&mut self) -> impl Iterator<Item = crate::detect::WindowReport> + '_ {
        self.win.ready.drain(..)
    }

    /// The newest closed second not yet taken, if any.
    pub fn last_window_mut(&mut self) -> Option<&mut crate::detect::WindowReport> {
        self.win.ready.last_mut()
    }

    fn live(&self, e: u32, uid: u64) -> bool {
        (e as usize) < self.table.capacity() && self.table.get(e).uid == uid
    }

    /// Close detection's open second: judge the attempts carried from the
    /// second before, fold every flow touched in it, and open `new_sec`.
    fn close_window(&mut self, new_sec: u64, sinks: &mut Sinks) {
        for i in 0..self.win.carry.len() {
            let (e, uid) = self.win.carry[i];
            if self.live(e, uid) {
                let key = *self.table.key(e);
                self.win.judge_carried(&key, self.table.get_mut(e));
            }
        }
        let sec = self.win.sec;
        for i in 0..self.win.active.len() {
            let (e, uid) = self.win.active[i];
            if self.live(e, uid) && self.table.get(e).win.sec == sec {
                let key = *self.table.key(e);
                self.win.fold(e, &key, self.table.get_mut(e), false);
            }
        }
        self.win.active.clear();
        self.win.close(new_sec, &mut sinks.names);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Latest packet time seen.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Account one decoded packet.
    pub fn packet(&mut self, desc: &Desc, frame: &[u8], d: &Decoded, sinks: &mut Sinks) {
        let ts = desc.ts_ns;
        if self.win.passes(ts) {
            self.close_window(ts / SEC, sinks);
        }
        if ts > self.now {
            self.now = ts;
            self.expire(ts, sinks);
        }
        let depth = d.depth as usize;
        if depth == 0 {
            return;
        }
        let (from, to) = match desc.layers {
            Layers::All => (0, depth),
            Layers::OuterOnly => (0, 1),
            Layers::InnerOnly => (1, depth),
            Layers::StatsOnly => return,
        };
        let vlan = key::key_vlan(d, self.cfg.vlan_in_key);
        let mut parent: Option<FlowKey> =
            if from > 0 { Some(PacketKey::of_layer(&d.layers[from - 1], vlan).key) } else { None };
        for i in from..to {
            let l = &d.layers[i];
            let pk = PacketKey::of_layer(l, vlan);
            let hash = pk.key.hash64();
            let e = self.lookup_or_create(&pk, hash, l, desc, parent, sinks);
            let f = self.table.get_mut(e);
            if f.conn.orig.pkts + f.conn.resp.pkts == 0 {
                f.vlan = d.vlan_id();
            }
            if self.win.enabled && f.win.sec != self.win.sec {
                f.win.sec = self.win.sec;
                f.win.pkts = [f.conn.orig.pkts, f.conn.resp.pkts];
                f.win.bytes = [f.conn.orig.ip_bytes, f.conn.resp.ip_bytes];
                self.win.active.push((e, f.uid));
            }
            let is_orig = pk.from_lo == f.orig_is_lo;
            f.conn.update(l, is_orig, ts);
            if l.proto == PROTO_TCP && l.l4_ok {
                if is_orig {
                    f.orig_flags |= l.tcp_flags;
                } else {
                    f.resp_flags |= l.tcp_flags;
                }
            }
            if let Some(p) = parent
                && f.parents[0] != Some(p)
                && f.parents[1].is_none()
                && f.parents[0].is_some()
            {
                f.parents[1] = Some(p);
            }
            if l.encap != Tunnel::None {
                f.service = Service::Tunnel(l.encap);
            } else if l.l4_ok && !l.bad_checksum && l.payload_cap > 0 {
                let ctx = ProtoCtx { ts, uid: f.uid, key: pk.key, orig_is_lo: f.orig_is_lo, is_orig, layer: l };
                let svc = self.proto.analyze(&mut f.app, &ctx, l.payload(frame), sinks);
                if let Some(s) = svc
                    && f.service == Service::Unknown
                {
                    f.service = s;
                }
                if self.proto.take_flip() {
                    f.orig_is_lo = !f.orig_is_lo;
                    f.conn.flip();
                    f.win.flip();
                    std::mem::swap(&mut f.orig_flags, &mut f.resp_flags);
                }
            }
            // choose expiry list
            let (list, deadline) = self.deadline_for(e, ts);
            if (list, deadline) != (self.table.list(e), self.table.deadline(e)) {
                self.table.touch(e, list, deadline);
            }
            if self.cfg.active_timeout_ns > 0 {
                let f = self.table.get(e);
                if ts.saturating_sub(f.period_start) >= self.cfg.active_timeout_ns {
                    self.emit(e, RecordKind::Interim, sinks);
                }
            }
            parent = Some(pk.key);
        }
    }

    fn deadline_for(&self, e: u32, ts: u64) -> (u8, u64) {
        let f = self.table.get(e);
        let c = &f.conn;
        match c.proto {
            PROTO_TCP => {
                if c.tcp_closed() {
                    // keep the first close time: don't push the deadline on
                    if self.table.list(e) == L_CLOSED {
                        (L_CLOSED, self.table.deadline(e))
                    } else {
                        (L_CLOSED, ts + self.cfg.tcp_closed_ns)
                    }
                } else if c.tcp_attempt() {
                    (L_ATTEMPT, c.first_ts + self.cfg.tcp_attempt_ns)
                } else {
                    (L_TCP, ts + self.cfg.tcp_idle_ns)
                }
            }
            PROTO_UDP => (L_UDP_OTHER, ts + self.cfg.udp_idle_ns),
            _ => (L_UDP_OTHER, ts + self.cfg.other_idle_ns),
        }
    }

    fn lookup_or_create(
        &mut self,
        pk: &PacketKey,
        hash: u64,
        l: &IpLayer,
        desc: &Desc,
        parent: Option<FlowKey>,
        sinks: &mut Sinks,
    ) -> u32 {
        match self.table.lookup(&pk.key, hash) {
            Lookup::Found(e) => {
                if self.table.get(e).conn.is_reuse(l) {
                    // A new SYN on a finished connection starts a new one.
                    self.emit(e, RecordKind::Final, sinks);
                    self.table.remove(e);
                    self.stats.expired += 1;
                    return self.lookup_or_create(pk, hash, l, desc, parent, sinks);
                }
                e
            }
            Lookup::Vacant(mut slot) => {
                if self.table.is_full() {
                    if let Some((old, _)) = self.table.oldest() {
                        self.emit(old, RecordKind::Evicted, sinks);
                        self.table.remove(old);
                        self.stats.evicted += 1;
                        sinks.anomalies.bump(crate::decode::Anomaly::FlowTableEviction);
                    }
                    slot = match self.table.lookup(&pk.key, hash) {
                        Lookup::Vacant(s) => s,
                        Lookup::Found(e) => return e,
                    };
                }
                let flip = conn::flip_first(l);
                // The originator is the packet's source unless flipped.
                let orig_is_lo = pk.from_lo != flip;
                // Derivable from the flows row: the files need not store it.
                let uid = crate::derived::uid_of(&pk.key, desc.ts_ns);
                let proto = l.proto;
                let f = Flow {
                    conn: Conn::new(proto, desc.ts_ns, flip),
                    uid,
                    orig_is_lo,
                    iface: desc.iface,
                    parents: [parent, None],
                    period_start: desc.ts_ns,
                    ..Flow::default()
                };
                self.stats.created += 1;
                self.table.insert_at(slot, pk.key, hash, f, L_UDP_OTHER, desc.ts_ns)
            }
        }
    }

    /// Expire every flow whose deadline is at or before `now`.
    pub fn expire(&mut self, now: u64, sinks: &mut Sinks) {
        while let Some(e) = self.table.expired(now) {
            self.emit(e, RecordKind::Final, sinks);
            self.table.remove(e);
            self.stats.expired += 1;
        }
    }

    /// Advance time without a packet (idle capture) and expire.
    pub fn tick(&mut self, now: u64, sinks: &mut Sinks) {
        if self.win.passes(now) {
            self.close_window(now / SEC, sinks);
        }
        if now > self.now {
            self.now = now;
        }
        self.expire(now, sinks);
    }

    /// Emit and drop every flow (end of input or shutdown).
    pub fn flush(&mut self, sinks: &mut Sinks) {
        let mut all = self.table.entries();
        all.sort_by_key(|&e| self.table.get(e).conn.first_ts);
        for e in all {
            self.emit(e, RecordKind::Final, sinks);
            self.table.remove(e);
        }
        self.win.finish(&mut sinks.names);
    }

    fn emit(&mut self, e: u32, kind: RecordKind, sinks: &mut Sinks) {
        let key = *self.table.key(e);
        let f = self.table.get_mut(e);
        if kind != RecordKind::Interim && self.win.enabled {
            // The flow goes: its activity of this second counts now.
            self.win.judge_carried(&key, f);
            if f.win.sec == self.win.sec && f.win.sec != 0 {
                self.win.fold(e, &key, f, true);
            }
        }
        if kind != RecordKind::Interim {
            self.proto.finish(&mut f.app, f.uid, &key, f.orig_is_lo, sinks);
        }
        let c = &f.conn;
        let (orig_bytes, resp_bytes) = c.bytes();
        let (oh, op, rh, rp) = if f.orig_is_lo {
            (key.lo, key.lo_port, key.hi, key.hi_port)
        } else {
            (key.hi, key.hi_port, key.lo, key.lo_port)
        };
        let r = f.reported;
        let rec = FlowRecord {
            kind,
            ts: f.period_start.max(c.first_ts),
            first_ts: c.first_ts,
            last_ts: c.last_ts,
            uid: f.uid,
            key,
            orig_h: oh,
            orig_p: op,
            resp_h: rh,
            resp_p: rp,
            v6: key.v6,
            ip_proto: key.proto,
            service: f.service,
            orig_bytes: orig_bytes.saturating_sub(r.orig_bytes),
            resp_bytes: resp_bytes.saturating_sub(r.resp_bytes),
            orig_pkts: c.orig.pkts - r.orig_pkts,
            resp_pkts: c.resp.pkts - r.resp_pkts,
            orig_ip_bytes: c.orig.ip_bytes - r.orig_ip_bytes,
            resp_ip_bytes: c.resp.ip_bytes - r.resp_ip_bytes,
            conn_state: c.conn_state(),
            history: c.history(),
            missed_bytes: c.missed_bytes(),
            vlan: f.vlan,
            iface: f.iface,
            orig_flags: f.orig_flags,
            resp_flags: f.resp_flags,
            parents: f.parents,
        };
        sinks.flow(&rec);
        if kind == RecordKind::Interim {
            self.stats.interim += 1;
            f.reported = Reported {
                orig_pkts: c.orig.pkts,
                resp_pkts: c.resp.pkts,
                orig_ip_bytes: c.orig.ip_bytes,
                resp_ip_bytes: c.resp.ip_bytes,
                orig_bytes,
                resp_bytes,
            };
            f.period_start = c.last_ts;
        }
    }
}

/// Format a uid as Zeek-style text ('C' + base62).
pub fn uid_string(uid: u64) -> String {
    String::from_utf8_lossy(&crate::derived::uid_text(uid)).into_owned()
}
