//! Synthetic traffic for demo mode and benchmarks: a deterministic (per
//! seed) mix of web, TLS, DNS, DHCP, ICMP and some IPv6, Zipf-distributed
//! flow sizes, and optional attacks (SYN flood, UDP flood, port scan, DNS
//! tunnelling). Frames are well formed, checksums included.

use super::{Batch, Desc, Layers, LinkType, PacketSource, Region, SourceError, SourceStats};

/// Attack traffic: a background mix (each kind's share of new sessions,
/// 0.0–1.0), plus attacks at a fixed rate during a set time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttackMix {
    pub syn_flood: f64,
    pub udp_flood: f64,
    pub port_scan: f64,
    pub dns_tunnel: f64,
    pub schedule: Vec<ScheduledAttack>,
}

/// A kind of attack the generator can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttackKind {
    /// Spoofed SYNs from many sources to 198.51.100.200:80, never answered.
    SynFlood,
    /// UDP datagrams from many clients to random ports of 198.51.100.200.
    UdpFlood,
    /// ICMP echo requests from many sources to 198.51.100.200.
    IcmpFlood,
    /// 10.9.9.9 probing ports 1–1024 of 198.51.100.200 (each refused).
    PortScan,
    /// Long random names under t.exfil.example.
    DnsTunnel,
    /// 10.1.0.66 asking for random names that do not exist (NXDOMAIN).
    DnsNx,
    /// 10.1.0.77 opening a short TLS connection to 198.51.100.250:443 every
    /// period (its `pps` is the period in seconds), ± 0.2 s.
    Beacon,
}

impl AttackKind {
    pub const ALL: [AttackKind; 7] = [
        AttackKind::SynFlood,
        AttackKind::UdpFlood,
        AttackKind::IcmpFlood,
        AttackKind::PortScan,
        AttackKind::DnsTunnel,
        AttackKind::DnsNx,
        AttackKind::Beacon,
    ];
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::SynFlood => "syn-flood",
            AttackKind::UdpFlood => "udp-flood",
            AttackKind::IcmpFlood => "icmp-flood",
            AttackKind::PortScan => "port-scan",
            AttackKind::DnsTunnel => "dns-tunnel",
            AttackKind::DnsNx => "dns-nxdomain",
            AttackKind::Beacon => "beacon",
        }
    }
    fn session_kind(self) -> Kind {
        match self {
            AttackKind::SynFlood => Kind::SynFlood,
            AttackKind::UdpFlood => Kind::UdpFlood,
            AttackKind::IcmpFlood => Kind::IcmpFlood,
            AttackKind::PortScan => Kind::Scan,
            AttackKind::DnsTunnel => Kind::DnsTunnel,
            AttackKind::DnsNx => Kind::DnsNx,
            AttackKind::Beacon => Kind::Tls,
        }
    }
}

/// `pps` packets per second of `kind` from `start_ns` after the first
/// packet, for `duration_ns`, on top of the normal traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduledAttack {
    pub kind: AttackKind,
    pub pps: u64,
    pub start_ns: u64,
    pub duration_ns: u64,
}

#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    /// Stop after this many packets (0 = never).
    pub packets: u64,
    /// Packets per second of synthetic time (timestamps advance by 1/pps).
    pub pps: u64,
    /// First timestamp (ns since epoch).
    pub start_ns: u64,
    /// Pace output to wall-clock time (demo mode) instead of running flat out.
    pub realtime: bool,
    /// Concurrent sessions.
    pub concurrency: usize,
    pub attacks: AttackMix,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            packets: 0,
            pps: 20_000,
            start_ns: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
            realtime: false,
            concurrency: 256,
            attacks: AttackMix::default(),
        }
    }
}

/// SplitMix64: small, fast, deterministic.
#[derive(Clone, Debug)]
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Zipf-like heavy tail: 1..=max, P(k) ~ 1/k^1.2 (approximate, by inversion).
    fn zipf(&mut self, max: u64) -> u64 {
        let u = self.f64().max(1e-12);
        let k = (u.powf(-1.0 / 0.2)) as u64; // Pareto tail with alpha 0.2 scaled
        k.clamp(1, max)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Http,
    Tls,
    Dns,
    Dhcp,
    Icmp,
    SynFlood,
    UdpFlood,
    IcmpFlood,
    Scan,
    DnsTunnel,
    DnsNx,
}

