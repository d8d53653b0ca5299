//! One sandboxed plugin instance and the host functions it may call.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tapstream_plugin_sdk::abi::{self, alert as al, errno, get_f64, get_str, get_u16, get_u32, get_u64};
use wasmtime::{Caller, Engine, Extern, Linker, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc};

use super::load::LoadedPlugin;
use super::manifest::{Grants, Limits};
use crate::alert::{Category, Severity, Verdict};
use crate::detect::Finding;

/// A plugin's key-value state. Owned by the runner's slot, lent to each
/// instance, so it outlives crashes and reloads.
#[derive(Default, Debug)]
pub(crate) struct Kv {
    map: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl Kv {
    fn set(&mut self, k: &[u8], v: &[u8], l: &Limits) -> i32 {
        let old = self.map.get(k).map_or(0, |o| k.len() + o.len());
        let new_bytes = self.bytes - old + k.len() + v.len();
        if (old == 0 && self.map.len() >= l.kv_max_keys) || new_bytes > l.kv_max_bytes {
            return errno::LIMIT;
        }
        self.bytes = new_bytes;
        self.map.insert(k.to_vec(), v.to_vec());
        0
    }
    fn del(&mut self, k: &[u8]) {
        if let Some(v) = self.map.remove(k) {
            self.bytes -= k.len() + v.len();
        }
    }
}

/// What the host keeps for an instance.
pub(crate) struct HostState {
    pub name: Arc<str>,
    pub config: Arc<BTreeMap<String, String>>,
    pub limits: Limits,
    /// Readable files (the `files` grant): name → path.
    files: Arc<Vec<(String, std::path::PathBuf)>>,
    store_limits: StoreLimits,
    pub kv: Kv,
    /// The plugin's own counters.
    pub counters: BTreeMap<String, i64>,
    /// Alerts raised since the runner last took them.
    pub alerts: Vec<Finding>,
    /// Alerts refused (rate limit, invalid), log lines dropped.
    pub alerts_refused: u64,
    pub logs_dropped: u64,
    alert_window: (u64, u32),
    log_window: (u64, u32),
    /// Traffic time of the batch being handled (for rate windows).
    pub now_sec: u64,
}

impl HostState {
    pub fn new(p: &LoadedPlugin, kv: Kv) -> HostState {
        let m = &p.manifest;
        HostState {
            name: p.name.clone(),
            config: p.config.clone(),
            limits: m.limits,
            files: p.files.clone(),
            store_limits: StoreLimitsBuilder::new()
                .memory_size(m.limits.memory_bytes)
                .memories(1)
                .instances(1)
                .tables(4)
                .table_elements(100_000)
                .trap_on_grow_failure(true)
                .build(),
            kv,
            counters: BTreeMap::new(),
            alerts: Vec::new(),
            alerts_refused: 0,
            logs_dropped: 0,
            alert_window: (0, 0),
            log_window: (0, 0),
            now_sec: 0,
        }
    }
}

/// Largest file `read_file` hands over.
const MAX_FILE: u64 = 16 << 20;

/// A running instance.
pub(crate) struct Instance {
    pub store: Store<HostState>,
    memory: Memory,
    buffer: usize,
    batch: TypedFunc<(i32, i32, i32, i32), i32>,
    tick: Option<TypedFunc<i64, ()>>,
    deadline_ticks: u64,
    fuel: Option<u64>,
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) struct Crash(pub String);

fn crash(e: wasmtime::Error) -> Crash {
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        let what = match t {
            wasmtime::Trap::Interrupt => "ran past its deadline".to_string(),
            wasmtime::Trap::OutOfFuel => "ran out of fuel".to_string(),
            t => format!("trapped: {t}"),
        };
        return Crash(what);
    }
    // Memory-limit breaches and other host-side errors: the root cause says it.
    let why = e.root_cause().to_string();
    if why.contains("growing memory") {
        return Crash(format!("went over its memory cap ({why})"));
    }
    Crash(why)
}

/// Epoch ticks for a per-call deadline of `ms` (one more than the whole
/// ticks it spans, since the current tick is already under way).
pub(super) fn deadline_ticks(ms: u64) -> u64 {
    ms.div_ceil(super::EPOCH_TICK.as_millis() as u64) + 1
}

