//! The `tapstream` binary: a thin shell over the library crates.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;
mod commands;
mod config;
mod live;
mod output;

fn main() -> std::process::ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAPSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tapstream: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
