//! The API server end to end: `tapstream serve` on demo traffic, driven
//! over HTTP as a client would.

mod common;
#[path = "common/server.rs"]
mod server;

use std::path::Path;

use serde_json::{Value, json};
use server::{Server, wait_for};
use tapstream_api::auth::Role;
use tapstream_api::routes::{Access, TABLE};

fn concrete(path: &str) -> String {
    path.replace("{name}", "nobody").replace("{id}", "1")
}

/// Every route in the table, called without a token and with each role's:
/// 401 without one (but on public routes), 403 for a role the table does
/// not allow, and neither (nor a 5xx, 404 route or 405) for one it does.
#[test]
fn every_route_answers_each_role_as_the_table_says() {
    let s = Server::start("", &["--pps", "500", "--workers", "1"]);
    let admin = s.admin();
    let tokens = [
        (Role::Admin, admin.clone()),
        (Role::Analyst, s.user(&admin, "ana", "analyst")),
        (Role::Viewer, s.user(&admin, "vic", "viewer")),
    ];
    let passwords =
        [("admin", s.admin_password.clone()), ("ana", "ana-password-123".into()), ("vic", "vic-password-123".into())];
    assert!(TABLE.len() >= 35, "{} routes", TABLE.len());
    for r in TABLE {
        let path = concrete(r.path);
        let body = if r.method == "GET" || r.method == "DELETE" { None } else { Some("{}") };
        let anon = s.call(r.method, &path, None, body);
        match r.access {
            Access::Public => assert_ne!(anon.status, 401, "{} {} is public", r.method, r.path),
            Access::Roles(_) => {
                assert_eq!(anon.status, 401, "{} {} without a token: {}", r.method, r.path, anon.body);
                assert!(anon.body["error"].is_string() && anon.body["detail"].is_string(), "{}", anon.body);
            }
        }
        for (i, (role, tok)) in tokens.iter().enumerate() {
            // Logging out ends the session: use a fresh one for it.
            let fresh;
            let tok = if r.path == "/api/logout" {
                fresh = s.token(passwords[i].0, &passwords[i].1);
                &fresh
            } else {
                tok
            };
            let rep = s.call(r.method, &path, Some(tok), body);
            let what = format!("{} {} as {}: {} {}", r.method, r.path, role.name(), rep.status, rep.body);
            assert!(rep.status < 500, "{what}");
            if r.access.allows(*role) {
                assert!(![401, 403, 405].contains(&rep.status), "{what}");
                if rep.status == 404 {
                    // A missing thing, not a missing route.
                    assert_ne!(
                        rep.body["detail"].as_str().unwrap_or(""),
                        format!("no route {} {path}", r.method),
                        "{what}"
                    );
                }
            } else {
                assert_eq!(rep.status, 403, "{what}");
                assert_eq!(rep.body["error"], "forbidden", "{what}");
            }
        }
    }
    // No route outside the table: an unknown path is a JSON 404.
    let r = s.call("GET", "/api/nothing-here", Some(&admin), None);
    assert_eq!((r.status, r.body["error"].as_str()), (404, Some("not_found")));
}

fn jwt_key(s: &Server) -> Vec<u8> {
    std::fs::read(s.data.join("secret.key")).unwrap()[..32].to_vec()
}

fn forge(key: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

fn b64(v: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

#[test]
fn tampered_expired_or_revoked_tokens_are_refused_and_refresh_rotates() {
    let s = Server::start("", &["--pps", "300", "--workers", "1"]);
    let admin = s.admin();
    let vic_login = {
        s.user(&admin, "vic", "viewer");
        s.login("vic", "vic-password-123", None).body
    };
    let vic = vic_login["access_token"].as_str().unwrap().to_string();
    assert_eq!(s.call("GET", "/api/me", Some(&vic), None).body["role"], "viewer");
    assert_eq!(s.call("GET", "/api/users", Some(&vic), None).status, 403);

    // Tampering: the payload says admin, the signature is the viewer's.
    let parts: Vec<&str> = vic.split('.').collect();
    use base64::Engine;
    let mut claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]);
    let r = s.call("GET", "/api/users", Some(&tampered), None);
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("invalid_token")), "{}", r.body);
    // Signed with another key; unsigned (alg none); garbage.
    let other = forge(&[7u8; 32], &claims);
    assert_eq!(s.call("GET", "/api/me", Some(&other), None).status, 401);
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    assert_eq!(s.call("GET", "/api/me", Some(&none), None).status, 401);
    assert_eq!(s.call("GET", "/api/me", Some("not-a-token"), None).status, 401);

    // Expired: the server's own key, a time in the past.
    let key = jwt_key(&s);
    let mut old = claims.clone();
    old["role"] = json!("viewer");
    old["exp"] = json!(claims["iat"].as_i64().unwrap() - 10);
    let r = s.call("GET", "/api/me", Some(&forge(&key, &old)), None);
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("token_expired")), "{}", r.body);
    // Forged with the right key but a session that does not exist: refused.
    let mut nosession = old.clone();
    nosession["exp"] = json!(claims["exp"].as_i64().unwrap());
    nosession["sid"] = json!("00000000000000000000000000000000");
    assert_eq!(s.call("GET", "/api/me", Some(&forge(&key, &nosession)), None).status, 401);

    // Refresh gives new tokens; the old refresh token stops working.
    let refresh = vic_login["refresh_token"].as_str().unwrap();
    let r = s.call("POST", "/api/refresh", None, Some(&json!({ "refresh_token": refresh }).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let vic2 = r.body["access_token"].as_str().unwrap().to_string();
    let refresh2 = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(s.call("GET", "/api/me", Some(&vic2), None).status, 200);
    let again = s.call("POST", "/api/refresh", None, Some(&json!({ "refresh_token": refresh }).to_string()));
    assert_eq!(again.status, 401);

    // Logout revokes the session: its access and refresh tokens die at once.
    assert_eq!(s.call("POST", "/api/logout", Some(&vic2), None).status, 204);
    let r = s.call("GET", "/api/me", Some(&vic2), None);
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("session_ended")));
    assert_eq!(s.call("GET", "/api/me", Some(&vic), None).status, 401);
    assert_eq!(
        s.call("POST", "/api/refresh", None, Some(&json!({ "refresh_token": refresh2 }).to_string())).status,
        401
    );

    // A demoted user's sessions end with the change.
    let ana = s.user(&admin, "ana", "analyst");
    assert_eq!(s.call("PATCH", "/api/users/ana", Some(&admin), Some(r#"{"role":"viewer"}"#)).status, 200);
    assert_eq!(s.call("GET", "/api/me", Some(&ana), None).status, 401);
    assert_eq!(s.call("GET", "/api/me", Some(&s.token("ana", "ana-password-123")), None).body["role"], "viewer");
}

#[test]
fn failed_logins_lock_the_user_and_the_address_with_backoff() {
    let s = Server::start("", &["--pps", "300", "--workers", "1"]);
    let admin = s.admin();
    s.user(&admin, "bob", "analyst");
    for _ in 0..3 {
        assert_eq!(s.login("bob", "wrong-password-000", None).status, 401);
    }
    // Locked: even the right password is refused, with Retry-After.
    let r = s.login("bob", "bob-password-123", None);
    assert_eq!((r.status, r.body["error"].as_str()), (429, Some("locked")), "{}", r.body);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    std::thread::sleep(std::time::Duration::from_millis(wait * 1000 + 200));
    // The lock ran out: right password works, and clears the count.
    assert_eq!(s.login("bob", "bob-password-123", None).status, 200);
    // Failures under several names lock the address itself.
    for name in ["carol", "dave", "erin"] {
        assert_eq!(s.login(name, "x-wrong-password", None).status, 401);
    }
    let r = s.login("admin", &s.admin_password, None);
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    std::thread::sleep(std::time::Duration::from_millis(wait * 1000 + 200));
    // The next failure after a lock doubles it (2 s → 4 s).
    assert_eq!(s.login("frank", "x-wrong-password", None).status, 401);
    let r = s.login("admin", &s.admin_password, None);
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((3..=4).contains(&wait), "backoff grew: {wait}");
    // Failures and the lock are in the audit log, from our address.
    std::thread::sleep(std::time::Duration::from_millis(wait * 1000 + 200));
    let admin = s.admin();
    let log = s.call("GET", "/api/user_activity?action=login_failed&limit=1000", Some(&admin), None);
    let entries = log.body.as_array().unwrap();
    assert!(entries.len() >= 9, "{}", log.body);
    assert!(entries.iter().all(|e| e["addr"] == "127.0.0.1" && e["ok"] == false));
    assert!(entries.iter().any(|e| e["detail"]["reason"].as_str().unwrap().starts_with("locked")));
}

fn code(secret_b32: &str, name: &str) -> String {
    let secret = totp_rs::Secret::Encoded(secret_b32.to_string()).to_bytes().unwrap();
    let t =
        totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, secret, Some("tapstream".into()), name.into());
    t.generate_current().unwrap()
}

#[test]
fn totp_enrolment_then_login_needs_the_code() {
    let s = Server::start("", &["--pps", "300", "--workers", "1"]);
    let admin = s.admin();
    let tok = s.user(&admin, "tina", "analyst");
    let e = s.call("POST", "/api/me/totp", Some(&tok), None);
    assert_eq!(e.status, 200, "{}", e.body);
    let secret = e.body["secret"].as_str().unwrap().to_string();
    assert!(e.body["url"].as_str().unwrap().starts_with("otpauth://totp/tapstream:tina?"), "{}", e.body);
    // Until confirmed, login needs no code.
    assert_eq!(s.login("tina", "tina-password-123", None).status, 200);
    let bad = s.call("POST", "/api/me/totp/confirm", Some(&tok), Some(r#"{"code":"000000"}"#));
    assert_eq!(bad.status, 422);
    let ok =
        s.call("POST", "/api/me/totp/confirm", Some(&tok), Some(&json!({ "code": code(&secret, "tina") }).to_string()));
    assert_eq!(ok.status, 204, "{}", ok.body);
    // Now the code is needed, and checked.
    let r = s.login("tina", "tina-password-123", None);
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("totp_required")));
    let r = s.login("tina", "tina-password-123", Some("123456"));
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("totp_invalid")), "{}", r.body);
    let r = s.login("tina", "tina-password-123", Some(&code(&secret, "tina")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["totp"], true);
    // The seed is encrypted at rest: not in the database file in clear.
    let raw = totp_rs::Secret::Encoded(secret.clone()).to_bytes().unwrap();
    let db = std::fs::read(s.data.join("control.db")).unwrap();
    let wal = std::fs::read(s.data.join("control.db-wal")).unwrap_or_default();
    for f in [&db, &wal] {
        assert!(!f.windows(raw.len()).any(|w| w == raw.as_slice()), "TOTP seed stored in clear");
    }
    let users = s.call("GET", "/api/users", Some(&admin), None);
    assert!(!users.body.to_string().contains(&secret));
}