#[derive(Clone, Debug)]
struct Session {
    kind: Kind,
    v6: bool,
    client: [u8; 16],
    server: [u8; 16],
    cport: u16,
    sport: u16,
    cseq: u32,
    sseq: u32,
    step: u32,
    /// Response payload bytes left to send.
    left: u64,
    name: u32,
    done: bool,
    /// Server segments the client has not acknowledged yet.
    unacked: u8,
}

/// The synthetic source.
pub struct SynthSource {
    cfg: SynthConfig,
    rng: Rng,
    sessions: Vec<Session>,
    ts: u64,
    step_ns: u64,
    emitted: u64,
    stats: SourceStats,
    started: std::time::Instant,
    scan_port: u16,
    buf: Vec<u8>,
    /// Per scheduled attack: its session and the time of its next packet.
    attacks: Vec<(Session, u64)>,
}

const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const HOSTS: &[&str] = &[
    "www.example.com",
    "api.example.net",
    "cdn.example.org",
    "mail.example.com",
    "login.example.net",
    "static.example.org",
    "updates.example.com",
    "video.example.net",
];

impl SynthSource {
    pub fn new(cfg: SynthConfig) -> SynthSource {
        let step_ns = 1_000_000_000 / cfg.pps.max(1);
        let mut s = SynthSource {
            rng: Rng(cfg.seed ^ 0x5eed),
            ts: cfg.start_ns,
            step_ns,
            sessions: Vec::with_capacity(cfg.concurrency),
            emitted: 0,
            stats: SourceStats::default(),
            started: std::time::Instant::now(),
            scan_port: 1,
            buf: Vec::with_capacity(2048),
            attacks: Vec::new(),
            cfg,
        };
        for a in s.cfg.attacks.schedule.clone() {
            let sess = s.attack_session(a.kind);
            s.attacks.push((sess, s.cfg.start_ns + a.start_ns));
        }
        for _ in 0..s.cfg.concurrency.max(1) {
            let sess = s.new_session();
            s.sessions.push(sess);
        }
        s
    }

    fn addr(&mut self, v6: bool, client: bool) -> [u8; 16] {
        let mut a = [0u8; 16];
        if v6 {
            a[0] = 0xfd;
            a[1] = if client { 0x01 } else { 0x02 };
            let h = self.rng.below(if client { 200 } else { 20 }) as u16 + 1;
            a[14..16].copy_from_slice(&h.to_be_bytes());
        } else if client {
            a[..4].copy_from_slice(&[10, 1, self.rng.below(4) as u8, self.rng.below(250) as u8 + 2]);
        } else {
            // a Zipf-ish server population: a few popular servers
            let k = self.rng.zipf(40) as u8;
            a[..4].copy_from_slice(&[198, 51, 100, k]);
        }
        a
    }

    fn pick_kind(&mut self) -> Kind {
        let a = &self.cfg.attacks;
        let u = self.rng.f64();
        let mut acc = a.syn_flood;
        if u < acc {
            return Kind::SynFlood;
        }
        acc += a.udp_flood;
        if u < acc {
            return Kind::UdpFlood;
        }
        acc += a.port_scan;
        if u < acc {
            return Kind::Scan;
        }
        acc += a.dns_tunnel;
        if u < acc {
            return Kind::DnsTunnel;
        }
        match self.rng.below(100) {
            0..=29 => Kind::Http,
            30..=64 => Kind::Tls,
            65..=89 => Kind::Dns,
            90..=91 => Kind::Dhcp,
            _ => Kind::Icmp,
        }
    }

    fn attack_session(&mut self, kind: AttackKind) -> Session {
        let mut s = self.session_of(kind.session_kind());
        if kind == AttackKind::Beacon {
            s.v6 = false;
            s.client = [0; 16];
            s.client[..4].copy_from_slice(&[10, 1, 0, 77]);
            s.server = [0; 16];
            s.server[..4].copy_from_slice(&[198, 51, 100, 250]);
            s.left = 300;
        }
        s
    }

