//! `tapstream gen`: well-formed test traffic with known content, sent from
//! an AF_PACKET socket, with an exact account of what was sent.
//!
//! Flows are kept in `flows` slots, visited round-robin. `web` and `dns`
//! play whole sessions (a TCP handshake, an HTTP request and response and a
//! FIN close; a DNS query and its answer); when a slot's session ends the
//! next one starts from a new client port, so `flows` is the number of
//! sessions started. The flood and scan mixes repeat the same `flows`
//! tuples (retransmitted SYNs, more datagrams), so their flow count is
//! `min(flows, packets)`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenMix {
    Web,
    Dns,
    SynFlood,
    UdpFlood,
    Scan,
}

impl GenMix {
    pub fn parse(s: &str) -> Option<GenMix> {
        Some(match s {
            "web" => GenMix::Web,
            "dns" => GenMix::Dns,
            "syn-flood" => GenMix::SynFlood,
            "udp-flood" => GenMix::UdpFlood,
            "scan" => GenMix::Scan,
            _ => return None,
        })
    }
}

const CLIENT_MAC: [u8; 6] = [0x02, 0x74, 0x73, 0x00, 0x00, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0x74, 0x73, 0x00, 0x00, 0x02];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

#[derive(Clone, Copy, Debug)]
struct Session {
    client: [u8; 4],
    server: [u8; 4],
    cport: u16,
    sport: u16,
    /// Next step of the session's script.
    step: u8,
    isn_c: u32,
    isn_s: u32,
}

/// The frame generator (no I/O: usable in tests and benchmarks).
pub struct TrafficGen {
    mix: GenMix,
    slots: Vec<Session>,
    next_slot: usize,
    sessions: u64,
    /// Distinct client ports handed out so far (per slot).
    port_seq: u32,
    packets: u64,
    /// Second octet of client addresses (10.<net>.x.y).
    client_net: u8,
    /// 802.1Q tag to put on every frame.
    vlan: Option<u16>,
}

