//! Where history lives on disk, and the few moves that change it.
//!
//! ```text
//! <root>/<table>/date=YYYY-MM-DD/hour=HH/part-NNNNN.parquet   committed parts
//! <root>/<table>/date=YYYY-MM-DD/hour=HH/.part-NNNNN.parquet.tmp   being written
//! <root>/.staging/<table>-<hour>-<n>/                        compaction output
//! <root>/.trash/<table>-<hour>-<n>/                          being deleted
//! ```
//!
//! Every change a reader could see is one `rename` (a part file into place,
//! an hour directory out to `.trash`) or one `renameat2(RENAME_EXCHANGE)`
//! (a compacted hour swapped in for its parts), so a listing sees an hour
//! either whole before or whole after. What a crash leaves behind is only
//! ever under a hidden name that no listing includes, and [`recover`]
//! removes it on the next start.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tapstream_engine::records::Table;

pub const HOUR_NS: i64 = 3_600_000_000_000;

/// Compaction output before it is swapped in.
pub const STAGING: &str = ".staging";
/// Hours on their way out.
pub const TRASH: &str = ".trash";

/// One hour partition of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourDir {
    pub table: Table,
    /// Hours since the Unix epoch.
    pub hour: i64,
    pub path: PathBuf,
}

/// `date=YYYY-MM-DD/hour=HH` of an hour since the epoch.
pub fn partition(hour: i64) -> (String, String) {
    let dt = time::OffsetDateTime::from_unix_timestamp(hour.saturating_mul(3600))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (format!("{:04}-{:02}-{:02}", dt.year(), dt.month() as u8, dt.day()), format!("{:02}", dt.hour()))
}

pub fn hour_dir(root: &Path, table: Table, hour: i64) -> PathBuf {
    let (d, h) = partition(hour);
    root.join(table.name()).join(format!("date={d}")).join(format!("hour={h}"))
}

/// Hours since the epoch of `date=YYYY-MM-DD` / `hour=HH` directory names.
pub fn parse_partition(date_dir: &str, hour_dir: &str) -> Option<i64> {
    let d = date_dir.strip_prefix("date=")?;
    let h: i64 = hour_dir.strip_prefix("hour=")?.parse().ok()?;
    if !(0..24).contains(&h) {
        return None;
    }
    let mut it = d.splitn(3, '-');
    let (y, m, day) = (it.next()?.parse().ok()?, it.next()?.parse::<u8>().ok()?, it.next()?.parse().ok()?);
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, day).ok()?;
    let days = (date - time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?).whole_days();
    Some(days * 24 + h)
}

/// The hour partitions of `table` under `root`, oldest first. Directories
/// that are not partitions are left out (and alone).
pub fn list_hours(root: &Path, table: Table) -> Vec<HourDir> {
    let mut out = Vec::new();
    let tdir = root.join(table.name());
    for d in read_dir_names(&tdir) {
        let dpath = tdir.join(&d);
        if !dpath.is_dir() {
            continue;
        }
        for h in read_dir_names(&dpath) {
            if let Some(hour) = parse_partition(&d, &h) {
                let path = dpath.join(&h);
                if path.is_dir() {
                    out.push(HourDir { table, hour, path });
                }
            }
        }
    }
    out.sort_by_key(|h| h.hour);
    out
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
    rd.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect()
}

/// Committed part files of an hour, by name.
pub fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = read_dir_names(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.') && n.ends_with(".parquet"))
        .map(|n| dir.join(n))
        .collect();
    v.sort();
    v
}

/// Bytes of the regular files under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

/// A fresh name under `<root>/<kind>/` (kind is [`STAGING`] or [`TRASH`]).
pub fn scratch(root: &Path, kind: &str, table: Table, hour: i64) -> io::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = root.join(kind);
    fs::create_dir_all(&base)?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    Ok(base.join(format!("{}-{hour}-{}-{n}", table.name(), std::process::id())))
}

