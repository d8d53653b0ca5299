//! Online reputation lookups: one thread per configured service (AbuseIPDB,
//! VirusTotal) answers the addresses detection offers it
//! (`tapstream_engine::detect::reputation`), within the service's rate
//! limits (requests per minute and per day), each request bounded by a
//! timeout. Nothing here is on the packet path: detection never waits for
//! an answer. The API key goes only into the request header; it is never
//! logged or shown.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapstream_engine::alert::{Severity, Verdict};
use tapstream_engine::detect::reputation::{Answer, Lookups, Reputation};

/// Which service, and so which request and answer shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// `GET {url}?ipAddress=IP&maxAgeInDays=90`, header `Key`; the score is
    /// `data.abuseConfidenceScore` (0–100).
    AbuseIpdb,
    /// `GET {url}/IP`, header `x-apikey`; the score is the number of engines
    /// that call the address malicious (`last_analysis_stats.malicious`).
    VirusTotal,
}

impl Provider {
    pub fn from_name(s: &str) -> Option<Provider> {
        match s {
            "abuseipdb" => Some(Provider::AbuseIpdb),
            "virustotal" => Some(Provider::VirusTotal),
            _ => None,
        }
    }

    /// As in the configuration (and the cache file's name).
    pub fn name(self) -> &'static str {
        match self {
            Provider::AbuseIpdb => "abuseipdb",
            Provider::VirusTotal => "virustotal",
        }
    }

    /// Shown in alerts.
    pub fn title(self) -> &'static str {
        match self {
            Provider::AbuseIpdb => "AbuseIPDB",
            Provider::VirusTotal => "VirusTotal",
        }
    }

    pub fn default_url(self) -> &'static str {
        match self {
            Provider::AbuseIpdb => "https://api.abuseipdb.com/api/v2/check",
            Provider::VirusTotal => "https://www.virustotal.com/api/v3/ip_addresses",
        }
    }

    /// (per minute, per day): the services' free tiers.
    pub fn default_limits(self) -> (u32, u32) {
        match self {
            Provider::AbuseIpdb => (60, 1000),
            Provider::VirusTotal => (4, 500),
        }
    }

    /// (suspicious, malicious) score thresholds.
    pub fn default_thresholds(self) -> (u32, u32) {
        match self {
            Provider::AbuseIpdb => (50, 90),
            Provider::VirusTotal => (1, 5),
        }
    }
}

/// The API key: shown nowhere.
#[derive(Clone, PartialEq)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<hidden>)")
    }
}

/// One configured service (validated settings).
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub provider: Provider,
    pub url: String,
    pub key: ApiKey,
    pub per_minute: u32,
    pub per_day: u32,
    pub cache: Duration,
    pub timeout: Duration,
    pub suspicious: u32,
    pub malicious: u32,
    /// Answers are kept here across restarts (set with the data directory).
    pub cache_file: Option<PathBuf>,
}

/// One kept answer: when it was given, and the verdict when flagged.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Kept {
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flagged: Option<KeptFlag>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct KeptFlag {
    severity: String,
    verdict: String,
    detail: String,
}

/// The cache file: the day's requests so far, and the answers.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    /// Days since the epoch (UTC) and requests made that day.
    #[serde(default)]
    day: u64,
    #[serde(default)]
    used: u32,
    #[serde(default)]
    answers: HashMap<IpAddr, Kept>,
}

/// The service's answers for `cache` time and the day's request count,
/// kept in a file so a restart neither asks again about the same addresses
/// nor starts the day's budget over. Written atomically (temporary file,
/// then rename) when it changed, once the queue is idle or ten seconds
/// after the last write.
struct AnswerCache {
    path: Option<PathBuf>,
    ttl: u64,
    map: HashMap<IpAddr, Kept>,
    /// (day, requests made that day).
    day: (u64, u32),
    dirty: bool,
    saved: Instant,
}

