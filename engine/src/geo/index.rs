//! The ASN ranges of one CSV file, kept in a binary index file beside it so
//! a start reads ~13 MB of fixed-width records instead of parsing ~33 MB of
//! text. The index names the size and modification time of the CSV it was
//! made from; any difference, or any damage to the index, and the CSV is
//! parsed again and the index rewritten (write, then rename). Where the
//! directory is not writable the CSV is simply parsed each time.

use std::path::{Path, PathBuf};

use super::{AsnRanges, GeoError};

const MAGIC: &[u8; 8] = b"TSASNIX1";
const HEAD: usize = 8 + 8 + 8 + 4 + 8 + 8 + 8;
const V4: usize = 16;
const V6: usize = 40;

pub(super) struct AsnIndex;

/// What identifies the CSV an index was made from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Source {
    len: u64,
    secs: i64,
    nanos: u32,
}

impl Source {
    fn of(p: &Path) -> Option<Source> {
        let m = std::fs::metadata(p).ok()?;
        let t = m.modified().ok()?;
        let (secs, nanos) = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => (-(e.duration().as_secs() as i64), e.duration().subsec_nanos()),
        };
        Some(Source { len: m.len(), secs, nanos })
    }
}

/// Where the index of `csv` lives: beside it.
pub(super) fn path_of(csv: &Path) -> PathBuf {
    let mut name = csv.file_name().unwrap_or_default().to_os_string();
    name.push(".tapstream-index");
    csv.with_file_name(name)
}

impl AsnIndex {
    /// The ranges of `csv`, from its index when that is current.
    pub(super) fn load(csv: &Path) -> Result<AsnRanges, GeoError> {
        let src = Source::of(csv);
        let idx = path_of(csv);
        if let Some(src) = src
            && let Ok(bytes) = std::fs::read(&idx)
        {
            match decode(&bytes, src) {
                Some(r) => return Ok(r),
                None => {
                    tracing::info!(index = %idx.display(), "ASN index out of date or damaged: parsing the CSV again")
                }
            }
        }
        let r = super::load_csv(csv)?;
        if let Some(src) = src
            && let Err(e) = write(&idx, &encode(&r, src))
        {
            tracing::debug!(index = %idx.display(), "ASN index not written: {e}");
        }
        Ok(r)
    }
}

fn write(idx: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = idx.with_extension(format!("tmp{}", std::process::id()));
    let r = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, idx));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

fn encode(r: &AsnRanges, src: Source) -> Vec<u8> {
    let org_bytes: usize = r.orgs.iter().map(|o| 4 + o.len()).sum();
    let mut b = Vec::with_capacity(HEAD + r.v4.len() * V4 + r.v6.len() * V6 + org_bytes);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&src.len.to_le_bytes());
    b.extend_from_slice(&src.secs.to_le_bytes());
    b.extend_from_slice(&src.nanos.to_le_bytes());
    for n in [r.v4.len(), r.v6.len(), r.orgs.len()] {
        b.extend_from_slice(&(n as u64).to_le_bytes());
    }
    for &(lo, hi, asn, org) in &r.v4 {
        for x in [lo, hi, asn, org] {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    for &(lo, hi, asn, org) in &r.v6 {
        b.extend_from_slice(&lo.to_le_bytes());
        b.extend_from_slice(&hi.to_le_bytes());
        b.extend_from_slice(&asn.to_le_bytes());
        b.extend_from_slice(&org.to_le_bytes());
    }
    for o in &r.orgs {
        b.extend_from_slice(&(o.len() as u32).to_le_bytes());
        b.extend_from_slice(o.as_bytes());
    }
    b
}

/// Little-endian readers over a byte slice; None past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.arr().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.arr().map(u64::from_le_bytes)
    }
}

