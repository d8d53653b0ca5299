//! Reports kept and reports on a schedule: every generated report is a file
//! under `DATA/reports/` with a row in the control-plane store (who made it,
//! for what range, where it was sent); schedules (daily, weekly, monthly or
//! a cron expression, UTC) are rows too. One thread runs what is due, sends
//! it through the notification channels and keeps the directory within
//! its age and size limits.

use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Filter, Format, Kind, Sources, Span, Spec};
use crate::error::{ApiError, ApiResult};
use crate::store::{AuditEntry, Store, now_ns};
use crate::{AppState, Inner};

/// How long reports are kept, and how much room they may take.
#[derive(Clone, Debug)]
pub struct ReportsConfig {
    pub keep: Duration,
    pub max_bytes: u64,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig { keep: Duration::from_secs(90 * 86_400), max_bytes: 1 << 30 }
    }
}

/// One delivery attempt of a report to a channel.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delivery {
    pub channel: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A kept report.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ReportInfo {
    pub id: i64,
    pub kind: Kind,
    pub format: Format,
    pub from: String,
    pub to: String,
    pub filter: Filter,
    pub size: u64,
    pub created: String,
    /// A user's name, `scheduler` or `cli`.
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<i64>,
    pub delivered: Vec<Delivery>,
    /// Where to download it.
    pub download: String,
    #[serde(skip)]
    pub file: String,
}

fn info_of(r: &rusqlite::Row) -> rusqlite::Result<ReportInfo> {
    let id: i64 = r.get(0)?;
    let kind: String = r.get(1)?;
    let format: String = r.get(2)?;
    let filter: String = r.get(5)?;
    let delivered: Option<String> = r.get(11)?;
    Ok(ReportInfo {
        id,
        kind: Kind::parse(&kind).unwrap_or(Kind::Traffic),
        format: Format::parse(&format).unwrap_or(Format::Pdf),
        from: crate::routes::audit::rfc3339(r.get(3)?),
        to: crate::routes::audit::rfc3339(r.get(4)?),
        filter: serde_json::from_str(&filter).unwrap_or_default(),
        file: r.get(6)?,
        size: r.get::<_, i64>(7)? as u64,
        created: crate::routes::audit::rfc3339(r.get(8)?),
        created_by: r.get(9)?,
        schedule: r.get(10)?,
        delivered: delivered.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or_default(),
        download: format!("/api/reports/{id}"),
    })
}

const COLUMNS: &str =
    "id, kind, format, from_ns, to_ns, filter, file, size, created_ns, created_by, schedule_id, delivered";

pub fn list(store: &Store, limit: u32) -> ApiResult<Vec<ReportInfo>> {
    Ok(store.with(|c| {
        let mut q = c.prepare(&format!("SELECT {COLUMNS} FROM reports ORDER BY created_ns DESC, id DESC LIMIT ?1"))?;
        q.query_map([limit], info_of)?.collect()
    })?)
}

pub fn get(store: &Store, id: i64) -> ApiResult<ReportInfo> {
    store
        .with(|c| c.query_row(&format!("SELECT {COLUMNS} FROM reports WHERE id = ?1"), [id], info_of).optional())?
        .ok_or_else(|| ApiError::not_found(format!("no report {id}")))
}

/// Delete a report and its file.
pub fn delete(store: &Store, data: &Path, id: i64) -> ApiResult<()> {
    let r = get(store, id)?;
    let _ = std::fs::remove_file(super::dir(data).join(&r.file));
    store.with(|c| c.execute("DELETE FROM reports WHERE id = ?1", [id]))?;
    Ok(())
}

/// Who asked for a report (for the store and the audit log).
#[derive(Clone, Debug)]
pub struct Requester {
    pub user: String,
    pub addr: String,
    pub schedule: Option<i64>,
}

