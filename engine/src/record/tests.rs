use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arrow::array::AsArray;
use arrow::datatypes::{TimestampNanosecondType, UInt8Type, UInt16Type, UInt64Type};

use super::*;
use crate::decode::{DecodeConfig, Decoded, decode};
use crate::filter::Filter;
use crate::pipeline::{PipelineConfig, Progress, run};
use crate::records::{Output, Table};
use crate::source::{LinkType, PcapWriter, SynthConfig, SynthSource};

const START: u64 = 1_767_225_600_000_000_000;

fn spec(name: &str) -> SessionSpec {
    SessionSpec::new(name, START)
}

/// Run `packets` synthetic packets through two workers recording to `data`.
fn record_run(data: &Path, packets: u64) -> (Recorder, crate::pipeline::RunSummary, Vec<Output>) {
    let mut rec = Recorder::open(data).unwrap();
    rec.poll(START);
    let cfg = PipelineConfig { workers: 2, recorder: Some(rec.tap()), ..PipelineConfig::default() };
    let src = SynthSource::new(SynthConfig { seed: 7, packets, pps: 5_000, start_ns: START, ..SynthConfig::default() });
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    let (summary, err) = run(src, &cfg, Arc::new(AtomicBool::new(false)), Arc::new(Progress::default()), move |b| {
        o.lock().unwrap().push(b)
    });
    assert!(err.is_none());
    let v = std::mem::take(&mut *out.lock().unwrap());
    (rec, summary, v)
}

/// Every packet of an exported pcap: (ts, bytes).
fn read_pcap(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    assert_eq!(&bytes[0..4], &0xa1b2_3c4du32.to_le_bytes(), "nanosecond pcap magic");
    let mut out = Vec::new();
    let mut p = 24;
    while p < bytes.len() {
        let u = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as u64;
        let ts = u(p) * 1_000_000_000 + u(p + 4);
        let incl = u(p + 8) as usize;
        out.push((ts, bytes[p + 16..p + 16 + incl].to_vec()));
        p += 16 + incl;
    }
    out
}

fn export_all(data: &Path, sel: &Selector) -> (ExportReport, Vec<(u64, Vec<u8>)>) {
    let mut buf = Vec::new();
    let r = export(data, sel, &mut buf).unwrap();
    let pkts = read_pcap(&buf);
    assert_eq!(pkts.len() as u64, r.packets);
    (r, pkts)
}

fn everything() -> Selector {
    Selector { from_ns: 0, to_ns: u64::MAX, ..Selector::default() }
}

#[test]
fn sessions_record_every_matching_packet_rotate_and_export_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    create(data, &SessionSpec { rotate_bytes: 64 << 10, ..spec("all") }).unwrap();
    create(data, &SessionSpec { filter: Some("udp port 53".into()), ..spec("dns") }).unwrap();
    let (mut rec, summary, _) = record_run(data, 20_000);
    rec.poll(START + 1);
    rec.shutdown();

    let infos = list(data).unwrap();
    let all = infos.iter().find(|s| s.spec.name == "all").unwrap();
    // The appliance stopped while recording: paused, resumes next run.
    assert_eq!(all.state, SessionState::Paused);
    let st = all.status.as_ref().unwrap();
    assert_eq!(st.packets, summary.packets, "every packet recorded once");
    assert_eq!(st.bytes, all.disk_bytes, "status counts the bytes on disk");
    // Rotation at 64 KiB: several files per worker, none over the size.
    for w in 0..2u16 {
        assert!(all.files.iter().filter(|f| f.worker == w).count() > 3, "worker {w} rotated: {:?}", all.files);
    }
    assert!(all.files.iter().all(|f| f.bytes <= 64 << 10));

    let (r, pkts) = export_all(data, &Selector { sessions: vec!["all".into()], ..everything() });
    assert_eq!(r.packets, summary.packets);
    assert!(r.truncated_files.is_empty() && r.bad_files.is_empty());
    assert!(pkts.windows(2).all(|w| w[0].0 <= w[1].0), "merged in time order");

    // The dns session holds exactly what a filter over the full recording selects.
    let udp53 = Filter::parse("udp port 53").unwrap();
    let (_, dns) = export_all(data, &Selector { sessions: vec!["dns".into()], ..everything() });
    let (_, filtered) =
        export_all(data, &Selector { sessions: vec!["all".into()], filter: Some(udp53.clone()), ..everything() });
    assert!(!dns.is_empty());
    assert_eq!(dns, filtered);
    let mut d = Decoded::default();
    for (_, p) in &dns {
        decode(LinkType::ETHERNET, p, &DecodeConfig::default(), &mut d);
        assert!(udp53.matches(&d));
    }
    // Both sessions at once: the packets they share are written once.
    let (r, both) = export_all(data, &Selector { filter: Some(udp53), ..everything() });
    assert_eq!(both, dns);
    assert_eq!(r.duplicates, dns.len() as u64);

    // A time range cuts by packet time.
    let mid = pkts[pkts.len() / 2].0;
    let (_, late) = export_all(data, &Selector { sessions: vec!["all".into()], from_ns: mid, ..everything() });
    assert_eq!(late.len(), pkts.iter().filter(|p| p.0 >= mid).count());
}