impl Instance {
    /// Instantiate `p` with `kv` as its state and run its `tapstream_init`.
    /// On failure the state comes back with the error.
    pub fn start(p: &LoadedPlugin, kv: Kv) -> Result<Instance, (Crash, Kv)> {
        let mut store = Store::new(&p.engine, HostState::new(p, kv));
        store.limiter(|s| &mut s.store_limits);
        store.epoch_deadline_trap();
        let deadline_ticks = deadline_ticks(p.manifest.limits.deadline_ms);
        let fuel = p.manifest.limits.fuel;
        macro_rules! tryc {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(e) => return Err((crash(e), store.into_data().kv)),
                }
            };
        }
        store.set_epoch_deadline(deadline_ticks);
        if let Some(f) = fuel {
            tryc!(store.set_fuel(f));
        }
        let inst = tryc!(p.pre.instantiate(&mut store));
        let memory = match inst.get_memory(&mut store, "memory") {
            Some(m) => m,
            None => return Err((Crash("exports no memory".into()), store.into_data().kv)),
        };
        let buffer_fn = tryc!(inst.get_typed_func::<i32, i32>(&mut store, "tapstream_buffer"));
        let batch = tryc!(inst.get_typed_func::<(i32, i32, i32, i32), i32>(&mut store, "tapstream_batch"));
        let tick = inst.get_typed_func::<i64, ()>(&mut store, "tapstream_tick").ok();
        // The deadline is per call: instantiating is host work (it took over
        // 10 ms on a loaded machine), so each guest call below gets its own.
        if let Ok(init) = inst.get_typed_func::<(), i32>(&mut store, "tapstream_init") {
            store.set_epoch_deadline(deadline_ticks);
            let rc = tryc!(init.call(&mut store, ()));
            if rc != 0 {
                return Err((Crash(format!("tapstream_init returned {rc}")), store.into_data().kv));
            }
        }
        store.set_epoch_deadline(deadline_ticks);
        let buffer = tryc!(buffer_fn.call(&mut store, abi::BUFFER_BYTES as i32)) as u32 as usize;
        if buffer == 0 || buffer + abi::BUFFER_BYTES > memory.data_size(&store) {
            return Err((
                Crash(format!("tapstream_buffer gave {buffer:#x}: not {} bytes inside its memory", abi::BUFFER_BYTES)),
                store.into_data().kv,
            ));
        }
        Ok(Instance { store, memory, buffer, batch, tick, deadline_ticks, fuel })
    }

    fn arm(&mut self) -> Result<(), Crash> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        if let Some(f) = self.fuel {
            self.store.set_fuel(f).map_err(crash)?;
        }
        Ok(())
    }

    /// Hand one batch over: copy it into the plugin's buffer, call
    /// `tapstream_batch`. The return value is the plugin's status.
    pub fn batch(&mut self, kind: u32, records: &[u8], strings: &[u8], count: usize) -> Result<i32, Crash> {
        self.arm()?;
        let len = records.len() + strings.len();
        let mem = self.memory.data_mut(&mut self.store);
        let Some(dst) = mem.get_mut(self.buffer..self.buffer + len) else {
            return Err(Crash("its buffer left its memory".into()));
        };
        dst[..records.len()].copy_from_slice(records);
        dst[records.len()..].copy_from_slice(strings);
        self.batch.call(&mut self.store, (kind as i32, self.buffer as i32, count as i32, len as i32)).map_err(crash)
    }

    pub fn has_tick(&self) -> bool {
        self.tick.is_some()
    }

    pub fn tick(&mut self, now_ns: u64) -> Result<(), Crash> {
        let Some(t) = self.tick.clone() else { return Ok(()) };
        self.arm()?;
        t.call(&mut self.store, now_ns as i64).map_err(crash)
    }

    pub fn into_kv(self) -> Kv {
        self.store.into_data().kv
    }
}