#[test]
fn rules_and_incidents_round_trip_and_every_change_is_audited() {
    let s = Server::start("", &["--pps", "300", "--workers", "1"]);
    let admin = s.admin();
    let ana = s.user(&admin, "ana", "analyst");
    let vic = s.user(&admin, "vic", "viewer");

    // A bad rule is refused with the engine parser's reason; nothing changes.
    let bad = s.call(
        "POST",
        "/api/alerts/rules",
        Some(&admin),
        Some(r#"{"name":"x","condition":"bytes_per_s by src_ip > lots"}"#),
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body["detail"].as_str().unwrap().contains("`lots` is not a number"), "{}", bad.body);
    let rule = json!({ "name": "big-udp", "condition": "bytes_per_s by src_ip > 50 MB/s for 30s where proto = udp", "severity": "high" });
    let r = s.call("POST", "/api/alerts/rules", Some(&admin), Some(&rule.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(s.call("POST", "/api/alerts/rules", Some(&admin), Some(&rule.to_string())).status, 409);
    let file = s.data.join("api/rules.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("name = \"big-udp\"") && text.contains("50 MB/s"), "{text}");
    let mut changed = rule.clone();
    changed["severity"] = json!("critical");
    let r = s.call("PUT", &format!("/api/alerts/rules/{id}"), Some(&admin), Some(&changed.to_string()));
    assert_eq!((r.status, r.body["severity"].as_str()), (200, Some("critical")), "{}", r.body);
    assert_eq!(s.call("GET", &format!("/api/alerts/rules/{id}"), Some(&vic), None).body["severity"], "critical");
    assert!(std::fs::read_to_string(&file).unwrap().contains("severity = \"critical\""));
    // Detection picked the rules file up (it logs each reload).
    assert!(
        wait_for(10, || s.stderr.lock().unwrap().contains("rules reloaded").then_some(())).is_some(),
        "{}",
        s.stderr.lock().unwrap()
    );
    assert_eq!(s.call("DELETE", &format!("/api/alerts/rules/{id}"), Some(&admin), None).status, 204);
    assert!(!std::fs::read_to_string(&file).unwrap().contains("big-udp"));
    assert_eq!(s.call("GET", &format!("/api/alerts/rules/{id}"), Some(&admin), None).status, 404);

    // Incidents: open, note, work, resolve; sensitive details hidden from viewers.
    let r = s.call(
        "POST",
        "/api/incidents",
        Some(&ana),
        Some(
            &json!({ "title": "odd beaconing", "severity": "high", "source_ip": "10.1.0.77",
                      "sensitive_details": "customer ACME-4471 affected" })
            .to_string(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let iid = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["status"], "open");
    assert_eq!(s.call("POST", "/api/incidents", Some(&vic), Some(r#"{"title":"x"}"#)).status, 403);
    let n = s.call("POST", &format!("/api/incidents/{iid}/notes"), Some(&ana), Some(r#"{"text":"seen every 20 s"}"#));
    assert_eq!(n.status, 201, "{}", n.body);
    let p = s.call(
        "PATCH",
        &format!("/api/incidents/{iid}"),
        Some(&ana),
        Some(r#"{"status":"investigating","assignee":"ana"}"#),
    );
    assert_eq!(
        (p.status, p.body["status"].as_str(), p.body["assignee"].as_str()),
        (200, Some("investigating"), Some("ana"))
    );
    let bad = s.call("PATCH", &format!("/api/incidents/{iid}"), Some(&ana), Some(r#"{"status":"done"}"#));
    assert_eq!(bad.status, 422);
    let l = s.call("POST", &format!("/api/incidents/{iid}/alerts"), Some(&ana), Some(r#"{"alerts":["abc123"]}"#));
    assert_eq!(l.body["alerts"], json!(["abc123"]));
    let d = s.call("GET", &format!("/api/incidents/{iid}"), Some(&ana), None);
    assert_eq!(d.body["details"], "customer ACME-4471 affected");
    assert_eq!(d.body["notes"][0]["text"], "seen every 20 s");
    assert_eq!(d.body["notes"][0]["author"], "ana");
    let dv = s.call("GET", &format!("/api/incidents/{iid}"), Some(&vic), None);
    assert_eq!((dv.body["details"].clone(), dv.body["details_hidden"].clone()), (Value::Null, json!(true)));
    let db = std::fs::read(s.data.join("control.db")).unwrap();
    let wal = std::fs::read(s.data.join("control.db-wal")).unwrap_or_default();
    assert!(![db, wal].iter().any(|f| f.windows(9).any(|w| w == b"ACME-4471")), "sensitive details stored in clear");
    // Block the source: it goes on the blocklist.
    let b = s.call("POST", &format!("/api/incidents/{iid}/block"), Some(&ana), None);
    assert_eq!((b.status, b.body["value"].as_str()), (201, Some("10.1.0.77")), "{}", b.body);
    let list = s.call("GET", "/api/blocklist", Some(&vic), None);
    assert!(list.body.as_array().unwrap().iter().any(|e| e["value"] == "10.1.0.77"));
    let p = s.call("PATCH", &format!("/api/incidents/{iid}"), Some(&ana), Some(r#"{"status":"resolved"}"#));
    assert_eq!(p.body["status"], "resolved");
    let open = s.call("GET", "/api/incidents?status=open", Some(&vic), None);
    assert_eq!(open.body, json!([]));
    let resolved = s.call("GET", "/api/incidents?status=resolved&severity=high", Some(&vic), None);
    assert_eq!(resolved.body.as_array().unwrap().len(), 1);

    // A query, a user change; then the audit log holds every action.
    let q = s.call("POST", "/api/query", Some(&ana), Some(r#"{"sql":"SELECT 1 AS one"}"#));
    assert_eq!((q.status, q.body["rows"].clone()), (200, json!([{ "one": 1 }])), "{}", q.body);
    assert_eq!(s.call("PATCH", "/api/users/vic", Some(&admin), Some(r#"{"disabled":true}"#)).status, 200);
    assert_eq!(s.login("vic", "vic-password-123", None).status, 401);
    let log = s.call("GET", "/api/user_activity?limit=1000", Some(&admin), None);
    let actions: Vec<(String, String)> = log
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["user"].as_str().unwrap().to_string(), e["action"].as_str().unwrap().to_string()))
        .collect();
    for (who, what) in [
        ("admin", "login"),
        ("admin", "user_create"),
        ("admin", "rule_create"),
        ("admin", "rule_update"),
        ("admin", "rule_delete"),
        ("ana", "incident_create"),
        ("ana", "incident_note"),
        ("ana", "incident_update"),
        ("ana", "incident_link"),
        ("ana", "blocklist_add"),
        ("ana", "query"),
        ("admin", "user_update"),
        ("vic", "login_failed"),
    ] {
        assert!(actions.contains(&(who.to_string(), what.to_string())), "no {what} by {who} in {actions:?}");
    }
    // Filters work, and the log is admin-only.
    let only = s.call("GET", "/api/user_activity?user=ana&action=query", Some(&admin), None);
    assert_eq!(only.body.as_array().unwrap().len(), 1);
    assert_eq!(only.body[0]["detail"]["sql"], "SELECT 1 AS one");
    assert_eq!(s.call("GET", "/api/user_activity", Some(&ana), None).status, 403);
}

#[test]
fn a_blocklist_entry_reaches_detection_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start_in(&data, "", &["--pps", "1500", "--workers", "1"]);
    let admin = s.admin();
    // The demo's most popular servers live in 198.51.100.0/28; nothing is
    // listed yet, so no intel alert.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let none = s.call("GET", "/api/threats?category=intel", Some(&admin), None);
    assert_eq!(none.body, json!([]), "{}", none.body);
    let r = s.call("POST", "/api/blocklist", Some(&admin), Some(r#"{"value":"198.51.100.0/28","comment":"test"}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    let t0 = std::time::Instant::now();
    let hit = wait_for(20, || {
        let t = s.call("GET", "/api/threats?category=intel", Some(&admin), None);
        t.body.as_array().and_then(|a| a.first().cloned())
    })
    .unwrap_or_else(|| panic!("no intel alert: {}", s.stderr.lock().unwrap()));
    assert!(t0.elapsed() < std::time::Duration::from_secs(15), "took {:?}", t0.elapsed());
    assert_eq!(hit["rule"], "threat_intel");
    assert!(hit["explanation"].as_str().unwrap().contains("listed by blocklist"), "{hit}");
    assert_eq!(hit["status"], "new");
    // Acknowledge it; the workflow state shows and is audited.
    let id = hit["id"].as_str().unwrap();
    let a = s.call("POST", &format!("/api/alerts/{id}/ack"), Some(&admin), Some(r#"{"comment":"known lab range"}"#));
    assert_eq!(a.status, 200, "{}", a.body);
    let one = s.call("GET", &format!("/api/alerts/{id}"), Some(&admin), None);
    assert_eq!(one.body["status"], "acknowledged");
    assert!(!one.body["history"].as_array().unwrap().is_empty());
    let acked = s.call("GET", "/api/alerts?status=acknowledged", Some(&admin), None);
    assert!(acked.body.as_array().unwrap().iter().any(|a| a["id"] == id));
    assert!(std::fs::read_to_string(s.data.join("alerts.ack")).unwrap().contains(id));
    // Not an anomaly.
    let an = s.call("GET", "/api/anomalies?category=intel", Some(&admin), None);
    assert_eq!(an.body, json!([]));

    // After a restart the alert is still listed (from the history), with
    // its workflow state, and can be resolved.
    let pw = s.admin_password.clone();
    s.stop();
    let s = Server::start_in(&data, "", &["--pps", "200", "--workers", "1"]);
    let admin = s.token("admin", &pw);
    let one = s.call("GET", &format!("/api/alerts/{id}"), Some(&admin), None);
    assert_eq!((one.status, one.body["status"].as_str()), (200, Some("acknowledged")), "{}", one.body);
    assert_eq!(one.body["rule"], "threat_intel");
    let listed = s.call("GET", "/api/threats?category=intel", Some(&admin), None);
    assert!(listed.body.as_array().unwrap().iter().any(|a| a["id"] == id), "{}", listed.body);
    let r = s.call("POST", &format!("/api/alerts/{id}/resolve"), Some(&admin), None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn bad_requests_get_a_json_4xx_never_a_5xx() {
    let s = Server::start("", &["--pps", "300", "--workers", "1"]);
    let admin = s.admin();
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, Vec<u8>)>);
    let cases: Vec<Case> = vec![
        ("POST", "/api/login", Some(("application/json", b"{not json".to_vec()))),
        ("POST", "/api/login", Some(("application/json", br#"{"username":5,"password":"x"}"#.to_vec()))),
        ("POST", "/api/login", Some(("application/json", br#"{"username":"a","password":"b","extra":1}"#.to_vec()))),
        ("POST", "/api/login", Some(("text/plain", b"username=a".to_vec()))),
        ("POST", "/api/login", None),
        (
            "POST",
            "/api/users",
            Some(("application/json", br#"{"name":"x y","role":"viewer","password":"long-enough-pw"}"#.to_vec())),
        ),
        (
            "POST",
            "/api/users",
            Some(("application/json", br#"{"name":"x","role":"root","password":"long-enough-pw"}"#.to_vec())),
        ),
        (
            "POST",
            "/api/users",
            Some(("application/json", br#"{"name":"x","role":"viewer","password":"short"}"#.to_vec())),
        ),
        ("GET", "/api/alerts?limit=0", None),
        ("GET", "/api/alerts?limit=abc", None),
        ("GET", "/api/alerts?severity=huge", None),
        ("GET", "/api/alerts?unknown=1", None),
        ("GET", "/api/alerts/has-dash", None),
        ("GET", "/api/incidents/notanumber", None),
        ("GET", "/api/incidents/99999999999999999999999", None),
        ("GET", "/api/user_activity?from=yesterday", None),
        ("POST", "/api/blocklist", Some(("application/json", br#"{"value":"not an address"}"#.to_vec()))),
        ("POST", "/api/query", Some(("application/json", br#"{"sql":"DROP TABLE flows"}"#.to_vec()))),
        ("POST", "/api/query", Some(("application/json", br#"{"sql":"SELEC nonsense"}"#.to_vec()))),
        ("POST", "/api/query", Some(("application/json", br#"{"sql":"SELECT 1","limit":-1}"#.to_vec()))),
        ("POST", "/api/incidents", Some(("application/json", br#"{"title":"t","source_ip":"999.1.1.1"}"#.to_vec()))),
        ("PUT", "/api/health", None),
    ];
    for (m, p, body) in cases {
        let r = s.raw(m, p, Some(&admin), body);
        let what = format!("{m} {p}: {} {}", r.status, r.body);
        assert!((400..500).contains(&r.status), "{what}");
        if r.status != 405 {
            assert!(r.body["error"].is_string() && r.body["detail"].is_string(), "{what}");
        }
    }
    // Over the 1 MiB body limit: refused from the Content-Length alone
    // (the server answers before reading the body, so speak HTTP by hand).
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST /api/query HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{\"sql\":\"",
        2 << 20
    )
    .unwrap();
    // The server answers at once and may keep the connection open for the
    // body it will not read: read what arrives.
    c.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let mut buf = Vec::new();
    let t0 = std::time::Instant::now();
    let mut chunk = [0u8; 4096];
    while t0.elapsed() < std::time::Duration::from_secs(10) && !String::from_utf8_lossy(&buf).contains("too_large") {
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
    }
    let answer = String::from_utf8_lossy(&buf).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":"too_large""#), "{answer}");
    // Still healthy after all that.
    assert_eq!(s.call("GET", "/api/health", None, None).body["status"], "ok");
}

#[test]
fn first_start_creates_one_admin_and_the_store_backs_up_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start_in(&data, "", &["--pps", "300", "--workers", "1"]);
    assert!(s.admin_password.len() >= 20, "{}", s.stdout.lock().unwrap());
    // The password is printed, never logged.
    assert!(!s.stderr.lock().unwrap().contains(&s.admin_password));
    let admin = s.admin();
    s.user(&admin, "ana", "analyst");
    assert!(s.stop().success());
    // A second start creates nobody and prints no password.
    let s2 = Server::start_in(&data, "", &["--pps", "300", "--workers", "1"]);
    assert_eq!(s2.admin_password, "");
    assert!(!s2.stdout.lock().unwrap().contains("password"));
    drop(s2);
    // `user add` from the command line, then `backup`.
    let o = common::bin().args(["user", "add", "ops", "--role", "viewer", "--data"]).arg(&data).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("created user `ops` (viewer) with password "));
    let o = common::bin().args(["user", "add", "ops2", "--role", "boss", "--data"]).arg(&data).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("admin, analyst or viewer"));
    let out = dir.path().join("control-backup.db");
    let o = common::bin().args(["backup", "--data"]).arg(&data).arg("--out").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let copy = tapstream_api::Store::open(&out).unwrap();
    let names: Vec<String> =
        tapstream_api::routes::users::list_users(&copy).unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["admin", "ana", "ops"]);
    let o = common::bin().args(["user", "list", "--data"]).arg(&data).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("ops\tviewer"));
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Compactions happen on background threads while the appliance runs; the
/// metrics count them (and their failures) as they happen, not at shutdown.
/// Here the work is an earlier run's: one hour left as a part file and one
/// with an unreadable part, which the appliance's writer takes up at start.
#[test]
fn compactions_and_their_failures_show_in_the_metrics_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pcap = dir.path().join("s.pcap");
    let o = common::bin().args(["synth", "--packets", "3000", "--seed", "4", "--out"]).arg(&pcap).output().unwrap();
    assert!(o.status.success());
    let o = common::bin().args(["ingest", "--quiet", "--data"]).arg(&data).arg(&pcap).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let compacted = |table: &str| {
        common::walk(&data.join(table))
            .into_iter()
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("compact-"))
            .unwrap_or_else(|| panic!("no compacted {table} hour"))
    };
    // A flows hour as a killed run leaves it (a part, not compacted) ...
    let flows = compacted("flows");
    std::fs::rename(&flows, flows.with_file_name("part-00001.parquet")).unwrap();
    // ... and a dns hour whose compaction must fail (a part that is no Parquet).
    let dns = compacted("dns");
    std::fs::write(dns.with_file_name("part-00009.parquet"), b"not parquet").unwrap();

    let s = Server::start_in(&data, "", &["--pps", "100", "--workers", "1"]);
    let admin = s.admin();
    let text = wait_for(30, || {
        let m = s.raw("GET", "/metrics", Some(&admin), None);
        let text = m.body.as_str()?.to_string();
        (metric(&text, "tapstream_history_compactions_total") >= 1.0
            && metric(&text, "tapstream_history_compaction_errors_total") >= 1.0)
            .then_some(text)
    })
    .unwrap_or_else(|| {
        let m = s.raw("GET", "/metrics", Some(&admin), None);
        panic!("no compaction counted while running:\n{}", m.body.as_str().unwrap_or_default())
    });
    assert_eq!(metric(&text, "tapstream_history_compactions_total"), 1.0, "{text}");
    assert_eq!(metric(&text, "tapstream_history_compaction_errors_total"), 1.0, "{text}");
    assert!(common::walk(flows.parent().unwrap()).iter().all(|p| !p.to_string_lossy().contains("part-")));
}

#[test]
fn stream_metrics_performance_and_traffic_report_the_running_engine() {
    let s = Server::start("[storage]\nflush_interval_secs = 1\n", &["--pps", "1000", "--workers", "1"]);
    let admin = s.admin();
    // The live stream: hello, then a stats message a second with the engine's rates.
    let url = format!("{}/api/stream?access_token={admin}", s.base.replace("http://", "ws://"));
    let (mut ws, _) = tungstenite::connect(&url).unwrap();
    let hello: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!((hello["type"].as_str(), hello["data"]["engine"].as_str()), (Some("hello"), Some("demo")));
    let stats = wait_for(15, || {
        let m: Value = serde_json::from_str(ws.read().ok()?.to_text().ok()?).ok()?;
        (m["type"] == "stats" && m["data"]["rates"]["pps"].as_f64()? > 500.0).then_some(m)
    })
    .expect("a stats message with the demo's rate");
    assert!(stats["data"]["engine"]["packets"].as_u64().unwrap() > 0, "{stats}");
    let refused = tungstenite::connect(format!("{}/api/stream", s.base.replace("http://", "ws://")));
    match refused {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }

    // Prometheus text.
    let m = s.raw("GET", "/metrics", Some(&admin), None);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = m.body.as_str().unwrap().to_string();
    assert!(metric(&text, "tapstream_packets_total") > 0.0);
    assert_eq!(metric(&text, "tapstream_stream_clients"), 1.0);
    assert!(metric(&text, "tapstream_api_requests_total") >= 2.0);
    assert!(text.contains("# TYPE tapstream_queue_kernel_drops_total counter"));
    assert!(text.contains("# TYPE tapstream_history_rows_written_total counter"), "{text}");
    assert!(text.contains(r#"tapstream_queue_packets_total{interface="demo",queue="demo:0"}"#), "{text}");
    assert_eq!(s.raw("GET", "/metrics", None, None).status, 401);

    // Host and engine figures over time.
    let p = wait_for(15, || {
        let p = s.call("GET", "/api/performance?seconds=10", Some(&admin), None);
        (p.body["history"].as_array()?.len() >= 3 && p.body["latest"]["host"]["data_dir_bytes"].as_u64()? > 0)
            .then_some(p)
    })
    .expect("performance samples");
    let latest = &p.body["latest"];
    assert!(!latest["host"]["cpu_per_core"].as_array().unwrap().is_empty());
    assert!(latest["host"]["memory_total"].as_u64().unwrap() > latest["host"]["process_rss"].as_u64().unwrap());
    assert!(latest["host"]["process_rss"].as_u64().unwrap() > 1 << 20);
    assert!(latest["host"]["disk_total"].as_u64().unwrap() > 0);
    assert!(latest["rates"]["pps"].as_f64().unwrap() > 500.0, "{latest}");
    let i = s.call("GET", "/api/interfaces", Some(&admin), None);
    assert_eq!(i.body["interfaces"][0]["name"], "demo");

    // Traffic from the history: the series, and the demo's busiest servers.
    let t = wait_for(40, || {
        let t = s.call("GET", "/api/traffic?by=dst&top=5", Some(&admin), None);
        let top = t.body["top"].as_array()?;
        (!top.is_empty() && !t.body["series"].as_array()?.is_empty()).then_some(t)
    })
    .unwrap_or_else(|| panic!("no traffic: {}", s.stderr.lock().unwrap()));
    assert!(t.body["series"].as_array().unwrap().iter().map(|p| p["packets"].as_u64().unwrap()).sum::<u64>() > 0);
    let m = s.raw("GET", "/metrics", Some(&admin), None);
    let text = m.body.as_str().unwrap();
    assert!(metric(text, "tapstream_history_rows_written_total") > 0.0, "{text}");
    assert!(metric(text, "tapstream_history_files_written_total") > 0.0, "{text}");
    assert!(
        t.body["top"].as_array().unwrap().iter().any(|r| r["key"].as_str().unwrap().starts_with("198.51.100.")),
        "{}",
        t.body
    );
    let tls = wait_for(30, || {
        let r = s.call("GET", "/api/traffic?by=port&port=443&protocol=tcp", Some(&admin), None);
        (!r.body["top"].as_array()?.is_empty()).then_some(r)
    })
    .expect("TLS flows in the history");
    let keys: Vec<&str> = tls.body["top"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["443/tcp"], "{}", tls.body);
    for bad in ["by=nothing", "top=0", "ip=1.2.3", "cidr=10.0.0.1", "country=USA", "from=2030-01-01T00:00:00Z"] {
        let r = s.call("GET", &format!("/api/traffic?{bad}"), Some(&admin), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
}

/// schemathesis (an outside fuzzer) against the served OpenAPI document:
/// generated valid and invalid requests for every operation, checked for
/// 5xx answers, answers that break the document's schemas, wrong status
/// codes and content types, invalid input accepted, and undeclared methods.
/// (Its "valid input rejected" check is left out: an address's syntax, a
/// rule's grammar, an existing user or a TOTP code are checked by the
/// server, not expressible in the schema.)
#[test]
fn the_openapi_document_holds_under_schemathesis() {
    let s = Server::start("", &["--pps", "500", "--workers", "1"]);
    let admin = s.admin();
    let doc = s.call("GET", "/api/openapi.json", Some(&admin), None);
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.0.3");
    // The document lists exactly the routes of the table.
    let n: usize = doc.body["paths"].as_object().unwrap().values().map(|o| o.as_object().unwrap().len()).sum();
    assert_eq!(n, TABLE.len());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.body.to_string()).unwrap();
    let out = std::process::Command::new("st")
        .arg("run")
        .arg(&file)
        .args(["--url", &s.base, "-H", &format!("Authorization: Bearer {admin}")])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        // Logging out would end the session the rest of the run uses.
        .args(["--exclude-path", "/api/logout"])
        .args(["--max-examples", "25", "--seed", "7", "--no-color"])
        .current_dir(dir.path())
        .output()
        .expect("schemathesis (`st`; scripts/test.sh installs it from PyPI)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    // Every operation but logout was exercised.
    let tested: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested: ").and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no count of tested operations in\n{text}"));
    assert_eq!(tested, TABLE.len() - 1, "{text}");
    assert!(!s.stderr.lock().unwrap().contains("request failed"), "{}", s.stderr.lock().unwrap());
}

#[test]
fn server_logs_rotate_into_files_the_api_tails_and_serves() {
    let s = Server::start("", &["--pps", "300", "--workers", "1"]);
    let admin = s.admin();
    // A fresh data dir starts without complaint about its log directory.
    assert!(!s.stderr.lock().unwrap().contains("Error reading the log"), "{}", s.stderr.lock().unwrap());
    assert_eq!(s.login("admin", "not-the-password!", None).status, 401);
    let files = wait_for(10, || {
        let r = s.call("GET", "/api/logs", Some(&admin), None);
        r.body.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .expect("a log file");
    let name = files[0]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("tapstream") && name.ends_with(".log"), "{name}");
    // Tail with a level filter: the failed login (a warning), no info lines.
    let warn = wait_for(10, || {
        let r = s.call("GET", "/api/logs/tail?level=warn&lines=50", Some(&admin), None);
        let lines = r.body["lines"].as_array()?.clone();
        lines.iter().any(|l| l.as_str().unwrap().contains("login failed")).then_some(lines)
    })
    .expect("the failed login in the log");
    assert!(warn.iter().all(|l| !l.as_str().unwrap().contains(" INFO ")), "{warn:?}");
    let all = s.call("GET", "/api/logs/tail", Some(&admin), None);
    assert!(all.body["lines"].as_array().unwrap().iter().any(|l| l.as_str().unwrap().contains("serving the API")));
    // Download the whole file; nothing outside the log directory.
    let d = s.raw("GET", &format!("/api/logs/{name}"), Some(&admin), None);
    assert_eq!(d.status, 200);
    let text = d.body.as_str().unwrap();
    assert!(text.contains("serving the API"));
    // Secrets never reach the log.
    assert!(!text.contains(&s.admin_password), "the admin password is in the log");
    assert!(!text.contains("not-the-password!"));
    assert_eq!(s.call("GET", "/api/logs/..%2Fcontrol.db", Some(&admin), None).status, 404);
    assert_eq!(s.call("GET", "/api/logs/tail?level=loud", Some(&admin), None).status, 400);
}

#[test]
fn plugins_are_checked_uploaded_toggled_and_deleted_through_the_api() {
    use base64::Engine;
    let built = common::built_plugins();
    let s = Server::start("[plugins]\npoll_secs = 0.2\n", &["--pps", "300", "--workers", "1"]);
    let admin = s.admin();
    let wasm = std::fs::read(built.join("examples/beacon.wasm")).unwrap();
    let manifest = std::fs::read_to_string(built.join("examples/beacon.toml")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
    // A module that is not WebAssembly is refused with the loader's reason; nothing installed.
    let bad = json!({ "name": "beacon", "manifest": manifest, "wasm": base64::engine::general_purpose::STANDARD.encode(b"not wasm") });
    let r = s.call("POST", "/api/plugins", Some(&admin), Some(&bad.to_string()));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(!s.data.join("plugins/beacon.wasm").exists());
    let no_manifest = json!({ "name": "beacon", "manifest": "abi = 99\n", "wasm": b64 });
    let r = s.call("POST", "/api/plugins", Some(&admin), Some(&no_manifest.to_string()));
    assert_eq!(r.status, 422, "{}", r.body);
    // A good one is installed and the engine loads it.
    let good = json!({ "name": "beacon", "manifest": manifest, "wasm": b64 });
    let r = s.call("POST", "/api/plugins", Some(&admin), Some(&good.to_string()));
    assert_eq!((r.status, r.body["enabled"].as_bool()), (201, Some(true)), "{}", r.body);
    let loaded = |s: &Server| -> bool {
        let r = s.call("GET", "/api/plugins", Some(&admin), None);
        r.body["status"]["plugins"].as_array().is_some_and(|a| a.iter().any(|p| p["name"] == "beacon"))
    };
    assert!(wait_for(15, || loaded(&s).then_some(())).is_some(), "{}", s.stderr.lock().unwrap());
    let r = s.call("GET", "/api/plugins", Some(&admin), None);
    let p = r.body["status"]["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "beacon").unwrap().clone();
    assert_eq!(p["scope"], "global");
    // Disabled: the engine unloads it; enabled: back.
    let d = s.call("POST", "/api/plugins/beacon/disable", Some(&admin), None);
    assert_eq!(d.body["enabled"], false, "{}", d.body);
    assert!(wait_for(15, || (!loaded(&s)).then_some(())).is_some());
    assert_eq!(s.call("POST", "/api/plugins/beacon/enable", Some(&admin), None).body["enabled"], true);
    assert!(wait_for(15, || loaded(&s).then_some(())).is_some());
    assert_eq!(s.call("DELETE", "/api/plugins/beacon", Some(&admin), None).status, 204);
    assert!(wait_for(15, || (!loaded(&s)).then_some(())).is_some());
    assert_eq!(s.call("DELETE", "/api/plugins/beacon", Some(&admin), None).status, 404);
    let log = s.call("GET", "/api/user_activity?action=plugin_upload", Some(&admin), None);
    let oks: Vec<bool> = log.body.as_array().unwrap().iter().map(|e| e["ok"].as_bool().unwrap()).collect();
    assert_eq!(oks, [true, false, false]);
}

#[test]
fn recording_sessions_are_started_stopped_and_deleted_through_the_api() {
    let s = Server::start("", &["--pps", "800", "--workers", "1"]);
    let admin = s.admin();
    let ana = s.user(&admin, "ana", "analyst");
    let vic = s.user(&admin, "vic", "viewer");
    let bad = s.call("POST", "/api/capture", Some(&ana), Some(r#"{"name":"dns","filter":"udp prot 53"}"#));
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(s.call("POST", "/api/capture", Some(&vic), Some(r#"{"name":"dns"}"#)).status, 403);
    let r = s.call("POST", "/api/capture", Some(&ana), Some(r#"{"name":"dns","filter":"udp port 53","snaplen":256}"#));
    assert_eq!((r.status, r.body["filter"].as_str()), (201, Some("udp port 53")), "{}", r.body);
    assert_eq!(s.call("POST", "/api/capture", Some(&ana), Some(r#"{"name":"dns"}"#)).status, 409);
    // The engine picks it up and writes packets.
    let session = |s: &Server| -> Value {
        s.call("GET", "/api/capture", Some(&vic), None)
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["spec"]["name"] == "dns")
            .cloned()
            .unwrap()
    };
    wait_for(20, || {
        let x = session(&s);
        (x["state"] == "recording" && x["disk_bytes"].as_u64()? > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("not recording: {}", session(&s)));
    assert_eq!(s.call("DELETE", "/api/capture/dns", Some(&admin), None).status, 409, "still recording");
    let stopped = s.call("POST", "/api/capture/dns/stop", Some(&ana), None);
    assert_eq!((stopped.status, stopped.body["state"].as_str()), (200, Some("stopped")), "{}", stopped.body);
    assert_eq!(session(&s)["state"], "stopped");
    assert_eq!(s.call("DELETE", "/api/capture/dns", Some(&ana), None).status, 403);
    assert_eq!(s.call("DELETE", "/api/capture/dns", Some(&admin), None).status, 204);
    assert_eq!(s.call("POST", "/api/capture/dns/stop", Some(&ana), None).status, 404);
    let log = s.call("GET", "/api/user_activity?limit=1000", Some(&admin), None);
    let actions: Vec<&str> = log.body.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["capture_start", "capture_stop", "capture_delete"] {
        assert!(actions.contains(&a), "{a} not audited");
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
}

fn count_flows(s: &Server, tok: &str, wher: &str) -> u64 {
    let r = s.call(
        "POST",
        "/api/query",
        Some(tok),
        Some(&json!({ "sql": format!("SELECT count(*) AS n FROM flows WHERE {wher}") }).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["rows"][0]["n"].as_u64().unwrap()
}

/// Imports go through the running server's history writer and are
/// reported; exports stream every format (Parquet read back by pyarrow,
/// PCAP by tshark); each is audited, limited and refused to roles without
/// the right.
#[test]
fn history_is_imported_and_exported_through_the_api() {
    let s = Server::start(
        "max_import_mb = 1\n[storage]\nflush_interval_secs = 1\n[retention]\ninterval_secs = 86400\n",
        &["--pps", "1000", "--workers", "1"],
    );
    let admin = s.admin();
    let ana = s.user(&admin, "ana", "analyst");
    let vic = s.user(&admin, "vic", "viewer");
    let upload = |tok: &str, q: &str, ct: &str, body: Vec<u8>| {
        s.raw("POST", &format!("/api/import?{q}"), Some(tok), Some((ct, body)))
    };

    // A CSV with a bad row imports nothing and says which row and why.
    let csv = "ts,orig_h,orig_p,resp_h,resp_p,proto,orig_bytes,resp_bytes\n\
               2020-03-01T10:00:00Z,10.9.0.1,40000,10.9.0.2,80,tcp,100,2000\n\
               2020-03-01T10:00:05Z,10.9.0.1,40001,10.9.0.999,80,tcp,100,2000\n\
               2020-03-01T10:20:00Z,10.9.0.3,40002,10.9.0.2,443,tcp,300,4000\n";
    let r = upload(&admin, "format=csv&name=flows.csv", "text/csv", csv.into());
    assert_eq!((r.status, r.body["error"].as_str()), (422, Some("bad_rows")), "{}", r.body);
    assert_eq!(r.body["report"]["bad_rows"], 1);
    assert_eq!(r.body["report"]["errors"][0]["line"], 3);
    assert_eq!(r.body["report"]["errors"][0]["column"], "resp_h");
    let hour = "ts >= '2020-03-01T10:00:00Z' AND ts < '2020-03-01T11:00:00Z'";
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(count_flows(&s, &admin, hour), 0, "a rejected file imports nothing");
    let r = upload(&admin, "format=csv&skip_bad_rows=true&name=flows.csv", "text/csv", csv.into());
    assert_eq!((r.status, r.body["rows"].as_u64(), r.body["bad_rows"].as_u64()), (200, Some(2), Some(1)), "{}", r.body);
    wait_for(20, || (count_flows(&s, &admin, hour) == 2).then_some(())).expect("imported rows in the history");
    assert_eq!(upload(&ana, "format=csv", "text/csv", csv.into()).status, 403);
    // A refused upload's body is read before the refusal goes out, so the
    // client sees the 403 (not a reset) and the connection stays usable.
    let replies = refused_then_next(&s, &ana, "/api/import?format=csv");
    assert!(replies[0].starts_with("HTTP/1.1 403"), "{replies:?}");
    assert!(replies[1].starts_with("HTTP/1.1 200"), "the connection answers a second request: {replies:?}");
    assert_eq!(upload(&admin, "format=csv", "text/csv", Vec::new()).status, 422);
    assert_eq!(upload(&admin, "format=xlsx", "text/csv", csv.into()).status, 422);
    // Over the 1 MiB import limit, sent without a length (chunked): the
    // server counts while it reads and stops at the limit.
    let big = chunked_upload(&s, &admin, "/api/import?format=pcap", 2 << 20);
    assert!(big.starts_with("HTTP/1.1 413") && big.contains("too_large"), "{big}");
    assert_eq!(std::fs::read_dir(s.data.join("api/imports")).unwrap().count(), 0, "the refused upload is removed");
    let junk = upload(&admin, "format=pcap", "application/octet-stream", b"this is not a capture file at all".to_vec());
    assert_eq!(junk.status, 422, "{}", junk.body);
    assert!(junk.body["detail"].as_str().unwrap().contains("not a capture file"), "{}", junk.body);

    // A capture is analysed into the history: its flows are there to export.
    let pcap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/zeek/cisco-fabric-path/trace.pcap");
    let r =
        upload(&admin, "format=pcap&name=trace.pcap", "application/vnd.tcpdump.pcap", std::fs::read(&pcap).unwrap());
    assert_eq!(r.status, 200, "{}", r.body);
    let (packets, flows) = (r.body["packets"].as_u64().unwrap(), r.body["records"]["flows"].as_u64().unwrap());
    assert!(packets > 0 && flows > 0, "{}", r.body);
    let old = "ts >= '1990-01-01T00:00:00Z' AND ts < '2019-01-01T00:00:00Z'";
    wait_for(20, || (count_flows(&s, &admin, old) == flows).then_some(())).expect("the capture's flows in the history");

    // Exports of a table over a range and filter, in every format.
    let sel = |format: &str, extra: &str| {
        format!(
            r#"{{"format":"{format}","table":"flows","from":"2020-03-01T10:00:00Z","to":"2020-03-01T11:00:00Z"{extra}}}"#
        )
    };
    let (st, h, csv_out) = s.bytes("POST", "/api/export", &ana, &sel("csv", ""));
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&csv_out));
    assert!(header(&h, "content-type").starts_with("text/csv"));
    assert!(header(&h, "content-disposition").contains("attachment; filename=\"tapstream-flows-"), "{h:?}");
    let text = String::from_utf8(csv_out).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().next().unwrap().split(',').any(|c| c == "uid"));
    let (_, _, one) = s.bytes("POST", "/api/export", &ana, &sel("ndjson", r#","port":443"#));
    let line: Value = serde_json::from_slice(&one).unwrap();
    assert_eq!((line["orig_h"].as_str(), line["resp_p"].as_u64()), (Some("10.9.0.3"), Some(443)));
    let (_, _, arr) = s.bytes("POST", "/api/export", &ana, &sel("json", r#","ip":"10.9.0.1""#));
    assert_eq!(serde_json::from_slice::<Value>(&arr).unwrap().as_array().unwrap().len(), 1);
    let sql = json!({ "format": "parquet", "sql": format!("SELECT uid, orig_h, resp_h, ts FROM flows WHERE {old}") });
    let (st, h, pq) = s.bytes("POST", "/api/export", &ana, &sql.to_string());
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), "application/vnd.apache.parquet");
    let file = s.data.with_extension("parquet");
    std::fs::write(&file, &pq).unwrap();
    // Plain `string` columns (queries read text as views; the file is for
    // any reader).
    let script = "import sys, pyarrow.parquet as pq\nt = pq.read_table(sys.argv[1])\nprint(t.num_rows, ','.join(f'{f.name}:{f.type}' for f in t.schema))";
    let o = std::process::Command::new("python3").args(["-c", script]).arg(&file).output().unwrap();
    assert!(o.status.success(), "pyarrow: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().trim(),
        format!("{flows} uid:string,orig_h:string,resp_h:string,ts:timestamp[ns, tz=UTC]")
    );

    // Recorded packets as PCAP, read by tshark.
    let r = s.call("POST", "/api/capture", Some(&ana), Some(r#"{"name":"dns","filter":"udp port 53"}"#));
    assert_eq!(r.status, 201, "{}", r.body);
    wait_for(20, || {
        let l = s.call("GET", "/api/capture", Some(&ana), None);
        let x = l.body.as_array()?.iter().find(|x| x["spec"]["name"] == "dns")?.clone();
        (x["status"]["packets"].as_u64()? >= 20).then_some(())
    })
    .expect("packets recorded");
    // The answer comes once the engine has closed the session's files, so
    // the export right after holds every packet the status counts.
    let stopped = s.call("POST", "/api/capture/dns/stop", Some(&ana), None);
    assert_eq!((stopped.status, stopped.body["state"].as_str()), (200, Some("stopped")), "{}", stopped.body);
    let counted = stopped.body["status"]["packets"].as_u64().unwrap();
    let (st, h, pcap_out) = s.bytes(
        "POST",
        "/api/export",
        &ana,
        r#"{"format":"pcap","sessions":["dns"],"protocol":"udp","filter":"port 53"}"#,
    );
    assert_eq!((st, header(&h, "content-type")), (200, "application/vnd.tcpdump.pcap"));
    let file = s.data.with_extension("pcap");
    std::fs::write(&file, &pcap_out).unwrap();
    let o = std::process::Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "udp.port"])
        .output()
        .unwrap();
    assert!(o.status.success(), "tshark: {}", String::from_utf8_lossy(&o.stderr));
    let lines = String::from_utf8(o.stdout).unwrap();
    assert_eq!(lines.lines().count() as u64, counted, "{lines}");
    assert!(counted >= 20);
    assert!(lines.lines().all(|l| l.split(',').any(|p| p == "53")), "{lines}");

    // Bad requests are 4xx with a reason; a viewer may not export.
    for (bad, code) in [
        (r#"{"format":"xml","table":"flows"}"#, 422),
        (r#"{"format":"csv"}"#, 422),
        (r#"{"format":"csv","table":"flows","sql":"SELECT 1"}"#, 422),
        (r#"{"format":"csv","table":"stats","ip":"10.0.0.1"}"#, 400),
        (r#"{"format":"csv","sql":"DROP TABLE flows"}"#, 422),
        (r#"{"format":"csv","table":"flows","uid":"C1"}"#, 422),
        (r#"{"format":"pcap","uid":"Cnosuchflow1"}"#, 404),
        (r#"{"format":"pcap","sessions":["nope"],"filter":"udp"}"#, 404),
        (r#"{"format":"pcap","filter":"port 99999"}"#, 422),
        (r#"{"format":"pcap","country":"FR"}"#, 400),
    ] {
        let r = s.call("POST", "/api/export", Some(&ana), Some(bad));
        assert_eq!(r.status, code, "{bad}: {}", r.body);
        assert!(r.body["detail"].is_string(), "{bad}: {}", r.body);
    }
    assert_eq!(s.call("POST", "/api/export", Some(&vic), Some(&sel("csv", ""))).status, 403);

    let log = s.call("GET", "/api/user_activity?limit=1000", Some(&admin), None);
    let entries = log.body.as_array().unwrap();
    let of = |a: &str| entries.iter().filter(|e| e["action"] == a).count();
    assert!(of("import") >= 4, "imports audited (failures too): {}", log.body);
    assert!(of("export") >= 5, "exports audited: {}", log.body);
    assert!(entries.iter().any(|e| e["action"] == "import" && e["ok"] == false && e["target"] == "flows.csv"));
}

/// POST `len` bytes with chunked transfer encoding by hand; the answer as text.
/// POST a small body to `path` in two writes 50 ms apart (a client still
/// sending when the server has decided), then GET /api/health on the same
/// connection; the two answers' texts (empty where none came).
fn refused_then_next(s: &Server, token: &str, path: &str) -> [String; 2] {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    let body = vec![b'x'; 8192];
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    c.write_all(&body[..100]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let _ = c.write_all(&body[100..]);
    c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let read_reply = |c: &mut std::net::TcpStream| {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if rest.len() >= len {
                    return text;
                }
            }
            match c.read(&mut b) {
                Ok(0) | Err(_) => return text,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
    };
    let first = read_reply(&mut c);
    let second = match write!(c, "GET /api/health HTTP/1.1\r\nHost: {addr}\r\n\r\n") {
        Ok(()) => read_reply(&mut c),
        Err(_) => String::new(),
    };
    [first, second]
}

fn chunked_upload(s: &Server, token: &str, path: &str, len: usize) -> String {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        c,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut sent = 0;
    while sent < len {
        // The server may stop reading once over the limit: write errors end it.
        if write!(c, "{:x}\r\n", chunk.len())
            .and_then(|_| c.write_all(&chunk))
            .and_then(|_| c.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let _ = c.write_all(b"0\r\n\r\n");
    c.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let mut buf = Vec::new();
    let t0 = std::time::Instant::now();
    let mut b = [0u8; 4096];
    while t0.elapsed() < std::time::Duration::from_secs(10) && !String::from_utf8_lossy(&buf).contains("too_large") {
        match c.read(&mut b) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
            Err(_) => continue,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn flows_csv(ts: &str) -> String {
    format!(
        "ts,orig_h,orig_p,resp_h,resp_p,proto,orig_bytes,resp_bytes\n{ts},10.8.0.1,40000,10.8.0.2,80,tcp,100,2000\n{ts},10.8.0.3,40001,10.8.0.2,443,tcp,300,4000\n"
    )
}

/// Retention and notification settings change the running appliance at
/// once, survive a restart, keep channel secrets sealed, and are audited;
/// mail goes to a real SMTP server on loopback.
#[test]
fn settings_change_retention_and_notifications_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let mail = common::smtp::smtp(dir.path());
    let data = dir.path().join("data");
    // No periodic sweep: only a settings change starts one.
    let cfg = "[storage]\nflush_interval_secs = 1\n[retention]\nmax_age_days = 90\ninterval_secs = 86400\n";
    let s = Server::start_in(&data, cfg, &["--pps", "1500", "--workers", "1"]);
    let admin = s.admin();
    let g = s.call("GET", "/api/settings", Some(&admin), None);
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.body["retention"]["max_age_days"]["flows"], 90);
    assert_eq!((g.body["channels"].as_array().unwrap().len(), g.body["routes"].as_array().unwrap().len()), (0, 0));

    // Flows 40 days old stay under 90 days, and go at once when flows keep 30.
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(40);
    let ts = old.format(&time::format_description::well_known::Rfc3339).unwrap();
    let r = s.raw("POST", "/api/import?format=csv", Some(&admin), Some(("text/csv", flows_csv(&ts).into_bytes())));
    assert_eq!(r.status, 200, "{}", r.body);
    let cond = format!("ts = '{ts}'");
    wait_for(20, || (count_flows(&s, &admin, &cond) == 2).then_some(())).expect("imported");
    for bad in [r#"{"max_age_days":{"flows":7}}"#, r#"{"max_age_days":{"pkts":60}}"#, r#"{"disk_budget_gb":-1}"#] {
        let r = s.call("PUT", "/api/settings/retention", Some(&admin), Some(bad));
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
    let r = s.call("PUT", "/api/settings/retention", Some(&admin), Some(r#"{"max_age_days":{"flows":30}}"#));
    assert_eq!((r.status, r.body["max_age_days"]["flows"].as_u64()), (200, Some(30)), "{}", r.body);
    assert_eq!(r.body["max_age_days"]["dns"], 90);
    wait_for(20, || (count_flows(&s, &admin, &cond) == 0).then_some(())).expect("retention applied at once");

    // A mail channel: checked, applied, and a test message arrives.
    let ch = |port: u16| {
        json!({ "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": port, "security": "none",
                "from": "tapstream@example.test", "to": ["soc@example.test"] })
        .to_string()
    };
    for bad in [
        r#"{"kind":"pager"}"#,
        r#"{"kind":"email","smtp_host":"127.0.0.1","from":"a@b.test"}"#,
        r#"{"kind":"webhook","url":"ftp://x"}"#,
        r#"{"kind":"syslog","address":"nowhere"}"#,
    ] {
        let r = s.call("PUT", "/api/settings/channels/x", Some(&admin), Some(bad));
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
    let r = s.call("PUT", "/api/settings/channels/soc-mail", Some(&admin), Some(&ch(mail.port)));
    assert_eq!((r.status, r.body["managed_by"].as_str()), (200, Some("api")), "{}", r.body);
    assert_eq!(s.call("POST", "/api/settings/channels/soc-mail/test", Some(&admin), None).status, 204);
    wait_for(20, || common::smtp::mails(&mail.dir).iter().any(|m| m.contains("test message")).then_some(()))
        .expect("the test mail");
    // A channel whose server is down says so.
    let dead = common::smtp::free_port();
    assert_eq!(s.call("PUT", "/api/settings/channels/dead", Some(&admin), Some(&ch(dead))).status, 200);
    let r = s.call("POST", "/api/settings/channels/dead/test", Some(&admin), None);
    assert_eq!((r.status, r.body["error"].as_str()), (502, Some("delivery_failed")), "{}", r.body);
    assert_eq!(s.call("DELETE", "/api/settings/channels/dead", Some(&admin), None).status, 204);

    // Secrets are sealed: a webhook's URL and a mail password are never shown or stored in clear.
    let hook = r#"{"kind":"webhook","url":"https://hooks.example.test/services/T0/B0/SeCrEtToKeN42"}"#;
    let r = s.call("PUT", "/api/settings/channels/hook", Some(&admin), Some(hook));
    assert_eq!((r.status, r.body["url_host"].as_str()), (200, Some("https://hooks.example.test")), "{}", r.body);
    let authed = json!({ "kind": "email", "smtp_host": "mail.example.test", "username": "soc", "password": "Pa55-w0rd-XYZZY",
                         "from": "tapstream@example.test", "to": ["soc@example.test"] });
    let r = s.call("PUT", "/api/settings/channels/relay", Some(&admin), Some(&authed.to_string()));
    assert_eq!((r.status, r.body["password_set"].as_bool()), (200, Some(true)), "{}", r.body);
    // Changed without a password: the stored one is kept.
    let mut changed = authed.clone();
    changed.as_object_mut().unwrap().remove("password");
    changed["smtp_port"] = json!(2525);
    let r = s.call("PUT", "/api/settings/channels/relay", Some(&admin), Some(&changed.to_string()));
    assert_eq!(
        (r.status, r.body["password_set"].as_bool(), r.body["smtp_port"].as_u64()),
        (200, Some(true), Some(2525))
    );
    let listing = s.call("GET", "/api/settings", Some(&admin), None).body.to_string();
    assert!(!listing.contains("SeCrEtToKeN42") && !listing.contains("Pa55-w0rd-XYZZY"), "{listing}");
    let db = std::fs::read(s.data.join("control.db")).unwrap();
    let wal = std::fs::read(s.data.join("control.db-wal")).unwrap_or_default();
    for secret in [&b"SeCrEtToKeN42"[..], b"Pa55-w0rd-XYZZY"] {
        assert!(
            ![&db, &wal].iter().any(|f| f.windows(secret.len()).any(|w| w == secret)),
            "secret in clear in the store"
        );
    }
    let logs = s.stderr.lock().unwrap().clone();
    assert!(!logs.contains("SeCrEtToKeN42") && !logs.contains("Pa55-w0rd-XYZZY"), "secret in the log");

    // Routes: intel alerts to the mail channel; a blocklist hit is mailed.
    let r = s.call("PUT", "/api/settings/routes", Some(&admin), Some(r#"{"routes":[{"channels":["nope"]}]}"#));
    assert_eq!(r.status, 422, "{}", r.body);
    let r = s.call(
        "PUT",
        "/api/settings/routes",
        Some(&admin),
        Some(r#"{"routes":[{"channels":["soc-mail"],"categories":["intel"],"min_severity":"low"}]}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call("DELETE", "/api/settings/channels/soc-mail", Some(&admin), None);
    assert_eq!(r.status, 422, "a channel a route uses stays: {}", r.body);
    assert_eq!(s.call("POST", "/api/blocklist", Some(&admin), Some(r#"{"value":"198.51.100.0/28"}"#)).status, 201);
    wait_for(30, || common::smtp::mails(&mail.dir).iter().any(|m| m.contains("threat_intel")).then_some(()))
        .unwrap_or_else(|| panic!("no alert mail: {}", s.stderr.lock().unwrap()));

    let log = s.call("GET", "/api/user_activity?limit=1000", Some(&admin), None);
    let actions: Vec<&str> = log.body.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in [
        "settings_retention",
        "settings_channel",
        "settings_channel_test",
        "settings_routes",
        "settings_channel_delete",
    ] {
        assert!(actions.contains(&a), "{a} not audited");
    }

    // After a restart the stored settings hold.
    let pw = s.admin_password.clone();
    s.stop();
    let s = Server::start_in(&data, cfg, &["--pps", "500", "--workers", "1"]);
    let admin = s.token("admin", &pw);
    let g = s.call("GET", "/api/settings", Some(&admin), None);
    assert_eq!(g.body["retention"]["max_age_days"]["flows"], 30, "{}", g.body);
    let names: Vec<&str> = g.body["channels"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hook", "relay", "soc-mail"]);
    assert_eq!(g.body["routes"][0]["channels"], json!(["soc-mail"]));
    assert_eq!(s.call("POST", "/api/settings/channels/soc-mail/test", Some(&admin), None).status, 204);
}

/// Each user's console layout is saved on the server, for that user only.
#[test]
fn dashboard_layouts_are_saved_per_user() {
    let s = Server::start("", &["--pps", "200", "--workers", "1"]);
    let admin = s.admin();
    let vic = s.user(&admin, "vic", "viewer");
    assert_eq!(s.call("GET", "/api/me/layout", Some(&vic), None).body, json!({ "layout": null }));
    let layout = json!({ "layout": { "panels": [{ "id": "bw", "chart": "area", "metric": "bps", "range": "1h", "x": 0, "y": 0, "w": 6, "h": 4 }] } });
    assert_eq!(s.call("PUT", "/api/me/layout", Some(&vic), Some(&layout.to_string())).status, 204);
    assert_eq!(s.call("GET", "/api/me/layout", Some(&vic), None).body, layout);
    assert_eq!(
        s.call("GET", "/api/me/layout", Some(&admin), None).body,
        json!({ "layout": null }),
        "another user's is apart"
    );
    let big = json!({ "layout": { "blob": "x".repeat(70_000) } });
    assert_eq!(s.call("PUT", "/api/me/layout", Some(&vic), Some(&big.to_string())).status, 422);
    assert_eq!(s.call("PUT", "/api/me/layout", Some(&vic), Some(r#"{"layout":[1,2]}"#)).status, 422);
    assert_eq!(s.call("PUT", "/api/me/layout", Some(&vic), Some(r#"{"layout":null}"#)).status, 204);
    assert_eq!(s.call("GET", "/api/me/layout", Some(&vic), None).body, json!({ "layout": null }));
    assert_eq!(s.call("GET", "/api/me/layout", None, None).status, 401);
}

fn rows(r: &server::Reply) -> Vec<Value> {
    r.body["rows"].as_array().unwrap_or_else(|| panic!("{}", r.body)).clone()
}

/// What the console's explorer and dashboards read: pages of records
/// (newest first, filtered, by connection, by text in DNS/TLS/HTTP), and
/// the traffic views by TCP state, packet size and talker pair.
#[test]
fn records_and_traffic_views_answer_every_role_with_the_filter_bar() {
    let s = Server::start("[storage]\nflush_interval_secs = 1\n", &["--pps", "2000", "--workers", "1"]);
    let admin = s.admin();
    let viewer = s.user(&admin, "val", "viewer");
    let page = wait_for(60, || {
        let r = s.call("GET", "/api/records?limit=50", Some(&viewer), None);
        (r.status == 200 && r.body["more"] == true).then_some(r)
    })
    .unwrap_or_else(|| panic!("no flows: {}", s.stderr.lock().unwrap()));
    assert_eq!(page.body["table"], "flows");
    let names: Vec<&str> =
        page.body["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"uid") && names.contains(&"conn_state"), "{names:?}");
    let first = rows(&page);
    assert_eq!(first.len(), 50);
    let ts: Vec<&str> = first.iter().map(|r| r["ts"].as_str().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");
    let uids = |rs: &[Value]| rs.iter().map(|r| r["uid"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    // The next page starts where this one ended, and stays apart from it
    // while rows keep arriving inside the range already shown (flows are
    // written when they end, with the time they began): asked again, the
    // first page has changed, the older page still holds none of its rows.
    let to = page.body["to"].as_str().unwrap();
    assert!(page.body["newer"].is_null(), "the first page has nothing newer: {}", page.body);
    let older = page.body["older"].as_str().expect("a cursor to older rows").to_string();
    wait_for(60, || {
        let again = s.call("GET", &format!("/api/records?limit=50&to={to}"), Some(&viewer), None);
        (uids(&rows(&again)) != uids(&first)).then_some(())
    })
    .expect("rows written inside the range already shown");
    let next = s.call("GET", &format!("/api/records?limit=50&to={to}&before={older}"), Some(&viewer), None);
    assert_eq!(next.status, 200, "{}", next.body);
    let next_rows = rows(&next);
    assert!(!next_rows.is_empty() && next_rows.len() <= 50, "{}", next.body);
    assert!(next_rows.iter().all(|r| r["ts"].as_str().unwrap() <= ts[49]), "{}", next.body);
    let seen = uids(&first);
    assert!(uids(&next_rows).iter().all(|u| !seen.contains(u)), "no row of the first page again: {}", next.body);
    // And back: the page newer than the second ends with the first page's last row.
    let newer = next.body["newer"].as_str().expect("a cursor to newer rows");
    let back = s.call("GET", &format!("/api/records?limit=50&to={to}&after={newer}"), Some(&viewer), None);
    assert_eq!(back.status, 200, "{}", back.body);
    let back_rows = rows(&back);
    assert_eq!(back_rows.len(), 50, "{}", back.body);
    assert_eq!(back_rows.last().unwrap()["uid"], first[49]["uid"], "{}", back.body);
    let bts: Vec<&str> = back_rows.iter().map(|r| r["ts"].as_str().unwrap()).collect();
    assert!(bts.windows(2).all(|w| w[0] >= w[1]), "newest first: {bts:?}");
    let again = back.body["older"].as_str().expect("a cursor to older rows");
    let next2 = s.call("GET", &format!("/api/records?limit=50&to={to}&before={again}"), Some(&viewer), None);
    // The same place (rows written meanwhile may join the older page, none
    // of the newer one's).
    let n2 = uids(&rows(&next2));
    let kept: Vec<String> = uids(&next_rows).into_iter().filter(|u| n2.contains(u)).collect();
    assert!(!kept.is_empty() && uids(&next_rows).starts_with(&kept), "{n2:?} after {:?}", uids(&next_rows));
    assert!(n2.iter().all(|u| !uids(&back_rows).contains(u)), "{n2:?}");
    // Named columns only (the answer still lists them all), in the same order.
    let narrow = s.call(
        "GET",
        &format!("/api/records?limit=50&columns=uid,resp_p&to={}", page.body["to"].as_str().unwrap()),
        Some(&viewer),
        None,
    );
    assert_eq!(narrow.body["columns"], page.body["columns"]);
    let narrow_rows = rows(&narrow);
    assert!(narrow_rows.iter().all(|r| r.as_object().unwrap().len() == 2), "{}", narrow.body);
    // The same rows as all columns of the same page (asked again until no
    // row arrived between the two questions).
    wait_for(30, || {
        let narrow = s.call("GET", &format!("/api/records?limit=50&columns=uid,resp_p&to={to}"), Some(&viewer), None);
        let full = s.call("GET", &format!("/api/records?limit=50&to={to}"), Some(&viewer), None);
        (uids(&rows(&narrow)) == uids(&rows(&full))).then_some(())
    })
    .expect("the named columns page holds the same rows as the whole page");
    // One connection by its id, and the filter bar's fields.
    let uid = first[0]["uid"].as_str().unwrap();
    let one = s.call("GET", &format!("/api/records?uid={uid}"), Some(&viewer), None);
    assert!(!rows(&one).is_empty() && rows(&one).iter().all(|r| r["uid"] == uid), "{}", one.body);
    let tcp = s.call("GET", "/api/records?protocol=tcp&port=443&limit=20", Some(&viewer), None);
    assert!(rows(&tcp).iter().all(|r| r["proto"] == "tcp" && r["resp_p"] == 443), "{}", tcp.body);
    // Text in DNS names: the DNS rows that hold it, and the flows that had them.
    let dns = wait_for(60, || {
        let r = s.call("GET", "/api/records?table=dns&limit=20", Some(&viewer), None);
        (!rows(&r).is_empty()).then_some(r)
    })
    .expect("DNS records");
    let name = rows(&dns).iter().find_map(|r| r["query"].as_str().map(str::to_string)).expect("a DNS name");
    let word = name.split('.').find(|w| w.len() >= 3).unwrap_or(&name).to_uppercase();
    let hits = s.call("GET", &format!("/api/records?table=dns&text={word}&limit=100"), Some(&viewer), None);
    let hit_rows = rows(&hits);
    assert!(!hit_rows.is_empty(), "{}", hits.body);
    assert!(hit_rows.iter().all(|r| r["query"].as_str().unwrap().contains(&word.to_lowercase())), "{}", hits.body);
    // Flows by text: connections with a DNS, TLS or HTTP record holding it
    // (a TLS server name: its TCP connections are written as they close).
    let tls = wait_for(60, || {
        let r = s.call("GET", "/api/records?table=tls&limit=20", Some(&viewer), None);
        rows(&r).iter().find_map(|r| r["server_name"].as_str().map(str::to_string))
    })
    .expect("TLS records with a server name");
    let sni = tls.split('.').find(|w| w.len() >= 3).unwrap_or(&tls).to_string();
    let flow_rows = wait_for(30, || {
        let r = rows(&s.call("GET", &format!("/api/records?text={sni}&limit=1000"), Some(&viewer), None));
        (!r.is_empty()).then_some(r)
    })
    .expect("flows found by a TLS server name");
    let mut uids = Vec::new();
    for t in ["dns", "tls", "http"] {
        let r = s.call("GET", &format!("/api/records?table={t}&text={sni}&limit=10000"), Some(&viewer), None);
        uids.extend(rows(&r).iter().map(|r| r["uid"].as_str().unwrap().to_string()));
    }
    assert!(
        flow_rows.iter().all(|r| uids.iter().any(|u| u == r["uid"].as_str().unwrap())),
        "every flow found by text has such a record"
    );
    let alerts = s.call("GET", "/api/records?table=alerts&text=rate", Some(&viewer), None);
    assert_eq!(alerts.status, 200, "{}", alerts.body);
    let quote = s.call("GET", "/api/records?table=http&text=it%27s", Some(&viewer), None);
    assert_eq!(quote.status, 200, "a quote in the text is data, not SQL: {}", quote.body);

    // Traffic views: TCP states, packet size classes, talker pairs, countries' hosts.
    let states = s.call("GET", "/api/traffic?by=state", Some(&viewer), None);
    let keys: Vec<String> =
        states.body["top"].as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().into()).collect();
    assert!(
        !keys.is_empty()
            && keys
                .iter()
                .all(|k| ["S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH"]
                    .contains(&k.as_str())),
        "{keys:?}"
    );
    let sizes = s.call("GET", "/api/traffic?by=size", Some(&viewer), None);
    for r in sizes.body["top"].as_array().unwrap() {
        let k = r["key"].as_str().unwrap();
        assert!(
            ["0: none", "1: <64", "2: 64-127", "3: 128-255", "4: 256-511", "5: 512-1023", "6: 1024-1517", "7: 1518+"]
                .contains(&k),
            "{k}"
        );
    }
    let flows_by_size: u64 = sizes.body["top"].as_array().unwrap().iter().map(|r| r["flows"].as_u64().unwrap()).sum();
    assert!(flows_by_size > 0);
    let pairs = s.call("GET", "/api/traffic?by=pair&top=5", Some(&viewer), None);
    let p0 = pairs.body["top"][0]["key"].as_str().unwrap().to_string();
    let (a, b) = p0.split_once(" → ").unwrap_or_else(|| panic!("{p0}"));
    assert!(a.parse::<std::net::IpAddr>().is_ok() && b.parse::<std::net::IpAddr>().is_ok(), "{p0}");
    let series = &states.body["series"];
    let point = series.as_array().unwrap().iter().find(|p| p["packets"].as_u64().unwrap() > 0).expect("a point");
    let parts: u64 = ["tcp", "udp", "icmp", "other"].iter().map(|k| point[k].as_u64().unwrap()).sum();
    assert_eq!(parts, point["packets"].as_u64().unwrap(), "protocols add up to the packets: {point}");
    let countries = s.call("GET", "/api/traffic?by=country", Some(&viewer), None);
    assert!(
        countries.body["top"].as_array().unwrap().iter().all(|r| r["hosts"].as_u64().is_some()),
        "{}",
        countries.body
    );
    assert!(states.body["top"][0].get("hosts").is_none());
    let texted = s.call("GET", &format!("/api/traffic?by=src&text={word}"), Some(&viewer), None);
    assert_eq!(texted.status, 200, "{}", texted.body);

    for bad in [
        "table=stats",
        "table=nothing",
        "limit=0",
        "limit=10001",
        "offset=50",
        "before=abc",
        "after=-1.0",
        "before=1.0&after=1.0",
        "uid=not-an-id",
        "table=alerts&ip=10.0.0.1",
        "text=%01",
        "ip=1.2.3",
        "columns=uid,nope",
        "columns=uid%22%20FROM%20x--",
        "columns=,",
        "from=2030-01-01T00:00:00Z",
    ] {
        let r = s.call("GET", &format!("/api/records?{bad}"), Some(&viewer), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    assert_eq!(s.call("GET", "/api/records", None, None).status, 401);
}