    fn new_session(&mut self) -> Session {
        let kind = self.pick_kind();
        self.session_of(kind)
    }

    fn session_of(&mut self, kind: Kind) -> Session {
        let v6 = matches!(kind, Kind::Http | Kind::Tls | Kind::Dns | Kind::Icmp) && self.rng.below(10) == 0;
        let client = self.addr(v6, true);
        let mut server = self.addr(v6, false);
        let sport = match kind {
            Kind::Http => 80,
            Kind::Tls => 443,
            Kind::Dns | Kind::DnsTunnel | Kind::DnsNx => 53,
            Kind::Dhcp => 67,
            Kind::SynFlood => 80,
            Kind::IcmpFlood => 0,
            Kind::UdpFlood => self.rng.below(60000) as u16 + 1024,
            Kind::Scan => {
                self.scan_port = self.scan_port % 1024 + 1;
                self.scan_port
            }
            Kind::Icmp => 0,
        };
        if matches!(kind, Kind::SynFlood | Kind::UdpFlood | Kind::IcmpFlood | Kind::Scan) {
            server[..4].copy_from_slice(&[198, 51, 100, 200]);
        }
        let mut client = client;
        if matches!(kind, Kind::SynFlood | Kind::IcmpFlood) {
            // spoofed sources from documentation space
            let r = self.rng.next();
            client[..4].copy_from_slice(&[203, 0, (r >> 8) as u8 & 0x71, r as u8]);
        }
        if kind == Kind::Scan {
            client[..4].copy_from_slice(&[10, 9, 9, 9]);
        }
        if kind == Kind::DnsNx {
            client[..4].copy_from_slice(&[10, 1, 0, 66]);
        }
        let left = match kind {
            Kind::Http => self.rng.zipf(2_000_000) * 200,
            Kind::Tls => self.rng.zipf(2_000_000) * 300,
            _ => 0,
        };
        Session {
            kind,
            v6,
            client,
            server,
            cport: self.rng.below(28000) as u16 + 32768,
            sport,
            cseq: self.rng.next() as u32,
            sseq: self.rng.next() as u32,
            step: 0,
            left,
            name: self.rng.below(HOSTS.len() as u64) as u32,
            done: false,
            unacked: 0,
        }
    }

    /// Write the next packet of session `i` into `self.buf`.
    fn next_packet(&mut self, i: usize) {
        let mut s = self.sessions[i].clone();
        self.step(&mut s);
        self.sessions[i] = s;
    }

