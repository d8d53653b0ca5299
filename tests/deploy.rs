//! deploy/: every YAML file parses, the Kubernetes manifests validate
//! against the Kubernetes schemas (kubernetes-validate, offline), the
//! compose file and the manifests grant what capture needs and no more,
//! the settings file they all use is one the binary accepts, the systemd
//! unit passes `systemd-analyze verify`, and `tapstream doctor` checks this
//! host and a veth pair in a network namespace made here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tapstream");

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = common::walk(&deploy())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    v.sort();
    v
}

/// Every document of a YAML file, as JSON (PyYAML's safe loader).
fn load(p: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args(["-c", "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(p)
        .output()
        .expect("python3 with PyYAML");
    assert!(out.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifests_parse_validate_and_grant_only_what_capture_needs() {
    let files = yaml_files();
    assert!(files.len() >= 6, "{files:?}");
    let mut kinds = std::collections::BTreeMap::new();
    for f in &files {
        for d in load(f) {
            if let Some(k) = d["kind"].as_str() {
                kinds.insert(k.to_string(), d.clone());
            }
            if f.file_name().unwrap() == "compose.yaml" {
                kinds.insert("compose".into(), d);
            }
        }
    }
    for k in ["Namespace", "ConfigMap", "PersistentVolumeClaim", "DaemonSet", "Kustomization", "compose"] {
        assert!(kinds.contains_key(k), "no {k} in {files:?}");
    }
    // The Kubernetes schemas, strictly (unknown fields are errors).
    let k8s: Vec<&PathBuf> = files.iter().filter(|f| f.parent().unwrap().ends_with("kubernetes")).collect();
    let resources: Vec<&PathBuf> = k8s.iter().copied().filter(|f| !f.ends_with("kustomization.yaml")).collect();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.30.0"])
        .args(&resources)
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate)");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), resources.len(), "{text}");
    // The kustomization lists every resource file, and they exist.
    let listed: Vec<String> = kinds["Kustomization"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for r in &resources {
        let name = r.file_name().unwrap().to_str().unwrap().to_string();
        assert!(listed.contains(&name), "{name} not in kustomization {listed:?}");
    }

    // The sensor: host network, the five capabilities and no others,
    // probes on /api/health, the data on the claim, the config map.
    let ds = &kinds["DaemonSet"]["spec"]["template"]["spec"];
    assert_eq!(ds["hostNetwork"], true);
    let c = &ds["containers"][0];
    let caps = &c["securityContext"]["capabilities"];
    assert_eq!(caps["drop"], serde_json::json!(["ALL"]));
    let mut add: Vec<&str> = caps["add"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    add.sort();
    assert_eq!(add, ["BPF", "IPC_LOCK", "NET_ADMIN", "NET_RAW", "PERFMON"]);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/api/health", "{probe}");
    }
    let vols = ds["volumes"].as_array().unwrap();
    assert!(vols.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == "tapstream-data"));
    assert!(vols.iter().any(|v| v["configMap"]["name"] == "tapstream-config"));
    assert_eq!(kinds["PersistentVolumeClaim"]["metadata"]["name"], "tapstream-data");
    // The config map holds deploy/tapstream.toml as it is.
    let shipped = std::fs::read_to_string(deploy().join("tapstream.toml")).unwrap();
    assert_eq!(kinds["ConfigMap"]["data"]["tapstream.toml"].as_str().unwrap().trim(), shipped.trim());

    let svc = &kinds["compose"]["services"]["tapstream"];
    assert_eq!(svc["network_mode"], "host");
    assert_eq!(svc["cap_drop"], serde_json::json!(["ALL"]));
    let mut add: Vec<&str> = svc["cap_add"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    add.sort();
    assert_eq!(add, ["BPF", "IPC_LOCK", "NET_ADMIN", "NET_RAW", "PERFMON"]);
    assert_eq!(svc["ulimits"]["memlock"], -1);
    assert!(svc["healthcheck"]["test"].to_string().contains("/api/health"));
    // Its build file exists, and every file the image copies from the
    // checkout is there.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let containerfile = deploy().join("compose.yaml").parent().unwrap().join(svc["build"]["context"].as_str().unwrap());
    let cf = containerfile.join(svc["build"]["dockerfile"].as_str().unwrap());
    let text = std::fs::read_to_string(&cf).unwrap();
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(stages, 3, "a multi-stage build: console, binary, runtime");
    for l in text.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from=")) {
        for src in l.split_whitespace().skip(1).collect::<Vec<_>>().split_last().unwrap().1 {
            assert!(root.join(src).exists(), "{}: COPY {src}: not in the checkout", cf.display());
        }
    }
}

/// `tapstream doctor` with the shipped settings: the file is accepted
/// (doctor reads it first), and every host check is reported.
#[test]
fn the_shipped_settings_are_accepted_and_doctor_checks_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(deploy().join("tapstream.toml"))
        .args(["doctor", "--json", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let get =
        |name: &str| checks.iter().find(|c| c["check"] == name).unwrap_or_else(|| panic!("no {name}: {checks:#?}"));
    for name in ["kernel", "capabilities", "memlock", "disk", "clock"] {
        let c = get(name);
        assert!(["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()), "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty());
    }
    // The shipped file names eth1, which this host does not have: a
    // failed check with its fix, and a failing exit.
    if !Path::new("/sys/class/net/eth1").exists() {
        let c = get("interface eth1");
        assert_eq!(c["status"], "fail");
        assert!(c["fix"].as_str().unwrap().contains("capture.interfaces"));
        assert!(!out.status.success());
    }
    // The 400 GB budget against the free space of the temporary directory.
    let disk = get("disk")["detail"].as_str().unwrap().to_string();
    assert!(disk.contains("budget 381470 MiB") || disk.contains("retention budget 381470 MiB"), "{disk}");
    // A bad value is refused with its name.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[reports]\nkeep_days = 0\n").unwrap();
    let out = Command::new(BIN).arg("--config").arg(&bad).args(["doctor"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reports.keep_days = 0"), "{out:?}");
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy().join("systemd/tapstream.service")).unwrap();
    for line in [
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON CAP_IPC_LOCK",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON CAP_IPC_LOCK",
        "LimitMEMLOCK=infinity",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing `{line}`");
    }
    assert!(!unit.lines().any(|l| l.starts_with("AmbientCapabilities") && l.contains("CAP_SYS_ADMIN")));
    // Verified with the binary at the path the unit names replaced by this
    // build's (verify checks that the executable exists).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tapstream.service");
    std::fs::write(&p, unit.replace("/usr/local/bin/tapstream", BIN)).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&p).output().expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// A namespace made for one test, deleted on drop (also on a panic).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// On a veth pair in a namespace made here, `doctor --probe-xdp` attaches
/// the capture program natively and detaches it again, counts the queues,
/// and reports whether the port is promiscuous (capture turns it on itself).
#[test]
fn doctor_probes_xdp_on_a_veth_pair() {
    let ns = Netns(format!("tstdoc{}", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0]);
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "link",
        "add",
        "dva",
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "dvb",
        "numrxqueues",
        "2",
        "numtxqueues",
        "2",
    ]);
    sh(&["ip", "-n", &ns.0, "link", "set", "dva", "up"]);
    sh(&["ip", "-n", &ns.0, "link", "set", "dvb", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, BIN, "doctor", "--json", "--probe-xdp", "--interface", "dva", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let checks: Vec<Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let get =
        |name: &str| checks.iter().find(|c| c["check"] == name).unwrap_or_else(|| panic!("no {name}: {checks:#?}"));
    let xdp = get("interface dva xdp");
    assert_eq!(xdp["status"], "ok", "{xdp}");
    assert!(xdp["detail"].as_str().unwrap().contains("driver veth: native XDP attached and detached (probe)"), "{xdp}");
    assert_eq!(
        get("interface dva queues")["detail"],
        "2 RX queues (the driver reports no RSS table: it or the sender picks the queue)"
    );
    let promisc = get("interface dva promiscuous");
    assert_eq!(promisc["status"], "ok", "{promisc}");
    assert!(promisc["detail"].as_str().unwrap().starts_with("off now"), "{promisc}");
    assert_eq!(get("capabilities")["status"], "ok");
    // Nothing is left attached.
    let link = Command::new("ip").args(["-n", &ns.0, "link", "show", "dva"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"), "{}", String::from_utf8_lossy(&link.stdout));
    // Promiscuous on: reported as such.
    sh(&["ip", "-n", &ns.0, "link", "set", "dva", "promisc", "on"]);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, BIN, "doctor", "--json", "--interface", "dva", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let promisc = checks.iter().find(|c| c["check"] == "interface dva promiscuous").expect("promiscuous check");
    assert_eq!(promisc["detail"], "on now", "{promisc}");
}
