//! Reports end to end: made from a capture's history by the CLI and by the
//! API, read back with poppler (`pdftotext`, `pdftoppm`) and checked for
//! their titles and for figures computed independently from the Parquet
//! history (pyarrow); CSV and JSON hold the same figures; a scheduled
//! report reaches a real SMTP server process with the PDF attached.

mod common;
#[allow(dead_code)]
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};
use server::{Server, wait_for};
use tapstream_api::report::model::{Unit, grouped, human};

const FROM: &str = "2026-01-01T00:00:00Z";
const TO: &str = "2026-01-01T01:00:00Z";

/// 30 s of synthetic traffic at 2,000 packets/s with a SYN flood from the
/// 10th second, analysed (with detection) into a data directory.
fn history(dir: &Path) -> PathBuf {
    let pcap = dir.join("t.pcap");
    let out = common::bin()
        .args(["synth", "--packets", "60000", "--pps", "2000", "--attacks", "syn-flood:6000@10+8", "--out"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let data = dir.join("data");
    let out =
        common::bin().args(["ingest", "--quiet", "--workers", "2", "--data"]).arg(&data).arg(&pcap).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    data
}

fn report(data: &Path, out: &Path, args: &[&str]) -> std::process::Output {
    common::bin().arg("report").args(args).arg("--data").arg(data).arg("--out").arg(out).output().unwrap()
}

fn pdftext(pdf: &Path) -> String {
    let out =
        Command::new("pdftotext").args(["-layout"]).arg(pdf).arg("-").output().expect("pdftotext (poppler-utils)");
    assert!(out.status.success(), "{}: {}", pdf.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Render every page to PNG; the number of pages (each a real image).
fn render_pages(pdf: &Path, dir: &Path) -> usize {
    let prefix = dir.join(pdf.file_stem().unwrap());
    let out = Command::new("pdftoppm").args(["-r", "40", "-png"]).arg(pdf).arg(&prefix).output().expect("pdftoppm");
    assert!(out.status.success(), "{}: {}", pdf.display(), String::from_utf8_lossy(&out.stderr));
    let stem = prefix.file_name().unwrap().to_str().unwrap().to_string();
    let pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "png") && p.file_name().unwrap().to_str().unwrap().starts_with(&stem)
        })
        .collect();
    for p in &pages {
        let png = std::fs::read(p).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "{}: {} bytes", p.display(), png.len());
    }
    pages.len()
}

/// Figures from the Parquet history by an outside reader (pyarrow): total
/// bytes on the wire (stats), the top source by IP bytes and its bytes,
/// and distinct alerts by severity.
fn independent(data: &Path) -> Value {
    let script = r#"
import sys, json, glob, collections
import pyarrow.parquet as pq, pyarrow.compute as pc
d = sys.argv[1]
def table(name):
    files = sorted(glob.glob(f"{d}/{name}/**/*.parquet", recursive=True))
    return pq.ParquetDataset(files).read() if files else None
stats = table("stats")
flows = table("flows")
by_src = collections.Counter()
for o, a, b in zip(flows["orig_h"].to_pylist(), flows["orig_ip_bytes"].to_pylist(), flows["resp_ip_bytes"].to_pylist()):
    by_src[o] += a + b
top = sorted(by_src.items(), key=lambda kv: (-kv[1], kv[0]))[0]
alerts = table("alerts")
sev = collections.defaultdict(set)
if alerts is not None:
    for i, s in zip(alerts["id"].to_pylist(), alerts["severity"].to_pylist()):
        sev[s].add(i)
print(json.dumps({"bytes": pc.sum(stats["bytes"]).as_py(), "packets": pc.sum(stats["packets"]).as_py(),
                  "top_src": top[0], "top_src_bytes": top[1],
                  "alerts": {k: len(v) for k, v in sev.items()}}))
"#;
    let out = Command::new("python3").args(["-c", script]).arg(data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn section<'a>(r: &'a Value, title: &str) -> &'a Value {
    r["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"].as_str().unwrap().starts_with(title))
        .map(|s| &s["body"])
        .unwrap_or_else(|| panic!("no section {title}"))
}

