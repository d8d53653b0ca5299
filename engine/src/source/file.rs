//! Opening a capture file: memory-mapped, format detected from the magic.

use std::fs::File;
use std::sync::Arc;

use super::pcap::{MAGIC_NS, MAGIC_US, PcapState};
use super::pcapng::{PcapngState, SHB};
use super::{Batch, PacketSource, Region, SourceError, SourceStats};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    Pcap,
    Pcapng,
}

enum Reader {
    Pcap(PcapState),
    Pcapng(PcapngState),
}

/// A pcap or pcapng file read through a memory map. Frames are never copied:
/// descriptors point into the map, which every batch keeps alive.
pub struct CaptureFile {
    path: String,
    map: Arc<dyn AsRef<[u8]> + Send + Sync>,
    /// The same map, typed, when the capture is a file (for releasing pages).
    mmap: Option<Arc<Mapped>>,
    /// Pages below this offset have been released.
    released: u64,
    reader: Reader,
    stats: SourceStats,
    failed: bool,
}

struct Mapped(memmap2::Mmap);
impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

struct Empty;
impl AsRef<[u8]> for Empty {
    fn as_ref(&self) -> &[u8] {
        &[]
    }
}

/// Open `path` as a pcap or pcapng capture.
pub fn open_capture(path: &str) -> Result<CaptureFile, SourceError> {
    let io = |e| SourceError::Io { path: path.to_string(), source: e };
    let f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut mmap = None;
    let map: Arc<dyn AsRef<[u8]> + Send + Sync> = if len == 0 {
        Arc::new(Empty)
    } else {
        // Safety: the file is opened read-only. A capture truncated by another
        // process while mapped would fault; captures handed to us are not
        // being rewritten, and this is the standard trade-off of mmap readers.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        #[cfg(unix)]
        let _ = m.advise(memmap2::Advice::Sequential);
        let m = Arc::new(Mapped(m));
        mmap = Some(m.clone());
        m
    };
    let mut c = CaptureFile::from_shared(path, map)?;
    c.mmap = mmap;
    Ok(c)
}

impl CaptureFile {
    /// Read a capture from bytes already in memory.
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<CaptureFile, SourceError> {
        CaptureFile::from_shared(name, Arc::new(bytes))
    }

    fn from_shared(path: &str, map: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Result<CaptureFile, SourceError> {
        let data = (*map).as_ref();
        if data.len() < 4 {
            return Err(SourceError::Truncated {
                path: path.to_string(),
                offset: data.len() as u64,
                reason: "file too short for a capture header".into(),
            });
        }
        let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let reader = if magic == SHB {
            Reader::Pcapng(PcapngState::open(path, data)?)
        } else if [MAGIC_US, MAGIC_NS].contains(&magic) || [MAGIC_US, MAGIC_NS].contains(&magic.swap_bytes()) {
            Reader::Pcap(PcapState::open(path, data)?)
        } else {
            return Err(SourceError::BadMagic { path: path.to_string(), magic });
        };
        Ok(CaptureFile {
            path: path.to_string(),
            map,
            mmap: None,
            released: 0,
            reader,
            stats: SourceStats::default(),
            failed: false,
        })
    }

    pub fn format(&self) -> CaptureFormat {
        match self.reader {
            Reader::Pcap(_) => CaptureFormat::Pcap,
            Reader::Pcapng(_) => CaptureFormat::Pcapng,
        }
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> u64 {
        (*self.map).as_ref().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PacketSource for CaptureFile {
    fn fill(&mut self, batch: &mut Batch, max: usize) -> Result<usize, SourceError> {
        if self.failed {
            return Ok(0);
        }
        batch.region = Region::Shared(self.map.clone());
        let data = (*self.map).as_ref();
        let before = batch.descs.len();
        let r = match &mut self.reader {
            Reader::Pcap(s) => {
                let r = s.fill(&self.path, data, batch, max);
                self.stats.position = s.pos as u64;
                r
            }
            Reader::Pcapng(s) => {
                let r = s.fill(&self.path, data, batch, max);
                self.stats.position = s.pos as u64;
                r
            }
        };
        for d in &batch.descs[before..] {
            self.stats.packets += 1;
            self.stats.bytes += d.wire_len as u64;
        }
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    /// Unmap the pages below `offset` (every consumer is past them), so the
    /// process's resident memory stays flat however large the file. The page
    /// cache keeps them; a late access would simply map them again.
    fn release(&mut self, offset: u64) {
        const STEP: u64 = 64 << 20;
        let Some(m) = &self.mmap else { return };
        let upto = offset & !(STEP - 1);
        if upto <= self.released {
            return;
        }
        // Safety: MADV_DONTNEED on a read-only file mapping only drops page
        // table entries; the memory stays valid and reads refault from the
        // page cache, so no reference into the map is invalidated.
        let r = unsafe {
            m.0.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.released as usize,
                (upto - self.released) as usize,
            )
        };
        if r.is_ok() {
            self.released = upto;
        }
    }

    fn name(&self) -> &str {
        &self.path
    }
}
