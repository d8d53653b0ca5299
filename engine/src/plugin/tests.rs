//! The sandbox, with small hand-written modules (WebAssembly text).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::detect::{ConvKey, ConvStat};

const GLOBAL: &str = "scope = \"global\"\nsubscribe = [\"window\"]\n";

/// A plugin whose batch handler counts records (counter `records`), then runs `body`.
fn wat(abi: u32, imports: &str, body: &str) -> String {
    format!(
        r#"(module
  (import "tapstream" "counter_add" (func $counter (param i32 i32 i64)))
  (import "tapstream" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "tapstream" "kv_set" (func $kv_set (param i32 i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") 4)
  (data (i32.const 0) "records")
  (data (i32.const 16) "n")
  (func (export "tapstream_abi") (result i32) (i32.const {abi}))
  (func (export "tapstream_buffer") (param i32) (result i32) (i32.const 65536))
  (func (export "tapstream_batch") (param $kind i32) (param $ptr i32) (param $count i32) (param $bytes i32) (result i32)
    (call $counter (i32.const 0) (i32.const 7) (i64.extend_i32_u (local.get $count)))
    {body}
    (i32.const 0)))"#
    )
}

fn write(dir: &Path, name: &str, module: &str, manifest_extra: &str) -> PathBuf {
    let wasm = dir.join(format!("{name}.wasm"));
    // Wasmtime reads the text format as well as the binary one.
    std::fs::write(&wasm, module).unwrap();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!("name = \"{name}\"\nversion = \"0\"\nabi = 1\n{manifest_extra}"),
    )
    .unwrap();
    wasm
}

fn err(wasm: &Path) -> String {
    load_plugin(wasm, None).unwrap_err().to_string()
}

#[test]
fn load_checks_abi_exports_and_imports() {
    let d = tempfile::tempdir().unwrap();
    let good = write(d.path(), "good", &wat(1, "", ""), GLOBAL);
    let p = load_plugin(&good, None).unwrap();
    assert_eq!(&*p.name, "good");

    let bad = write(d.path(), "bad", &wat(99, "", ""), GLOBAL);
    let e = err(&bad);
    assert!(e.contains("speaks plugin ABI version 99; this tapstream speaks version 1"), "{e}");

    let m = wat(1, "", "").replace("(export \"tapstream_batch\")", "");
    let e = err(&write(d.path(), "nobatch", &m, GLOBAL));
    assert!(e.contains("exports no `tapstream_batch`"), "{e}");

    let wasi = r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#;
    let e = err(&write(d.path(), "wasi", &wat(1, wasi, ""), GLOBAL));
    assert!(e.contains("imports wasi_snapshot_preview1.fd_write: plugins get no WASI"), "{e}");

    let clock = r#"(import "tapstream" "now_ns" (func (result i64)))"#;
    let e = err(&write(d.path(), "clock", &wat(1, clock, ""), GLOBAL));
    assert!(e.contains("needs grants = [\"clock\"]"), "{e}");
    let ok = write(d.path(), "clock2", &wat(1, clock, ""), &format!("{GLOBAL}grants = [\"clock\"]\n"));
    load_plugin(&ok, None).unwrap();

    let unknown = r#"(import "tapstream" "open_file" (func (param i32) (result i32)))"#;
    let e = err(&write(d.path(), "unknown", &wat(1, unknown, ""), GLOBAL));
    assert!(e.contains("tapstream.open_file, which this host does not have"), "{e}");

    let sig = wat(1, "", "").replace(
        "(func (export \"tapstream_abi\") (result i32) (i32.const 1))",
        "(func (export \"tapstream_abi\") (result i64) (i64.const 1))",
    );
    let e = err(&write(d.path(), "sig", &sig, GLOBAL));
    assert!(e.contains("`tapstream_abi` has the signature"), "{e}");

    std::fs::write(d.path().join("junk.wasm"), b"not wasm").unwrap();
    std::fs::write(d.path().join("junk.toml"), format!("name = \"junk\"\nversion = \"0\"\nabi = 1\n{GLOBAL}")).unwrap();
    let e = err(&d.path().join("junk.wasm"));
    assert!(e.contains("not a valid WebAssembly module"), "{e}");

    std::fs::write(d.path().join("lonely.wasm"), b"").unwrap();
    let e = err(&d.path().join("lonely.wasm"));
    assert!(e.contains("lonely.toml: missing"), "{e}");
}

fn runner(plugins: Vec<Arc<LoadedPlugin>>) -> (PluginRunner, Arc<PluginStats>, Arc<PluginTap>) {
    let tap = PluginTap::new(PluginSet { plugins });
    let stats = Arc::new(PluginStats::default());
    (PluginRunner::new(Scope::Global, 0, tap.clone(), stats.clone()), stats, tap)
}

/// One second with `n` conversations.
fn second(r: &mut PluginRunner, sec: u64, n: usize) {
    let mut convs: Vec<(ConvKey, ConvStat)> = (0..n)
        .map(|i| {
            (
                ConvKey {
                    src: [10, 0, 0, i as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    dport: 80,
                    proto: 6,
                    ..Default::default()
                },
                ConvStat { flows: 1, pkts: 3, ..Default::default() },
            )
        })
        .collect();
    r.window_second(sec, &mut convs);
}

#[test]
fn a_plugin_sees_every_record_in_batches() {
    let d = tempfile::tempdir().unwrap();
    let p = Arc::new(load_plugin(&write(d.path(), "count", &wat(1, "", ""), GLOBAL), None).unwrap());
    let (mut r, stats, _tap) = runner(vec![p]);
    for s in 0..10 {
        second(&mut r, 1000 + s, 300);
    }
    let m = &stats.snapshot()["count"];
    assert_eq!(m.records, 3000);
    assert_eq!(m.counters["records"], 3000);
    // 300 a second: a full batch of 256 and one of 44.
    assert_eq!(m.calls, 20);
    assert_eq!(m.call_ns.len(), 20);
    assert_eq!(m.traps, 0);
    assert_eq!(m.state, Some(SlotState::Running));
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline_then_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let limits = "[limits]\ndeadline_ms = 10\nmax_crashes = 3\n";
    let p = Arc::new(
        load_plugin(&write(d.path(), "spin", &wat(1, "", "(loop $l (br $l))"), &format!("{GLOBAL}{limits}")), None)
            .unwrap(),
    );
    let (mut r, stats, _tap) = runner(vec![p]);
    let t0 = Instant::now();
    second(&mut r, 1, 10);
    let first = t0.elapsed();
    assert!(first < Duration::from_millis(500), "the deadline did not stop it: {first:?}");
    assert_eq!(r.states()[0].1, SlotState::Backoff);
    // Records during the backoff are skipped, not queued.
    second(&mut r, 2, 10);
    let m = stats.snapshot()["spin"].clone();
    assert_eq!(m.traps, 1);
    assert_eq!(m.skipped_records, 20);
    assert!(m.last_crash.as_deref().unwrap().contains("deadline"), "{:?}", m.last_crash);
    // Two more crashes (after their backoffs: 100 ms, 200 ms) quarantine it.
    for s in 3..40 {
        std::thread::sleep(Duration::from_millis(25));
        second(&mut r, s, 10);
        if r.states()[0].1 == SlotState::Quarantined {
            break;
        }
    }
    assert_eq!(r.states()[0].1, SlotState::Quarantined);
    let m = stats.snapshot()["spin"].clone();
    assert_eq!((m.traps, m.quarantines, m.restarts), (3, 1, 2));
    let f = r.take_findings();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].category, crate::alert::Category::System);
    assert!(f[0].explanation.contains("spin crashed 3 times"), "{}", f[0].explanation);
    // Quarantined: no more calls, whatever comes.
    let calls = m.calls;
    second(&mut r, 100, 10);
    assert_eq!(stats.snapshot()["spin"].calls, calls);
}

