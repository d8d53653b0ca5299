//! Online reputation lookups end to end: `tapstream run` on demo traffic
//! asks a real HTTP service on loopback (speaking AbuseIPDB's API) about the
//! public addresses it sees, within the configured rate limit, once each
//! (cached), with the key in the header and nowhere in the logs; a flagged
//! address raises one `reputation` alert; a service that never answers
//! costs detection nothing.

mod common;
#[allow(dead_code)]
#[path = "common/server.rs"]
mod server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bin;
use serde_json::Value;

const KEY: &str = "test-key-5f1d0c9a7b";

/// One request the service received: the address asked about and the key.
#[derive(Clone, Debug)]
struct Asked {
    ip: IpAddr,
    key: Option<String>,
}

/// A small HTTP/1.1 service on loopback answering as AbuseIPDB does
/// (`GET /api/v2/check?ipAddress=IP&maxAgeInDays=90`, key in `Key`): the
/// first address asked about gets a confidence score of 97, every other 0;
/// or, with `vt`, as VirusTotal does (`GET /api/v3/ip_addresses/IP`, key in
/// `x-apikey`): 7 engines call the first address malicious, the second is
/// unknown (404), the others are clean. With `hang`, it reads requests and
/// never answers.
struct Service {
    port: u16,
    asked: Arc<Mutex<Vec<Asked>>>,
}

fn service(hang: bool) -> Service {
    service_as(hang, false)
}

fn service_as(hang: bool, vt: bool) -> Service {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
    let a = asked.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let a = a.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut key = None;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case(if vt { "x-apikey" } else { "key" })
                    {
                        key = Some(v.trim().to_string());
                    }
                }
                let ip: IpAddr = if vt {
                    let rest = target.strip_prefix("/api/v3/ip_addresses/").unwrap_or_else(|| panic!("{target}"));
                    rest.parse().unwrap_or_else(|_| panic!("{target}"))
                } else {
                    let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                    let params: HashMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
                    assert!(target.starts_with("/api/v2/check?"), "{target}");
                    assert_eq!(params.get("maxAgeInDays"), Some(&"90"), "{target}");
                    params["ipAddress"].parse().unwrap_or_else(|_| panic!("{target}"))
                };
                let nth = {
                    let mut g = a.lock().unwrap();
                    g.push(Asked { ip, key });
                    g.iter().position(|x| x.ip == ip).unwrap()
                };
                if hang {
                    std::thread::sleep(Duration::from_secs(3600));
                    return;
                }
                let (status, body) = if vt {
                    let m = if nth == 0 { 7 } else { 0 };
                    if nth == 1 {
                        ("404 Not Found", r#"{"error":{"code":"NotFoundError"}}"#.to_string())
                    } else {
                        (
                            "200 OK",
                            format!(
                                r#"{{"data":{{"id":"{ip}","attributes":{{"last_analysis_stats":{{"malicious":{m},"suspicious":1,"harmless":60,"undetected":20}}}}}}}}"#
                            ),
                        )
                    }
                } else {
                    let (score, reports) = if nth == 0 { (97, 57) } else { (0, 0) };
                    (
                        "200 OK",
                        format!(
                            r#"{{"data":{{"ipAddress":"{ip}","isPublic":true,"abuseConfidenceScore":{score},"totalReports":{reports}}}}}"#
                        ),
                    )
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Service { port, asked }
}

fn config(dir: &Path, port: u16, extra: &str, reputation: &str) -> std::path::PathBuf {
    let p = dir.join("tapstream.toml");
    let service = if reputation.contains("provider") {
        format!("url = \"http://127.0.0.1:{port}/api/v3/ip_addresses\"")
    } else {
        format!("provider = \"abuseipdb\"\nurl = \"http://127.0.0.1:{port}/api/v2/check\"")
    };
    std::fs::write(
        &p,
        format!(
            "{extra}\n[[intel.reputation]]\n{service}\napi_key_env = \"TAPSTREAM_TEST_ABUSEIPDB_KEY\"\n{reputation}\n"
        ),
    )
    .unwrap();
    p
}

fn run(cfg: &Path, data: &Path, secs: u32) -> String {
    let out = bin()
        .env("TAPSTREAM_TEST_ABUSEIPDB_KEY", KEY)
        .arg("--config")
        .arg(cfg)
        .args(["run", "--pps", "400", "--duration", &secs.to_string(), "--data"])
        .arg(data)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn alerts(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("alerts.json"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Nothing under `data` (logs, alert log, history) holds the key.
fn key_nowhere(data: &Path, output: &str) {
    assert!(!output.contains(KEY), "the key is in the output:\n{output}");
    for f in common::walk(data) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()), "the key is in {}", f.display());
    }
}

#[test]
fn a_flagged_address_raises_one_reputation_alert_and_each_address_is_asked_once() {
    let svc = service(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), svc.port, "", "per_minute = 600\ncache_hours = 1");
    let out = run(&cfg, &data, 8);
    let asked = svc.asked.lock().unwrap().clone();
    assert!(asked.len() >= 2, "{asked:?}\n{out}");
    assert!(asked.iter().all(|a| a.key.as_deref() == Some(KEY)), "every request carries the key: {asked:?}");
    let mut ips: Vec<IpAddr> = asked.iter().map(|a| a.ip).collect();
    ips.sort();
    let n = ips.len();
    ips.dedup();
    assert_eq!(ips.len(), n, "each address is asked once (cached): {asked:?}");
    // Only public addresses: the demo's clients are in 10.0.0.0/8 and fd00::/8.
    assert!(
        asked.iter().all(|a| tapstream_engine::detect::reputation::is_public(&a.ip)),
        "private addresses are never sent out: {asked:?}"
    );
    let bad = asked[0].ip.to_string();
    let all = alerts(&data);
    let rep: Vec<&Value> = all.iter().filter(|a| a["rule"] == "reputation").collect();
    let ids: std::collections::BTreeSet<&str> = rep.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one alert for the one flagged address: {rep:#?}");
    let open = rep[0];
    assert_eq!(open["event"], "open");
    assert_eq!(open["verdict"], "malicious");
    assert_eq!(open["severity"], "high");
    assert_eq!(open["category"], "intel");
    let ips_in: Vec<&str> = open["src_ips"]
        .as_array()
        .unwrap()
        .iter()
        .chain(open["dst_ips"].as_array().unwrap())
        .filter_map(Value::as_str)
        .collect();
    assert!(ips_in.contains(&bad.as_str()), "{open}");
    let why = open["explanation"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "{bad}, which AbuseIPDB reports as abusive (abuse confidence 97%, 57 reports in 90 days)"
        )),
        "{why}"
    );
    key_nowhere(&data, &out);
}