fn decode(b: &[u8], want: Source) -> Option<AsnRanges> {
    let mut r = Reader(b);
    if r.take(8)? != MAGIC {
        return None;
    }
    let src = Source { len: r.u64()?, secs: i64::from_le_bytes(r.arr()?), nanos: r.u32()? };
    if src != want {
        return None;
    }
    let (n4, n6, norgs) = (r.u64()? as usize, r.u64()? as usize, r.u64()? as usize);
    let v4b = r.take(n4.checked_mul(V4)?)?;
    let v6b = r.take(n6.checked_mul(V6)?)?;
    let le32 = |c: &[u8], i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
    let le128 = |c: &[u8], i: usize| u128::from_le_bytes(c[i..i + 16].try_into().expect("16 bytes"));
    let mut out = AsnRanges {
        v4: v4b.chunks_exact(V4).map(|c| (le32(c, 0), le32(c, 4), le32(c, 8), le32(c, 12))).collect(),
        v6: v6b.chunks_exact(V6).map(|c| (le128(c, 0), le128(c, 16), le32(c, 32), le32(c, 36))).collect(),
        orgs: Vec::with_capacity(norgs.min(b.len())),
        v4_first: Vec::new(),
    };
    for _ in 0..norgs {
        let n = r.u32()? as usize;
        out.orgs.push(std::str::from_utf8(r.take(n)?).ok()?.to_owned());
    }
    let orgs_ok = |o: u32| (o as usize) < norgs;
    let ok = r.0.is_empty() && out.v4.iter().all(|x| orgs_ok(x.3)) && out.v6.iter().all(|x| orgs_ok(x.3));
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&s.parse::<std::net::Ipv4Addr>().unwrap().octets());
        a
    }

    fn open(p: &Path) -> super::super::Geo {
        super::super::Geo::open(&super::super::GeoConfig { country: None, asn: vec![p.to_path_buf()] }).unwrap()
    }

    const A: &str = "1.0.0.0,1.0.0.255,13335,\"Cloudflare, Inc.\"\n2001:db8::,2001:db8::ff,64500,Zürich Net\n";
    // The same length as A, other numbers.
    const B: &str = "1.0.0.0,1.0.0.255,64999,\"Cloudflare, Inc.\"\n2001:db8::,2001:db8::ff,64501,Zürich Net\n";

    /// The first start writes the index; later starts read it instead of
    /// the CSV while the CSV's size and time are unchanged.
    #[test]
    fn the_index_is_written_once_and_read_while_the_csv_is_unchanged() {
        assert_eq!(A.len(), B.len());
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("asn-ipv4.csv");
        std::fs::write(&csv, A).unwrap();
        let g = open(&csv);
        assert_eq!(g.asn_full(&v4("1.0.0.9"), false), Some((13335, "Cloudflare, Inc.")));
        let idx = path_of(&csv);
        assert!(idx.exists(), "no index written");
        // Same size and time, other content: the index answers (so it is
        // what a start reads).
        let t = std::fs::metadata(&csv).unwrap().modified().unwrap();
        std::fs::write(&csv, B).unwrap();
        std::fs::File::options().write(true).open(&csv).unwrap().set_modified(t).unwrap();
        let g = open(&csv);
        assert_eq!(g.asn(&v4("1.0.0.9"), false), Some(13335));
        let six: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(g.asn_full(&six.octets(), true), Some((64500, "Zürich Net")));
        // A new time: the CSV is parsed again and the index replaced.
        std::fs::File::options()
            .write(true)
            .open(&csv)
            .unwrap()
            .set_modified(t + std::time::Duration::from_secs(1))
            .unwrap();
        let g = open(&csv);
        assert_eq!(g.asn(&v4("1.0.0.9"), false), Some(64999));
        assert_eq!(decode(&std::fs::read(&idx).unwrap(), Source::of(&csv).unwrap()).unwrap().v4[0].2, 64999);
    }

    /// A damaged index (cut short, wrong magic, an organisation out of
    /// range, bytes left over) is never believed: the CSV answers.
    #[test]
    fn a_damaged_index_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("asn-ipv4.csv");
        std::fs::write(&csv, A).unwrap();
        open(&csv);
        let idx = path_of(&csv);
        let good = std::fs::read(&idx).unwrap();
        let src = Source::of(&csv).unwrap();
        assert!(decode(&good, src).is_some());
        let mut bad_org = good.clone();
        bad_org[HEAD + 12] = 9; // the v4 range's organisation index
        let mut extra = good.clone();
        extra.push(0);
        let mut magic = good.clone();
        magic[0] = b'X';
        for (what, bytes) in
            [("cut", good[..good.len() - 3].to_vec()), ("org", bad_org), ("extra", extra), ("magic", magic)]
        {
            assert!(decode(&bytes, src).is_none(), "{what}");
            std::fs::write(&idx, &bytes).unwrap();
            let g = open(&csv);
            assert_eq!(g.asn_full(&v4("1.0.0.1"), false), Some((13335, "Cloudflare, Inc.")), "{what}");
            assert_eq!(std::fs::read(&idx).unwrap(), good, "{what}: index rewritten");
        }
    }

    /// A directory that cannot take the index costs only the parse.
    #[test]
    fn no_index_where_it_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("asn-ipv4.csv");
        std::fs::write(&csv, A).unwrap();
        // A directory in the index's place makes the rename fail.
        std::fs::create_dir(path_of(&csv)).unwrap();
        let g = open(&csv);
        assert_eq!(g.asn(&v4("1.0.0.1"), false), Some(13335));
        assert!(path_of(&csv).is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file left");
    }
}
