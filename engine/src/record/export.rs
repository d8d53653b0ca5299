//! Export recorded packets to one pcap file: the packets of one flow, or
//! those a filter passes, within a time range, merged in time order from
//! every worker's files (and every chosen session, duplicates dropped).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::RecordError;
use super::session::{FileInfo, files_of, list, session_dir};
use crate::decode::{DecodeConfig, Decoded, PROTO_ICMP, PROTO_ICMP6, addr, decode};
use crate::filter::Filter;
use crate::source::pcap::PcapState;
use crate::source::{LinkType, PcapWriter};

/// How long after a flow record's `last_ts` its packets may still come: a
/// closed TCP connection's last ACKs count in its packets but, as in Zeek,
/// not in its duration. Exports of a flow by id read this much further.
pub const FLOW_TAIL_NS: u64 = 5_000_000_000;

/// The packets of one flow: its endpoints, either direction, on any IP
/// layer (so a tunnelled flow's packets are found inside the tunnel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowMatch {
    pub a: IpAddr,
    pub a_port: u16,
    pub b: IpAddr,
    pub b_port: u16,
    /// IP protocol number (6 tcp, 17 udp, 1/58 icmp: ports are not compared).
    pub ip_proto: u8,
}

impl FlowMatch {
    /// `tcp 10.0.0.1:1234 10.0.0.2:80` (IPv6 as `[2001:db8::1]:443`; icmp
    /// without ports).
    pub fn parse(s: &str) -> Result<FlowMatch, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let usage = || format!("flow `{s}`: write PROTO SRC:PORT DST:PORT, e.g. `tcp 10.0.0.1:51000 10.0.0.2:443`");
        let [proto, a, b] = parts[..] else { return Err(usage()) };
        let ip_proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => PROTO_ICMP,
            "icmp6" => PROTO_ICMP6,
            p => p.parse::<u8>().map_err(|_| format!("{}: unknown protocol `{p}`", usage()))?,
        };
        let end = |x: &str| -> Result<(IpAddr, u16), String> {
            if let Ok(sa) = x.parse::<std::net::SocketAddr>() {
                return Ok((sa.ip(), sa.port()));
            }
            match x.parse::<IpAddr>() {
                Ok(ip) if ip_proto == PROTO_ICMP || ip_proto == PROTO_ICMP6 => Ok((ip, 0)),
                _ => Err(format!("{}: `{x}` is not ADDRESS:PORT", usage())),
            }
        };
        let ((a, a_port), (b, b_port)) = (end(a)?, end(b)?);
        Ok(FlowMatch { a, a_port, b, b_port, ip_proto })
    }

    pub fn matches(&self, d: &Decoded) -> bool {
        let icmp = self.ip_proto == PROTO_ICMP || self.ip_proto == PROTO_ICMP6;
        d.layers().iter().any(|l| {
            if l.proto != self.ip_proto {
                return false;
            }
            let (s, t) = (addr(l.v6, &l.src), addr(l.v6, &l.dst));
            if icmp {
                return (s == self.a && t == self.b) || (s == self.b && t == self.a);
            }
            (s == self.a && l.sport == self.a_port && t == self.b && l.dport == self.b_port)
                || (s == self.b && l.sport == self.b_port && t == self.a && l.dport == self.a_port)
        })
    }
}

/// Which recorded packets to export.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    /// Sessions to read (empty: all of them).
    pub sessions: Vec<String>,
    pub flow: Option<FlowMatch>,
    pub filter: Option<Filter>,
    /// Inclusive time range, ns since the epoch.
    pub from_ns: u64,
    pub to_ns: u64,
}

/// What an export did.
#[derive(Clone, Debug, Default)]
pub struct ExportReport {
    pub packets: u64,
    pub bytes: u64,
    pub files_read: usize,
    /// The same packet recorded by two sessions, written once.
    pub duplicates: u64,
    /// Files that ended in the middle of a record (being written, or cut by
    /// a crash): the whole records before the cut were read.
    pub truncated_files: Vec<PathBuf>,
    /// Files that could not be read past some point, and why.
    pub bad_files: Vec<String>,
}

/// Reads records of one of our pcap files, one at a time.
struct Reader {
    path: PathBuf,
    r: BufReader<File>,
    big_endian: bool,
    nanos: bool,
    link: LinkType,
    /// The record read last: timestamp, wire length, bytes.
    ts: u64,
    wire_len: u32,
    buf: Vec<u8>,
    offset: u64,
}

enum Next {
    Record,
    End,
    /// Ended inside a record.
    Truncated,
}

