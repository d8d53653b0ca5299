#![no_main]
//! Link layer through transport and tunnels, for every link type, with and
//! without checksum verification.
use libfuzzer_sys::fuzz_target;
use tapstream_engine::decode::defrag::Defrag;
use tapstream_engine::decode::{DecodeConfig, Decoded, decode};
use tapstream_engine::flow::key::{quick_shard_hash, shard_hashes};
use tapstream_engine::source::LinkType;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let link = LinkType(u16::from_le_bytes([data[0], data[1]]) % 300);
    let cfg = DecodeConfig { verify_checksums: data[2] & 1 == 1, ..DecodeConfig::default() };
    let mut d = Decoded::default();
    decode(link, &data[3..], &cfg, &mut d);
    // The reader shards by the quick hash where it answers: it must be the
    // decoder's, for a frame of one flow that needs no reassembly.
    let vlan_in_key = data[2] & 2 != 0;
    if let Some(h) = quick_shard_hash(link, &data[3..], &cfg, vlan_in_key) {
        assert_eq!(d.depth, 1);
        assert!(!Defrag::wants(&d));
        assert_eq!(shard_hashes(&d, vlan_in_key), Some((h, h)));
    }
});
