//! Threat feeds from URLs: downloaded at start and on their schedule into a
//! file, written atomically; detection re-reads the file when it changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;

use crate::config::UrlFeed;

/// Download `url` into `path` (through a temporary file renamed into place).
pub fn download(url: &str, path: &Path) -> anyhow::Result<usize> {
    let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(30))).build().new_agent();
    let mut resp = agent.get(url).call()?;
    let body = resp.body_mut().with_config().limit(512 << 20).read_to_vec()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("download");
    std::fs::write(&tmp, &body)?;
    std::fs::rename(&tmp, path)?;
    Ok(body.len())
}

fn age(path: &Path) -> Option<Duration> {
    let m = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    SystemTime::now().duration_since(m).ok()
}

/// At start: a copy younger than the refresh interval is used as it is;
/// otherwise download, falling back to an older copy (logged) — with no copy
/// at all a failed download stops the start, naming the feed.
pub fn fetch_at_start(f: &UrlFeed, path: &Path) -> anyhow::Result<()> {
    if age(path).is_some_and(|a| a < f.refresh) {
        return Ok(());
    }
    match download(&f.url, path) {
        Ok(n) => {
            tracing::info!(feed = %f.name, bytes = n, "threat feed downloaded from {}", f.url);
            Ok(())
        }
        Err(e) if path.exists() => {
            tracing::warn!(feed = %f.name, "downloading {}: {e:#}; using the copy from before", f.url);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("threat feed {}: downloading {}", f.name, f.url)),
    }
}

/// Refresh the copy on the feed's schedule, for as long as the process runs.
pub fn keep_fresh(f: UrlFeed, path: PathBuf) {
    let _ = std::thread::Builder::new().name(format!("feed-{}", f.name)).spawn(move || {
        loop {
            std::thread::sleep(f.refresh);
            match download(&f.url, &path) {
                Ok(n) => tracing::info!(feed = %f.name, bytes = n, "threat feed refreshed"),
                Err(e) => {
                    tracing::warn!(feed = %f.name, "refreshing from {}: {e:#}; keeping the copy from before", f.url)
                }
            }
        }
    });
}