fn checksum(data: &[u8], mut acc: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [b] = chunks.remainder() {
        acc += (*b as u32) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

impl TrafficGen {
    pub fn new(mix: GenMix, flows: u32) -> TrafficGen {
        TrafficGen::with_client_net(mix, flows, 77)
    }

    /// Clients in 10.`client_net`.0.0/16 (so several generators make distinct flows).
    pub fn with_client_net(mix: GenMix, flows: u32, client_net: u8) -> TrafficGen {
        let flows = flows.max(1);
        let mut g = TrafficGen {
            mix,
            slots: Vec::with_capacity(flows as usize),
            next_slot: 0,
            sessions: 0,
            port_seq: 0,
            packets: 0,
            client_net,
            vlan: None,
        };
        for i in 0..flows {
            let s = g.fresh(i);
            g.slots.push(s);
        }
        g
    }

    fn fresh(&mut self, slot: u32) -> Session {
        self.sessions += 1;
        self.port_seq = self.port_seq.wrapping_add(1);
        let n = self.port_seq;
        let c = self.client_net;
        let (client, server, cport, sport) = match self.mix {
            GenMix::Web => ([10, c, (slot >> 8) as u8, slot as u8], [10, 78, 0, 80], 1024 + (n % 60000) as u16, 80),
            GenMix::Dns => ([10, c, (slot >> 8) as u8, slot as u8], [10, 78, 0, 53], 1024 + (n % 60000) as u16, 53),
            GenMix::SynFlood => {
                ([10, 79, (slot >> 8) as u8, slot as u8], [10, 78, 0, 80], 1024 + (slot % 60000) as u16, 80)
            }
            GenMix::UdpFlood => {
                ([10, 79, (slot >> 8) as u8, slot as u8], [10, 78, 0, 9], 1024 + (slot % 60000) as u16, 9)
            }
            GenMix::Scan => ([10, c, 0, 66], [10, 78, 0, 7], 40000, 1 + (slot % 65535) as u16),
        };
        Session {
            client,
            server,
            cport,
            sport,
            step: 0,
            isn_c: n.wrapping_mul(2_654_435_761),
            isn_s: n.wrapping_mul(40_503) ^ 0x5a5a_0000,
        }
    }

    /// Tag every frame with 802.1Q VLAN `id` (0-4095).
    pub fn set_vlan(&mut self, id: Option<u16>) {
        self.vlan = id.map(|v| v & 0x0fff);
    }

    /// Sessions started (= flows for `web`/`dns`; slots used for the others).
    pub fn flows(&self) -> u64 {
        match self.mix {
            GenMix::Web | GenMix::Dns => self.sessions_started_with_packets(),
            _ => self.packets.min(self.slots.len() as u64),
        }
    }

    /// Slots whose current session has sent nothing yet do not count.
    fn sessions_started_with_packets(&self) -> u64 {
        self.sessions - self.slots.iter().filter(|s| s.step == 0).count() as u64
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Write the next frame into `buf` (cleared first).
    pub fn next_frame(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        let i = self.next_slot;
        self.next_slot = (i + 1) % self.slots.len();
        let s = self.slots[i];
        let done = match self.mix {
            GenMix::Web => web_step(buf, &s),
            GenMix::Dns => dns_step(buf, &s),
            GenMix::SynFlood | GenMix::Scan => {
                tcp(buf, &s, true, SYN, s.isn_c, 0, &[]);
                false
            }
            GenMix::UdpFlood => {
                let payload = [0x5au8; 200];
                udp(buf, &s, true, &payload[..64 + (i % 137)]);
                false
            }
        };
        if let Some(v) = self.vlan {
            let [hi, lo] = v.to_be_bytes();
            buf.splice(12..12, [0x81, 0x00, hi, lo]);
        }
        self.packets += 1;
        if done {
            self.slots[i] = self.fresh(i as u32);
        } else {
            self.slots[i].step = s.step.saturating_add(1);
        }
    }
}

const HTTP_REQ: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: tapstream-gen\r\n\r\n";
const HTTP_RESP: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\r\nknown content from tapstream gen";

/// One packet of an HTTP session; true when it was the last.
fn web_step(buf: &mut Vec<u8>, s: &Session) -> bool {
    let (c, v) = (s.isn_c, s.isn_s);
    let rq = HTTP_REQ.len() as u32;
    let rs = HTTP_RESP.len() as u32;
    match s.step {
        0 => tcp(buf, s, true, SYN, c, 0, &[]),
        1 => tcp(buf, s, false, SYN | ACK, v, c + 1, &[]),
        2 => tcp(buf, s, true, ACK, c + 1, v + 1, &[]),
        3 => tcp(buf, s, true, PSH | ACK, c + 1, v + 1, HTTP_REQ),
        4 => tcp(buf, s, false, PSH | ACK, v + 1, c + 1 + rq, HTTP_RESP),
        5 => tcp(buf, s, true, FIN | ACK, c + 1 + rq, v + 1 + rs, &[]),
        6 => tcp(buf, s, false, FIN | ACK, v + 1 + rs, c + 2 + rq, &[]),
        _ => {
            tcp(buf, s, true, ACK, c + 2 + rq, v + 2 + rs, &[]);
            return true;
        }
    }
    false
}

fn dns_step(buf: &mut Vec<u8>, s: &Session) -> bool {
    let id = (s.isn_c >> 16) as u16;
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(if s.step == 0 { &[0x01, 0x00] } else { &[0x81, 0x80] });
    m.extend_from_slice(&[0, 1, 0, if s.step == 0 { 0 } else { 1 }, 0, 0, 0, 0]);
    for label in ["www", "example", "test"] {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    if s.step == 0 {
        udp(buf, s, true, &m);
        false
    } else {
        m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 192, 0, 2, 80]);
        udp(buf, s, false, &m);
        true
    }
}

fn ether_ip(buf: &mut Vec<u8>, s: &Session, from_client: bool, proto: u8, l4_len: usize) -> ([u8; 4], [u8; 4]) {
    let (sm, dm, sa, da) = if from_client {
        (CLIENT_MAC, SERVER_MAC, s.client, s.server)
    } else {
        (SERVER_MAC, CLIENT_MAC, s.server, s.client)
    };
    buf.extend_from_slice(&dm);
    buf.extend_from_slice(&sm);
    buf.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + l4_len) as u16;
    let ip_start = buf.len();
    buf.extend_from_slice(&[0x45, 0]);
    buf.extend_from_slice(&total.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    buf.extend_from_slice(&sa);
    buf.extend_from_slice(&da);
    let c = checksum(&buf[ip_start..ip_start + 20], 0);
    buf[ip_start + 10..ip_start + 12].copy_from_slice(&c.to_be_bytes());
    (sa, da)
}

fn pseudo(sa: [u8; 4], da: [u8; 4], proto: u8, len: usize) -> u32 {
    let mut acc = 0u32;
    for p in [sa, da] {
        acc += u16::from_be_bytes([p[0], p[1]]) as u32 + u16::from_be_bytes([p[2], p[3]]) as u32;
    }
    acc + proto as u32 + len as u32
}

#[allow(clippy::too_many_arguments)]
fn tcp(buf: &mut Vec<u8>, s: &Session, from_client: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]) {
    let l4 = 20 + payload.len();
    let (sa, da) = ether_ip(buf, s, from_client, 6, l4);
    let (sp, dp) = if from_client { (s.cport, s.sport) } else { (s.sport, s.cport) };
    let start = buf.len();
    buf.extend_from_slice(&sp.to_be_bytes());
    buf.extend_from_slice(&dp.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&(if flags & ACK != 0 { ack } else { 0 }).to_be_bytes());
    buf.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    buf.extend_from_slice(payload);
    let c = checksum(&buf[start..], pseudo(sa, da, 6, l4));
    buf[start + 16..start + 18].copy_from_slice(&c.to_be_bytes());
}

fn udp(buf: &mut Vec<u8>, s: &Session, from_client: bool, payload: &[u8]) {
    let l4 = 8 + payload.len();
    let (sa, da) = ether_ip(buf, s, from_client, 17, l4);
    let (sp, dp) = if from_client { (s.cport, s.sport) } else { (s.sport, s.cport) };
    let start = buf.len();
    buf.extend_from_slice(&sp.to_be_bytes());
    buf.extend_from_slice(&dp.to_be_bytes());
    buf.extend_from_slice(&(l4 as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(payload);
    let c = checksum(&buf[start..], pseudo(sa, da, 17, l4));
    let c = if c == 0 { 0xffff } else { c };
    buf[start + 6..start + 8].copy_from_slice(&c.to_be_bytes());
}

/// How a generator run's frames left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxMethod {
    /// An AF_PACKET socket, a frame per send.
    #[default]
    Packet,
    /// The kernel's XDP live-frame runner.
    XdpLive,
}

/// What a generator run sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct GenReport {
    /// How the frames left.
    pub tx: TxMethod,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    /// Sends the kernel refused for lack of buffer space, and retried.
    pub retries: u64,
    /// Frames handed to the interface that it dropped instead of sending
    /// (its `tx_dropped` counter; the live-frame runner's frames, when the
    /// receiving end's ring is full). Not part of `packets` or `bytes`.
    pub tx_dropped: u64,
    pub seconds: f64,
}

/// One of the interface's transmit counters (`tx_packets`, `tx_dropped`), as
/// this process's network namespace sees it in sysfs (`ip netns exec` mounts
/// the namespace's own).
fn tx_counter(iface: &str, name: &str) -> Result<u64, super::LiveError> {
    let p = format!("/sys/class/net/{iface}/statistics/{name}");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| super::LiveError::io(format!("{iface}: reading {p} to count the frames that left"), e))?;
    text.trim().parse().map_err(|_| {
        super::LiveError::io(
            format!("{iface}: {p}"),
            io::Error::new(io::ErrorKind::InvalidData, text.trim().to_string()),
        )
    })
}

