#![no_main]
//! Link layer through transport and tunnels, for every link type, with and
//! without checksum verification.
use libfuzzer_sys::fuzz_target;
use tapstream_engine::decode::{DecodeConfig, Decoded, decode};
use tapstream_engine::source::LinkType;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let link = LinkType(u16::from_le_bytes([data[0], data[1]]) % 300);
    let cfg = DecodeConfig { verify_checksums: data[2] & 1 == 1, ..DecodeConfig::default() };
    let mut d = Decoded::default();
    decode(link, &data[3..], &cfg, &mut d);
});
