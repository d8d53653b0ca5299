//! The web console in a real browser: `tapstream serve` on demo traffic
//! with an injected SYN flood, driven by `console/e2e/run.mjs`
//! (playwright-core on Debian's headless Chromium). The script logs in,
//! visits every page, checks that real data appears, runs SQL, exports,
//! acknowledges an alert, opens incidents, checks what a viewer may not
//! do, and enrols TOTP then logs in with a code; it fails on any console error or failed request. Screenshots
//! land in `console/e2e/artifacts/` (the README's dashboard image is one).

mod common;
#[path = "common/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::Path;
use std::process::Command;

use server::Server;

#[test]
fn the_console_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let console = root.join("console");
    assert!(
        console.join("node_modules/playwright-core").is_dir(),
        "console/node_modules is missing: run `bash scripts/console.sh` (scripts/test.sh does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: apt-get install chromium (scripts/test.sh does)");
    // A SYN flood from the tenth second on; history flushed every second so
    // charts fill quickly.
    let s = Server::start(
        "[storage]\nflush_interval_secs = 1\n[demo]\npps = 3000\nattacks = \"syn-flood:3000@8+900\"\n",
        &["--workers", "2"],
    );
    let admin = s.admin();
    let viewer_pw = "viewer-password-123";
    let r = s.call(
        "POST",
        "/api/users",
        Some(&admin),
        Some(&serde_json::json!({ "name": "vera", "role": "viewer", "password": viewer_pw }).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let analyst_pw = "analyst-password-123";
    let r = s.call(
        "POST",
        "/api/users",
        Some(&admin),
        Some(&serde_json::json!({ "name": "tess", "role": "analyst", "password": analyst_pw }).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let artifacts = console.join("e2e/artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    let out = Command::new("node")
        .arg("e2e/run.mjs")
        .current_dir(&console)
        .env("BASE", &s.base)
        .env("ADMIN_PASSWORD", &s.admin_password)
        .env("VIEWER_USER", "vera")
        .env("VIEWER_PASSWORD", viewer_pw)
        .env("ANALYST_USER", "tess")
        .env("ANALYST_PASSWORD", analyst_pw)
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stderr}\n{stdout}\nserver log:\n{}",
        out.status,
        s.stderr.lock().unwrap()
    );
    for page in [
        "login",
        "dashboard",
        "history",
        "flows",
        "sql",
        "map",
        "alerts",
        "incidents",
        "rules",
        "intel",
        "reports",
        "plugins",
        "performance",
        "logs",
        "users",
        "settings",
        "dashboard-phone",
        "viewer-alerts",
    ] {
        let shot = artifacts.join(format!("{page}.png"));
        assert!(std::fs::metadata(&shot).map(|m| m.len() > 5_000).unwrap_or(false), "no screenshot of {page}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(artifacts.join("results.json")).unwrap()).unwrap();
    assert!(results["problems"].as_array().unwrap().is_empty(), "{results}");
    assert!(results["results"]["dashboard_chart_types"].as_array().unwrap().len() >= 8, "{results}");
}

#[test]
fn the_console_is_embedded_and_served_beside_the_api() {
    let s = Server::start("", &["--pps", "200", "--workers", "1"]);
    let page = s.raw("GET", "/", None, None);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let csp = page.header("content-security-policy").unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.body.as_str().unwrap().to_string();
    // Every script and style the page names is served from the binary.
    let assets: Vec<&str> = html.split('"').filter(|p| p.starts_with("/assets/")).collect();
    assert!(assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")), "{html}");
    for a in assets {
        let r = s.raw("GET", a, None, None);
        assert_eq!(r.status, 200, "{a}");
        assert!(r.header("cache-control").unwrap().contains("immutable"), "{a}");
    }
    // No CDN: nothing in the page or its bundles points off the appliance.
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    // Paths without an extension are the console's page; API paths stay the API's.
    assert_eq!(s.raw("GET", "/dashboard", None, None).status, 200);
    let api = s.raw("GET", "/api/nope", None, None);
    assert_eq!((api.status, api.body["error"].as_str()), (404, Some("not_found")));
    assert_eq!(s.raw("GET", "/assets/missing.js", None, None).status, 404);
    assert_eq!(s.raw("POST", "/", None, None).status, 404);
    for f in tapstream_api::console::files() {
        assert!(!f.ends_with(".map"), "source maps are not shipped: {f}");
    }
}
