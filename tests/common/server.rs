//! A running `tapstream serve` for API tests: its own data directory, a
//! port the kernel picked, the first admin's password, and an HTTP client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub base: String,
    pub admin_password: String,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub stderr: Arc<Mutex<String>>,
    pub stdout: Arc<Mutex<String>>,
    agent: ureq::Agent,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Server {
    /// Start on a fresh data directory; `config` is TOML added to a config
    /// that locks out after 3 failures for 2 s.
    pub fn start(config: &str, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = Server::start_in(&data, config, args);
        s._dir = Some(dir);
        s
    }

    pub fn start_in(data: &Path, config: &str, args: &[&str]) -> Server {
        std::fs::create_dir_all(data).unwrap();
        let cfg = data.with_extension("toml");
        std::fs::write(&cfg, format!("[api]\nlockout_after = 3\nlockout_secs = 2\nlockout_max_secs = 8\n{config}\n"))
            .unwrap();
        let mut child = crate::common::bin()
            .arg("--config")
            .arg(&cfg)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        for (pipe, into) in [
            (Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>, stderr.clone()),
            (Box::new(child.stdout.take().unwrap()), stdout.clone()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut g = into.lock().unwrap();
                    g.push_str(&line);
                    g.push('\n');
                }
            });
        }
        let t0 = Instant::now();
        let base = loop {
            if let Some(l) =
                stderr.lock().unwrap().lines().find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
            {
                break l;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("server exited {st}: {}", stderr.lock().unwrap());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "server did not start: {}", stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(50));
        };
        let admin_password = stdout
            .lock()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("first start: created user `admin` with password ").map(str::to_string))
            .unwrap_or_default();
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Server { child, base, admin_password, data: data.to_path_buf(), _dir: None, stderr, stdout, agent }
    }

    /// A request; `body` is sent as JSON when given.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Reply {
        self.raw(method, path, token, body.map(|b| ("application/json", b.as_bytes().to_vec())))
    }

    pub fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Reply {
        let mut b = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some((ct, bytes)) => b.header("content-type", ct).body(bytes).unwrap(),
            None => b.body(Vec::new()).unwrap(),
        };
        let mut r = self.agent.run(req).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, body, headers }
    }

    /// A request whose answer is kept as bytes (exports): status, headers, body.
    pub fn bytes(&self, method: &str, path: &str, token: &str, json: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(json.as_bytes().to_vec())
            .unwrap();
        let mut r = self.agent.run(req).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = r.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
        (r.status().as_u16(), headers, body)
    }

    /// Log in; the reply's body holds the tokens.
    pub fn login(&self, user: &str, password: &str, totp: Option<&str>) -> Reply {
        let mut b = serde_json::json!({ "username": user, "password": password });
        if let Some(c) = totp {
            b["totp"] = Value::String(c.into());
        }
        self.call("POST", "/api/login", None, Some(&b.to_string()))
    }

    /// An access token for `user`, or a panic saying why not.
    pub fn token(&self, user: &str, password: &str) -> String {
        let r = self.login(user, password, None);
        assert_eq!(r.status, 200, "login {user}: {}", r.body);
        r.body["access_token"].as_str().unwrap().to_string()
    }

    pub fn admin(&self) -> String {
        self.token("admin", &self.admin_password)
    }

    /// Create a user with a role (as admin) and return its token.
    pub fn user(&self, admin: &str, name: &str, role: &str) -> String {
        let pw = format!("{name}-password-123");
        let r = self.call(
            "POST",
            "/api/users",
            Some(admin),
            Some(&serde_json::json!({ "name": name, "role": role, "password": pw }).to_string()),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        self.token(name, &pw)
    }

    /// Stop with SIGTERM and wait; the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let t0 = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "server did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `f` gives Some, up to `secs`.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}