/// Kept answers at most (the oldest go first).
const CACHE_MAX: usize = 200_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl AnswerCache {
    fn load(path: Option<PathBuf>, ttl: Duration) -> AnswerCache {
        let ttl = ttl.as_secs().max(1);
        let mut file = CacheFile::default();
        if let Some(p) = &path {
            match std::fs::read(p) {
                Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                    Ok(f) => file = f,
                    Err(e) => tracing::warn!(file = %p.display(), "reputation cache unreadable ({e}); starting empty"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %p.display(), "reputation cache: {e}; starting empty"),
            }
        }
        let now = unix_now();
        let mut map = file.answers;
        map.retain(|_, k| now < k.at + ttl);
        let day = if file.day == utc_day() { (file.day, file.used) } else { (utc_day(), 0) };
        AnswerCache { path, ttl, map, day, dirty: false, saved: Instant::now() }
    }

    /// Requests made today (UTC; the count starts over at midnight).
    fn used_today(&mut self) -> u32 {
        if self.day.0 != utc_day() {
            self.day = (utc_day(), 0);
        }
        self.day.1
    }

    fn count_request(&mut self) {
        self.used_today();
        self.day.1 += 1;
        self.dirty = true;
    }

    /// A fresh answer kept for `ip`.
    fn get(&self, ip: IpAddr) -> Option<Answer> {
        let k = self.map.get(&ip).filter(|k| unix_now() < k.at + self.ttl)?;
        Some(match &k.flagged {
            None => Answer::Clean(ip),
            Some(f) => Answer::Flagged(Reputation {
                ip,
                severity: Severity::from_name(&f.severity)?,
                verdict: Verdict::from_name(&f.verdict)?,
                detail: f.detail.clone(),
            }),
        })
    }

    fn put(&mut self, a: &Answer) {
        let (ip, flagged) = match a {
            Answer::Clean(ip) => (*ip, None),
            Answer::Flagged(r) => (
                r.ip,
                Some(KeptFlag {
                    severity: r.severity.name().to_string(),
                    verdict: r.verdict.name().to_string(),
                    detail: r.detail.clone(),
                }),
            ),
            Answer::Failed(_) | Answer::Deferred(_) => return,
        };
        self.map.insert(ip, Kept { at: unix_now(), flagged });
        self.dirty = true;
    }

    fn save_if_due(&mut self, idle: bool) {
        let Some(p) = &self.path else { return };
        if !self.dirty || !(idle || self.saved.elapsed() >= Duration::from_secs(10)) {
            return;
        }
        let now = unix_now();
        let ttl = self.ttl;
        self.map.retain(|_, k| now < k.at + ttl);
        if self.map.len() > CACHE_MAX {
            let mut ages: Vec<u64> = self.map.values().map(|k| k.at).collect();
            ages.sort_unstable();
            let cut = ages[self.map.len() - CACHE_MAX];
            self.map.retain(|_, k| k.at >= cut);
        }
        let file = CacheFile { day: self.day.0, used: self.day.1, answers: std::mem::take(&mut self.map) };
        let bytes = serde_json::to_vec(&file);
        self.map = file.answers;
        let write = || -> std::io::Result<()> {
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            let tmp = p.with_extension("json.tmp");
            std::fs::write(&tmp, bytes.map_err(std::io::Error::other)?)?;
            std::fs::rename(&tmp, p)
        };
        if let Err(e) = write() {
            tracing::warn!(file = %p.display(), "writing the reputation cache: {e}");
        }
        self.dirty = false;
        self.saved = Instant::now();
    }
}

/// What one request came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Answer(Answer),
    /// The service said to slow down (HTTP 429): wait this long.
    SlowDown(IpAddr, Duration),
    /// The key was refused (401/403): every later request would be too.
    Refused(IpAddr, u16),
}

impl Service {
    /// Start the service's thread; detection offers addresses through the
    /// returned queue.
    pub fn start(self) -> Arc<Lookups> {
        // Offered a few a second at most, and no more than the minute allows.
        let per_second = (self.per_minute as usize).div_ceil(60).clamp(1, 16);
        let lookups = Lookups::new(self.provider.title(), self.cache, per_second, 256);
        let l = lookups.clone();
        let name = format!("reputation-{}", self.provider.title().to_lowercase());
        if let Err(e) = std::thread::Builder::new().name(name).spawn(move || self.run(&l)) {
            tracing::error!("reputation lookups: starting the thread: {e}");
        }
        lookups
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .user_agent("tapstream")
            .build()
            .new_agent()
    }

