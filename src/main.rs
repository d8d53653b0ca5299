//! The `tapstream` binary: a thin shell over the library crates.

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

mod cli;
mod commands;
mod config;
mod doctor;
mod feeds;
mod live;
mod model;
mod notify;
mod output;
mod plugins;
mod record;
mod report;
mod reputation;
mod serve;
mod sql;

fn main() -> std::process::ExitCode {
    let args = <cli::Cli as clap::Parser>::parse();
    match commands::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tapstream: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
