//! Answers shared by the clients that ask the same question within a
//! moment (dashboards polling the same view): fresh for a second, then
//! served stale while one refresh runs in the background, so a poll never
//! waits on a history query but the first of its kind.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;

use crate::error::ApiResult;

/// Keys kept at most (the oldest go first).
const MAX_KEYS: usize = 256;

struct Entry {
    at: Instant,
    value: Bytes,
    refreshing: bool,
}

#[derive(Default)]
pub struct AnswerCache {
    map: Arc<Mutex<HashMap<String, Entry>>>,
    /// One computation per key when nothing is cached: the others wait for it.
    misses: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AnswerCache {
    /// The answer for `key`: cached if younger than `fresh`; if younger
    /// than `stale`, the cached one while `compute` refreshes it in the
    /// background; otherwise computed now. Errors are never cached.
    pub async fn get<F, Fut>(&self, key: String, fresh: Duration, stale: Duration, compute: F) -> ApiResult<Bytes>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ApiResult<Bytes>> + Send + 'static,
    {
        {
            let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = m.get_mut(&key) {
                let age = e.at.elapsed();
                if age < fresh {
                    return Ok(e.value.clone());
                }
                if age < stale {
                    if !e.refreshing {
                        e.refreshing = true;
                        let (map, key) = (self.map.clone(), key.clone());
                        tokio::spawn(async move {
                            let r = compute().await;
                            let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
                            match r {
                                Ok(v) => {
                                    m.insert(key, Entry { at: Instant::now(), value: v, refreshing: false });
                                }
                                Err(_) => {
                                    if let Some(e) = m.get_mut(&key) {
                                        e.refreshing = false;
                                    }
                                }
                            }
                        });
                    }
                    return Ok(e.value.clone());
                }
            }
        }
        let gate = self.misses.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
        let _one = gate.lock().await;
        // Whoever held the gate before may have filled it.
        if let Some(e) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && e.at.elapsed() < stale
        {
            return Ok(e.value.clone());
        }
        let v = compute().await;
        self.misses.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        let v = v?;
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_KEYS
            && let Some(oldest) = m.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(key, Entry { at: Instant::now(), value: v.clone(), refreshing: false });
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn fresh_then_stale_while_one_refresh_runs() {
        let c = AnswerCache::default();
        let n = Arc::new(AtomicU32::new(0));
        async fn ask(c: &AnswerCache, n: &Arc<AtomicU32>, fresh: u64) -> Bytes {
            let n = n.clone();
            c.get("k".into(), Duration::from_millis(fresh), Duration::from_secs(60), move || async move {
                let i = n.fetch_add(1, Ordering::SeqCst);
                Ok(Bytes::from(i.to_string()))
            })
            .await
            .unwrap()
        }
        assert_eq!(ask(&c, &n, 1000).await, "0");
        assert_eq!(ask(&c, &n, 1000).await, "0", "fresh: not computed again");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ask(&c, &n, 10).await, "0", "stale: served at once");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ask(&c, &n, 1000).await, "1", "refreshed in the background");
        assert_eq!(n.load(Ordering::SeqCst), 2);
        let e = c.get("bad".into(), Duration::from_secs(1), Duration::from_secs(1), || async {
            Err(crate::error::ApiError::bad_request("no"))
        });
        assert!(e.await.is_err());
        assert!(!c.map.lock().unwrap().contains_key("bad"), "errors are not cached");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_compute_once() {
        let c = Arc::new(AnswerCache::default());
        let n = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (c, n) = (c.clone(), n.clone());
                tokio::spawn(async move {
                    c.get("same".into(), Duration::from_secs(5), Duration::from_secs(30), move || async move {
                        n.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Bytes::from_static(b"answer"))
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "answer");
        }
        assert_eq!(n.load(Ordering::SeqCst), 1, "one computation for concurrent first askers");
    }
}