/// Answers are kept in the data directory: a second run over it asks the
/// service about none of the addresses the first run asked about, and the
/// address flagged then is flagged again from the kept answer.
#[test]
fn a_restart_asks_nothing_twice() {
    let svc = service(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), svc.port, "", "per_minute = 600");
    run(&cfg, &data, 5);
    let first: Vec<IpAddr> = svc.asked.lock().unwrap().iter().map(|a| a.ip).collect();
    assert!(!first.is_empty());
    assert!(data.join("reputation/abuseipdb.json").is_file());
    let before = alerts(&data).len();
    let out = run(&cfg, &data, 5);
    let all = svc.asked.lock().unwrap().clone();
    let second: Vec<IpAddr> = all[first.len()..].iter().map(|a| a.ip).collect();
    assert!(second.iter().all(|ip| !first.contains(ip)), "asked again: {second:?} (first run: {first:?})");
    let bad = first[0].to_string();
    let again: Vec<Value> = alerts(&data)
        .into_iter()
        .skip(before)
        .filter(|a| a["rule"] == "reputation" && a["event"] == "open")
        .filter(|a| a["explanation"].as_str().unwrap().contains(&format!("{bad}, which AbuseIPDB")))
        .collect();
    assert_eq!(again.len(), 1, "flagged again from the kept answer:\n{out}");
    key_nowhere(&data, &out);
}

/// Past the day's budget nothing more is asked (the rest wait, deferred),
/// across a restart too.
#[test]
fn the_day_budget_holds() {
    let svc = service(false);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), svc.port, "", "per_minute = 600\nper_day = 2");
    let out = run(&cfg, &data, 5);
    assert_eq!(svc.asked.lock().unwrap().len(), 2, "{out}");
    assert!(out.contains("the day's 2 requests are used up"), "{out}");
    // A restart does not start the day over.
    let out = run(&cfg, &data, 4);
    assert_eq!(svc.asked.lock().unwrap().len(), 2, "{out}");
}

/// The same against a service speaking VirusTotal's API: an unknown
/// address (404) is clean and not asked again.
#[test]
fn virustotal_answers_are_read_the_same_way() {
    let svc = service_as(false, true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path(), svc.port, "", "provider = \"virustotal\"\nper_minute = 600");
    let out = run(&cfg, &data, 8);
    let asked = svc.asked.lock().unwrap().clone();
    assert!(asked.len() >= 3, "{asked:?}\n{out}");
    assert!(asked.iter().all(|a| a.key.as_deref() == Some(KEY)), "{asked:?}");
    let mut ips: Vec<IpAddr> = asked.iter().map(|a| a.ip).collect();
    ips.sort();
    let n = ips.len();
    ips.dedup();
    assert_eq!(ips.len(), n, "each address is asked once, the unknown one too: {asked:?}");
    let bad = asked[0].ip.to_string();
    let all = alerts(&data);
    let rep: Vec<&Value> = all.iter().filter(|a| a["rule"] == "reputation").collect();
    let ids: std::collections::BTreeSet<&str> = rep.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{rep:#?}");
    let why = rep[0]["explanation"].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "{bad}, which VirusTotal reports as abusive (7 of 88 engines call it malicious, 1 suspicious)"
        )),
        "{why}"
    );
    assert_eq!(rep[0]["verdict"], "malicious");
    key_nowhere(&data, &out);
}