#[test]
fn memory_past_the_cap_traps_and_the_state_outlives_the_crash() {
    let d = tempfile::tempdir().unwrap();
    // Keep a count in the key-value state (key "n" at 16, value at 32),
    // report it as a counter, then grow memory past the 1 MiB cap.
    let body = r#"
    (drop (call $kv_get (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 4)))
    (i32.store (i32.const 32) (i32.add (i32.load (i32.const 32)) (i32.const 1)))
    (drop (call $kv_set (i32.const 16) (i32.const 1) (i32.const 32) (i32.const 4)))
    (call $counter (i32.const 16) (i32.const 1) (i64.extend_i32_u (i32.load (i32.const 32))))
    (drop (memory.grow (i32.const 64)))"#;
    let p = Arc::new(
        load_plugin(
            &write(d.path(), "hog", &wat(1, "", body), &format!("{GLOBAL}[limits]\nmemory_mb = 1\nmax_crashes = 10\n")),
            None,
        )
        .unwrap_err_or_ok(),
    );
    let (mut r, stats, _tap) = runner(vec![p]);
    second(&mut r, 1, 1);
    std::thread::sleep(Duration::from_millis(120));
    second(&mut r, 2, 1);
    let m = stats.snapshot()["hog"].clone();
    assert_eq!(m.traps, 2, "{m:?}");
    assert!(m.last_crash.as_deref().unwrap().contains("memory"), "{:?}", m.last_crash);
    // 1 then 2: the second instance read the first one's state.
    assert_eq!(m.counters["n"], 3);
}

