//! Hand a batch of 256 fixed-layout records (the `window` record of ABI v1,
//! 104 bytes) to a WebAssembly guest that does nothing with them, two ways:
//!
//! - core module (what tapstream does): copy the encoded batch into the
//!   guest's memory, call `batch(ptr, count)`;
//! - component model: call an export taking `list<conv>`, a record of the
//!   same fields; Wasmtime lowers each record field by field through the
//!   canonical ABI into memory the guest allocates (`realloc`).
//!
//! Both guests return the count without reading the records, so the
//! figures are the crossing cost alone. Interleaved rounds; the median of
//! each is printed, per call and per record.

use std::time::Instant;

use wasmtime::component::{Component, ComponentType, Linker, Lower};
use wasmtime::{Config, Engine, Instance, Module, Store};

const N: usize = 256;
const STRIDE: usize = 104;
const CALLS: usize = 20_000;
const ROUNDS: usize = 9;

#[derive(ComponentType, Lower, Clone, Copy, Default)]
#[component(record)]
struct Conv {
    #[component(name = "sec-ns")]
    sec_ns: u64,
    #[component(name = "src-hi")]
    src_hi: u64,
    #[component(name = "src-lo")]
    src_lo: u64,
    #[component(name = "dst-hi")]
    dst_hi: u64,
    #[component(name = "dst-lo")]
    dst_lo: u64,
    v6: u8,
    proto: u8,
    dport: u16,
    flows: u32,
    pkts: u64,
    bytes: u64,
    rpkts: u64,
    rbytes: u64,
    syn: u32,
    answered: u32,
    rejected: u32,
    failed: u32,
    sample: u64,
}

const GUEST: &str = r#"
    (memory (export "memory") 8)
    (global $bump (mut i32) (i32.const 65536))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "batch") (param $ptr i32) (param $n i32) (result i32)
      (global.set $bump (i32.const 65536))
      (local.get $n))
"#;

fn component_wat() -> String {
    format!(
        r#"(component
  (core module $m {GUEST})
  (core instance $i (instantiate $m))
  (type $conv' (record
    (field "sec-ns" u64) (field "src-hi" u64) (field "src-lo" u64) (field "dst-hi" u64) (field "dst-lo" u64)
    (field "v6" u8) (field "proto" u8) (field "dport" u16) (field "flows" u32)
    (field "pkts" u64) (field "bytes" u64) (field "rpkts" u64) (field "rbytes" u64)
    (field "syn" u32) (field "answered" u32) (field "rejected" u32) (field "failed" u32) (field "sample" u64)))
  (export $conv "conv" (type $conv'))
  (func $batch (param "recs" (list $conv)) (result u32)
    (canon lift (core func $i "batch") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (export "batch" (func $batch)))"#
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let engine = Engine::new(&Config::new())?;

    // Core module: the batch as tapstream encodes it.
    let module = Module::new(&engine, format!("(module {GUEST})"))?;
    let mut cstore = Store::new(&engine, ());
    let inst = Instance::new(&mut cstore, &module, &[])?;
    let mem = inst.get_memory(&mut cstore, "memory").expect("memory");
    let core_batch = inst.get_typed_func::<(i32, i32), i32>(&mut cstore, "batch")?;
    let encoded: Vec<u8> = (0..N * STRIDE).map(|i| i as u8).collect();

    // Component: the same records as a list<conv>.
    let component = Component::new(&engine, component_wat())?;
    let mut kstore = Store::new(&engine, ());
    let kinst = Linker::<()>::new(&engine).instantiate(&mut kstore, &component)?;
    let comp_batch = kinst.get_typed_func::<(&[Conv],), (u32,)>(&mut kstore, "batch")?;
    let recs: Vec<Conv> =
        (0..N as u64).map(|i| Conv { sec_ns: i, flows: 1, sample: i * 7, ..Default::default() }).collect();

    let (mut core_ns, mut comp_ns) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..CALLS {
            mem.data_mut(&mut cstore)[65536..65536 + encoded.len()].copy_from_slice(&encoded);
            let n = core_batch.call(&mut cstore, (65536, N as i32))?;
            assert_eq!(n, N as i32);
        }
        core_ns.push(t.elapsed().as_nanos() as f64 / CALLS as f64);
        let t = Instant::now();
        for _ in 0..CALLS {
            let (n,) = comp_batch.call(&mut kstore, (&recs,))?;
            assert_eq!(n, N as u32);
        }
        comp_ns.push(t.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    let (c, k) = (median(core_ns), median(comp_ns));
    println!("batch of {N} records, {CALLS} calls x {ROUNDS} rounds (median):");
    println!("core module  (memcpy + call):        {c:>9.0} ns/call {:>7.2} ns/record", c / N as f64);
    println!("component    (list<record> lowered): {k:>9.0} ns/call {:>7.2} ns/record", k / N as f64);
    println!("component / core: {:.1}x", k / c);
    Ok(())
}
