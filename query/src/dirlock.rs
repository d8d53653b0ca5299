//! One writing process per data dir.
//!
//! A writer starts by removing what a crashed run left behind: hidden
//! `.part-*.tmp` files, the compaction staging area, half-deleted hours
//! (`layout::recover`). Were another process writing the same dir at that
//! moment, those would be its open part files and its compactions in
//! progress, and their rows would be lost. So every process that writes
//! history (`run`, `serve`, `ingest`, `import`) first takes an exclusive
//! advisory lock (`flock`) on `<data>/.writer.lock`, and a second one is
//! refused with the first one's pid and command line. The kernel drops the
//! lock when its holder exits, however it exits (`kill -9` included), so a
//! crashed run never blocks the next.
//!
//! Within one process the lock is shared: the appliance takes it before its
//! API opens the control-plane store (which also clears leftovers, of
//! uploads), and its history writer takes the same one again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::writer::WriterError;

/// The lock file's name under the data dir (hidden: no table lists it).
pub const LOCK_FILE: &str = ".writer.lock";

/// Held while a process writes a data dir; dropping the last handle in the
/// process releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Take `root`'s lock, or share the one this process already holds.
    /// Another process holding it is [`WriterError::InUse`].
    pub fn acquire(root: &Path) -> Result<Arc<DataDirLock>, WriterError> {
        let io = |path: &Path, e| WriterError::Io { path: path.into(), source: e };
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        let key = root.canonicalize().map_err(|e| io(root, e))?;
        static HELD: OnceLock<Mutex<HashMap<PathBuf, Weak<DataDirLock>>>> = OnceLock::new();
        let mut held = HELD.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = held.get(&key).and_then(Weak::upgrade) {
            return Ok(l);
        }
        let path = key.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(WriterError::InUse {
                    root: root.into(),
                    holder: if holder.is_empty() { "another process".into() } else { holder.to_string() },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path, e)),
        }
        // Who holds it, for the next one's error message.
        let args: Vec<String> = std::env::args().collect();
        let who = format!("pid {} ({})\n", std::process::id(), args.join(" "));
        let written = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(who.as_bytes()));
        written.map_err(|e| io(&path, e))?;
        let l = Arc::new(DataDirLock { _file: file, path });
        held.retain(|_, w| w.strong_count() > 0);
        held.insert(key, Arc::downgrade(&l));
        Ok(l)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_shares_its_lock_and_names_itself_in_the_file() {
        let d = tempfile::tempdir().unwrap();
        let a = DataDirLock::acquire(d.path()).unwrap();
        let b = DataDirLock::acquire(&d.path().join(".")).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the same dir, spelt differently, is one lock");
        let text = std::fs::read_to_string(a.path()).unwrap();
        assert!(text.starts_with(&format!("pid {} (", std::process::id())), "{text}");
        // Another open file description of the same file is refused while
        // the lock is held (what a second process sees), and free after.
        let other = File::open(a.path()).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop((a, b));
        other.try_lock().unwrap();
    }
}