fn figure(r: &Value, label: &str) -> f64 {
    section(r, "Summary")["figures"].as_array().unwrap().iter().find(|f| f["label"] == label).unwrap()["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn cli_reports_hold_the_figures_of_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let data = history(dir.path());
    let truth = independent(&data);
    let range = ["--from", FROM, "--to", TO];

    // Traffic: JSON, CSV and PDF of one report agree with the history.
    let j = dir.path().join("traffic.json");
    let out = report(&data, &j, &[&["--kind", "traffic"][..], &range].concat());
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    let bytes = truth["bytes"].as_f64().unwrap();
    assert_eq!(figure(&r, "Traffic"), bytes);
    assert_eq!(figure(&r, "Packets"), truth["packets"].as_f64().unwrap());
    assert_eq!(figure(&r, "Packets"), 60_000.0);
    let crit_high =
        truth["alerts"]["high"].as_f64().unwrap_or(0.0) + truth["alerts"]["critical"].as_f64().unwrap_or(0.0);
    let sev = &section(&r, "Alerts by severity")["points"];
    let chart_ch: f64 = sev
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["label"] == "high" || p["label"] == "critical")
        .map(|p| p["value"].as_f64().unwrap())
        .sum();
    assert_eq!(chart_ch, crit_high);
    assert!(crit_high >= 1.0, "the SYN flood raised an alert: {truth}");
    let talkers = &section(&r, "Top talkers")["points"];
    assert_eq!(talkers[0]["label"], truth["top_src"]);
    assert_eq!(talkers[0]["value"].as_f64().unwrap(), truth["top_src_bytes"].as_f64().unwrap());
    let line = &section(&r, "Bandwidth over time")["points"];
    assert!(!line.as_array().unwrap().is_empty());

    let c = dir.path().join("traffic.csv");
    assert!(report(&data, &c, &[&["--kind", "traffic"][..], &range].concat()).status.success());
    let csv = std::fs::read_to_string(&c).unwrap();
    assert!(csv.starts_with("section,row,column,value\n"), "{csv}");
    assert!(csv.contains(&format!("\nSummary,Traffic,value,{}\n", bytes as u64)), "{csv}");
    assert!(csv.contains("\nreport,,title,Traffic summary\n"));

    let p = dir.path().join("traffic.pdf");
    assert!(report(&data, &p, &[&["--kind", "traffic"][..], &range].concat()).status.success());
    let text = pdftext(&p);
    for want in [
        "Traffic summary",
        "2026-01-01 00:00:00 to 2026-01-01 01:00:00 (UTC)",
        "Bandwidth over time",
        "Protocol distribution (bytes)",
        "Top talkers (sources by bytes)",
        "Traffic by country",
        "Alerts by severity",
        "Top services (responder port)",
        truth["top_src"].as_str().unwrap(),
        &human(bytes, Unit::Bytes),
        &grouped(60_000.0),
    ] {
        assert!(text.contains(want), "`{want}` not in the PDF:\n{text}");
    }
    assert!(render_pages(&p, dir.path()) >= 1);

    // Talkers: the top source's exact byte count is in its table.
    let p = dir.path().join("talkers.pdf");
    assert!(report(&data, &p, &[&["--kind", "talkers"][..], &range].concat()).status.success());
    let text = pdftext(&p);
    for want in ["Top talkers and protocols", "Top sources", "Top destinations", "Top conversations", "Top ports"] {
        assert!(text.contains(want), "`{want}` not in the PDF:\n{text}");
    }
    let exact = grouped(truth["top_src_bytes"].as_f64().unwrap());
    assert!(
        text.lines().any(|l| l.trim_start().starts_with(truth["top_src"].as_str().unwrap()) && l.contains(&exact)),
        "no row `{} … {exact}` in:\n{text}",
        truth["top_src"]
    );

    // Alerts: the flood, with its explanation, in the table.
    let p = dir.path().join("alerts.pdf");
    assert!(report(&data, &p, &[&["--kind", "alerts"][..], &range].concat()).status.success());
    let text = pdftext(&p);
    for want in ["Alerts and anomalies", "Alerts by severity", "Top rules", "syn_flood", "Alerts raised per minute"] {
        assert!(text.contains(want), "`{want}` not in the PDF:\n{text}");
    }
    let j = dir.path().join("alerts.json");
    assert!(report(&data, &j, &[&["--kind", "alerts"][..], &range].concat()).status.success());
    let r: Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    let total: f64 = truth["alerts"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert_eq!(figure(&r, "Alerts"), total);

    // A filter narrows the figures: only port 80's connections.
    let j = dir.path().join("port80.json");
    assert!(report(&data, &j, &[&["--kind", "traffic", "--port", "80"][..], &range].concat()).status.success());
    let r: Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
    assert_eq!(r["filter"], "port 80");
    let services = section(&r, "Top services")["rows"].as_array().unwrap().clone();
    assert!(
        !services.is_empty() && services.iter().all(|row| row[0].as_str().unwrap().starts_with("80/")),
        "{services:?}"
    );
    assert!(figure(&r, "Traffic") < bytes);

    // Bad input: a clear error, no file.
    for (args, msg) in [
        (vec!["--kind", "traffic", "--from", TO, "--to", FROM], "`from` must be before `to`"),
        (vec!["--kind", "alerts", "--cidr", "10.0.0.0/8"], "the alerts report cannot be filtered by cidr"),
        (vec!["--kind", "traffic", "--ip", "nope"], "ip `nope` is not an address"),
        (vec!["--kind", "incidents"], "no control-plane store"),
    ] {
        let o = dir.path().join("bad.pdf");
        let out = report(&data, &o, &args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(msg),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!o.exists());
    }
    let out = report(&data, &dir.path().join("x.txt"), &["--kind", "traffic"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("must end in .pdf, .csv or .json"), "{out:?}");
}

/// The mail a scheduled report arrived in, its PDF attachment decoded.
fn attachment(mail: &str) -> Option<(String, Vec<u8>)> {
    let mail = mail.replace("\r\n", "\n");
    let d = mail.find("Content-Disposition: attachment")?;
    let t = d + mail[d..].find("Content-Type: application/pdf")?;
    // The name may be split into RFC 2231 parts (filename*0="…"; filename*1="…").
    let name: String = mail[d..t].split('"').skip(1).step_by(2).collect();
    let body = &mail[t + mail[t..].find("\n\n")? + 2..];
    let b64: String = body.lines().take_while(|l| !l.is_empty() && !l.starts_with("--")).collect();
    Some((name, base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?))
}

#[test]
fn reports_by_the_api_on_demand_and_on_a_schedule_by_mail() {
    let dir = tempfile::tempdir().unwrap();
    let mail = common::smtp::smtp(dir.path());
    let s = Server::start(
        "[storage]\nflush_interval_secs = 1\n[demo]\nattacks = \"syn-flood:3000@3+600\"\n",
        &["--pps", "1500", "--workers", "1"],
    );
    let admin = s.admin();
    let viewer = s.user(&admin, "vera", "viewer");
    let analyst = s.user(&admin, "tess", "analyst");
    let ch = json!({ "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": mail.port, "security": "none",
                     "from": "tapstream@example.test", "to": ["soc@example.test"] });
    let r = s.call("PUT", "/api/settings/channels/soc-mail", Some(&admin), Some(&ch.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(
        "POST",
        "/api/incidents",
        Some(&analyst),
        Some(r#"{"title":"Flood against the web farm","severity":"high"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Wait until the flood's alert is in the history the reports read.
    wait_for(90, || {
        let q = json!({ "sql": "SELECT count(*) AS n FROM alerts WHERE rule = 'syn_flood'" }).to_string();
        let r = s.call("POST", "/api/query", Some(&admin), Some(&q));
        (r.body["rows"][0]["n"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .expect("the SYN flood is detected");

    let make = |tok: &str, body: Value| s.call("POST", "/api/reports", Some(tok), Some(&body.to_string()));
    let fetch = |tok: &str, id: i64| s.bytes("GET", &format!("/api/reports/{id}"), tok, "");
    let mut ids = std::collections::BTreeMap::new();
    for (kind, title, inside) in [
        ("traffic", "Traffic summary", "Bandwidth over time"),
        ("talkers", "Top talkers and protocols", "Top conversations"),
        ("alerts", "Alerts and anomalies", "syn_flood"),
        ("incidents", "Incident report", "Flood against the web farm"),
        ("audit", "Compliance audit trail", "settings_channel"),
    ] {
        let r = make(&admin, json!({ "kind": kind, "range": "day" }));
        assert_eq!(r.status, 201, "{kind}: {}", r.body);
        assert_eq!(r.body["created_by"], "admin");
        let id = r.body["id"].as_i64().unwrap();
        let (st, headers, pdf) = fetch(&admin, id);
        assert_eq!(st, 200);
        assert!(headers.iter().any(|(k, v)| k == "content-type" && v == "application/pdf"));
        assert!(headers.iter().any(|(k, v)| k == "content-disposition" && v.contains(&format!("{kind}-"))));
        let p = dir.path().join(format!("{kind}.pdf"));
        std::fs::write(&p, &pdf).unwrap();
        let text = pdftext(&p);
        assert!(text.contains(title) && text.contains(inside), "{kind}: `{title}`/`{inside}` not in:\n{text}");
        ids.insert(kind, id);
    }
    // CSV and JSON too.
    for (format, start) in [("csv", &b"section,row,column,value"[..]), ("json", &b"{"[..])] {
        let r =
            make(&analyst, json!({ "kind": "traffic", "format": format, "from": FROM, "to": "2026-01-02T00:00:00Z" }));
        assert_eq!(r.status, 201, "{}", r.body);
        let (_, _, body) = fetch(&viewer, r.body["id"].as_i64().unwrap());
        assert!(body.starts_with(start), "{format}");
    }

    // Roles: viewers read but do not make reports; the audit trail is the admins'.
    assert_eq!(make(&viewer, json!({ "kind": "traffic" })).status, 403);
    assert_eq!(make(&analyst, json!({ "kind": "audit" })).status, 403);
    let list = s.call("GET", "/api/reports", Some(&viewer), None);
    assert_eq!(list.status, 200);
    assert!(list.body.as_array().unwrap().iter().all(|r| r["kind"] != "audit"));
    assert!(list.body.as_array().unwrap().iter().any(|r| r["kind"] == "incidents"));
    assert_eq!(fetch(&viewer, ids["audit"]).0, 403);
    // Bad requests.
    for (body, status, msg) in [
        (json!({ "kind": "nope" }), 422, "unknown variant"),
        (json!({ "kind": "traffic", "from": TO, "to": FROM }), 400, "`from` must be before `to`"),
        (json!({ "kind": "traffic", "range": "day", "from": FROM }), 400, "either a range"),
        (json!({ "kind": "alerts", "filter": { "cidr": "10.0.0.0/8" } }), 400, "cannot be filtered by cidr"),
        (json!({ "kind": "traffic", "filter": { "ip": "999.1.1.1" } }), 400, "not an address"),
    ] {
        let r = make(&admin, body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains(msg), "{body}: {}", r.body);
    }
    assert_eq!(s.call("GET", "/api/reports/999999", Some(&admin), None).status, 404);

    // A schedule every two seconds, sent by mail.
    let sched = |body: Value| s.call("POST", "/api/reports/schedules", Some(&admin), Some(&body.to_string()));
    for (body, msg) in [
        (json!({ "name": "x", "kind": "traffic", "when": "every tuesday" }), "when `every tuesday`"),
        (
            json!({ "name": "x", "kind": "traffic", "when": "daily", "channels": ["ghost"] }),
            "no notification channel `ghost`",
        ),
        (json!({ "name": "bad name", "kind": "traffic", "when": "daily" }), "name:"),
    ] {
        let r = sched(body.clone());
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert!(r.body["detail"].as_str().unwrap().contains(msg), "{body}: {}", r.body);
    }
    assert_eq!(s.call("POST", "/api/reports/schedules", Some(&analyst), Some("{}")).status, 403);
    let r = sched(
        json!({ "name": "soc-daily", "kind": "traffic", "when": "*/2 * * * * *", "range": "day", "channels": ["soc-mail"] }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let sid = r.body["id"].as_i64().unwrap();
    let (name, pdf) = wait_for(60, || common::smtp::mails(&mail.dir).iter().find_map(|m| attachment(m)))
        .unwrap_or_else(|| {
            let l = s.call("GET", "/api/reports/schedules", Some(&admin), None);
            let log = s.stderr.lock().unwrap().clone();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let first =
                common::smtp::mails(&mail.dir).into_iter().find(|m| m.contains("soc-daily")).unwrap_or_default();
            panic!(
                "no scheduled report by mail: schedules {}; log {tail:#?}; a mail: {}",
                l.body,
                &first[..first.len().min(3000)]
            )
        });
    assert!(name.starts_with("traffic-") && name.ends_with(".pdf"), "{name}");
    let p = dir.path().join("mailed.pdf");
    std::fs::write(&p, &pdf).unwrap();
    assert!(pdftext(&p).contains("Traffic summary"));
    let m = common::smtp::mails(&mail.dir).into_iter().find(|m| m.contains("application/pdf")).unwrap();
    assert!(m.contains("Subject: [tapstream] Traffic summary (soc-daily)"), "{m}");
    // Listed, with its delivery; the schedule remembers its last run.
    let kept = wait_for(20, || {
        let l = s.call("GET", "/api/reports", Some(&admin), None);
        l.body.as_array().unwrap().iter().find(|r| r["schedule"] == sid && r["delivered"][0]["ok"] == true).cloned()
    })
    .expect("the scheduled report is listed as delivered");
    assert_eq!(kept["created_by"], "scheduler");
    assert_eq!(kept["delivered"][0]["channel"], "soc-mail");
    let l = s.call("GET", "/api/reports/schedules", Some(&viewer), None);
    let me = l.body.as_array().unwrap().iter().find(|x| x["id"] == sid).unwrap().clone();
    assert!(me["last_run"].is_string() && me["last_report"].is_i64() && me["last_error"].is_null(), "{me}");
    assert_eq!(s.call("DELETE", &format!("/api/reports/schedules/{sid}"), Some(&admin), None).status, 204);

    // Every generation is audited: by users and by the scheduler.
    let a = s.call("GET", "/api/user_activity?limit=500", Some(&admin), None);
    let entries = a.body.as_array().unwrap();
    let made: Vec<&Value> = entries.iter().filter(|e| e["action"] == "report_generate").collect();
    assert!(made.iter().any(|e| e["user"] == "admin" && e["target"] == "incidents"), "{made:?}");
    assert!(made.iter().any(|e| e["user"] == "scheduler"), "{made:?}");
    assert!(entries.iter().any(|e| e["action"] == "report_deliver" && e["ok"] == true));
    // A deleted report's file goes with it.
    assert_eq!(s.call("DELETE", &format!("/api/reports/{}", ids["traffic"]), Some(&admin), None).status, 204);
    assert_eq!(fetch(&admin, ids["traffic"]).0, 404);
}
