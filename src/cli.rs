//! Command-line arguments (raw; validated in `config`).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "tapstream", version, about = "Network traffic analysis appliance")]
pub struct Cli {
    /// Configuration file (TOML). See configs/tapstream.toml for every setting.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the appliance. With no interface configured: built-in demo traffic.
    Run(RunArgs),
    /// Analyse capture files into hourly Parquet history.
    Ingest(IngestArgs),
    /// Print one record per connection (or protocol records) for captures.
    Flows(FlowsArgs),
    /// Write synthetic traffic to a pcap file.
    Synth(SynthArgs),
}

#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Data directory for history.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Demo traffic rate in packets per second.
    #[arg(long)]
    pub pps: Option<u64>,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Worker threads.
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Data directory for history.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub workers: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Verify IP/TCP/UDP/ICMP checksums (bad ones are not analysed).
    #[arg(long)]
    pub verify_checksums: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Zeek,
    Json,
    Csv,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogKind {
    Conn,
    Dns,
    Tls,
    Http,
    Dhcp,
}

#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Zeek)]
    pub format: Format,
    /// Which log to print.
    #[arg(long, value_enum, default_value_t = LogKind::Conn)]
    pub log: LogKind,
    #[arg(long)]
    pub workers: Option<usize>,
    /// Verify checksums as Zeek does by default (bad packets get history c/C).
    #[arg(long)]
    pub verify_checksums: bool,
    /// Seed of Community ID hashes (overrides the config).
    #[arg(long)]
    pub community_id_seed: Option<u16>,
}

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Output pcap file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    pub packets: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Synthetic packets per second (sets timestamps).
    #[arg(long, default_value_t = 100_000)]
    pub pps: u64,
    /// Attack share of packets, e.g. `syn-flood=0.05,port-scan=0.01`.
    #[arg(long)]
    pub attacks: Option<String>,
}
