//! The `tapstream` binary: a thin shell over the library crates.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;
mod commands;
mod config;
mod feeds;
mod live;
mod model;
mod notify;
mod output;
mod plugins;
mod record;
mod serve;
mod sql;

fn main() -> std::process::ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAPSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs piped to a file or journald stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tapstream: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