/// Take an hour out of every listing at once (one rename into `.trash`),
/// then delete it. Returns the bytes freed. A crash in between leaves only
/// `.trash` content, which [`recover`] removes.
pub fn remove_hour(root: &Path, h: &HourDir) -> io::Result<u64> {
    let bytes = dir_bytes(&h.path);
    let dst = scratch(root, TRASH, h.table, h.hour)?;
    fs::rename(&h.path, &dst)?;
    sync_dir(h.path.parent().unwrap_or(root));
    fs::remove_dir_all(&dst)?;
    // An emptied date directory goes too (a racing writer may have just
    // made a new hour in it: then removing fails and it stays).
    if let Some(date) = h.path.parent() {
        let _ = fs::remove_dir(date);
    }
    Ok(bytes)
}

/// Swap a staged directory in for a live one in one step; the old content
/// ends up at `staged`. There is no non-atomic fallback: where the
/// filesystem cannot exchange, compaction fails and the parts stay.
pub fn exchange(staged: &Path, live: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, staged, CWD, live, RenameFlags::EXCHANGE).map_err(|e| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot swap directories atomically here (renameat2 RENAME_EXCHANGE: {e}); compaction needs ext4, xfs, btrfs or tmpfs"),
        )
    })
}

pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Remove half-deleted hours a crashed retention pass left in `.trash`.
pub fn recover_trash(root: &Path) -> usize {
    remove_children(&root.join(TRASH))
}

/// Remove everything under `dir` (a scratch area), logging each entry.
fn remove_children(dir: &Path) -> usize {
    let mut removed = 0;
    for n in read_dir_names(dir) {
        let p = dir.join(&n);
        tracing::info!(path = %p.display(), "removing leftover of an interrupted compaction or deletion");
        let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        if r.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Remove what a crashed run left: unfinished part files, compaction
/// output never swapped in (or parts swapped out but not yet deleted) and
/// half-deleted hours. None of it was ever visible to a query.
pub fn recover(root: &Path) -> usize {
    let mut removed = remove_children(&root.join(STAGING)) + recover_trash(root);
    for t in Table::ALL {
        let mut stack = vec![root.join(t.name())];
        while let Some(d) = stack.pop() {
            for n in read_dir_names(&d) {
                let p = d.join(&n);
                if p.is_dir() {
                    stack.push(p);
                } else if n.starts_with(".part-") && n.ends_with(".tmp") {
                    tracing::info!(path = %p.display(), "removing unfinished part file from an earlier run");
                    if fs::remove_file(&p).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_round_trip() {
        for hour in [0, 1, 23, 24, 482_000, 500_123] {
            let (d, h) = partition(hour);
            assert_eq!(parse_partition(&format!("date={d}"), &format!("hour={h}")), Some(hour));
        }
        assert_eq!(parse_partition("date=2026-11-22", "hour=24"), None);
        assert_eq!(parse_partition("date=nope", "hour=01"), None);
        assert_eq!(parse_partition(".staging", "hour=01"), None);
    }

    #[test]
    fn exchange_swaps_whole_directories() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("new"), b"1").unwrap();
        fs::write(b.join("old"), b"2").unwrap();
        exchange(&a, &b).unwrap();
        assert!(b.join("new").exists() && !b.join("old").exists());
        assert!(a.join("old").exists());
    }

    #[test]
    fn recover_removes_only_hidden_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let hd = hour_dir(root, Table::Flows, 10);
        fs::create_dir_all(&hd).unwrap();
        fs::write(hd.join("part-00000.parquet"), b"x").unwrap();
        fs::write(hd.join(".part-00001.parquet.tmp"), b"x").unwrap();
        fs::create_dir_all(root.join(STAGING).join("flows-10-1-0")).unwrap();
        fs::create_dir_all(root.join(TRASH).join("dns-3-1-0")).unwrap();
        assert_eq!(recover(root), 3);
        assert!(hd.join("part-00000.parquet").exists());
        assert!(!hd.join(".part-00001.parquet.tmp").exists());
        assert_eq!(read_dir_names(&root.join(STAGING)).len(), 0);
        assert_eq!(list_hours(root, Table::Flows).len(), 1);
    }
}
