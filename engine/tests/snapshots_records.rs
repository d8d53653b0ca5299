//! Snapshot tests (insta) of the protocol records (DNS, TLS, HTTP, DHCP) the
//! engine produces for reference captures.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use tapstream_engine::arrow;
use tapstream_engine::pipeline::{PipelineConfig, Progress, run};
use tapstream_engine::records::Table;
use tapstream_engine::source::open_capture;

fn records(name: &str, table: Table, cols: &[&str]) -> String {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/zeek").join(name);
    let path = ["trace.pcap", "trace.pcapng"].iter().map(|f| base.join(f)).find(|p| p.exists()).unwrap();
    let src = open_capture(&path.display().to_string()).unwrap();
    let got: Arc<Mutex<Vec<RecordBatch>>> = Arc::default();
    let g = got.clone();
    let (_, err) = run(
        src,
        &PipelineConfig::default(),
        Arc::new(AtomicBool::new(false)),
        Arc::new(Progress::default()),
        move |(t, b)| {
            if t == table {
                g.lock().unwrap().push(b);
            }
        },
    );
    assert!(err.is_none());
    let mut lines = Vec::new();
    for b in got.lock().unwrap().iter() {
        let fmts: Vec<ArrayFormatter> = cols
            .iter()
            .map(|c| {
                ArrayFormatter::try_new(b.column_by_name(c).unwrap().as_ref(), &FormatOptions::default().with_null("-"))
                    .unwrap()
            })
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<String> = fmts.iter().map(|f| f.value(r).to_string()).collect();
            lines.push(cells.join(" | "));
        }
    }
    lines.sort();
    format!("{}\n{}\n", cols.join(" | "), lines.join("\n"))
}

const ID: [&str; 4] = ["orig_h", "orig_p", "resp_h", "resp_p"];

fn with_id(rest: &[&'static str]) -> Vec<&'static str> {
    ID.iter().copied().chain(rest.iter().copied()).collect()
}

#[test]
fn dns_records() {
    let cols =
        with_id(&["proto", "trans_id", "query", "qtype_name", "rcode_name", "aa", "rd", "ra", "answers", "ttls"]);
    insta::assert_snapshot!(records("dns-txt-multiple", Table::Dns, &cols));
    insta::assert_snapshot!(records("dns-sshfp-trunc", Table::Dns, &cols));
}

#[test]
fn tls_records() {
    let cols = with_id(&["version", "client_version", "cipher", "server_name", "alpn", "ja4", "established"]);
    insta::assert_snapshot!(records("tls-conn-with-extensions", Table::Tls, &cols));
    insta::assert_snapshot!(records("tls13-ech", Table::Tls, &cols));
    insta::assert_snapshot!(records("dtls12", Table::Tls, &cols));
}

#[test]
fn http_records() {
    let cols = with_id(&[
        "trans_depth",
        "method",
        "host",
        "uri",
        "version",
        "user_agent",
        "request_body_len",
        "response_body_len",
        "status_code",
        "status_msg",
    ]);
    insta::assert_snapshot!(records("http-get", Table::Http, &cols));
    insta::assert_snapshot!(records("http-multipart-form-data", Table::Http, &cols));
}

#[test]
fn dhcp_records() {
    let cols = with_id(&[
        "trans_id",
        "msg_type",
        "mac",
        "client_addr",
        "requested_addr",
        "assigned_addr",
        "server_addr",
        "host_name",
        "lease_time",
    ]);
    insta::assert_snapshot!(records("dhcp-all-msg-types", Table::Dhcp, &cols));
}
