//! `tapstream report`: one report from a data directory, written to a file
//! (PDF, CSV or JSON by its extension). The generation is audited in the
//! data directory's control-plane store when there is one.

use std::process::ExitCode;

use anyhow::Context;
use tapstream_api::report::{self, Filter, Format, Kind, Sources, Span, Spec};

use crate::cli::ReportArgs;
use crate::config::Config;

pub fn run(cfg: Config, a: ReportArgs) -> anyhow::Result<ExitCode> {
    let data = a.data.clone().unwrap_or_else(|| cfg.data_dir.clone());
    let format = Format::of_path(&a.out).map_err(anyhow::Error::msg)?;
    let kind = Kind::parse(&a.kind).map_err(anyhow::Error::msg)?;
    let span = a.range.as_deref().map(Span::parse).transpose().map_err(anyhow::Error::msg)?;
    let filter = Filter {
        ip: a.ip.clone(),
        cidr: a.cidr.clone(),
        port: a.port,
        protocol: a.protocol.clone(),
        country: a.country.clone(),
        text: a.text.clone(),
    };
    let now = crate::commands::now_ns() as i64;
    let spec =
        Spec::new(kind, span, a.from.as_deref(), a.to.as_deref(), filter, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !data.is_dir() {
        anyhow::bail!("{}: no data directory (give --data or storage.data_dir)", data.display());
    }
    // The store holds incidents and the audit log; opened only if it exists.
    let db = data.join("control.db");
    let store = db.is_file().then(|| tapstream_api::Store::open(&db)).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the query runtime")?;
    let r = rt.block_on(async {
        let h = tapstream_query::History::open(&data, cfg.sql.clone()).await?;
        if let Some(g) = cfg.geoip.open()? {
            h.set_geo(g);
        }
        report::gather(&spec, &Sources { history: &h, store: store.as_ref() }, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    });
    let audit = |ok: bool, error: Option<String>| -> anyhow::Result<()> {
        if let Some(s) = &store {
            s.audit(&tapstream_api::store::AuditEntry {
                user: "cli".into(),
                action: "report_generate",
                target: kind.name().to_string(),
                detail: serde_json::json!({
                    "format": format.name(),
                    "from": report::model::time_label(spec.from_ns),
                    "to": report::model::time_label(spec.to_ns),
                    "filter": spec.filter,
                    "out": a.out.display().to_string(),
                    "error": error,
                }),
                addr: String::new(),
                ok,
            })?;
        }
        Ok(())
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            audit(false, Some(format!("{e:#}")))?;
            return Err(e);
        }
    };
    let bytes = report::render(&r, format);
    let tmp = a.out.with_extension(format!("{}.tmp", format.name()));
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    audit(true, None)?;
    eprintln!(
        "{}: {} for {} to {} UTC{} ({} bytes)",
        a.out.display(),
        r.title,
        report::model::time_label(spec.from_ns),
        report::model::time_label(spec.to_ns),
        if r.filter.is_empty() { String::new() } else { format!(", filter {}", r.filter) },
        bytes.len()
    );
    Ok(ExitCode::SUCCESS)
}