trait OkOrPanic<T> {
    fn unwrap_err_or_ok(self) -> T;
}
impl<T> OkOrPanic<T> for Result<T, PluginError> {
    fn unwrap_err_or_ok(self) -> T {
        self.unwrap_or_else(|e| panic!("{e}"))
    }
}

#[test]
fn hot_reload_swaps_between_batches_and_keeps_what_was_buffered() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "v", &wat(1, "", ""), GLOBAL);
    let mut dir = PluginDir::open(d.path(), Some(&d.path().join("cache"))).unwrap();
    let first = dir.loaded();
    assert_eq!(first.len(), 1);
    assert!(first[0].compiled);
    let stats = Arc::new(PluginStats::default());
    let mut r = PluginRunner::new(Scope::Global, 0, dir.tap(), stats.clone());
    second(&mut r, 1, 100);
    // A new version (counting into `records2`), written while running.
    std::thread::sleep(Duration::from_millis(20));
    let v2 = wat(1, "", "")
        .replace("(data (i32.const 0) \"records\")", "(data (i32.const 0) \"records2\")")
        .replace("(i32.const 7)", "(i32.const 8)");
    write(d.path(), "v", &v2, GLOBAL);
    assert!(dir.poll());
    second(&mut r, 2, 100);
    let m = &stats.snapshot()["v"];
    assert_eq!(m.counters["records"], 100, "{m:?}");
    assert_eq!(m.counters["records2"], 100, "{m:?}");
    assert_eq!(m.records, 200);
    // A broken update leaves the running version in place.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(d.path().join("v.wasm"), b"garbage").unwrap();
    assert!(!dir.poll());
    assert!(dir.errors.values().any(|e| e.contains("not a valid WebAssembly module")));
    second(&mut r, 3, 100);
    assert_eq!(stats.snapshot()["v"].counters["records2"], 200);
    // The compile cache: a second directory over the same files compiles nothing.
    write(d.path(), "v", &v2, GLOBAL);
    let again = PluginDir::open(d.path(), Some(&d.path().join("cache"))).unwrap();
    assert!(!again.loaded()[0].compiled);
    // Removed: the runner lets it go.
    std::fs::remove_file(d.path().join("v.wasm")).unwrap();
    assert!(dir.poll());
    second(&mut r, 4, 100);
    assert!(r.is_empty());
}

