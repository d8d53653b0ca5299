#![no_main]
//! The dhcp analyzer: fuzz input split at 0xff into messages of
//! alternating direction, behind valid headers on port 67.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    common::run(false, 67, data);
    common::run(!false, 67, data);
});