/// Generate a report, keep it (file and row) and audit it. A failure is
/// audited too.
pub async fn produce(
    history: &tapstream_query::History,
    store: &Store,
    data: &Path,
    spec: &Spec,
    format: Format,
    who: &Requester,
) -> ApiResult<(ReportInfo, Vec<u8>)> {
    let now = now_ns();
    let result = async {
        let report = super::gather(spec, &Sources { history, store: Some(store) }, now).await?;
        let bytes = super::render(&report, format);
        let dir = super::dir(data);
        std::fs::create_dir_all(&dir)?;
        let stamp = |ns: i64| super::model::time_label(ns).replace([' ', ':'], "").replace('-', "");
        let file = format!(
            "{}-{}-{}-{now}.{}",
            spec.kind.name(),
            stamp(spec.from_ns),
            stamp(spec.to_ns),
            format.name()
        );
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(&file))?;
        let id = store.with(|c| {
            c.execute(
                "INSERT INTO reports (kind, format, from_ns, to_ns, filter, file, size, created_ns, created_by, schedule_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    spec.kind.name(),
                    format.name(),
                    spec.from_ns,
                    spec.to_ns,
                    serde_json::to_string(&spec.filter).unwrap_or_default(),
                    file,
                    bytes.len() as i64,
                    now,
                    who.user,
                    who.schedule
                ],
            )?;
            Ok(c.last_insert_rowid())
        })?;
        Ok::<_, ApiError>((get(store, id)?, bytes))
    }
    .await;
    store.audit(&AuditEntry {
        user: who.user.clone(),
        action: "report_generate",
        target: spec.kind.name().to_string(),
        detail: serde_json::json!({
            "format": format.name(),
            "from": crate::routes::audit::rfc3339(spec.from_ns),
            "to": crate::routes::audit::rfc3339(spec.to_ns),
            "filter": spec.filter,
            "schedule": who.schedule,
            "report": result.as_ref().ok().map(|r| r.0.id),
            "error": result.as_ref().err().map(|e| e.to_string()),
        }),
        addr: who.addr.clone(),
        ok: result.is_ok(),
    })?;
    result
}

/// A schedule as stored and answered.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Schedule {
    pub id: i64,
    pub name: String,
    pub kind: Kind,
    /// `daily`, `weekly`, `monthly` or a cron expression (UTC; a sixth,
    /// leading field for seconds is allowed).
    pub when: String,
    /// The range each report covers, ending at its run time.
    pub range: Span,
    pub format: Format,
    pub filter: Filter,
    /// Notification channels the report is sent through.
    pub channels: Vec<String>,
    pub next_run: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_report: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_by: String,
}

/// A new schedule.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// 1 to 64 letters, digits, `-` or `_`.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_-]+$"))]
    pub name: String,
    pub kind: Kind,
    /// `daily`, `weekly`, `monthly` or a cron expression (UTC).
    #[schemars(length(min = 1, max = 100))]
    pub when: String,
    /// The range each report covers (default: day for daily, week for
    /// weekly, month for monthly, else day).
    #[serde(default)]
    pub range: Option<Span>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub channels: Vec<String>,
}

/// The cron expression for a schedule's `when`, checked.
pub fn cron(when: &str) -> Result<croner::Cron, String> {
    let expr = match when.trim() {
        "daily" => "0 0 * * *",
        "weekly" => "0 0 * * MON",
        "monthly" => "0 0 1 * *",
        e => e,
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| format!("when `{when}`: {e} (daily, weekly, monthly or a cron expression such as `0 6 * * MON`)"))
}

/// The first run of `c` strictly after `after_ns`.
pub fn next_after(c: &croner::Cron, after_ns: i64) -> Result<i64, String> {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(after_ns);
    let n = c.find_next_occurrence(&t, false).map_err(|e| format!("no next run: {e}"))?;
    n.timestamp_nanos_opt().ok_or_else(|| "the next run is out of range".to_string())
}

const SCHEDULE_COLUMNS: &str =
    "id, name, kind, cron, span, format, filter, channels, next_ns, last_ns, last_report, last_error, created_by";

fn schedule_of(r: &rusqlite::Row) -> rusqlite::Result<Schedule> {
    let s = |i: usize| r.get::<_, String>(i);
    Ok(Schedule {
        id: r.get(0)?,
        name: s(1)?,
        kind: Kind::parse(&s(2)?).unwrap_or(Kind::Traffic),
        when: s(3)?,
        range: Span::parse(&s(4)?).unwrap_or(Span::Day),
        format: Format::parse(&s(5)?).unwrap_or(Format::Pdf),
        filter: serde_json::from_str(&s(6)?).unwrap_or_default(),
        channels: serde_json::from_str(&s(7)?).unwrap_or_default(),
        next_run: crate::routes::audit::rfc3339(r.get(8)?),
        last_run: r.get::<_, Option<i64>>(9)?.map(crate::routes::audit::rfc3339),
        last_report: r.get(10)?,
        last_error: r.get(11)?,
        created_by: s(12)?,
    })
}

