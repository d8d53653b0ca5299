//! `tapstream sql`: a query over the history, streamed to a format.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;
use tapstream_query::export::{Exporter, Format};
use tapstream_query::{History, QueryError};

use crate::cli::{SqlArgs, SqlFormat};
use crate::config::Config;

pub fn run(cfg: Config, a: SqlArgs) -> anyhow::Result<ExitCode> {
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the query runtime")?;
    rt.block_on(query(cfg, a, data))
}

async fn query(cfg: Config, a: SqlArgs, data: std::path::PathBuf) -> anyhow::Result<ExitCode> {
    let h = History::open(&data, cfg.sql.clone()).await?;
    // Loading the GeoIP databases takes longer than most queries: only a
    // query that can call country() or asn() waits for it.
    if mentions_geo(&a.query)
        && let Some(g) = cfg.geoip.open()?
    {
        h.set_geo(g);
    }
    let res = h.query(&a.query).await?;
    for n in &res.notes {
        eprintln!("note: {n}");
    }
    // Interactive results stop at the row limit; --out takes everything.
    let limit = if a.out.is_some() { None } else { h.limits().max_rows };
    let format = match a.format {
        SqlFormat::Table => None,
        SqlFormat::Csv => Some(Format::Csv),
        SqlFormat::Json => Some(Format::Json),
        SqlFormat::Ndjson => Some(Format::Ndjson),
        SqlFormat::Parquet => Some(Format::Parquet),
    };
    let out: Box<dyn Write + Send> = match (&a.out, format) {
        (_, None) => Box::new(std::io::sink()),
        (Some(p), _) => Box::new(BufWriter::new(File::create(p).with_context(|| format!("creating {}", p.display()))?)),
        (None, Some(Format::Parquet)) => anyhow::bail!("--format parquet needs --out FILE"),
        (None, _) => Box::new(BufWriter::new(std::io::stdout())),
    };
    let mut table = Vec::new();
    let mut export = format.map(|f| Exporter::new(f, res.schema.clone(), out)).transpose()?;
    let mut rows = 0usize;
    let mut truncated = false;
    let timeout = h.limits().timeout;
    let mut stream = res.stream;
    let read = async {
        while let Some(b) = stream.next().await {
            let mut b = b.map_err(|e| h.stream_error(e))?;
            if let Some(max) = limit
                && rows + b.num_rows() > max
            {
                b = b.slice(0, max - rows);
                truncated = true;
            }
            rows += b.num_rows();
            match &mut export {
                Some(e) => e.write(&b)?,
                None => table.push(b),
            }
            if truncated {
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| QueryError::Timeout(timeout))??;
    match export {
        Some(e) => e.finish()?.flush()?,
        None if !table.is_empty() => println!("{}", arrow::util::pretty::pretty_format_batches(&table)?),
        None => {}
    }
    if truncated {
        eprintln!("note: result cut at {rows} rows (sql.max_rows); use --out FILE for all of it");
    } else {
        eprintln!("{rows} row(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `sql` may call a GeoIP function (any mention of their names).
fn mentions_geo(sql: &str) -> bool {
    let s = sql.to_ascii_lowercase();
    s.contains("country") || s.contains("asn")
}

#[cfg(test)]
mod tests {
    #[test]
    fn geoip_is_loaded_for_queries_that_name_its_functions() {
        assert!(super::mentions_geo("SELECT COUNTRY(resp_h) FROM flows"));
        assert!(super::mentions_geo("select asn (orig_h)"));
        assert!(!super::mentions_geo("SELECT orig_h, sum(orig_ip_bytes) FROM flows GROUP BY 1"));
    }
}