#[test]
fn one_flow_exports_exactly_its_packets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    create(data, &spec("all")).unwrap();
    let (_rec, _, out) = record_run(data, 30_000);
    // Flows finished by the end of the run, with both directions seen.
    let mut checked = 0;
    for (t, b) in out.iter().filter(|(t, _)| *t == Table::Flows) {
        let _ = t;
        let b = &crate::derived::complete(b).unwrap();
        let col = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
        let (orig_h, resp_h) = (col("orig_h"), col("resp_h"));
        let (orig_h, resp_h) = (orig_h.as_string::<i32>(), resp_h.as_string::<i32>());
        let (op, rp) = (col("orig_p"), col("resp_p"));
        let (op, rp) = (op.as_primitive::<UInt16Type>(), rp.as_primitive::<UInt16Type>());
        let proto = col("ip_proto");
        let proto = proto.as_primitive::<UInt8Type>();
        let (opk, rpk) = (col("orig_pkts"), col("resp_pkts"));
        let (opk, rpk) = (opk.as_primitive::<UInt64Type>(), rpk.as_primitive::<UInt64Type>());
        let (start, last) = (col("flow_start"), col("last_ts"));
        let (start, last) =
            (start.as_primitive::<TimestampNanosecondType>(), last.as_primitive::<TimestampNanosecondType>());
        let kind = col("record_kind");
        let kind = kind.as_string::<i32>();
        for i in 0..b.num_rows() {
            if kind.value(i) != "final" || proto.value(i) != 6 || opk.value(i) < 2 || rpk.value(i) < 2 || checked >= 5 {
                continue;
            }
            let fm = FlowMatch {
                a: orig_h.value(i).parse::<IpAddr>().unwrap(),
                a_port: op.value(i),
                b: resp_h.value(i).parse::<IpAddr>().unwrap(),
                b_port: rp.value(i),
                ip_proto: 6,
            };
            let sel = Selector {
                flow: Some(fm),
                from_ns: start.value(i) as u64,
                to_ns: last.value(i) as u64 + FLOW_TAIL_NS,
                ..Selector::default()
            };
            let (_, pkts) = export_all(data, &sel);
            assert_eq!(pkts.len() as u64, opk.value(i) + rpk.value(i), "flow {fm:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "five TCP flows checked");
}

#[test]
fn size_cap_stops_the_session_and_bounds_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    create(data, &SessionSpec { max_bytes: Some(100_000), ..spec("capped") }).unwrap();
    let (mut rec, _, _) = record_run(data, 20_000);
    rec.poll(START + 5);
    let s = &list(data).unwrap()[0];
    assert_eq!(s.state, SessionState::Stopped);
    assert_eq!(s.status.as_ref().unwrap().reason.as_deref(), Some("size cap"));
    assert!(s.disk_bytes <= 100_000 && s.disk_bytes > 90_000, "{} bytes", s.disk_bytes);
    assert!(rec.recording().is_empty());
}

#[test]
fn stop_request_time_cap_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    create(data, &spec("a")).unwrap();
    create(data, &SessionSpec { max_secs: Some(60), ..spec("b") }).unwrap();
    let mut rec = Recorder::open(data).unwrap();
    rec.poll(START);
    assert_eq!(rec.recording(), ["a", "b"]);
    assert!(matches!(delete(data, "a"), Err(RecordError::StillRecording(_))));
    request_stop(data, "a", START + 1).unwrap();
    rec.poll(START + 2);
    assert_eq!(rec.recording(), ["b"]);
    rec.poll(START + 61_000_000_000);
    assert!(rec.recording().is_empty());
    let l = list(data).unwrap();
    assert_eq!(l[0].status.as_ref().unwrap().reason.as_deref(), Some("stopped by operator"));
    assert_eq!(l[1].status.as_ref().unwrap().reason.as_deref(), Some("time cap"));
    assert!(l.iter().all(|s| s.state == SessionState::Stopped));
    // A stopped session stays stopped in the next run.
    let mut again = Recorder::open(data).unwrap();
    again.poll(START + 70_000_000_000);
    assert!(again.recording().is_empty());
    delete(data, "a").unwrap();
    assert_eq!(list(data).unwrap().len(), 1);
    assert!(matches!(delete(data, "a"), Err(RecordError::NotFound(_))));
}

