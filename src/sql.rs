//! `tapstream sql`: a query over the history, streamed to a format.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use arrow::array::RecordBatch;
use futures::StreamExt;
use tapstream_query::{History, QueryError};

use crate::cli::{SqlArgs, SqlFormat};
use crate::config::Config;

enum Sink {
    Table(Vec<RecordBatch>),
    Csv(arrow::csv::Writer<Box<dyn Write>>),
    Json(arrow::json::ArrayWriter<Box<dyn Write>>),
    Ndjson(arrow::json::LineDelimitedWriter<Box<dyn Write>>),
    Parquet(parquet::arrow::ArrowWriter<File>),
}

pub fn run(cfg: Config, a: SqlArgs) -> anyhow::Result<ExitCode> {
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the query runtime")?;
    rt.block_on(query(cfg, a, data))
}

async fn query(cfg: Config, a: SqlArgs, data: std::path::PathBuf) -> anyhow::Result<ExitCode> {
    let h = History::open(&data, cfg.sql.clone()).await?;
    if let Some(g) = cfg.geoip.open()? {
        h.set_geo(g);
    }
    let res = h.query(&a.query).await?;
    for n in &res.notes {
        eprintln!("note: {n}");
    }
    // Interactive results stop at the row limit; --out takes everything.
    let limit = if a.out.is_some() { None } else { h.limits().max_rows };
    let out: Box<dyn Write> = match (&a.out, a.format) {
        (_, SqlFormat::Parquet) | (_, SqlFormat::Table) => Box::new(std::io::sink()),
        (Some(p), _) => Box::new(BufWriter::new(File::create(p).with_context(|| format!("creating {}", p.display()))?)),
        (None, _) => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut sink = match a.format {
        SqlFormat::Table => Sink::Table(Vec::new()),
        SqlFormat::Csv => Sink::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(out)),
        SqlFormat::Json => Sink::Json(arrow::json::ArrayWriter::new(out)),
        SqlFormat::Ndjson => Sink::Ndjson(arrow::json::LineDelimitedWriter::new(out)),
        SqlFormat::Parquet => {
            let p = a.out.as_ref().context("--format parquet needs --out FILE")?;
            let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
            Sink::Parquet(parquet::arrow::ArrowWriter::try_new(f, res.schema.clone(), None)?)
        }
    };
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
            match &mut sink {
                Sink::Table(v) => v.push(b),
                Sink::Csv(w) => w.write(&lists_as_text(&b)?)?,
                Sink::Json(w) => w.write(&b)?,
                Sink::Ndjson(w) => w.write(&b)?,
                Sink::Parquet(w) => w.write(&b)?,
            }
            if truncated {
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| QueryError::Timeout(timeout))??;
    match sink {
        Sink::Table(v) => {
            if !v.is_empty() {
                println!("{}", arrow::util::pretty::pretty_format_batches(&v)?);
            }
        }
        Sink::Csv(w) => w.into_inner().flush()?,
        Sink::Json(mut w) => {
            w.finish()?;
            w.into_inner().flush()?;
        }
        Sink::Ndjson(mut w) => {
            w.finish()?;
            w.into_inner().flush()?;
        }
        Sink::Parquet(w) => {
            w.close()?;
        }
    }
    if truncated {
        eprintln!("note: result cut at {rows} rows (sql.max_rows); use --out FILE for all of it");
    } else {
        eprintln!("{rows} row(s)");
    }
    Ok(ExitCode::SUCCESS)
}

/// CSV has no nested values: a list column becomes its items joined by `,`
/// (how Zeek writes sets; `tapstream import` reads it back).
fn lists_as_text(b: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use std::sync::Arc;
    if !b.schema().fields().iter().any(|f| matches!(f.data_type(), DataType::List(_))) {
        return Ok(b.clone());
    }
    let mut fields = Vec::with_capacity(b.num_columns());
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if !matches!(f.data_type(), DataType::List(_)) {
            fields.push(f.clone());
            cols.push(c.clone());
            continue;
        }
        let list = c.as_list::<i32>();
        let items = ArrayFormatter::try_new(list.values().as_ref(), &FormatOptions::default())?;
        let mut out = StringBuilder::with_capacity(list.len(), list.len() * 8);
        let mut text = String::new();
        for i in 0..list.len() {
            if list.is_null(i) {
                out.append_null();
                continue;
            }
            text.clear();
            let offsets = list.value_offsets();
            for (k, j) in (offsets[i] as usize..offsets[i + 1] as usize).enumerate() {
                if k > 0 {
                    text.push(',');
                }
                text.push_str(&items.value(j).to_string());
            }
            out.append_value(&text);
        }
        fields.push(Arc::new(Field::new(f.name(), DataType::Utf8, true)));
        cols.push(Arc::new(out.finish()));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
}
