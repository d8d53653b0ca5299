#![no_main]
//! The capture-filter parser: any text either parses or gives an error whose
//! column lies inside the text (plus one past its end); a filter that
//! parses evaluates on a decoded packet without panicking.
use libfuzzer_sys::fuzz_target;
use tapstream_engine::decode::{DecodeConfig, Decoded, decode};
use tapstream_engine::filter::Filter;
use tapstream_engine::source::LinkType;

const FRAME: &[u8] = &[
    0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0,
    0, 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Filter::parse(text) {
        Ok(f) => {
            let mut d = Decoded::default();
            decode(LinkType::ETHERNET, FRAME, &DecodeConfig::default(), &mut d);
            let _ = f.matches(&d);
        }
        Err(e) => assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e}"),
    }
});