#[test]
fn paused_sessions_resume_with_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    create(data, &spec("keep")).unwrap();
    let (mut rec, first, _) = record_run(data, 2_000);
    rec.shutdown();
    drop(rec);
    let (mut rec, second, _) = record_run(data, 2_000);
    rec.shutdown();
    let s = &list(data).unwrap()[0];
    assert_eq!(s.state, SessionState::Paused);
    assert_eq!(s.status.as_ref().unwrap().packets, first.packets + second.packets);
}

#[test]
fn bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    for bad in ["", "../x", "a b", "-x", &"n".repeat(65)] {
        assert!(matches!(create(data, &spec(bad)), Err(RecordError::BadName(_))), "{bad:?}");
    }
    let e = create(data, &SessionSpec { filter: Some("udp port".into()), ..spec("f") }).unwrap_err();
    assert!(e.to_string().contains("column"), "{e}");
    let e = create(data, &SessionSpec { rotate_bytes: 10, ..spec("f") }).unwrap_err();
    assert!(e.to_string().contains("rotate size"), "{e}");
    create(data, &spec("f")).unwrap();
    assert!(matches!(create(data, &spec("f")), Err(RecordError::Exists(_))));
    assert!(matches!(request_stop(data, "nope", 0), Err(RecordError::NotFound(_))));
    let sel = Selector { sessions: vec!["nope".into()], ..everything() };
    assert!(matches!(export(data, &sel, Vec::new()), Err(RecordError::NotFound(_))));
    let sel = Selector { from_ns: 5, to_ns: 4, ..Selector::default() };
    assert!(export(data, &sel, Vec::new()).is_err());
    // Nothing recorded yet: a valid, empty capture.
    let (r, pkts) = export_all(data, &everything());
    assert_eq!((r.packets, pkts.len()), (0, 0));
}

