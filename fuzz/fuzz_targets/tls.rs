#![no_main]
//! The tls analyzer: fuzz input split at 0xff into messages of
//! alternating direction, behind valid headers on port 443.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::run(true, 443, data);
    common::run(!true, 443, data);
});
