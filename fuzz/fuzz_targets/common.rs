// Shared by the protocol targets: feed fuzz input as application payload
// (split into segments) behind valid Ethernet/IPv4/TCP or UDP headers.
use tapstream_engine::pipeline::{PipelineConfig, Worker};
use tapstream_engine::source::{Desc, Layers, LinkType};

pub fn worker() -> Worker {
    let mut c = PipelineConfig::default();
    c.flow.max_flows = 64;
    Worker::new(0, &c)
}

pub fn frame(tcp: bool, to_server: bool, port: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let l4 = if tcp { 20 } else { 8 };
    let total = (20 + l4 + payload.len()).min(65535) as u16;
    let (a, b) = if to_server { ([10, 0, 0, 1], [10, 0, 0, 2]) } else { ([10, 0, 0, 2], [10, 0, 0, 1]) };
    let (sp, dp) = if to_server { (40000u16, port) } else { (port, 40000u16) };
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
    f.extend_from_slice(&a);
    f.extend_from_slice(&b);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    if tcp {
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        let ul = (8 + payload.len()).min(65535) as u16;
        f.extend_from_slice(&ul.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

/// Split `data` at 0xff bytes into messages alternating direction.
pub fn run(tcp: bool, port: u16, data: &[u8]) {
    let mut w = worker();
    let mut seq = [1u32, 1u32];
    for (i, chunk) in data.split(|&b| b == 0xff).enumerate() {
        let dir = i % 2;
        let f = frame(tcp, dir == 0, port, seq[dir], chunk);
        seq[dir] = seq[dir].wrapping_add(chunk.len() as u32);
        let d = Desc {
            offset: 0,
            caplen: f.len() as u32,
            wire_len: f.len() as u32,
            ts_ns: 1 + i as u64,
            link: LinkType::ETHERNET,
            iface: 0,
            layers: Layers::All,
            in_aux: false,
        };
        w.packet(&d, &f);
    }
    w.finish();
}
