//! Decoders and analyzers never panic on any bytes: property tests over
//! random frames of every link type, mutated real frames, and random
//! application payloads behind valid headers. (The `fuzz/` targets explore
//! the same entry points coverage-guided; these run in every test run.)

use proptest::prelude::*;
use tapstream_engine::decode::{DecodeConfig, Decoded, decode};
use tapstream_engine::flow::key::{quick_shard_hash, shard_hashes};
use tapstream_engine::pipeline::{PipelineConfig, Worker};
use tapstream_engine::source::{Batch, CaptureFile, Desc, Layers, LinkType, PacketSource};

const LINKS: [u16; 16] = [0, 1, 9, 10, 12, 14, 50, 51, 101, 105, 108, 113, 127, 228, 229, 276];

fn desc(len: usize, link: u16, ts: u64) -> Desc {
    Desc {
        offset: 0,
        caplen: len as u32,
        wire_len: len as u32,
        ts_ns: ts,
        link: LinkType(link),
        iface: 0,
        layers: Layers::All,
        in_aux: false,
    }
}

/// A worker with a small flow table (a default one is 80 MB, too slow to build per case).
fn small() -> PipelineConfig {
    let mut c = PipelineConfig::default();
    c.flow.max_flows = 256;
    c
}

/// An Ethernet/IPv4/UDP or TCP frame around `payload`, to reach the analyzers.
fn wrap(tcp: bool, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let l4 = if tcp { 20 } else { 8 };
    let total = (20 + l4 + payload.len()) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        if tcp { 6 } else { 17 },
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ]);
    if tcp {
        f.extend_from_slice(&[
            0x9c,
            0x40,
            (port >> 8) as u8,
            port as u8,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            1,
            0x50,
            0x18,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]);
    } else {
        let ul = (8 + payload.len()) as u16;
        f.extend_from_slice(&[0x9c, 0x40, (port >> 8) as u8, port as u8, (ul >> 8) as u8, ul as u8, 0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn any_frame_of_any_link_type(bytes in proptest::collection::vec(any::<u8>(), 0..600), li in 0usize..16, verify in any::<bool>()) {
        let cfg = DecodeConfig { verify_checksums: verify, ..DecodeConfig::default() };
        let mut d = Decoded::default();
        decode(LinkType(LINKS[li]), &bytes, &cfg, &mut d);
        if let Some(h) = quick_shard_hash(LinkType(LINKS[li]), &bytes, &cfg, false) {
            prop_assert_eq!(shard_hashes(&d, false), Some((h, h)));
        }
        let mut w = Worker::new(0, &small());
        w.packet(&desc(bytes.len(), LINKS[li], 1), &bytes);
        w.finish();
    }

    #[test]
    fn random_payloads_reach_every_analyzer(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6), pi in 0usize..8) {
        let ports = [53u16, 80, 443, 67, 5353, 137, 8080, 4433];
        let mut w = Worker::new(0, &small());
        for (i, p) in payloads.iter().enumerate() {
            for tcp in [true, false] {
                let f = wrap(tcp, ports[pi], p);
                w.packet(&desc(f.len(), 1, 1 + i as u64), &f);
            }
        }
        w.finish();
    }

    #[test]
    fn mutated_real_frames(seed_pkts in proptest::collection::vec((0usize..4000, any::<u8>()), 1..8)) {
        // Real frames from the corpus with a few bytes flipped.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus/zeek/tunnel-gtp-outer-ip-frag/trace.pcap");
        let mut src = tapstream_engine::source::open_capture(path).unwrap();
        let mut b = Batch::with_capacity(128);
        src.fill(&mut b, 128).unwrap();
        let mut w = Worker::new(0, &small());
        for (i, (d, frame)) in b.frames().enumerate() {
            let mut f = frame.to_vec();
            for (pos, val) in &seed_pkts {
                if !f.is_empty() {
                    let k = (pos + i) % f.len();
                    f[k] ^= val;
                }
            }
            w.packet(&Desc { caplen: f.len() as u32, ..*d }, &f);
        }
        w.finish();
    }

    #[test]
    fn any_capture_file_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), magic in 0usize..5) {
        let magics: [&[u8]; 5] = [&[0xd4, 0xc3, 0xb2, 0xa1], &[0xa1, 0xb2, 0xc3, 0xd4], &[0x4d, 0x3c, 0xb2, 0xa1], &[0x0a, 0x0d, 0x0d, 0x0a], &[]];
        let mut data = magics[magic].to_vec();
        data.extend_from_slice(&bytes);
        if let Ok(mut c) = CaptureFile::from_bytes("fuzz", data) {
            let mut b = Batch::with_capacity(64);
            loop {
                b.clear();
                match c.fill(&mut b, 64) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        for (d, f) in b.frames() {
                            prop_assert!(f.len() == d.caplen as usize);
                        }
                    }
                }
            }
        }
    }
}

const FILTER_WORDS: [&str; 32] = [
    "host",
    "net",
    "port",
    "portrange",
    "src",
    "dst",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "ip",
    "ip6",
    "vlan",
    "and",
    "or",
    "not",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "10.0.0.1",
    "10.0.0.0/8",
    "::1",
    "fe80::/10",
    "80",
    "1-1024",
    "99999",
    "/33",
    "x",
    "-",
    "sctp",
];

proptest! {
    /// Any sequence of filter words parses or fails with a column inside the
    /// text; what parses evaluates on random frames without panicking.
    #[test]
    fn filters_never_panic(words in proptest::collection::vec(0..FILTER_WORDS.len(), 0..24),
                           frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = words.iter().map(|&i| FILTER_WORDS[i]).collect::<Vec<_>>().join(" ");
        match tapstream_engine::filter::Filter::parse(&text) {
            Ok(f) => {
                let mut d = Decoded::default();
                decode(LinkType::ETHERNET, &frame, &DecodeConfig::default(), &mut d);
                let _ = f.matches(&d);
            }
            Err(e) => prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{}", e),
        }
    }
}