fn memory(c: &mut Caller<'_, HostState>) -> Option<Memory> {
    match c.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn read(c: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Vec<u8>, i32> {
    let m = memory(c).ok_or(errno::BOUNDS)?;
    let (p, l) = (ptr as usize, len as usize);
    m.data(&c).get(p..p.checked_add(l).ok_or(errno::BOUNDS)?).map(<[u8]>::to_vec).ok_or(errno::BOUNDS)
}

fn read_str(c: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> Result<String, i32> {
    String::from_utf8(read(c, ptr, len)?).map_err(|_| errno::INVALID)
}

fn write(c: &mut Caller<'_, HostState>, ptr: u32, cap: u32, v: &[u8]) -> i32 {
    if v.len() > cap as usize {
        return v.len().min(i32::MAX as usize) as i32;
    }
    let Some(m) = memory(c) else { return errno::BOUNDS };
    let p = ptr as usize;
    match m.data_mut(c).get_mut(p..p + v.len()) {
        Some(d) => {
            d.copy_from_slice(v);
            v.len() as i32
        }
        None => errno::BOUNDS,
    }
}

/// `n` events allowed per second of traffic time, counted in `w`.
fn allow(w: &mut (u64, u32), now: u64, n: u32) -> bool {
    if w.0 != now {
        *w = (now, 0);
    }
    w.1 += 1;
    w.1 <= n
}

/// The alert at `ptr` as a finding.
fn decode_alert(c: &mut Caller<'_, HostState>, ptr: u32) -> Result<Finding, i32> {
    let r = read(c, ptr, al::SIZE as u32)?;
    let s = |c: &mut Caller<'_, HostState>, f| {
        let (p, l) = get_str(&r, f);
        if l as usize > 4096 { Err(errno::INVALID) } else { read_str(c, p, l) }
    };
    let rule = s(c, al::RULE)?;
    if !super::manifest::valid_name(&rule) {
        return Err(errno::INVALID);
    }
    let severity = *Severity::ALL.get(get_u32(&r, al::SEVERITY) as usize).ok_or(errno::INVALID)?;
    let category = match get_u32(&r, al::CATEGORY) {
        0 => Category::Ddos,
        1 => Category::Scan,
        2 => Category::Flood,
        3 => Category::Policy,
        4 => Category::Intel,
        5 => Category::Anomaly,
        6 => Category::Malware,
        7 => Category::Exfiltration,
        _ => return Err(errno::INVALID),
    };
    let verdict = *Verdict::ALL.get(get_u32(&r, al::VERDICT) as usize).ok_or(errno::INVALID)?;
    let list = |t: String| -> Vec<String> {
        t.split(',').map(str::trim).filter(|x| !x.is_empty()).take(16).map(str::to_string).collect()
    };
    let src_ips = list(s(c, al::SRC_IPS)?);
    let dst_ips = list(s(c, al::DST_IPS)?);
    let group = s(c, al::GROUP)?;
    let group = if group.is_empty() { src_ips.first().cloned().unwrap_or_default() } else { group };
    let name = c.data().name.clone();
    let ports: Vec<u16> =
        [al::PORT0, al::PORT1, al::PORT2, al::PORT3].iter().map(|f| get_u16(&r, *f)).filter(|p| *p != 0).collect();
    Ok(Finding {
        group: format!("plugin:{name}:{rule}:{group}"),
        absorbed_by: Vec::new(),
        rule_name: Some(format!("{name}/{rule}")),
        rule: "plugin",
        severity,
        category,
        verdict,
        top_sources: src_ips.iter().take(5).cloned().collect(),
        src_ips,
        dst_ips,
        ports,
        packets: get_u64(&r, al::PACKETS),
        bytes: get_u64(&r, al::BYTES),
        flows: get_u64(&r, al::FLOWS),
        rate: Some(get_f64(&r, al::RATE)).filter(|x| x.is_finite()).unwrap_or(0.0),
        rate_unit: Cow::Owned(s(c, al::RATE_UNIT)?.chars().take(32).collect()),
        sample_flows: list(s(c, al::SAMPLE_FLOWS)?),
        explanation: s(c, al::EXPLANATION)?.chars().take(1024).collect(),
    })
}

/// The host functions, for a plugin with these grants.
pub(crate) fn linker(engine: &Engine, grants: Grants) -> wasmtime::Result<Linker<HostState>> {
    let mut l = Linker::new(engine);
    const M: &str = "tapstream";
    l.func_wrap(M, "alert", |mut c: Caller<'_, HostState>, ptr: i32| -> i32 {
        let st = c.data_mut();
        let (now, n) = (st.now_sec, st.limits.alerts_per_sec);
        if !allow(&mut st.alert_window, now, n) {
            st.alerts_refused += 1;
            return errno::LIMIT;
        }
        match decode_alert(&mut c, ptr as u32) {
            Ok(f) => {
                c.data_mut().alerts.push(f);
                0
            }
            Err(e) => {
                c.data_mut().alerts_refused += 1;
                e
            }
        }
    })?;
    l.func_wrap(M, "log", |mut c: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
        let st = c.data_mut();
        let (now, n) = (st.now_sec, st.limits.log_lines_per_sec);
        if !allow(&mut st.log_window, now, n) {
            st.logs_dropped += 1;
            return;
        }
        let len = (len as u32).min(1024);
        let Ok(b) = read(&mut c, ptr as u32, len) else { return };
        let msg = String::from_utf8_lossy(&b);
        let name = c.data().name.clone();
        match level {
            0 => tracing::error!(plugin = %name, "{msg}"),
            1 => tracing::warn!(plugin = %name, "{msg}"),
            2 => tracing::info!(plugin = %name, "{msg}"),
            _ => tracing::debug!(plugin = %name, "{msg}"),
        }
    })?;
    l.func_wrap(M, "config_get", |mut c: Caller<'_, HostState>, kp: i32, kl: i32, op: i32, oc: i32| -> i32 {
        let Ok(k) = read_str(&mut c, kp as u32, (kl as u32).min(256)) else { return errno::BOUNDS };
        let cfg = c.data().config.clone();
        match cfg.get(&k) {
            Some(v) => write(&mut c, op as u32, oc as u32, v.as_bytes()),
            None => errno::NOT_FOUND,
        }
    })?;
    l.func_wrap(M, "counter_add", |mut c: Caller<'_, HostState>, np: i32, nl: i32, delta: i64| {
        // Called per batch: an existing counter costs no allocation.
        let Some(m) = memory(&mut c) else { return };
        let (p, n) = (np as u32 as usize, (nl as u32).min(64) as usize);
        let mut name = [0u8; 64];
        match m.data(&c).get(p..p + n) {
            Some(b) => name[..n].copy_from_slice(b),
            None => return,
        }
        let Ok(name) = std::str::from_utf8(&name[..n]) else { return };
        let st = c.data_mut();
        if let Some(v) = st.counters.get_mut(name) {
            *v += delta;
        } else if st.counters.len() < 64 {
            st.counters.insert(name.to_string(), delta);
        }
    })?;
    l.func_wrap(M, "kv_get", |mut c: Caller<'_, HostState>, kp: i32, kl: i32, op: i32, oc: i32| -> i32 {
        let Ok(k) = read(&mut c, kp as u32, (kl as u32).min(1024)) else { return errno::BOUNDS };
        match c.data().kv.map.get(&k).cloned() {
            Some(v) => write(&mut c, op as u32, oc as u32, &v),
            None => errno::NOT_FOUND,
        }
    })?;
    l.func_wrap(M, "kv_set", |mut c: Caller<'_, HostState>, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
        let Ok(k) = read(&mut c, kp as u32, (kl as u32).min(1024)) else { return errno::BOUNDS };
        if vl as u32 as usize > c.data().limits.kv_max_bytes {
            return errno::LIMIT;
        }
        let Ok(v) = read(&mut c, vp as u32, vl as u32) else { return errno::BOUNDS };
        let st = c.data_mut();
        let lim = st.limits;
        st.kv.set(&k, &v, &lim)
    })?;
    l.func_wrap(M, "kv_del", |mut c: Caller<'_, HostState>, kp: i32, kl: i32| {
        if let Ok(k) = read(&mut c, kp as u32, (kl as u32).min(1024)) {
            c.data_mut().kv.del(&k);
        }
    })?;
    if grants.clock {
        l.func_wrap(M, "now_ns", || -> i64 {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
        })?;
    }
    if grants.files {
        l.func_wrap(M, "read_file", |mut c: Caller<'_, HostState>, np: i32, nl: i32, op: i32, oc: i32| -> i32 {
            let Ok(name) = read_str(&mut c, np as u32, (nl as u32).min(4096)) else { return errno::BOUNDS };
            let files = c.data().files.clone();
            let Some((_, path)) = files.iter().find(|(n, _)| *n == name) else { return errno::NOT_FOUND };
            match std::fs::metadata(path) {
                Ok(m) if m.len() > MAX_FILE => return errno::LIMIT,
                Ok(_) => {}
                Err(_) => return errno::NOT_FOUND,
            }
            match std::fs::read(path) {
                Ok(b) => write(&mut c, op as u32, oc as u32, &b),
                Err(_) => errno::NOT_FOUND,
            }
        })?;
    }
    if grants.random {
        l.func_wrap(M, "random", |mut c: Caller<'_, HostState>, ptr: i32, len: i32| -> i32 {
            let mut b = vec![0u8; (len as u32).min(4096) as usize];
            // Seeded from the OS's randomness (std's hasher keys).
            use std::hash::{BuildHasher, Hasher};
            let mut x = std::collections::hash_map::RandomState::new().build_hasher().finish() | 1;
            for v in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x as u8;
            }
            write(&mut c, ptr as u32, len as u32, &b)
        })?;
    }
    Ok(l)
}
