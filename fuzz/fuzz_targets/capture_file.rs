#![no_main]
//! pcap and pcapng readers over arbitrary file contents.
use libfuzzer_sys::fuzz_target;
use tapstream_engine::source::{Batch, CaptureFile, PacketSource};

fuzz_target!(|data: &[u8]| {
    if let Ok(mut c) = CaptureFile::from_bytes("fuzz", data.to_vec()) {
        let mut b = Batch::with_capacity(64);
        loop {
            b.clear();
            match c.fill(&mut b, 64) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    for (d, f) in b.frames() {
                        assert_eq!(f.len(), d.caplen as usize);
                    }
                }
            }
        }
    }
});
