//! The object store queries read the data dir through: the local file
//! system, except that every file a listing returns is opened there and
//! then, and reads of it go to that open descriptor.
//!
//! That gives each query a snapshot of the files it planned with.
//! Compaction swapping an hour's parts for one file, or retention deleting
//! an hour, only renames and unlinks; an open descriptor still reads the
//! old file, so a query running across either keeps working and sees the
//! data as it was when it listed it. A listing that races such a swap (it
//! read a directory, and a file was gone before it could be opened) lists
//! again, so it never silently misses an hour.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path;
use datafusion::object_store::{
    self, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use futures::StreamExt;
use futures::stream::BoxStream;

struct Open {
    file: Arc<File>,
    meta: ObjectMeta,
    at: Instant,
}

/// Read-only local store with open-at-listing snapshots.
pub struct SnapshotStore {
    inner: Arc<LocalFileSystem>,
    open: Arc<Mutex<HashMap<Path, Open>>>,
}

impl fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotStore")
    }
}

impl fmt::Display for SnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotStore(local)")
    }
}

fn read_only() -> object_store::Error {
    object_store::Error::NotSupported { source: "the history is read-only to queries".into() }
}

fn io_err(path: &Path, e: std::io::Error) -> object_store::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        object_store::Error::NotFound { path: path.to_string(), source: Box::new(e) }
    } else {
        object_store::Error::Generic { store: "SnapshotStore", source: Box::new(e) }
    }
}

impl Default for SnapshotStore {
    fn default() -> Self {
        SnapshotStore::new()
    }
}

impl SnapshotStore {
    pub fn new() -> SnapshotStore {
        SnapshotStore { inner: Arc::new(LocalFileSystem::new()), open: Arc::default() }
    }

    /// Close descriptors opened longer than `age` ago (no query that could
    /// still use them is running: every query has a deadline).
    pub fn forget_older_than(&self, age: Duration) {
        let mut m = self.open.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, o| o.at.elapsed() < age);
    }

    /// Descriptors currently held.
    pub fn held(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Open every listed object; `Ok(None)` when one vanished meanwhile.
    fn open_all(
        inner: &LocalFileSystem,
        open: &Mutex<HashMap<Path, Open>>,
        metas: Vec<ObjectMeta>,
    ) -> object_store::Result<Option<Vec<ObjectMeta>>> {
        let mut out = Vec::with_capacity(metas.len());
        let mut opened = Vec::with_capacity(metas.len());
        for m in metas {
            let fs_path = inner.path_to_filesystem(&m.location)?;
            let file = match File::open(&fs_path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(&m.location, e)),
            };
            // The descriptor is the truth: its size, not the listing's.
            let size = file.metadata().map_err(|e| io_err(&m.location, e))?.len();
            let meta = ObjectMeta { size, ..m };
            out.push(meta.clone());
            opened.push((meta.location.clone(), Open { file: Arc::new(file), meta, at: Instant::now() }));
        }
        let mut g = open.lock().unwrap_or_else(|p| p.into_inner());
        g.extend(opened);
        Ok(Some(out))
    }

    fn held_file(&self, location: &Path) -> Option<(Arc<File>, ObjectMeta)> {
        let g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        g.get(location).map(|o| (o.file.clone(), o.meta.clone()))
    }
}

const LIST_ATTEMPTS: usize = 8;

/// Ranges of one file closer than this are read as one (a scan asks for a
/// row group's column chunks, or the pages the page index kept, at once).
const COALESCE: u64 = 64 * 1024;

/// Read `r` of a held file, on the calling thread. The history is local and
/// mostly in the page cache, where a read is a copy of microseconds: a query
/// makes thousands of them (footers, page indexes, column chunks), and a
/// hand-off to tokio's blocking pool for each cost more than the read, and
/// each pool thread's fresh buffers cost page faults on top. A read that
/// goes to the disk holds this worker that long (other workers take its
/// queued tasks).
fn read_at(file: &File, location: &Path, r: Range<u64>) -> object_store::Result<Bytes> {
    let mut buf = vec![0u8; (r.end - r.start) as usize];
    file.read_exact_at(&mut buf, r.start).map_err(|e| io_err(location, e))?;
    Ok(Bytes::from(buf))
}

#[async_trait::async_trait]
impl ObjectStore for SnapshotStore {
    async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> object_store::Result<PutResult> {
        Err(read_only())
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only())
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let held = match self.held_file(location) {
            Some(h) => Some(h),
            // A file named directly rather than listed (a `head` first):
            // opened now and held like a listed one.
            None if options.head => {
                let meta = self.inner.get_opts(location, GetOptions { head: true, ..Default::default() }).await?.meta;
                match SnapshotStore::open_all(&self.inner, &self.open, vec![meta])? {
                    Some(_) => self.held_file(location),
                    None => None,
                }
            }
            None => None,
        };
        let Some((file, meta)) = held else {
            return self.inner.get_opts(location, options).await;
        };
        let range = match &options.range {
            Some(r) => r.as_range(meta.size).map_err(|e| object_store::Error::Generic {
                store: "SnapshotStore",
                source: Box::new(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())),
            })?,
            None => 0..meta.size,
        };
        let data = if options.head { Bytes::new() } else { read_at(&file, location, range.clone())? };
        let stream = futures::stream::once(async move { Ok(data) }).boxed();
        Ok(GetResult { payload: GetResultPayload::Stream(stream), meta, range, attributes: Default::default() })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        let Some((file, meta)) = self.held_file(location) else {
            return self.inner.get_ranges(location, ranges).await;
        };
        if let Some(r) = ranges.iter().find(|r| r.start > r.end || r.end > meta.size) {
            return Err(object_store::Error::Generic {
                store: "SnapshotStore",
                source: format!("range {r:?} outside {location} ({} bytes)", meta.size).into(),
            });
        }
        object_store::coalesce_ranges(ranges, |r| std::future::ready(read_at(&file, location, r)), COALESCE).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let inner = self.inner.clone();
        let open = self.open.clone();
        let prefix = prefix.cloned();
        futures::stream::once(async move {
            for _ in 0..LIST_ATTEMPTS {
                let metas: Vec<ObjectMeta> = inner
                    .list(prefix.as_ref())
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .filter(|r| !matches!(r, Err(object_store::Error::NotFound { .. })))
                    .collect::<object_store::Result<_>>()?;
                if let Some(v) = SnapshotStore::open_all(&inner, &open, metas)? {
                    return Ok(v);
                }
            }
            Err(object_store::Error::Generic {
                store: "SnapshotStore",
                source: "files kept changing while listing (compaction or retention running?)".into(),
            })
        })
        .map(|r: object_store::Result<Vec<ObjectMeta>>| match r {
            Ok(v) => futures::stream::iter(v.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        for _ in 0..LIST_ATTEMPTS {
            let r = self.inner.list_with_delimiter(prefix).await?;
            if let Some(objects) = SnapshotStore::open_all(&self.inner, &self.open, r.objects)? {
                return Ok(ListResult { common_prefixes: r.common_prefixes, objects });
            }
        }
        Err(object_store::Error::Generic {
            store: "SnapshotStore",
            source: "files kept changing while listing (compaction or retention running?)".into(),
        })
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(read_only())
    }
}
