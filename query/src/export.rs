//! Writing query results out: CSV, JSON (array or one object per line) and
//! Parquet, batch by batch, so an export of any size keeps memory flat.
//! Used by `tapstream sql --out` and the API's `/api/export`.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimestampNanosecondType, UInt8Type, UInt16Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tapstream_engine::record::{FLOW_TAIL_NS, FlowMatch};

use crate::{History, QueryError};

/// Rows per Parquet row group in exports: the writer buffers one group.
const EXPORT_ROW_GROUP: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// One JSON array.
    Json,
    /// One JSON object per line.
    Ndjson,
    Parquet,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "csv" => Format::Csv,
            "json" => Format::Json,
            "ndjson" | "jsonl" => Format::Ndjson,
            "parquet" => Format::Parquet,
            _ => return None,
        })
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

enum Sink<W: Write + Send> {
    Csv(arrow::csv::Writer<W>),
    Json(arrow::json::ArrayWriter<W>),
    Ndjson(arrow::json::LineDelimitedWriter<W>),
    /// Text is written as plain `Utf8` (queries read it as views; an
    /// exported file is for any reader, and a view in its Arrow schema would
    /// make pyarrow hand out `string_view` columns).
    Parquet(ArrowWriter<W>, SchemaRef),
}

/// A result written out batch by batch.
pub struct Exporter<W: Write + Send> {
    sink: Sink<W>,
    rows: u64,
}

fn err(e: impl std::fmt::Display) -> QueryError {
    QueryError::Sql(format!("writing the export: {e}"))
}