/// Offer about `total` UDP-flood frames at about `pps` through the kernel's
/// XDP live-frame test runner (see [`super::bpf::XdpBlaster`]): far faster
/// than a socket, for benchmarks. Frames spread over `flows` source ports at
/// random. With `send_fraction` below 1 the runner makes `total /
/// send_fraction` copies and transmits each with that probability, which
/// thins the stream evenly (a lower offered rate without gaps); the report
/// then counts what actually left, which is `total` give or take a few
/// hundred.
pub fn blast(
    iface: &str,
    flows: u32,
    client_net: u8,
    pps: u64,
    total: u64,
    send_fraction: f64,
) -> Result<GenReport, super::LiveError> {
    let ifindex = super::iface::ifindex(iface).ok_or_else(|| super::LiveError::NoSuchInterface(iface.to_string()))?;
    let mut g = TrafficGen::with_client_net(GenMix::UdpFlood, 1, client_net);
    let mut frame = Vec::new();
    g.next_frame(&mut frame);
    frame[40..42].copy_from_slice(&[0, 0]); // no UDP checksum: the port is rewritten per copy
    let ports = flows.clamp(1, 60000) as u16;
    let fraction = send_fraction.clamp(f64::MIN_POSITIVE, 1.0);
    let b = super::bpf::XdpBlaster::new(ifindex, frame.clone(), 1024, ports, fraction)
        .map_err(|e| super::LiveError::io(format!("{iface}: XDP live-frame generator"), e))?;
    let sent_before = tx_counter(iface, "tx_packets")?;
    let dropped_before = tx_counter(iface, "tx_dropped")?;
    // Pacing counts runner copies: `pps` sent frames are `pps / fraction` copies.
    let copies_total = (total as f64 / fraction).round() as u64;
    let copies_pps = pps as f64 / fraction;
    // Paced: a call per 5 ms of traffic. Unpaced (the whole run is due
    // within one such step): the run is one call, so it has no gaps.
    let step = copies_pps / 200.0;
    let unpaced = copies_total as f64 <= step;
    let start = Instant::now();
    let mut copies = 0u64;
    while copies < copies_total {
        let n = if unpaced {
            copies_total - copies
        } else {
            let due = ((start.elapsed().as_secs_f64() * copies_pps) as u64).min(copies_total);
            if copies >= due {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            (due - copies).min((step as u64).clamp(64, 1 << 20))
        };
        let n = n.min(u32::MAX as u64) as u32;
        b.send(n).map_err(|e| match e.raw_os_error() {
            // Refused outright (nothing was sent): the kernel forbids the
            // mode here, which a caller may answer by sending another way.
            Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP) if copies == 0 => {
                super::LiveError::LiveFramesRefused { iface: iface.to_string(), source: e }
            }
            _ => super::LiveError::io(format!("{iface}: XDP live-frame run"), e),
        })?;
        copies += n as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    // What left the interface and what it dropped, by its own counters (in
    // a benchmark namespace the only traffic is ours).
    let packets = tx_counter(iface, "tx_packets")?.saturating_sub(sent_before);
    let dropped = tx_counter(iface, "tx_dropped")?.saturating_sub(dropped_before);
    Ok(GenReport {
        tx: TxMethod::XdpLive,
        packets,
        bytes: packets * frame.len() as u64,
        flows: ports as u64,
        retries: 0,
        tx_dropped: dropped,
        seconds,
    })
}

/// An AF_PACKET socket bound to one interface, for sending.
pub struct PacketTx {
    fd: OwnedFd,
}

impl PacketTx {
    pub fn open(iface: &str) -> Result<PacketTx, super::LiveError> {
        let ifindex =
            super::iface::ifindex(iface).ok_or_else(|| super::LiveError::NoSuchInterface(iface.to_string()))?;
        // Safety: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => super::LiveError::Permission {
                    what: format!("{iface}: opening a packet socket"),
                    capability: "cap_net_raw",
                },
                _ => super::LiveError::io(format!("{iface}: packet socket"), e),
            });
        }
        // Safety: fresh descriptor, owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // Safety: setsockopt with a valid int option. Failure only costs speed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        // Safety: zeroed sockaddr_ll is valid; the fields set below are the ones bind reads.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = 0;
        sa.sll_ifindex = ifindex as i32;
        // Safety: `sa` is a properly sized sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(super::LiveError::io(
                format!("{iface}: binding the packet socket"),
                io::Error::last_os_error(),
            ));
        }
        Ok(PacketTx { fd })
    }

    /// Send one frame; Ok(false) when the kernel is out of buffers (retry).
    pub fn send(&self, frame: &[u8]) -> io::Result<bool> {
        // Safety: `frame` is a valid buffer of its length.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if r >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) => Ok(false),
            _ => Err(e),
        }
    }
}