    /// Ask about one address.
    fn ask(&self, agent: &ureq::Agent, ip: IpAddr) -> Result<Outcome, String> {
        let req = match self.provider {
            Provider::AbuseIpdb => agent
                .get(&self.url)
                .query("ipAddress", ip.to_string())
                .query("maxAgeInDays", "90")
                .header("Key", &self.key.0)
                .header("Accept", "application/json"),
            Provider::VirusTotal => agent
                .get(format!("{}/{ip}", self.url.trim_end_matches('/')))
                .header("x-apikey", &self.key.0)
                .header("Accept", "application/json"),
        };
        let mut resp = req.call().map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            404 if self.provider == Provider::VirusTotal => return Ok(Outcome::Answer(Answer::Clean(ip))),
            429 => {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(60)
                    .clamp(1, 3600);
                return Ok(Outcome::SlowDown(ip, Duration::from_secs(wait)));
            }
            401 | 403 => return Ok(Outcome::Refused(ip, status)),
            s => return Err(format!("HTTP status {s}")),
        }
        let body = resp.body_mut().with_config().limit(1 << 20).read_to_string().map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        self.judge(ip, &v).map(Outcome::Answer)
    }

    /// Turn the service's answer into a verdict.
    fn judge(&self, ip: IpAddr, v: &Value) -> Result<Answer, String> {
        let (score, detail) = match self.provider {
            Provider::AbuseIpdb => {
                let d = &v["data"];
                let score = d["abuseConfidenceScore"].as_u64().ok_or("no data.abuseConfidenceScore in the answer")?;
                let reports = d["totalReports"].as_u64().unwrap_or(0);
                (score, format!("abuse confidence {score}%, {reports} reports in 90 days"))
            }
            Provider::VirusTotal => {
                let st = &v["data"]["attributes"]["last_analysis_stats"];
                let bad = st["malicious"].as_u64().ok_or("no data.attributes.last_analysis_stats in the answer")?;
                let sus = st["suspicious"].as_u64().unwrap_or(0);
                let all: u64 = st.as_object().map(|o| o.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
                (bad, format!("{bad} of {all} engines call it malicious, {sus} suspicious"))
            }
        };
        let (severity, verdict) = if score >= self.malicious as u64 {
            (Severity::High, Verdict::Malicious)
        } else if score >= self.suspicious as u64 {
            (Severity::Medium, Verdict::Suspicious)
        } else {
            return Ok(Answer::Clean(ip));
        };
        Ok(Answer::Flagged(Reputation { ip, severity, verdict, detail }))
    }

    fn run(self, l: &Lookups) {
        let mut cache = AnswerCache::load(self.cache_file.clone(), self.cache);
        let agent = self.agent();
        let title = self.provider.title();
        let mut minute: VecDeque<Instant> = VecDeque::new();
        let mut errors = 0u64;
        let mut last_error_log: Option<Instant> = None;
        let mut last_report = Instant::now();
        loop {
            if last_report.elapsed() >= Duration::from_secs(600) {
                last_report = Instant::now();
                let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    service = title,
                    offered = n(&l.stats.offered),
                    answered = n(&l.stats.answered),
                    flagged = n(&l.stats.flagged),
                    failed = n(&l.stats.failed),
                    deferred = n(&l.stats.deferred),
                    queue_full = n(&l.stats.queue_full),
                    today = cache.used_today(),
                    "reputation lookups"
                );
            }
            // Kept answers reach the file within ten seconds even while the
            // queue never runs dry, at once when it does.
            cache.save_if_due(false);
            let Some(ip) = l.next(Duration::from_secs(1)) else {
                cache.save_if_due(true);
                continue;
            };
            // Asked before (this run or an earlier one): no request.
            if let Some(a) = cache.get(ip) {
                l.answer(a);
                continue;
            }
            // Within the day's budget (UTC; it ends at midnight, and a
            // restart carries it over) …
            if cache.used_today() >= self.per_day {
                l.answer(Answer::Deferred(ip));
                continue;
            }
            // … and the minute's.
            while minute.len() >= self.per_minute as usize {
                let oldest = minute[0];
                match Duration::from_secs(60).checked_sub(oldest.elapsed()) {
                    Some(wait) => std::thread::sleep(wait),
                    None => {
                        minute.pop_front();
                    }
                }
            }
            minute.push_back(Instant::now());
            cache.count_request();
            if cache.used_today() == self.per_day {
                tracing::warn!(service = title, "reputation lookups: the day's {} requests are used up", self.per_day);
            }
            match self.ask(&agent, ip) {
                Ok(Outcome::Answer(a)) => {
                    if let Answer::Flagged(r) = &a {
                        tracing::info!(service = title, ip = %r.ip, "reputation: flagged ({})", r.detail);
                    }
                    cache.put(&a);
                    l.answer(a);
                }
                Ok(Outcome::SlowDown(ip, wait)) => {
                    tracing::warn!(
                        service = title,
                        "reputation lookups: the service asks to slow down; waiting {wait:?}"
                    );
                    l.answer(Answer::Failed(ip));
                    std::thread::sleep(wait);
                }
                Ok(Outcome::Refused(ip, status)) => {
                    tracing::error!(
                        service = title,
                        "reputation lookups: the API key was refused (HTTP {status}); trying again in 10 minutes"
                    );
                    l.answer(Answer::Failed(ip));
                    std::thread::sleep(Duration::from_secs(600));
                }
                Err(e) => {
                    errors += 1;
                    l.answer(Answer::Failed(ip));
                    // One line a minute at most, with the count.
                    if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(service = title, errors, "reputation lookup of {ip} failed: {e}");
                        last_error_log = Some(Instant::now());
                    }
                }
            }
        }
    }
}