pub fn schedules(store: &Store) -> ApiResult<Vec<Schedule>> {
    Ok(store.with(|c| {
        let mut q = c.prepare(&format!("SELECT {SCHEDULE_COLUMNS} FROM report_schedules ORDER BY name"))?;
        q.query_map([], schedule_of)?.collect()
    })?)
}

pub fn schedule(store: &Store, id: i64) -> ApiResult<Schedule> {
    store
        .with(|c| {
            c.query_row(&format!("SELECT {SCHEDULE_COLUMNS} FROM report_schedules WHERE id = ?1"), [id], schedule_of)
                .optional()
        })?
        .ok_or_else(|| ApiError::not_found(format!("no report schedule {id}")))
}

/// Check and store a schedule; `known` says whether a channel exists.
pub fn create(store: &Store, n: &NewSchedule, by: &str, known: &dyn Fn(&str) -> bool) -> ApiResult<Schedule> {
    if n.name.is_empty()
        || n.name.len() > 64
        || !n.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::unprocessable("name: 1 to 64 letters, digits, `-` or `_`"));
    }
    let c = cron(&n.when).map_err(ApiError::unprocessable)?;
    let range = n.range.unwrap_or(match n.when.trim() {
        "weekly" => Span::Week,
        "monthly" => Span::Month,
        _ => Span::Day,
    });
    // The filter is checked as a report would check it.
    Spec::new(n.kind, Some(range), None, None, n.filter.clone(), now_ns())?;
    for ch in &n.channels {
        if !known(ch) {
            return Err(ApiError::unprocessable(format!("no notification channel `{ch}`")));
        }
    }
    let next = next_after(&c, now_ns()).map_err(ApiError::unprocessable)?;
    let id = store.with(|c| {
        let exists = c
            .query_row("SELECT 1 FROM report_schedules WHERE name = ?1", [&n.name], |_| Ok(()))
            .optional()?
            .is_some();
        if exists {
            return Ok(None);
        }
        c.execute(
            "INSERT INTO report_schedules (name, kind, cron, span, format, filter, channels, next_ns, created_ns, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                n.name,
                n.kind.name(),
                n.when.trim(),
                span_name(range),
                n.format.unwrap_or(Format::Pdf).name(),
                serde_json::to_string(&n.filter).unwrap_or_default(),
                serde_json::to_string(&n.channels).unwrap_or_default(),
                next,
                now_ns(),
                by
            ],
        )?;
        Ok(Some(c.last_insert_rowid()))
    })?;
    let id = id.ok_or_else(|| ApiError::conflict(format!("a report schedule named `{}` exists already", n.name)))?;
    schedule(store, id)
}

pub fn span_name(s: Span) -> &'static str {
    match s {
        Span::Day => "day",
        Span::Week => "week",
        Span::Month => "month",
    }
}

pub fn delete_schedule(store: &Store, id: i64) -> ApiResult<Schedule> {
    let s = schedule(store, id)?;
    store.with(|c| c.execute("DELETE FROM report_schedules WHERE id = ?1", [id]))?;
    Ok(s)
}

