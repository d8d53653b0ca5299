//! Retention: hours leave the history by age (per table) or when the data
//! dir is over its disk budget (oldest hours first, any table), whichever
//! bites first.
//!
//! Rules an operator can rely on:
//! - The hour being written is never touched: not the current hour, and not
//!   any hour the writer or the compactor holds (see [`HourLocks`]).
//! - Age is measured from the newest hour on disk, capped at the wall clock.
//!   A clock that jumps forward therefore deletes nothing until data really
//!   arrives at the new time, and one that jumps back keeps the "future"
//!   hours (they go last under the budget, like any new data).
//! - An hour leaves in one rename into `.trash` (see `layout`), so a crash
//!   mid-deletion leaves either the whole hour or nothing a query sees.
//! - Every deletion is logged with the table, the hour, the bytes and why.
//! - A day's host index (`hosts`) counts against the budget and leaves
//!   with the first flows hour of its day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tapstream_engine::records::Table;

use crate::layout::{self, HOUR_NS, HourDir};
use crate::writer::{Holder, HourLocks};

/// Shortest and longest age a table may be kept (30 days to 2 years).
pub const MIN_AGE_DAYS: u32 = 30;
pub const MAX_AGE_DAYS: u32 = 730;

#[derive(Clone, Debug)]
pub struct RetentionPolicy {
    /// Age limit per table; tables missing here are kept by age forever.
    pub max_age: BTreeMap<Table, Duration>,
    /// Delete oldest hours while the data dir holds more than this.
    pub disk_budget: Option<u64>,
    /// How often the background sweep runs.
    pub interval: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_age: Table::ALL.into_iter().map(|t| (t, Duration::from_secs(90 * 86_400))).collect(),
            disk_budget: None,
            interval: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The hour ended more than `limit_days` before the reference time.
    Age { limit_days: u64 },
    /// The data dir held `used` bytes, more than `budget`.
    Budget { used: u64, budget: u64 },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Age { limit_days } => write!(f, "older than the {limit_days}-day retention"),
            Reason::Budget { used, budget } => {
                write!(f, "data dir holds {used} bytes, over the {budget}-byte disk budget")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub table: Table,
    pub hour: i64,
    pub path: PathBuf,
    pub bytes: u64,
    pub reason: Reason,
}

/// What one sweep did.
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    pub deleted: Vec<Deletion>,
    /// Hours that were due but in use (writer, compactor): next sweep.
    pub busy: usize,
    /// Bytes still over the budget when nothing more could be deleted.
    pub over_budget_by: Option<u64>,
    pub errors: Vec<String>,
}

/// One pass of retention over `root` at wall-clock time `now_ns`.
pub fn sweep(root: &Path, policy: &RetentionPolicy, now_ns: i64, locks: &HourLocks) -> SweepReport {
    let mut report = SweepReport::default();
    // Host indexes of days that have no flows left (an index build that
    // raced the deletion of its day's last hour).
    for date in crate::hosts::indexed_dates(root) {
        if !root.join(Table::Flows.name()).join(format!("date={date}")).exists() {
            let _ = crate::hosts::remove_day(root, &date);
        }
    }
    let now_hour = now_ns.div_euclid(HOUR_NS);
    let mut hours: Vec<HourDir> = Table::ALL.into_iter().flat_map(|t| layout::list_hours(root, t)).collect();
    hours.sort_by_key(|h| (h.hour, h.table.name()));
    let newest = hours.iter().map(|h| h.hour).max();
    // The reference clock for age: newest data, but never past the wall clock.
    let reference_hour = newest.map_or(now_hour, |n| n.min(now_hour));
    let protected = |h: &HourDir| h.hour >= now_hour || locks.holder((h.table, h.hour)).is_some();

    let mut remaining = Vec::with_capacity(hours.len());
    for h in hours {
        let due = policy.max_age.get(&h.table).and_then(|age| {
            let limit_hours = (age.as_secs() / 3600) as i64;
            (reference_hour - (h.hour + 1) >= limit_hours).then_some(age.as_secs() / 86_400)
        });
        match due {
            Some(limit_days) if !protected(&h) => {
                if delete(root, &h, Reason::Age { limit_days }, locks, &mut report).is_none() {
                    remaining.push(h);
                }
            }
            Some(_) => {
                report.busy += 1;
                remaining.push(h);
            }
            None => remaining.push(h),
        }
    }

    if let Some(budget) = policy.disk_budget {
        // History only: packet recordings (`pcap/`) have their own size caps
        // and are never deleted to make room for history.
        let mut used: u64 = Table::ALL.into_iter().map(|t| layout::dir_bytes(&root.join(t.name()))).sum::<u64>()
            + layout::dir_bytes(&root.join(crate::hosts::HOSTS_DIR))
            + layout::dir_bytes(&root.join(layout::STAGING))
            + layout::dir_bytes(&root.join(layout::TRASH));
        for h in remaining.iter().filter(|h| !protected(h)) {
            if used <= budget {
                break;
            }
            if let Some(freed) = delete(root, h, Reason::Budget { used, budget }, locks, &mut report) {
                used = used.saturating_sub(freed);
            }
        }
        if used > budget {
            report.over_budget_by = Some(used - budget);
            tracing::warn!(
                used,
                budget,
                "data dir is over its disk budget, and what is left is the hour being written (or in use): raise retention.disk_budget_gb"
            );
        }
    }
    report
}

