//! `tapstream model`: train the anomaly model on a baseline period of
//! history, with the per-second counts the live detector computes
//! (`stats` for packets, bytes and the protocol mix; `flows` for the new
//! flows' sources, destinations, ports and SYNs; `dns` for failures).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use futures::StreamExt;
use tapstream_engine::detect::ml::{Model, SecondCounts};
use tapstream_query::History;

use crate::cli::{ModelArgs, ModelCmd};
use crate::config::Config;
use crate::record::time_ns;

async fn rows(h: &History, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let res = h.query(sql).await?;
    let mut v = Vec::new();
    let mut s = res.stream;
    while let Some(b) = s.next().await {
        v.push(b.map_err(|e| h.stream_error(e))?);
    }
    Ok(v)
}

/// Each row: second (Int64), then Float64 columns, merged into `out` by `set`.
fn merge(batches: &[RecordBatch], out: &mut BTreeMap<i64, SecondCounts>, set: impl Fn(&mut SecondCounts, &[f64])) {
    for b in batches {
        let sec = b.column(0).as_primitive::<Int64Type>();
        let cols: Vec<_> = (1..b.num_columns()).map(|i| b.column(i).as_primitive::<Float64Type>()).collect();
        for r in 0..b.num_rows() {
            let vals: Vec<f64> = cols.iter().map(|c| if c.is_null(r) { 0.0 } else { c.value(r) }).collect();
            set(out.entry(sec.value(r)).or_default(), &vals);
        }
    }
}

async fn counts(h: &History, from: u64, to: u64) -> anyhow::Result<BTreeMap<i64, SecondCounts>> {
    let range = format!("ts >= to_timestamp_nanos({from}) AND ts < to_timestamp_nanos({to})");
    let sec = "CAST(CAST(date_trunc('second', ts) AS BIGINT) / 1000000000 AS BIGINT)";
    let f = |e: &str| format!("CAST({e} AS DOUBLE)");
    let mut out = BTreeMap::new();
    let stats = rows(
        h,
        &format!(
            "SELECT {sec}, {}, {}, {}, {}, {}, {} FROM stats WHERE {range} GROUP BY 1",
            f("sum(packets - non_ip_packets)"),
            f("sum(bytes)"),
            f("sum(tcp_packets)"),
            f("sum(udp_packets)"),
            f("sum(icmp_packets)"),
            f("sum(other_ip_packets)")
        ),
    )
    .await?;
    merge(&stats, &mut out, |c, v| {
        c.packets = v[0];
        c.bytes = v[1];
        c.tcp_packets = v[2];
        c.udp_packets = v[3];
        c.icmp_packets = v[4];
        c.other_packets = v[5];
    });
    let flows = rows(
        h,
        &format!(
            "SELECT {sec}, {}, {}, {}, {}, {} FROM flows WHERE {range} AND record_kind != 'interim' GROUP BY 1",
            f("count(DISTINCT orig_h)"),
            f("count(DISTINCT resp_h)"),
            f("count(DISTINCT concat(proto, '/', CAST(resp_p AS VARCHAR)))"),
            f("sum(CASE WHEN proto = 'tcp' AND history LIKE 'S%' THEN 1 ELSE 0 END)"),
            f("sum(CASE WHEN proto = 'tcp' AND history LIKE 'S%' AND history NOT LIKE '%h%' THEN 1 ELSE 0 END)")
        ),
    )
    .await?;
    merge(&flows, &mut out, |c, v| {
        c.sources = v[0];
        c.destinations = v[1];
        c.ports = v[2];
        c.syn = v[3];
        c.syn_unanswered = v[4];
    });
    let dns = rows(
        h,
        &format!(
            "SELECT {sec}, {}, {} FROM dns WHERE {range} GROUP BY 1",
            f("count(*)"),
            f("sum(CASE WHEN rcode = 3 THEN 1 ELSE 0 END)")
        ),
    )
    .await?;
    merge(&dns, &mut out, |c, v| {
        c.dns_queries = v[0];
        c.dns_nxdomain = v[1];
    });
    // Seconds with flows but no packet statistics are not seconds of traffic.
    out.retain(|_, c| c.packets > 0.0);
    Ok(out)
}

pub fn run(cfg: Config, a: ModelArgs) -> anyhow::Result<ExitCode> {
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let detect = cfg.detect.as_ref().context("detection is off (detect.enabled = false)")?;
    let default_path = data.join(&detect.model);
    match a.cmd {
        ModelCmd::Show => {
            let m = Model::load(&default_path)?;
            let t = |ns: u64| {
                time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default()
            };
            println!(
                "model {}: {} trees on {} baseline seconds from {} to {}",
                default_path.display(),
                m.trees.len(),
                m.seconds,
                t(m.from_ns),
                t(m.to_ns)
            );
            for (i, name) in m.features.iter().enumerate() {
                println!("  {name}: usual {:.2}", m.usual(i));
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelCmd::Train { from, to, out } => {
            let (from, to) = (time_ns(&from)?, time_ns(&to)?);
            if to <= from {
                bail!("--to must be after --from");
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the query runtime")?;
            let per_sec = rt.block_on(async {
                let h = History::open(&data, cfg.sql.clone()).await?;
                counts(&h, from, to).await
            })?;
            let features: Vec<_> = per_sec.values().map(|c| c.features()).collect();
            let ml = &detect.cfg.ml;
            let m = Model::train(&features, ml.trees, ml.sample, from ^ to, from, to)?;
            let path = out.unwrap_or(default_path);
            m.save(&path)?;
            println!("trained on {} seconds of traffic; model written to {}", m.seconds, path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