impl<W: Write + Send> Exporter<W> {
    pub fn new(format: Format, schema: SchemaRef, out: W) -> Result<Exporter<W>, QueryError> {
        let sink = match format {
            Format::Csv => Sink::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(out)),
            Format::Json => Sink::Json(arrow::json::ArrayWriter::new(out)),
            Format::Ndjson => Sink::Ndjson(arrow::json::LineDelimitedWriter::new(out)),
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .set_max_row_group_row_count(Some(EXPORT_ROW_GROUP))
                    .build();
                let plain = crate::sql::text_as(&schema, DataType::Utf8, &[]);
                Sink::Parquet(ArrowWriter::try_new(out, plain.clone(), Some(props)).map_err(err)?, plain)
            }
        };
        Ok(Exporter { sink, rows: 0 })
    }

    pub fn write(&mut self, b: &RecordBatch) -> Result<(), QueryError> {
        self.rows += b.num_rows() as u64;
        match &mut self.sink {
            Sink::Csv(w) => w.write(&lists_as_text(b)?).map_err(err),
            Sink::Json(w) => w.write(b).map_err(err),
            Sink::Ndjson(w) => w.write(b).map_err(err),
            Sink::Parquet(w, plain) => {
                let cols = b
                    .columns()
                    .iter()
                    .zip(plain.fields())
                    .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                w.write(&RecordBatch::try_new(plain.clone(), cols).map_err(err)?).map_err(err)
            }
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The bytes the writer holds until it can emit them (a Parquet row
    /// group in progress; nothing for the text formats).
    pub fn buffered(&self) -> usize {
        match &self.sink {
            Sink::Parquet(w, _) => w.in_progress_size(),
            _ => 0,
        }
    }

    /// Finish the file (JSON's closing bracket, Parquet's footer).
    pub fn finish(self) -> Result<W, QueryError> {
        match self.sink {
            Sink::Csv(w) => Ok(w.into_inner()),
            Sink::Json(mut w) => {
                w.finish().map_err(err)?;
                Ok(w.into_inner())
            }
            Sink::Ndjson(mut w) => {
                w.finish().map_err(err)?;
                Ok(w.into_inner())
            }
            Sink::Parquet(w, _) => w.into_inner().map_err(err),
        }
    }
}

/// CSV has no nested values: a list column becomes its items joined by `,`
/// (how Zeek writes sets; `tapstream import` reads it back).
pub fn lists_as_text(b: &RecordBatch) -> Result<RecordBatch, QueryError> {
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
        let items = ArrayFormatter::try_new(list.values().as_ref(), &FormatOptions::default()).map_err(err)?;
        let mut out = StringBuilder::with_capacity(list.len(), list.len() * 8);
        let mut text = String::new();
        let offsets = list.value_offsets();
        for i in 0..list.len() {
            if list.is_null(i) {
                out.append_null();
                continue;
            }
            text.clear();
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
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(err)
}

/// Whether `uid` has the shape of a flow id (the flows table's `uid`).
pub fn is_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= 32 && uid.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A flow in the history by its uid: its 5-tuple and the span of time its
/// packets can lie in (first packet to last, plus the closing tail).
/// `from_ns`/`to_ns` bound the search.
pub async fn flow_by_uid(
    h: &History,
    uid: &str,
    from_ns: Option<u64>,
    to_ns: Option<u64>,
) -> Result<Option<(FlowMatch, u64, u64)>, QueryError> {
    if !is_uid(uid) {
        return Err(QueryError::Sql(format!(
            "uid `{uid}`: flow ids are letters and digits (the flows table's `uid` column)"
        )));
    }
    let mut sql = format!(
        "SELECT orig_h, orig_p, resp_h, resp_p, ip_proto, min(flow_start) AS s, max(last_ts) AS e FROM flows WHERE uid = '{uid}'"
    );
    if let Some(f) = from_ns {
        sql += &format!(" AND last_ts >= to_timestamp_nanos({f})");
    }
    if let Some(t) = to_ns {
        sql += &format!(" AND ts <= to_timestamp_nanos({t})");
    }
    sql += " GROUP BY orig_h, orig_p, resp_h, resp_p, ip_proto";
    let res = h.query(&sql).await?;
    let mut s = res.stream;
    let timeout = h.limits().timeout;
    let first = tokio::time::timeout(timeout, async {
        while let Some(b) = s.next().await {
            let b = b.map_err(|e| h.stream_error(e))?;
            if b.num_rows() > 0 {
                return Ok(Some(b));
            }
        }
        Ok::<_, QueryError>(None)
    })
    .await
    .map_err(|_| QueryError::Timeout(timeout))??;
    let Some(b) = first else { return Ok(None) };
    let ip = |c: usize| -> Result<IpAddr, QueryError> {
        let text = arrow::compute::cast(b.column(c), &DataType::Utf8).map_err(err)?;
        let v = text.as_string::<i32>().value(0);
        v.parse().map_err(|_| QueryError::Sql(format!("address `{v}` in the flows table")))
    };
    let port = |c: usize| b.column(c).as_primitive::<UInt16Type>().value(0);
    let ts = |c: usize| b.column(c).as_primitive::<TimestampNanosecondType>().value(0).max(0) as u64;
    let fm = FlowMatch {
        a: ip(0)?,
        a_port: port(1),
        b: ip(2)?,
        b_port: port(3),
        ip_proto: b.column(4).as_primitive::<UInt8Type>().value(0),
    };
    Ok(Some((fm, ts(5), ts(6).saturating_add(FLOW_TAIL_NS))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ListBuilder, UInt64Array};

    fn batch() -> RecordBatch {
        let mut l = ListBuilder::new(StringBuilder::new());
        l.values().append_value("a");
        l.values().append_value("b");
        l.append(true);
        l.append(false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::UInt64, false),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![1, 2])), Arc::new(l.finish())]).unwrap()
    }

    #[test]
    fn every_format_writes_every_row() {
        let b = batch();
        let text = |f| {
            let mut e = Exporter::new(f, b.schema(), Vec::new()).unwrap();
            e.write(&b).unwrap();
            e.write(&b).unwrap();
            assert_eq!(e.rows(), 4);
            String::from_utf8(e.finish().unwrap()).unwrap()
        };
        assert_eq!(text(Format::Csv), "n,tags\n1,\"a,b\"\n2,\n1,\"a,b\"\n2,\n");
        let j: serde_json::Value = serde_json::from_str(&text(Format::Json)).unwrap();
        assert_eq!(j.as_array().unwrap().len(), 4);
        assert_eq!(j[0]["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(text(Format::Ndjson).lines().count(), 4);
        let mut e = Exporter::new(Format::Parquet, b.schema(), Vec::new()).unwrap();
        e.write(&b).unwrap();
        let bytes = bytes::Bytes::from(e.finish().unwrap());
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let rows: usize = r.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 2);
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::parse("jsonl"), Some(Format::Ndjson));
        assert_eq!(Format::parse("xlsx"), None);
        assert!(is_uid("C1a2B3"));
        assert!(!is_uid("x' OR 1=1"));
        assert!(!is_uid(""));
    }
}
