//! pcapng: several sections, several interfaces each with its own link type
//! and timestamp resolution; enhanced, simple and obsolete packet blocks.

use super::pcap::{read_u16, read_u32};
use super::{Batch, Desc, Layers, LinkType, SourceError};

pub(crate) const SHB: u32 = 0x0A0D_0D0A;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const IDB: u32 = 1;
const OPB: u32 = 2;
const SPB: u32 = 3;
const EPB: u32 = 6;
/// More interfaces than this in one section is treated as corruption.
const MAX_IFACES: usize = 4096;

#[derive(Clone, Copy)]
struct Iface {
    link: LinkType,
    snaplen: u32,
    /// Timestamp units per second are 10^exp (decimal) or 2^exp (binary).
    units_per_sec: u64,
    offset_sec: i64,
}

pub(crate) struct PcapngState {
    big_endian: bool,
    ifaces: Vec<Iface>,
    /// Interface ids already seen in earlier sections (keeps ids unique per file).
    iface_base: usize,
    pub pos: usize,
}

impl PcapngState {
    pub fn open(path: &str, data: &[u8]) -> Result<PcapngState, SourceError> {
        let mut st = PcapngState { big_endian: false, ifaces: Vec::new(), iface_base: 0, pos: 0 };
        st.section_header(path, data, 0)?;
        Ok(st)
    }

    fn section_header(&mut self, path: &str, data: &[u8], p: usize) -> Result<usize, SourceError> {
        if data.len() < p + 28 {
            return Err(SourceError::Truncated {
                path: path.into(),
                offset: p as u64,
                reason: "section header block needs 28 bytes".into(),
            });
        }
        let bom = read_u32(data, p + 8, false);
        self.big_endian = match bom {
            BYTE_ORDER_MAGIC => false,
            x if x.swap_bytes() == BYTE_ORDER_MAGIC => true,
            x => {
                return Err(SourceError::Corrupt {
                    path: path.into(),
                    offset: (p + 8) as u64,
                    reason: format!("bad pcapng byte-order magic {x:#010x}"),
                });
            }
        };
        let len = read_u32(data, p + 4, self.big_endian) as usize;
        if len < 28 || !len.is_multiple_of(4) || data.len() - p < len {
            return Err(SourceError::Corrupt {
                path: path.into(),
                offset: p as u64,
                reason: format!("bad section header block length {len}"),
            });
        }
        self.iface_base += self.ifaces.len();
        self.ifaces.clear();
        self.pos = p + len;
        Ok(len)
    }