/// Send `g`'s traffic at `pps` for `duration` (or until `max_packets`).
pub fn send_traffic(
    tx: &PacketTx,
    mut g: TrafficGen,
    pps: u64,
    duration: Duration,
    max_packets: Option<u64>,
) -> io::Result<GenReport> {
    let mut buf = Vec::with_capacity(2048);
    let mut rep = GenReport::default();
    let start = Instant::now();
    let total = max_packets.unwrap_or_else(|| (pps as f64 * duration.as_secs_f64()).round() as u64);
    g.next_frame(&mut buf);
    while rep.packets < total {
        let elapsed = start.elapsed();
        let due = ((elapsed.as_secs_f64() * pps as f64) as u64).min(total);
        if rep.packets >= due {
            let wait = Duration::from_secs_f64((rep.packets + 1) as f64 / pps as f64).saturating_sub(elapsed);
            std::thread::sleep(wait.min(Duration::from_millis(2)));
            continue;
        }
        while rep.packets < due {
            if tx.send(&buf)? {
                rep.packets += 1;
                rep.bytes += buf.len() as u64;
                if rep.packets < total {
                    g.next_frame(&mut buf);
                }
            } else {
                rep.retries += 1;
                std::thread::yield_now();
            }
        }
    }
    rep.flows = g.flows();
    rep.seconds = start.elapsed().as_secs_f64();
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{DecodeConfig, Decoded, decode};
    use crate::source::LinkType;

    #[test]
    fn frames_are_well_formed_and_flows_counted() {
        for (mix, flows, packets, want_flows) in [
            (GenMix::Web, 3, 8 * 3 * 2 + 1, 7),
            (GenMix::Dns, 5, 21, 11),
            (GenMix::SynFlood, 10, 25, 10),
            (GenMix::UdpFlood, 50, 25, 25),
            (GenMix::Scan, 4, 9, 4),
        ] {
            let mut g = TrafficGen::new(mix, flows);
            let mut buf = Vec::new();
            let cfg = DecodeConfig { verify_checksums: true, ..DecodeConfig::default() };
            let mut d = Decoded::default();
            for _ in 0..packets {
                g.next_frame(&mut buf);
                decode(LinkType::ETHERNET, &buf, &cfg, &mut d);
                assert!(d.anomalies.is_empty(), "{mix:?}: {:?}", d.anomalies);
                assert!(!d.non_ip, "{mix:?}");
            }
            assert_eq!(g.packets(), packets);
            assert_eq!(g.flows(), want_flows, "{mix:?}");
        }
        let mut g = TrafficGen::new(GenMix::Web, 1);
        g.set_vlan(Some(42));
        let mut buf = Vec::new();
        g.next_frame(&mut buf);
        let mut d = Decoded::default();
        decode(LinkType::ETHERNET, &buf, &DecodeConfig { verify_checksums: true, ..DecodeConfig::default() }, &mut d);
        assert_eq!((d.vlan_id(), d.anomalies.is_empty(), d.outer().map(|l| l.dport)), (42, true, Some(80)));
    }
}