/// Delete one hour; the bytes freed, or None if it was busy or failed.
fn delete(root: &Path, h: &HourDir, reason: Reason, locks: &HourLocks, report: &mut SweepReport) -> Option<u64> {
    let key = (h.table, h.hour);
    if !locks.try_claim(key, Holder::Retention) {
        report.busy += 1;
        return None;
    }
    let r = layout::remove_hour(root, h);
    locks.release(key);
    let (date, hour) = layout::partition(h.hour);
    match r {
        Ok(mut bytes) => {
            // The day's host index no longer matches its hours: it goes
            // with the first of them (the hours left are read directly).
            if h.table == Table::Flows {
                match crate::hosts::remove_day(root, &date) {
                    Ok(b) => bytes += b,
                    Err(e) => report.errors.push(format!("host index of {date}: {e}")),
                }
            }
            tracing::info!(table = h.table.name(), date, hour, bytes, reason = %reason, "retention deleted an hour");
            report.deleted.push(Deletion { table: h.table, hour: h.hour, path: h.path.clone(), bytes, reason });
            Some(bytes)
        }
        Err(e) => {
            tracing::error!(table = h.table.name(), date, hour, error = %e, "retention could not delete an hour");
            report.errors.push(format!("{}: {e}", h.path.display()));
            None
        }
    }
}

/// A policy a running appliance can change (the API's settings): the
/// background sweep reads it before every pass, and a change starts a pass
/// at once.
#[derive(Debug)]
pub struct SharedPolicy {
    policy: std::sync::Mutex<RetentionPolicy>,
    changed: AtomicBool,
}

impl SharedPolicy {
    pub fn new(p: RetentionPolicy) -> SharedPolicy {
        SharedPolicy { policy: std::sync::Mutex::new(p), changed: AtomicBool::new(false) }
    }

    pub fn get(&self) -> RetentionPolicy {
        self.policy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the policy; the next sweep starts within a fraction of a second.
    pub fn set(&self, p: RetentionPolicy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = p;
        self.changed.store(true, Ordering::SeqCst);
    }
}

/// Retention running in the background until `stop` is set.
pub fn spawn(
    root: PathBuf,
    policy: RetentionPolicy,
    locks: Arc<HourLocks>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    spawn_shared(root, Arc::new(SharedPolicy::new(policy)), locks, stop)
}

/// As [`spawn`], under a policy that may change while it runs.
pub fn spawn_shared(
    root: PathBuf,
    shared: Arc<SharedPolicy>,
    locks: Arc<HourLocks>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("retention".into()).spawn(move || {
        layout::recover_trash(&root);
        while !stop.load(Ordering::Relaxed) {
            shared.changed.store(false, Ordering::SeqCst);
            let policy = shared.get();
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
            let r = sweep(&root, &policy, now, &locks);
            if !r.deleted.is_empty() {
                let bytes: u64 = r.deleted.iter().map(|d| d.bytes).sum();
                tracing::debug!(hours = r.deleted.len(), bytes, busy = r.busy, "retention sweep");
            }
            let mut slept = Duration::ZERO;
            while slept < policy.interval && !stop.load(Ordering::Relaxed) && !shared.changed.load(Ordering::SeqCst) {
                let step = Duration::from_millis(200).min(policy.interval - slept);
                std::thread::sleep(step);
                slept += step;
            }
        }
    })
}