    /// Write the next packet of session `s` into `self.buf`.
    fn step(&mut self, s: &mut Session) {
        self.buf.clear();
        use Kind::*;
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const PSH: u8 = 0x08;
        const FIN: u8 = 0x01;
        const RST: u8 = 0x04;
        match s.kind {
            Http | Tls if s.unacked >= 2 => {
                s.unacked = 0;
                self.tcp(s, true, ACK, &[]);
            }
            Http | Tls => {
                let mss = 1448u64;
                match s.step {
                    0 => self.tcp(s, true, SYN, &[]),
                    1 => self.tcp(s, false, SYN | ACK, &[]),
                    2 => self.tcp(s, true, ACK, &[]),
                    3 => {
                        let req = if s.kind == Http {
                            http_request(HOSTS[s.name as usize])
                        } else {
                            client_hello(HOSTS[s.name as usize])
                        };
                        self.tcp(s, true, PSH | ACK, &req);
                        s.cseq = s.cseq.wrapping_add(req.len() as u32);
                    }
                    4 => {
                        let head = if s.kind == Http {
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/html\r\n\r\n", s.left)
                                .into_bytes()
                        } else {
                            server_hello()
                        };
                        self.tcp(s, false, PSH | ACK, &head);
                        s.sseq = s.sseq.wrapping_add(head.len() as u32);
                    }
                    _ if s.left > 0 => {
                        let n = s.left.min(mss);
                        let mut body = vec![0u8; n as usize];
                        if s.kind == Tls {
                            body[0] = 23;
                            body[1] = 3;
                            body[2] = 3;
                        }
                        let fill = self.rng.next() as u8;
                        for (j, b) in body.iter_mut().enumerate().skip(5) {
                            *b = fill.wrapping_add(j as u8);
                        }
                        self.tcp(s, false, ACK, &body);
                        s.sseq = s.sseq.wrapping_add(n as u32);
                        s.left -= n;
                        s.step = 4; // stays in the data phase
                        // the client acknowledges every second segment (delayed ACK)
                        s.unacked += 1;
                    }
                    5 => self.tcp(s, true, FIN | ACK, &[]),
                    6 => {
                        s.cseq = s.cseq.wrapping_add(1);
                        self.tcp(s, false, FIN | ACK, &[]);
                    }
                    _ => {
                        s.sseq = s.sseq.wrapping_add(1);
                        self.tcp(s, true, ACK, &[]);
                        s.done = true;
                    }
                }
                if s.step == 0 || s.step == 1 {
                    if s.step == 0 {
                        s.cseq = s.cseq.wrapping_add(1);
                    } else {
                        s.sseq = s.sseq.wrapping_add(1);
                    }
                }
                s.step += 1;
            }
            Dns | DnsTunnel | DnsNx => {
                // Random labels derived from the session, so a response
                // repeats its query's name.
                let mut r = Rng((s.cseq as u64) << 32 | s.sseq as u64);
                let mut label = |n: usize| -> String { (0..n).map(|_| (b'a' + r.below(26) as u8) as char).collect() };
                let name = if s.kind == DnsNx {
                    format!("{}.com", label(12))
                } else if s.kind == DnsTunnel {
                    format!("{}.t.exfil.example", label(48))
                } else {
                    HOSTS[s.name as usize].to_string()
                };
                let mut q = dns_msg(s.cseq as u16, &name, s.step == 1, s.v6, s.kind == DnsTunnel);
                if s.kind == DnsNx && s.step == 1 {
                    // NXDOMAIN, no answer
                    q[3] = 0x83;
                    q[7] = 0;
                    let end = q.len() - 16;
                    q.truncate(end);
                }
                let (c, sv) = (s.step == 0, s.step == 1);
                if c || sv {
                    self.udp(s, c, &q);
                }
                s.step += 1;
                if s.step >= 2 || (s.kind == DnsTunnel && self.rng.below(3) == 0) {
                    s.done = true;
                }
            }
            Dhcp => {
                let m = dhcp_msg(s.step as u8 + 1, s.cseq, s);
                let from_client = s.step.is_multiple_of(2);
                self.dhcp(from_client, &m);
                s.step += 1;
                if s.step >= 4 {
                    s.done = true;
                }
            }
            Icmp => {
                let mut p = [0u8; 56];
                for (j, b) in p.iter_mut().enumerate() {
                    *b = j as u8;
                }
                self.icmp_echo(s, s.step.is_multiple_of(2), s.step as u16 / 2, &p);
                s.step += 1;
                if s.step >= 8 {
                    s.done = true;
                }
            }
            IcmpFlood => {
                let r = self.rng.next();
                s.client[2] = (r >> 16) as u8;
                s.client[3] = (r >> 24) as u8;
                s.cport = (r >> 32) as u16;
                self.icmp_echo(s, true, 1, &[0x61; 56]);
                s.done = true;
            }
            SynFlood => {
                let r = self.rng.next();
                s.client[2] = (r >> 16) as u8;
                s.client[3] = (r >> 24) as u8;
                s.cport = (r >> 32) as u16 | 1024;
                self.tcp(s, true, SYN, &[]);
                s.done = true;
            }
            UdpFlood => {
                let n = 512 + self.rng.below(900) as usize;
                let p = vec![0x41u8; n];
                self.udp(s, true, &p);
                s.done = true;
            }
            Scan => {
                if s.step == 0 {
                    self.tcp(s, true, SYN, &[]);
                } else {
                    s.cseq = s.cseq.wrapping_add(1);
                    self.tcp(s, false, RST | ACK, &[]);
                    s.done = true;
                }
                s.step += 1;
            }
        }
    }