    pub fn fill(&mut self, path: &str, data: &[u8], batch: &mut Batch, max: usize) -> Result<usize, SourceError> {
        let mut n = 0;
        while n < max {
            let p = self.pos;
            if p == data.len() {
                break;
            }
            let be = self.big_endian;
            if data.len() - p < 12 {
                return Err(SourceError::Truncated {
                    path: path.into(),
                    offset: p as u64,
                    reason: format!("block header needs 12 bytes, {} left", data.len() - p),
                });
            }
            let btype = read_u32(data, p, be);
            if btype == SHB {
                self.section_header(path, data, p)?;
                continue;
            }
            let len = read_u32(data, p + 4, be) as usize;
            if len < 12 || !len.is_multiple_of(4) {
                return Err(SourceError::Corrupt {
                    path: path.into(),
                    offset: p as u64,
                    reason: format!("bad block length {len} (block type {btype:#x})"),
                });
            }
            if data.len() - p < len {
                return Err(SourceError::Truncated {
                    path: path.into(),
                    offset: p as u64,
                    reason: format!("block needs {len} bytes, {} left", data.len() - p),
                });
            }
            let trailer = read_u32(data, p + len - 4, be) as usize;
            if trailer != len {
                return Err(SourceError::Corrupt {
                    path: path.into(),
                    offset: p as u64,
                    reason: format!("block length {len} does not match trailing length {trailer}"),
                });
            }
            let body = &data[p + 8..p + len - 4];
            self.pos = p + len;
            match btype {
                IDB => {
                    if body.len() < 8 || self.ifaces.len() >= MAX_IFACES {
                        return Err(SourceError::Corrupt {
                            path: path.into(),
                            offset: p as u64,
                            reason: "bad interface description block".into(),
                        });
                    }
                    let link = LinkType(read_u16(body, 0, be));
                    let snaplen = read_u32(body, 4, be);
                    let mut iface = Iface { link, snaplen, units_per_sec: 1_000_000, offset_sec: 0 };
                    parse_idb_options(&body[8..], be, &mut iface);
                    self.ifaces.push(iface);
                }
                EPB | OPB => {
                    if body.len() < 20 {
                        return Err(SourceError::Corrupt {
                            path: path.into(),
                            offset: p as u64,
                            reason: "packet block shorter than its fixed fields".into(),
                        });
                    }
                    let (id, hi, lo, cap, orig) = if btype == EPB {
                        (
                            read_u32(body, 0, be) as usize,
                            read_u32(body, 4, be),
                            read_u32(body, 8, be),
                            read_u32(body, 12, be),
                            read_u32(body, 16, be),
                        )
                    } else {
                        (
                            read_u16(body, 0, be) as usize,
                            read_u32(body, 4, be),
                            read_u32(body, 8, be),
                            read_u32(body, 12, be),
                            read_u32(body, 16, be),
                        )
                    };
                    let Some(iface) = self.ifaces.get(id).copied() else {
                        return Err(SourceError::Corrupt {
                            path: path.into(),
                            offset: p as u64,
                            reason: format!("packet refers to undeclared interface {id}"),
                        });
                    };
                    if cap as usize > body.len() - 20 {
                        return Err(SourceError::Corrupt {
                            path: path.into(),
                            offset: p as u64,
                            reason: format!("captured length {cap} exceeds its block"),
                        });
                    }
                    let raw = ((hi as u64) << 32) | lo as u64;
                    batch.descs.push(Desc {
                        offset: (p + 8 + 20) as u64,
                        caplen: cap,
                        wire_len: orig.max(cap),
                        ts_ns: to_ns(raw, &iface),
                        link: iface.link,
                        iface: (self.iface_base + id).min(u16::MAX as usize) as u16,
                        layers: Layers::All,
                        in_aux: false,
                    });
                    n += 1;
                }
                SPB => {
                    let Some(iface) = self.ifaces.first().copied() else {
                        return Err(SourceError::Corrupt {
                            path: path.into(),
                            offset: p as u64,
                            reason: "simple packet block before any interface".into(),
                        });
                    };
                    if body.len() < 4 {
                        return Err(SourceError::Corrupt {
                            path: path.into(),
                            offset: p as u64,
                            reason: "simple packet block too short".into(),
                        });
                    }
                    let orig = read_u32(body, 0, be);
                    let mut cap = (orig as usize).min(body.len() - 4);
                    if iface.snaplen > 0 {
                        cap = cap.min(iface.snaplen as usize);
                    }
                    batch.descs.push(Desc {
                        offset: (p + 12) as u64,
                        caplen: cap as u32,
                        wire_len: orig.max(cap as u32),
                        ts_ns: 0,
                        link: iface.link,
                        iface: self.iface_base.min(u16::MAX as usize) as u16,
                        layers: Layers::All,
                        in_aux: false,
                    });
                    n += 1;
                }
                _ => {} // name resolution, statistics, custom, decryption secrets …
            }
        }
        Ok(n)
    }
}

fn parse_idb_options(mut opts: &[u8], be: bool, iface: &mut Iface) {
    while opts.len() >= 4 {
        let code = read_u16(opts, 0, be);
        let len = read_u16(opts, 2, be) as usize;
        let padded = (len + 3) & !3;
        if code == 0 || opts.len() < 4 + len {
            break;
        }
        let v = &opts[4..4 + len];
        match (code, len) {
            (9, 1) => {
                let r = v[0];
                let exp = (r & 0x7f) as u32;
                iface.units_per_sec = if r & 0x80 != 0 {
                    1u64.checked_shl(exp).unwrap_or(1_000_000)
                } else {
                    10u64.checked_pow(exp).unwrap_or(1_000_000)
                };
                if iface.units_per_sec == 0 {
                    iface.units_per_sec = 1_000_000;
                }
            }
            (14, 8) => {
                let b: [u8; 8] = v.try_into().unwrap_or_default();
                iface.offset_sec = if be { i64::from_be_bytes(b) } else { i64::from_le_bytes(b) };
            }
            _ => {}
        }
        if opts.len() < 4 + padded {
            break;
        }
        opts = &opts[4 + padded..];
    }
}

fn to_ns(raw: u64, iface: &Iface) -> u64 {
    let u = iface.units_per_sec;
    let secs = raw / u;
    let frac = raw % u;
    let frac_ns = (frac as u128 * 1_000_000_000 / u as u128) as u64;
    let secs = (secs as i64).saturating_add(iface.offset_sec).max(0) as u64;
    secs.saturating_mul(1_000_000_000).saturating_add(frac_ns)
}