fn utc_day() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(p: Provider) -> Service {
        let (suspicious, malicious) = p.default_thresholds();
        Service {
            provider: p,
            url: p.default_url().into(),
            key: ApiKey("k3y".into()),
            per_minute: 60,
            per_day: 1000,
            cache: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            suspicious,
            malicious,
            cache_file: None,
        }
    }

    /// Answers are kept across restarts, expire after the cache time, and
    /// failures are not kept.
    #[test]
    fn answers_are_kept_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reputation/abuseipdb.json");
        let bad: IpAddr = "203.0.113.9".parse().unwrap();
        let good: IpAddr = "198.51.100.1".parse().unwrap();
        let failed: IpAddr = "198.51.100.2".parse().unwrap();
        let flag = Answer::Flagged(Reputation {
            ip: bad,
            severity: Severity::High,
            verdict: Verdict::Malicious,
            detail: "abuse confidence 97%".into(),
        });
        let mut c = AnswerCache::load(Some(path.clone()), Duration::from_secs(3600));
        c.put(&flag);
        c.put(&Answer::Clean(good));
        c.put(&Answer::Failed(failed));
        c.count_request();
        c.count_request();
        c.save_if_due(false);
        assert!(!path.exists(), "not due yet: neither idle nor 10 s since the last write");
        c.save_if_due(true);
        let mut c = AnswerCache::load(Some(path.clone()), Duration::from_secs(3600));
        assert_eq!(c.used_today(), 2, "the day's requests carry over a restart");
        assert_eq!(c.get(bad), Some(flag));
        assert_eq!(c.get(good), Some(Answer::Clean(good)));
        assert_eq!(c.get(failed), None);
        // Older than the cache time: gone.
        let mut f: CacheFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f.answers.get_mut(&bad).unwrap().at -= 7200;
        std::fs::write(&path, serde_json::to_vec(&f).unwrap()).unwrap();
        let c = AnswerCache::load(Some(path.clone()), Duration::from_secs(3600));
        assert_eq!(c.get(bad), None);
        assert_eq!(c.get(good), Some(Answer::Clean(good)));
        // A damaged file: an empty cache, not an error.
        std::fs::write(&path, b"{not json").unwrap();
        assert!(AnswerCache::load(Some(path), Duration::from_secs(3600)).map.is_empty());
    }

    #[test]
    fn answers_are_judged_by_the_thresholds() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let a = svc(Provider::AbuseIpdb);
        let j = |score: u64| {
            a.judge(ip, &serde_json::json!({"data": {"abuseConfidenceScore": score, "totalReports": 12}})).unwrap()
        };
        assert_eq!(j(10), Answer::Clean(ip));
        let Answer::Flagged(r) = j(60) else { panic!() };
        assert_eq!((r.severity, r.verdict), (Severity::Medium, Verdict::Suspicious));
        assert_eq!(r.detail, "abuse confidence 60%, 12 reports in 90 days");
        let Answer::Flagged(r) = j(100) else { panic!() };
        assert_eq!((r.severity, r.verdict), (Severity::High, Verdict::Malicious));
        assert!(a.judge(ip, &serde_json::json!({"errors": []})).is_err());
        let v = svc(Provider::VirusTotal);
        let stats = |m: u64| {
            serde_json::json!({"data": {"attributes": {"last_analysis_stats":
                {"malicious": m, "suspicious": 1, "harmless": 60, "undetected": 20}}}})
        };
        assert_eq!(v.judge(ip, &stats(0)).unwrap(), Answer::Clean(ip));
        let Answer::Flagged(r) = v.judge(ip, &stats(7)).unwrap() else { panic!() };
        assert_eq!(r.verdict, Verdict::Malicious);
        assert_eq!(r.detail, "7 of 88 engines call it malicious, 1 suspicious");
    }

    #[test]
    fn the_key_is_never_shown() {
        let s = svc(Provider::AbuseIpdb);
        assert!(!format!("{s:?}").contains("k3y"));
    }
}
