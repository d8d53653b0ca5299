#![no_main]
//! IP fragment reassembly: arbitrary fragments (offsets, lengths, flags, ids)
//! of one flow fed through a worker.
use libfuzzer_sys::fuzz_target;
use tapstream_engine::pipeline::{PipelineConfig, Worker};
use tapstream_engine::source::{Desc, Layers, LinkType};

fuzz_target!(|data: &[u8]| {
    let mut c = PipelineConfig::default();
    c.flow.max_flows = 64;
    let mut w = Worker::new(0, &c);
    // each record: id(1) flags+offset(2) len(1), then `len` payload bytes
    let mut p = data;
    let mut ts = 1;
    while p.len() >= 4 {
        let (id, fo, len) = (p[0], u16::from_be_bytes([p[1], p[2]]), p[3] as usize);
        let body = &p[4..(4 + len).min(p.len())];
        p = &p[(4 + len).min(p.len())..];
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + body.len()) as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, id, (fo >> 8) as u8, fo as u8, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(body);
        let d = Desc { offset: 0, caplen: f.len() as u32, wire_len: f.len() as u32, ts_ns: ts, link: LinkType::ETHERNET, iface: 0, layers: Layers::All, in_aux: false };
        ts += 1;
        w.packet(&d, &f);
    }
    w.finish();
});