#[test]
fn fuel_stops_a_loop_before_the_deadline_does() {
    let d = tempfile::tempdir().unwrap();
    let extra = format!("{GLOBAL}[limits]\ndeadline_ms = 5000\nfuel = 100000\n");
    let p = Arc::new(load_plugin(&write(d.path(), "burn", &wat(1, "", "(loop $l (br $l))"), &extra), None).unwrap());
    let (mut r, stats, _tap) = runner(vec![p]);
    let t0 = Instant::now();
    second(&mut r, 1, 5);
    assert!(t0.elapsed() < Duration::from_secs(2), "fuel did not stop it");
    let m = stats.snapshot()["burn"].clone();
    assert_eq!(m.traps, 1);
    assert_eq!(m.last_crash.as_deref(), Some("ran out of fuel"));
}

#[test]
fn granted_clock_and_randomness_work() {
    let d = tempfile::tempdir().unwrap();
    let imports = r#"(import "tapstream" "now_ns" (func $now (result i64)))
  (import "tapstream" "random" (func $random (param i32 i32) (result i32)))"#;
    // Count `n` = the clock in seconds (plausible: after 2020), and `r` =
    // how many of 64 random bytes are not zero.
    let body = r#"
    (call $counter (i32.const 16) (i32.const 1) (i64.div_u (call $now) (i64.const 1000000000)))
    (drop (call $random (i32.const 100) (i32.const 64)))
    (call $counter (i32.const 17) (i32.const 1)
      (i64.extend_i32_u (i64.ne (i64.load (i32.const 100)) (i64.const 0))))"#;
    let m = wat(1, imports, body).replace("(data (i32.const 16) \"n\")", "(data (i32.const 16) \"nr\")");
    let p = Arc::new(
        load_plugin(&write(d.path(), "granted", &m, &format!("{GLOBAL}grants = [\"clock\", \"random\"]\n")), None)
            .unwrap(),
    );
    let (mut r, stats, _tap) = runner(vec![p]);
    second(&mut r, 1, 1);
    let m = stats.snapshot()["granted"].clone();
    assert_eq!(m.traps, 0, "{:?}", m.last_crash);
    assert!(m.counters["n"] > 1_577_836_800, "{m:?}");
    assert_eq!(m.counters["r"], 1, "random bytes were all zero");
}

#[test]
fn listed_files_are_readable_with_the_grant_and_nothing_else() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("list.txt"), "evil.example\nbad.test\n").unwrap();
    std::fs::write(d.path().join("secret.txt"), "no").unwrap();
    let imports = r#"(import "tapstream" "read_file" (func $read (param i32 i32 i32 i32) (result i32)))
  (data (i32.const 300) "list.txtsecret.txt")"#;
    // Counter `n`: bytes read from list.txt; `r`: what asking for secret.txt returned.
    let body = r#"
    (call $counter (i32.const 16) (i32.const 1) (i64.extend_i32_s (call $read (i32.const 300) (i32.const 8) (i32.const 1024) (i32.const 4096))))
    (call $counter (i32.const 17) (i32.const 1) (i64.extend_i32_s (call $read (i32.const 308) (i32.const 10) (i32.const 1024) (i32.const 4096))))"#;
    let m = wat(1, imports, body).replace("(data (i32.const 16) \"n\")", "(data (i32.const 16) \"nr\")");
    let e = load_plugin(&write(d.path(), "nogrant", &m, GLOBAL), None).unwrap_err().to_string();
    assert!(e.contains("needs grants = [\"files\"]"), "{e}");
    let extra = format!("{GLOBAL}grants = [\"files\"]\nfiles = [\"list.txt\"]\n");
    let p = Arc::new(load_plugin(&write(d.path(), "reader", &m, &extra), None).unwrap());
    let (mut r, stats, _tap) = runner(vec![p]);
    second(&mut r, 1, 1);
    let m = stats.snapshot()["reader"].clone();
    assert_eq!(m.counters["n"], 22, "{m:?}");
    assert_eq!(m.counters["r"], -4, "an unlisted file is not found: {m:?}");
}