#[test]
fn a_file_cut_mid_record_exports_its_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let sdir = create(data, &spec("cut")).unwrap();
    let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, 65535).unwrap();
    for i in 0..10u64 {
        w.write(START + i, &[i as u8; 60], 60).unwrap();
    }
    let mut bytes = w.into_inner().unwrap();
    bytes.truncate(bytes.len() - 30);
    std::fs::write(sdir.join("w0-1767225600000000000.pcap"), &bytes).unwrap();
    // A garbage file beside it is reported, not fatal.
    std::fs::write(sdir.join("w1-1767225600000000000.pcap"), b"not a capture file at all, no").unwrap();
    let (r, pkts) = export_all(data, &everything());
    assert_eq!(pkts.len(), 9);
    assert_eq!(r.truncated_files.len(), 1);
    assert_eq!(r.bad_files.len(), 1, "{:?}", r.bad_files);
}

/// One batch of `n` 60-byte frames through a worker's recording shard.
fn record_batch(shard: &mut RecordShard, n: u64) {
    let frame = [0u8; 60];
    let mut d = Decoded::default();
    decode(LinkType::ETHERNET, &frame, &DecodeConfig::default(), &mut d);
    for i in 0..n {
        let desc = crate::source::Desc {
            offset: 0,
            caplen: 60,
            wire_len: 60,
            ts_ns: START + i,
            link: LinkType::ETHERNET,
            iface: 0,
            layers: crate::source::Layers::All,
            in_aux: false,
        };
        shard.packet(&desc, &frame, &d);
    }
    shard.end_batch();
}

#[test]
fn a_session_is_stopped_only_once_its_files_hold_every_packet_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    create(data, &spec("s")).unwrap();
    let mut rec = Recorder::open(data).unwrap();
    rec.poll(START);
    // A worker picks the session up and records a batch: counted at the
    // batch end, still in its file writer's buffer.
    let mut shard = RecordShard::new(0, Some(rec.tap()));
    shard.refresh();
    record_batch(&mut shard, 10);
    request_stop(data, "s", START + 1).unwrap();
    rec.poll(START + 2);
    // No longer recorded, but not stopped while the worker holds its file.
    assert!(rec.recording().is_empty());
    let s = info(data, "s").unwrap();
    assert_eq!(s.state, SessionState::Stopping);
    assert_eq!(s.status.as_ref().unwrap().reason.as_deref(), Some("stopped by operator"));
    assert!(matches!(delete(data, "s"), Err(RecordError::StillRecording(_))));
    assert_eq!(wait_stopped(data, "s", std::time::Duration::from_millis(100)).unwrap().state, SessionState::Stopping);
    // The worker's next turn closes the file; the next poll stops the session.
    shard.refresh();
    rec.poll(START + 3);
    let s = info(data, "s").unwrap();
    assert_eq!(s.state, SessionState::Stopped);
    let st = s.status.as_ref().unwrap();
    assert_eq!((st.packets, st.bytes), (10, s.disk_bytes));
    let (r, pkts) = export_all(data, &everything());
    assert_eq!((r.packets, pkts.len()), (10, 10));
    assert!(r.truncated_files.is_empty());
    assert_eq!(wait_stopped(data, "s", std::time::Duration::from_secs(5)).unwrap().state, SessionState::Stopped);
}

#[test]
fn a_session_left_stopping_by_an_ended_run_is_stopped_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    create(data, &SessionSpec { max_bytes: Some(5_000), ..spec("capped") }).unwrap();
    let mut rec = Recorder::open(data).unwrap();
    rec.poll(START);
    let mut shard = RecordShard::new(0, Some(rec.tap()));
    shard.refresh();
    record_batch(&mut shard, 200);
    rec.poll(START + 1);
    assert_eq!(info(data, "capped").unwrap().state, SessionState::Stopping);
    // The run ends without another poll (killed): the files are closed as
    // the process ends; the next run's recorder stops the session.
    shard.close_all();
    drop((shard, rec));
    let mut again = Recorder::open(data).unwrap();
    again.poll(START + 2);
    let s = info(data, "capped").unwrap();
    assert_eq!(s.state, SessionState::Stopped);
    assert_eq!(s.status.as_ref().unwrap().reason.as_deref(), Some("size cap"));
    assert!(again.recording().is_empty());
}
