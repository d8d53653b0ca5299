//! The C header and the AssemblyScript library restate the layouts of
//! `src/abi.rs`; these tests hold them to it, field by field.

use std::collections::BTreeMap;

use tapstream_plugin_sdk::abi::{FieldType, alert, dns, flow, http, tls, window};

type Fields = &'static [(&'static str, usize, FieldType)];

const KINDS: [(&str, usize, Fields); 6] = [
    ("flow", flow::SIZE, flow::FIELDS),
    ("dns", dns::SIZE, dns::FIELDS),
    ("tls", tls::SIZE, tls::FIELDS),
    ("http", http::SIZE, http::FIELDS),
    ("window", window::SIZE, window::FIELDS),
    ("alert", alert::SIZE, alert::FIELDS),
];

fn read(rel: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// C: every field has a `TS_CHECK(ts_<kind>, <field>, <offset>)` and every
/// struct a size assertion; no check names a field abi.rs does not have.
#[test]
fn the_c_header_matches_the_abi() {
    let h = read("include/tapstream.h");
    let mut checks: BTreeMap<(String, String), usize> = BTreeMap::new();
    for part in h.split("TS_CHECK(").skip(2) {
        let args: Vec<&str> = part.split(')').next().unwrap().split(',').map(str::trim).collect();
        if let [t, f, o] = args[..] {
            checks.insert((t.to_string(), f.to_string()), o.parse().unwrap());
        }
    }
    let mut expected = 0;
    for (kind, size, fields) in KINDS {
        let ty = format!("ts_{kind}");
        assert!(h.contains(&format!("_Static_assert(sizeof({ty}) == {size},")), "{ty}: size {size} not asserted");
        for (name, off, t) in fields {
            // Alert ports are one array in C.
            let field = if kind == "alert" && name.starts_with("PORT") {
                if *name != "PORT0" {
                    continue;
                }
                "ports".to_string()
            } else {
                name.to_lowercase()
            };
            let got = checks.get(&(ty.clone(), field.clone()));
            assert_eq!(got, Some(off), "{ty}.{field} ({t:?}) must be checked at {off}");
            expected += 1;
        }
    }
    assert_eq!(checks.len(), expected, "the header checks fields abi.rs does not have: {checks:?}");
}

/// AssemblyScript: every field's offset constant and every record size.
#[test]
fn the_assemblyscript_library_matches_the_abi() {
    let ts = read("assemblyscript/tapstream.ts");
    let mut consts: BTreeMap<String, usize> = BTreeMap::new();
    for l in ts.lines() {
        if let Some(rest) = l.strip_prefix("export const ")
            && let Some((name, v)) = rest.split_once(": i32 = ")
        {
            consts.insert(name.to_string(), v.trim_end_matches(';').parse().unwrap_or(usize::MAX));
        }
    }
    let shared = ["TS_NS", "UID", "ORIG_H", "RESP_H", "ORIG_P", "RESP_P", "PROTO", "V6"];
    for (kind, size, fields) in KINDS {
        let k = kind.to_uppercase();
        assert_eq!(consts.get(&format!("{k}_SIZE")), Some(&size), "{k}_SIZE");
        if kind == "alert" {
            continue; // written by Alert.emit, checked by the plugin tests
        }
        for (name, off, _) in fields {
            let c = if kind != "window" && shared.contains(name) { name.to_string() } else { format!("{k}_{name}") };
            assert_eq!(consts.get(&c), Some(off), "{c} must be {off}");
        }
    }
    assert_eq!(consts.get("ABI_VERSION"), Some(&(tapstream_plugin_sdk::ABI_VERSION as usize)));
    assert_eq!(consts.get("BUFFER_BYTES"), Some(&tapstream_plugin_sdk::abi::BUFFER_BYTES));
}