    /// The scheduled attack with the earliest packet due at or before
    /// `before`, and that packet's time.
    fn due_attack(&self, before: u64) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (i, (_, next)) in self.attacks.iter().enumerate() {
            let a = &self.cfg.attacks.schedule[i];
            let end = self.cfg.start_ns + a.start_ns + a.duration_ns;
            if *next <= before && *next < end && best.is_none_or(|(_, t)| *next < t) {
                best = Some((i, *next));
            }
        }
        best
    }

    fn ip_header(&mut self, v6: bool, src: &[u8; 16], dst: &[u8; 16], proto: u8, l4_len: usize) {
        let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
        self.buf.extend_from_slice(&SERVER_MAC);
        self.buf.extend_from_slice(&CLIENT_MAC);
        self.buf.extend_from_slice(&ethertype.to_be_bytes());
        if v6 {
            self.buf.extend_from_slice(&[0x60, 0, 0, 0]);
            self.buf.extend_from_slice(&(l4_len as u16).to_be_bytes());
            self.buf.extend_from_slice(&[proto, 64]);
            self.buf.extend_from_slice(src);
            self.buf.extend_from_slice(dst);
        } else {
            let total = (20 + l4_len) as u16;
            let id = self.rng.next() as u16;
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h[6] = 0x40;
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&src[..4]);
            h[16..20].copy_from_slice(&dst[..4]);
            let ck = csum(&h, 0);
            h[10..12].copy_from_slice(&ck.to_be_bytes());
            self.buf.extend_from_slice(&h);
        }
    }

    fn tcp(&mut self, s: &Session, from_client: bool, flags: u8, payload: &[u8]) {
        let (src, dst, sp, dp, seq, ack) = if from_client {
            (s.client, s.server, s.cport, s.sport, s.cseq, s.sseq)
        } else {
            (s.server, s.client, s.sport, s.cport, s.sseq, s.cseq)
        };
        let ack = if flags & 0x10 != 0 { ack } else { 0 };
        self.ip_header(s.v6, &src, &dst, 6, 20 + payload.len());
        let start = self.buf.len();
        let mut h = [0u8; 20];
        h[0..2].copy_from_slice(&sp.to_be_bytes());
        h[2..4].copy_from_slice(&dp.to_be_bytes());
        h[4..8].copy_from_slice(&seq.to_be_bytes());
        h[8..12].copy_from_slice(&ack.to_be_bytes());
        h[12] = 5 << 4;
        h[13] = flags;
        h[14..16].copy_from_slice(&64240u16.to_be_bytes());
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(payload);
        self.l4_checksum(s.v6, &src, &dst, 6, start, 16);
    }

    fn udp(&mut self, s: &Session, from_client: bool, payload: &[u8]) {
        let (src, dst, sp, dp) =
            if from_client { (s.client, s.server, s.cport, s.sport) } else { (s.server, s.client, s.sport, s.cport) };
        self.udp_raw(s.v6, &src, &dst, sp, dp, payload);
    }

    fn udp_raw(&mut self, v6: bool, src: &[u8; 16], dst: &[u8; 16], sp: u16, dp: u16, payload: &[u8]) {
        self.ip_header(v6, src, dst, 17, 8 + payload.len());
        let start = self.buf.len();
        self.buf.extend_from_slice(&sp.to_be_bytes());
        self.buf.extend_from_slice(&dp.to_be_bytes());
        self.buf.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(payload);
        self.l4_checksum(v6, src, dst, 17, start, 6);
    }

    fn dhcp(&mut self, from_client: bool, m: &[u8]) {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if from_client {
            dst[..4].copy_from_slice(&[255, 255, 255, 255]);
            self.udp_raw(false, &src, &dst, 68, 67, m);
        } else {
            src[..4].copy_from_slice(&[10, 1, 0, 1]);
            dst[..4].copy_from_slice(&[255, 255, 255, 255]);
            self.udp_raw(false, &src, &dst, 67, 68, m);
        }
    }

    fn icmp_echo(&mut self, s: &Session, request: bool, seq: u16, payload: &[u8]) {
        let (src, dst) = if request { (s.client, s.server) } else { (s.server, s.client) };
        let proto = if s.v6 { 58 } else { 1 };
        self.ip_header(s.v6, &src, &dst, proto, 8 + payload.len());
        let start = self.buf.len();
        let ty = match (s.v6, request) {
            (false, true) => 8,
            (false, false) => 0,
            (true, true) => 128,
            (true, false) => 129,
        };
        self.buf.extend_from_slice(&[ty, 0, 0, 0]);
        self.buf.extend_from_slice(&(s.cport).to_be_bytes());
        self.buf.extend_from_slice(&seq.to_be_bytes());
        self.buf.extend_from_slice(payload);
        if s.v6 {
            self.l4_checksum(true, &src, &dst, 58, start, 2);
        } else {
            let ck = csum(&self.buf[start..], 0);
            self.buf[start + 2..start + 4].copy_from_slice(&ck.to_be_bytes());
        }
    }

    fn l4_checksum(&mut self, v6: bool, src: &[u8; 16], dst: &[u8; 16], proto: u8, start: usize, at: usize) {
        let len = self.buf.len() - start;
        let alen = if v6 { 16 } else { 4 };
        let mut acc = sum(&src[..alen], 0);
        acc = sum(&dst[..alen], acc);
        acc += proto as u64 + len as u64;
        let mut ck = csum(&self.buf[start..], acc);
        if ck == 0 && proto == 17 {
            ck = 0xffff;
        }
        self.buf[start + at..start + at + 2].copy_from_slice(&ck.to_be_bytes());
    }
}

fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [b] = it.remainder() {
        acc += (*b as u64) << 8;
    }
    acc
}

fn csum(data: &[u8], acc: u64) -> u16 {
    let mut a = sum(data, acc);
    while a > 0xffff {
        a = (a & 0xffff) + (a >> 16);
    }
    !(a as u16)
}

fn http_request(host: &str) -> Vec<u8> {
    format!(
        "GET /index.html HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) tapstream-synth\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

fn client_hello(host: &str) -> Vec<u8> {
    let mut exts = Vec::new();
    // SNI
    let name = host.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    push_ext(&mut exts, 0, &sni);
    push_ext(&mut exts, 16, &[0, 3, 2, b'h', b'2']);
    push_ext(&mut exts, 43, &[4, 3, 4, 3, 3]);
    push_ext(&mut exts, 13, &[0, 4, 4, 3, 8, 4]);
    push_ext(&mut exts, 10, &[0, 2, 0, 29]);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 6, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    handshake_record(1, &body)
}

fn server_hello() -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[9u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0x13, 0x01, 0]);
    let mut exts = Vec::new();
    push_ext(&mut exts, 43, &[3, 4]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut r = handshake_record(2, &body);
    r.extend_from_slice(&[20, 3, 3, 0, 1, 1]); // change cipher spec
    r
}

fn push_ext(v: &mut Vec<u8>, ty: u16, data: &[u8]) {
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
}

fn handshake_record(ht: u8, body: &[u8]) -> Vec<u8> {
    let mut hs = vec![ht];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(body);
    let mut r = vec![22, 3, 1];
    r.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    r.extend_from_slice(&hs);
    r
}

fn dns_msg(id: u16, name: &str, response: bool, v6: bool, txt: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(if response { &[0x81, 0x80] } else { &[0x01, 0x00] });
    m.extend_from_slice(&[0, 1, 0, response as u8, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.push(0);
    let qtype: u16 = if txt {
        16
    } else if v6 {
        28
    } else {
        1
    };
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if response {
        m.extend_from_slice(&[0xc0, 12]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
        match qtype {
            16 => m.extend_from_slice(&[0, 4, 3, b'a', b'c', b'k']),
            28 => {
                m.extend_from_slice(&[0, 16, 0x20, 0x01, 0x0d, 0xb8]);
                m.extend_from_slice(&[0; 11]);
                m.push(id as u8 | 1);
            }
            _ => m.extend_from_slice(&[0, 4, 198, 51, 100, (id as u8) | 1]),
        }
    }
    m
}

fn dhcp_msg(ty: u8, xid: u32, s: &Session) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = if ty % 2 == 1 { 1 } else { 2 };
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    let mac = [0x02, 0x42, s.client[2], s.client[3], 0x10, 0x01];
    m[28..34].copy_from_slice(&mac);
    if ty == 2 || ty == 4 {
        m[16..20].copy_from_slice(&s.client[..4]);
    }
    m[236..240].copy_from_slice(&[0x63, 0x82, 0x53, 0x63]);
    // DISCOVER(1) OFFER(2) REQUEST(3) ACK(5)
    let msg = match ty {
        1 => 1,
        2 => 2,
        3 => 3,
        _ => 5,
    };
    m.extend_from_slice(&[53, 1, msg]);
    if msg == 3 {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&s.client[..4]);
        m.extend_from_slice(&[12, 7]);
        m.extend_from_slice(b"laptop1");
    }
    if msg == 2 || msg == 5 {
        m.extend_from_slice(&[54, 4, 10, 1, 0, 1, 51, 4, 0, 0, 0x0e, 0x10]);
    }
    m.push(255);
    m
}

impl PacketSource for SynthSource {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, SourceError> {
        let mut region = match std::mem::take(&mut batch.region) {
            Region::Owned(v) => v,
            Region::Shared(_) | Region::Frames(_) => Vec::with_capacity(max * 600),
        };
        region.clear();
        let mut n = 0;
        while n < max {
            if self.cfg.packets > 0 && self.emitted >= self.cfg.packets {
                break;
            }
            // The next packet: a scheduled attack's when one is due before
            // the next normal packet, else the normal one.
            let normal_ts = self.ts + self.step_ns.max(1);
            let attack = self.due_attack(normal_ts);
            let ts = attack.map_or(normal_ts, |(_, t)| t);
            if self.cfg.realtime {
                let due = self.started + std::time::Duration::from_nanos(ts.saturating_sub(self.cfg.start_ns));
                let now = std::time::Instant::now();
                if due > now {
                    if n > 0 {
                        break;
                    }
                    std::thread::sleep(due - now);
                }
            }
            if let Some((a, t)) = attack {
                let (mut sess, _) = self.attacks[a].clone();
                let kind = self.cfg.attacks.schedule[a].kind;
                if sess.done {
                    sess = self.attack_session(kind);
                }
                self.step(&mut sess);
                let gap = if kind == AttackKind::Beacon {
                    // Packets of a connection 1 ms apart; the next connection
                    // a period after this one began.
                    if sess.done {
                        let period = self.cfg.attacks.schedule[a].pps.max(1) * 1_000_000_000;
                        let jitter = self.rng.below(400_000_000);
                        (period + jitter).saturating_sub(200_000_000 + sess.step as u64 * 1_000_000)
                    } else {
                        1_000_000
                    }
                } else {
                    1_000_000_000 / self.cfg.attacks.schedule[a].pps.max(1)
                };
                self.attacks[a] = (sess, t + gap.max(1));
            } else {
                let i = self.rng.below(self.sessions.len() as u64) as usize;
                self.next_packet(i);
                if self.sessions[i].done {
                    let s = self.new_session();
                    self.sessions[i] = s;
                }
                self.ts = normal_ts;
            }
            if self.buf.is_empty() {
                continue;
            }
            let off = region.len();
            region.extend_from_slice(&self.buf);
            batch.descs.push(Desc {
                offset: off as u64,
                caplen: self.buf.len() as u32,
                wire_len: self.buf.len() as u32,
                ts_ns: ts,
                link: LinkType::ETHERNET,
                iface: 0,
                layers: Layers::All,
                in_aux: false,
            });
            self.stats.packets += 1;
            self.stats.bytes += self.buf.len() as u64;
            self.emitted += 1;
            n += 1;
        }
        batch.region = Region::Owned(region);
        Ok(n)
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn name(&self) -> &str {
        "synthetic"
    }
}
