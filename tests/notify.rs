//! Notifications end to end: alerts from an ingested capture reach a real
//! SMTP server process on loopback (aiosmtpd), a webhook listener and a
//! syslog listener in the test; a broken mail server costs nothing but its
//! own messages.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bin;
use common::smtp::{free_port, mails, smtp};

/// A minimal HTTP listener: records each request body; answers 500 to the
/// first `fail_first` requests, 200 after.
fn webhook(fail_first: usize) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            n += 1;
            let status = if n <= fail_first { "500 Internal Server Error" } else { "200 OK" };
            if n > fail_first {
                g.lock().unwrap().push(String::from_utf8_lossy(&body).to_string());
            }
            let mut s = r.into_inner();
            let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn alerts_reach_mail_webhooks_and_syslog_and_a_dead_mail_server_costs_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("a.pcap");
    let out = bin()
        .args(["synth", "--packets", "80000", "--pps", "2000", "--attacks", "syn-flood:3000@10+5,port-scan:500@20+3"])
        .arg("--out")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success());
    let server = smtp(dir.path());
    let (hook, hooked) = webhook(1);
    let (slack, slacked) = webhook(0);
    let (rulehook, rulehooked) = webhook(0);
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"tcp-heavy\"\ncondition = \"packets_per_s by dst_ip > 2000 where proto = tcp\"\nactions = [\"alert\", \"notify:rules\"]\n",
    )
    .unwrap();
    let sys = UdpSocket::bind("127.0.0.1:0").unwrap();
    sys.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[detect]\nrules_file = \"{}\"\n[notify]\nretry_backoff_secs = 0.2\n\
             [[notify.channel]]\nname = \"rules\"\nkind = \"webhook\"\nurl = \"{rulehook}\"\n\
             [[notify.channel]]\nname = \"mail\"\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsecurity = \"none\"\nfrom = \"tapstream@example.org\"\nto = [\"soc@example.org\"]\n\
             [[notify.channel]]\nname = \"dead-mail\"\nkind = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsecurity = \"none\"\nfrom = \"tapstream@example.org\"\nto = [\"soc@example.org\"]\n\
             [[notify.channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\
             [[notify.channel]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"{slack}\"\nformat = \"slack\"\n\
             [[notify.channel]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"{}\"\n\
             [[notify.route]]\nmin_severity = \"high\"\nrules = [\"syn_flood\"]\nchannels = [\"mail\", \"dead-mail\", \"hook\", \"siem\"]\n\
             [[notify.route]]\ncategories = [\"scan\"]\nchannels = [\"hook\"]\n\
             [[notify.route]]\ndigest_minutes = 60\nchannels = [\"chat\"]\n",
            rules.display(),
            server.port,
            free_port(),
            sys.local_addr().unwrap()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["ingest", "--quiet"])
        .arg(&pcap)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    // The dead server's retries (0.2 + 0.4 + … s) end within the exit grace.
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert!(log.contains("delivery failed for good after 6 attempts") && log.contains("channel=dead-mail"), "{log}");
    assert!(log.contains("notifications sent=6 failed=1 rate_limited=0"), "{log}");
    // Mail: one message, for the SYN flood (high), none for the scan (medium).
    let m = mails(&server.dir);
    assert_eq!(m.len(), 1, "{m:#?}");
    assert!(m[0].contains("Subject: [tapstream] HIGH syn_flood: SYN rate to 198.51.100.200:80"), "{}", m[0]);
    assert!(m[0].contains("To: soc@example.org"));
    // Webhook: the flood (after one refused try) and the scan, as JSON.
    let h = hooked.lock().unwrap().clone();
    let rules: Vec<String> = h
        .iter()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap()["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rules, vec!["syn_flood", "port_scan_vertical"], "{h:#?}");
    // Slack-style digest: one message with all three.
    let s = slacked.lock().unwrap().clone();
    assert_eq!(s.len(), 1, "{s:#?}");
    let text = serde_json::from_str::<serde_json::Value>(&s[0]).unwrap()["text"].as_str().unwrap().to_string();
    assert!(text.starts_with("*[tapstream] digest: 3 alert events (worst high)*"), "{text}");
    // Syslog: RFC 5424 with facility local0 and the alert as JSON.
    let mut buf = [0u8; 65536];
    let n = sys.recv(&mut buf).unwrap();
    let line = String::from_utf8_lossy(&buf[..n]);
    assert!(line.starts_with("<131>1 2026-01-01T00:00:1"), "{line}");
    assert!(line.contains("\"rule\":\"syn_flood\""), "{line}");
    // A custom rule's notify action: its alert reaches its channel.
    let r = rulehooked.lock().unwrap().clone();
    assert_eq!(r.len(), 1, "{r:#?}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r[0]).unwrap()["rule"], "tcp-heavy");
    // Acknowledging is recorded for escalation.
    let out = bin().args(["alerts", "ack", "Abc123"]).arg("--data").arg(dir.path().join("data")).output().unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(dir.path().join("data/alerts.ack")).unwrap(), "Abc123\n");
    let out = bin().args(["alerts", "ack", "not an id"]).arg("--data").arg(dir.path().join("data")).output().unwrap();
    assert!(!out.status.success());
}