#[test]
fn the_rate_limit_holds_and_a_dead_service_costs_detection_nothing() {
    let svc = service(true);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A SYN flood from the second second on: its alert must come as usual
    // while every lookup hangs until its timeout.
    let cfg =
        config(dir.path(), svc.port, "[demo]\nattacks = \"syn-flood:3000@2+4\"", "per_minute = 3\ntimeout_secs = 1");
    let out = run(&cfg, &data, 8);
    let asked = svc.asked.lock().unwrap().len();
    assert!((1..=3).contains(&asked), "at most per_minute requests in the minute: {asked}\n{out}");
    let all = alerts(&data);
    assert!(all.iter().any(|a| a["rule"] == "syn_flood" && a["event"] == "open"), "{all:#?}\n{out}");
    assert!(!all.iter().any(|a| a["rule"] == "reputation"), "{all:#?}");
    assert!(out.contains("reputation lookup of"), "the failure is logged: {out}");
    key_nowhere(&data, &out);
}

/// The server asks too, and `/metrics` counts what each service did.
#[test]
fn the_server_counts_lookups_in_its_metrics() {
    let svc = service(false);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("abuseipdb.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    let s = server::Server::start(
        &format!(
            "[[intel.reputation]]\nprovider = \"abuseipdb\"\nurl = \"http://127.0.0.1:{}/api/v2/check\"\n\
             api_key_file = \"{}\"\nper_minute = 600\n",
            svc.port,
            key.display()
        ),
        &["--pps", "400"],
    );
    let admin = s.admin();
    let value = |text: &str, name: &str| -> f64 {
        let line = format!("{name}{{service=\"AbuseIPDB\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.parse().ok()).unwrap_or(-1.0)
    };
    let metrics = || s.raw("GET", "/metrics", Some(&admin), None).body.as_str().unwrap_or_default().to_string();
    server::wait_for(20, || (value(&metrics(), "tapstream_reputation_flagged_total") >= 1.0).then_some(()))
        .expect("the flagged address is counted");
    // Every request the service got was offered first (more may wait in
    // the queue).
    let asked = svc.asked.lock().unwrap().len() as f64;
    let text = metrics();
    let offered = value(&text, "tapstream_reputation_lookups_total");
    assert!(asked >= 1.0 && offered >= asked, "{offered} offered, {asked} asked:\n{text}");
    assert!(text.contains("# TYPE tapstream_reputation_queue_full_total counter"), "{text}");
    assert_eq!(value(&text, "tapstream_reputation_failed_total"), 0.0, "{text}");
    let log = s.stderr.lock().unwrap().clone() + &s.stdout.lock().unwrap();
    assert!(!log.contains(KEY), "the key is in the server's output");
    s.stop();
}

#[test]
fn bad_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (rep, want) in [
        ("provider = \"shodan\"", "provider `shodan` unknown (abuseipdb, virustotal)"),
        ("provider = \"abuseipdb\"", "needs api_key_env or api_key_file"),
        (
            "provider = \"abuseipdb\"\napi_key_env = \"TAPSTREAM_TEST_NO_SUCH_VAR\"",
            "$TAPSTREAM_TEST_NO_SUCH_VAR is not set",
        ),
        (
            "provider = \"virustotal\"\napi_key_env = \"TAPSTREAM_TEST_ABUSEIPDB_KEY\"\nper_minute = 0",
            "per_minute = 0: must be between 1 and 10000",
        ),
        (
            "provider = \"abuseipdb\"\napi_key_env = \"TAPSTREAM_TEST_ABUSEIPDB_KEY\"\nurl = \"ftp://x\"",
            "must start with http:// or https://",
        ),
    ] {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, format!("[[intel.reputation]]\n{rep}\n")).unwrap();
        let out = bin()
            .env("TAPSTREAM_TEST_ABUSEIPDB_KEY", KEY)
            .arg("--config")
            .arg(&p)
            .args(["run", "--duration", "1", "--data"])
            .arg(dir.path().join("d"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rep}");
        assert!(err.contains(want), "{rep}: {err}");
        assert!(!err.contains(KEY), "{err}");
    }
}