impl Reader {
    fn open(path: &Path) -> Result<Option<Reader>, String> {
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut r = BufReader::with_capacity(256 << 10, f);
        let mut h = [0u8; 24];
        match read_full(&mut r, &mut h) {
            Ok(24) => {}
            // A file created a moment ago, header not flushed yet.
            Ok(_) => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        // The header as the capture reader parses it (magic, byte order, link type).
        let st = PcapState::open(&path.display().to_string(), &h).map_err(|e| e.to_string())?;
        let (big_endian, nanos, link) = (st.big_endian, st.nanos, st.link);
        Ok(Some(Reader {
            path: path.to_path_buf(),
            r,
            big_endian,
            nanos,
            link,
            ts: 0,
            wire_len: 0,
            buf: Vec::with_capacity(2048),
            offset: 24,
        }))
    }

    fn next(&mut self) -> Result<Next, String> {
        let mut h = [0u8; 16];
        match read_full(&mut self.r, &mut h) {
            Ok(0) => return Ok(Next::End),
            Ok(16) => {}
            Ok(_) => return Ok(Next::Truncated),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        }
        let u = |o: usize| {
            let b = [h[o], h[o + 1], h[o + 2], h[o + 3]];
            if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
        };
        let (sec, frac, incl, orig) = (u(0) as u64, u(4) as u64, u(8), u(12));
        if incl > 262_144 {
            return Err(format!(
                "{}: offset {}: record of {incl} bytes is larger than any snaplen",
                self.path.display(),
                self.offset
            ));
        }
        self.ts = sec * 1_000_000_000 + if self.nanos { frac } else { frac * 1000 };
        self.wire_len = orig;
        self.buf.resize(incl as usize, 0);
        match read_full(&mut self.r, &mut self.buf) {
            Ok(n) if n == incl as usize => {}
            Ok(_) => return Ok(Next::Truncated),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        }
        self.offset += 16 + incl as u64;
        Ok(Next::Record)
    }
}

/// Read until `buf` is full or the file ends; the count read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The files worth reading for `[from, to]`: a file covers from its first
/// packet up to the next file of the same worker and session.
fn candidates(files: &[FileInfo], from: u64, to: u64) -> Vec<&FileInfo> {
    files
        .iter()
        .filter(|f| {
            let next =
                files.iter().filter(|g| g.worker == f.worker && g.first_ns > f.first_ns).map(|g| g.first_ns).min();
            f.first_ns <= to && next.is_none_or(|n| n >= from)
        })
        .collect()
}

/// Export the selected packets to `out` as one pcap file (nanosecond
/// timestamps). An empty selection still writes a valid, empty pcap.
pub fn export<W: Write>(data: &Path, sel: &Selector, out: W) -> Result<ExportReport, RecordError> {
    if sel.from_ns > sel.to_ns {
        return Err(RecordError::Invalid("the time range ends before it starts".into()));
    }
    let dirs: Vec<PathBuf> = if sel.sessions.is_empty() {
        list(data)?.into_iter().map(|s| super::recordings_dir(data).join(s.spec.name)).collect()
    } else {
        sel.sessions.iter().map(|n| session_dir(data, n)).collect::<Result<_, _>>()?
    };
    let mut report = ExportReport::default();
    let mut readers = Vec::new();
    for dir in &dirs {
        let files = files_of(dir)?;
        for f in candidates(&files, sel.from_ns, sel.to_ns) {
            match Reader::open(&dir.join(&f.name)) {
                Ok(Some(r)) => readers.push(r),
                Ok(None) => {}
                Err(e) => report.bad_files.push(e),
            }
        }
    }
    report.files_read = readers.len();
    // Heap of (timestamp, reader) for every reader holding a record.
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if advance(r, &mut report) {
            heap.push(Reverse((r.ts, i)));
        }
    }
    let snaplen = 262_144;
    let mut writer: Option<PcapWriter<W>> = None;
    let mut out = Some(out);
    let cfg = DecodeConfig::default();
    let mut decoded = Decoded::default();
    // Fingerprints of the packets written at the current timestamp.
    let mut same_ts: (u64, Vec<u64>) = (u64::MAX, Vec::new());
    let mut first_link: Option<LinkType> = None;
    while let Some(Reverse((ts, i))) = heap.pop() {
        let r = &mut readers[i];
        if ts > sel.to_ns {
            continue;
        }
        if ts >= sel.from_ns && selected(sel, r, &cfg, &mut decoded) {
            let fp = fingerprint(r);
            if same_ts.0 != ts {
                same_ts = (ts, Vec::new());
            }
            if same_ts.1.contains(&fp) {
                report.duplicates += 1;
            } else {
                same_ts.1.push(fp);
                match first_link {
                    None => first_link = Some(r.link),
                    Some(l) if l != r.link => return Err(RecordError::MixedLinks(l.name(), r.link.name())),
                    Some(_) => {}
                }
                if writer.is_none() {
                    let o = out.take().expect("the output is taken once");
                    writer =
                        Some(PcapWriter::new(o, r.link, snaplen).map_err(|e| RecordError::io("export output", e))?);
                }
                let w = writer.as_mut().expect("opened above");
                w.write(ts, &r.buf, r.wire_len).map_err(|e| RecordError::io("export output", e))?;
                report.packets += 1;
                report.bytes += r.buf.len() as u64;
            }
        }
        if advance(r, &mut report) {
            heap.push(Reverse((r.ts, i)));
        }
    }
    let w = match writer {
        Some(w) => w,
        // Nothing selected: an empty capture is still a valid file.
        None => PcapWriter::new(out.take().expect("unused output"), LinkType::ETHERNET, snaplen)
            .map_err(|e| RecordError::io("export output", e))?,
    };
    w.into_inner().map_err(|e| RecordError::io("export output", e))?;
    Ok(report)
}

/// Read a reader's next record; false at its end (noted when truncated or bad).
fn advance(r: &mut Reader, report: &mut ExportReport) -> bool {
    match r.next() {
        Ok(Next::Record) => true,
        Ok(Next::End) => false,
        Ok(Next::Truncated) => {
            report.truncated_files.push(r.path.clone());
            false
        }
        Err(e) => {
            report.bad_files.push(e);
            false
        }
    }
}

fn selected(sel: &Selector, r: &Reader, cfg: &DecodeConfig, decoded: &mut Decoded) -> bool {
    if sel.flow.is_none() && sel.filter.is_none() {
        return true;
    }
    decode(r.link, &r.buf, cfg, decoded);
    sel.flow.is_none_or(|f| f.matches(decoded)) && sel.filter.as_ref().is_none_or(|f| f.matches(decoded))
}

fn fingerprint(r: &Reader) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    r.wire_len.hash(&mut h);
    r.buf.hash(&mut h);
    h.finish()
}