/// Run a schedule now: its report for the range ending `at`, sent through
/// its channels; the schedule remembers the outcome.
pub async fn run(st: &AppState, s: &Schedule, at: i64) -> ApiResult<ReportInfo> {
    let spec = Spec::new(s.kind, Some(s.range), None, None, s.filter.clone(), at)?;
    let who = Requester { user: "scheduler".into(), addr: String::new(), schedule: Some(s.id) };
    let h = st.history().await?;
    let res = produce(h, &st.store, &st.cfg.data_dir, &spec, s.format, &who).await;
    let (mut info, bytes) = match res {
        Ok(r) => r,
        Err(e) => {
            let msg = e.to_string();
            st.store.with(|c| {
                c.execute(
                    "UPDATE report_schedules SET last_ns = ?1, last_error = ?2 WHERE id = ?3",
                    params![at, msg, s.id],
                )
            })?;
            return Err(e);
        }
    };
    let mut delivered = Vec::new();
    if !s.channels.is_empty() {
        let mail = crate::engine::ReportMail {
            subject: format!("[tapstream] {} ({}): {} to {}", s.kind.title(), s.name, info.from, info.to),
            text: format!(
                "{} for {} to {} (UTC), report {} of schedule `{}`, attached as {}.\nAlso on the appliance: {}\n",
                s.kind.title(),
                info.from,
                info.to,
                info.id,
                s.name,
                info.file,
                info.download
            ),
            file_name: info.file.clone(),
            content_type: s.format.content_type().to_string(),
            data: bytes,
            notice: serde_json::json!({
                "report": info.id, "kind": s.kind.name(), "schedule": s.name, "from": info.from, "to": info.to,
                "format": s.format.name(), "size": info.size, "download": info.download,
            }),
        };
        let n = st.engine.notify.clone();
        let channels = s.channels.clone();
        delivered = tokio::task::spawn_blocking(move || {
            channels
                .iter()
                .map(|ch| {
                    let r = match &n {
                        Some(n) => n.send_report(ch, &mail),
                        None => Err("notifications are off in this run".to_string()),
                    };
                    Delivery { channel: ch.clone(), ok: r.is_ok(), error: r.err() }
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(ApiError::internal)?;
    }
    let failed: Vec<String> = delivered
        .iter()
        .filter(|d| !d.ok)
        .map(|d| format!("{}: {}", d.channel, d.error.clone().unwrap_or_default()))
        .collect();
    let err = (!failed.is_empty()).then(|| format!("delivery failed: {}", failed.join("; ")));
    st.store.with(|c| {
        c.execute(
            "UPDATE reports SET delivered = ?1 WHERE id = ?2",
            params![serde_json::to_string(&delivered).unwrap_or_default(), info.id],
        )?;
        c.execute(
            "UPDATE report_schedules SET last_ns = ?1, last_report = ?2, last_error = ?3 WHERE id = ?4",
            params![at, info.id, err, s.id],
        )
    })?;
    if !delivered.is_empty() {
        st.store.audit(&AuditEntry {
            user: "scheduler".into(),
            action: "report_deliver",
            target: s.name.clone(),
            detail: serde_json::json!({ "report": info.id, "delivered": delivered }),
            addr: String::new(),
            ok: failed.is_empty(),
        })?;
    }
    info.delivered = delivered;
    Ok(info)
}

/// Schedules due at `now`: each runs once (missed runs while the appliance
/// was down are not repeated) and is set to its next time.
async fn due(st: &AppState, now: i64) -> ApiResult<()> {
    let due: Vec<(Schedule, i64)> = st.store.with(|c| {
        let mut q =
            c.prepare(&format!("SELECT {SCHEDULE_COLUMNS}, next_ns FROM report_schedules WHERE next_ns <= ?1"))?;
        q.query_map([now], |r| Ok((schedule_of(r)?, r.get::<_, i64>(13)?)))?.collect()
    })?;
    for (s, at) in due {
        let next = cron(&s.when).and_then(|c| next_after(&c, now));
        match next {
            Ok(n) => st
                .store
                .with(|c| c.execute("UPDATE report_schedules SET next_ns = ?1 WHERE id = ?2", params![n, s.id]))?,
            // A schedule that has no next run stops.
            Err(e) => st.store.with(|c| {
                c.execute(
                    "UPDATE report_schedules SET next_ns = ?1, last_error = ?2 WHERE id = ?3",
                    params![i64::MAX, e, s.id],
                )
            })?,
        };
        match run(st, &s, at).await {
            Ok(r) => tracing::info!(schedule = %s.name, report = r.id, "scheduled report made"),
            Err(e) => tracing::warn!(schedule = %s.name, "scheduled report failed: {e}"),
        }
    }
    Ok(())
}

/// Keep the reports directory within its limits: older than `keep` goes,
/// then the oldest until the total fits.
pub fn sweep(store: &Store, data: &Path, cfg: &ReportsConfig, now: i64) -> ApiResult<usize> {
    let cutoff = now - cfg.keep.as_nanos().min(i64::MAX as u128) as i64;
    let rows: Vec<(i64, i64, u64)> = store.with(|c| {
        let mut q = c.prepare("SELECT id, created_ns, size FROM reports ORDER BY created_ns DESC, id DESC")?;
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?.collect()
    })?;
    let mut total = 0u64;
    let mut gone = 0;
    for (id, created, size) in rows {
        total += size;
        if created < cutoff || total > cfg.max_bytes {
            delete(store, data, id)?;
            gone += 1;
        }
    }
    Ok(gone)
}

/// The scheduler thread: runs due schedules every second and sweeps the
/// reports once a minute, until the server's state is gone.
pub fn spawn(st: Weak<Inner>, cfg: ReportsConfig) -> std::io::Result<()> {
    std::thread::Builder::new().name("reports".into()).spawn(move || {
        let mut last_sweep = 0i64;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let Some(inner) = st.upgrade() else { return };
            let st = AppState(inner);
            let now = now_ns();
            let rt = st.query_rt.clone();
            if let Err(e) = rt.block_on(due(&st, now)) {
                tracing::warn!("report schedules: {e}");
            }
            if now - last_sweep >= 60_000_000_000 {
                last_sweep = now;
                match sweep(&st.store, &st.cfg.data_dir, &cfg, now) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "old reports removed"),
                    Err(e) => tracing::warn!("report retention: {e}"),
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_cron_expressions_give_the_next_run() {
        // 2026-12-01 10:30:00 UTC, a Tuesday.
        let t = 1_796_121_000_000_000_000;
        let day = 86_400_000_000_000;
        assert_eq!(next_after(&cron("daily").unwrap(), t).unwrap(), 1_796_169_600_000_000_000);
        assert_eq!(next_after(&cron("weekly").unwrap(), t).unwrap(), 1_796_169_600_000_000_000 + 5 * day);
        assert_eq!(next_after(&cron("monthly").unwrap(), t).unwrap(), 1_798_761_600_000_000_000);
        assert_eq!(next_after(&cron("*/2 * * * * *").unwrap(), t).unwrap(), t + 2_000_000_000);
        assert_eq!(
            next_after(&cron("0 6 * * MON").unwrap(), t).unwrap(),
            1_796_169_600_000_000_000 + 5 * day + 6 * 3_600_000_000_000
        );
        let e = cron("every tuesday").unwrap_err();
        assert!(e.contains("when `every tuesday`"), "{e}");
    }

    #[test]
    fn old_and_oversized_reports_are_swept_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("control.db")).unwrap();
        let dir = super::super::dir(d.path());
        std::fs::create_dir_all(&dir).unwrap();
        let now = 1_796_121_000_000_000_000i64;
        let day = 86_400_000_000_000i64;
        // Ages 100, 10, 5 and 1 days; 400 bytes each.
        for (i, age) in [100, 10, 5, 1].into_iter().enumerate() {
            let file = format!("r{i}.pdf");
            std::fs::write(dir.join(&file), vec![b'x'; 400]).unwrap();
            store
                .with(|c| {
                    c.execute(
                        "INSERT INTO reports (kind, format, from_ns, to_ns, filter, file, size, created_ns, created_by)
                         VALUES ('traffic', 'pdf', 0, 1, '{}', ?1, 400, ?2, 'u')",
                        params![file, now - age * day],
                    )
                })
                .unwrap();
        }
        let cfg = ReportsConfig { keep: Duration::from_secs(90 * 86_400), max_bytes: 1000 };
        // The 100-day-old one by age, then the 10-day-old one by size.
        assert_eq!(sweep(&store, d.path(), &cfg, now).unwrap(), 2);
        let left: Vec<String> = list(&store, 10).unwrap().into_iter().map(|r| r.file).collect();
        assert_eq!(left, ["r3.pdf", "r2.pdf"]);
        assert!(!dir.join("r0.pdf").exists() && !dir.join("r1.pdf").exists() && dir.join("r2.pdf").exists());
        assert_eq!(sweep(&store, d.path(), &cfg, now).unwrap(), 0);
    }
}
