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
    /// Run the appliance with its API server (the default). With no
    /// interface configured: built-in demo traffic.
    Serve(ServeArgs),
    /// Run capture, storage and detection only (no API server).
    Run(RunArgs),
    /// Users of the API: add one, list them.
    User(UserArgs),
    /// Copy the control-plane store (users, rules, incidents, audit log) atomically.
    Backup(BackupArgs),
    /// Analyse capture files into hourly Parquet history.
    Ingest(IngestArgs),
    /// Print one record per connection (or protocol records) for captures.
    Flows(FlowsArgs),
    /// Write synthetic traffic to a pcap file.
    Synth(SynthArgs),
    /// Send test traffic with known content out of an interface.
    Gen(GenArgs),
    /// Query the history with SQL (tables flows, dns, tls, http, dhcp, stats, alerts).
    Sql(SqlArgs),
    /// Import flow records from CSV files into the history.
    Import(ImportArgs),
    /// Packet recording sessions (start, stop, list, delete) and PCAP export.
    Record(RecordArgs),
    /// The anomaly model: train it on a baseline period of history.
    Model(ModelArgs),
    /// Alerts: acknowledge (stops escalation of their notifications).
    Alerts(AlertsArgs),
    /// WASM detector plugins: check one, list the installed ones.
    Plugin(PluginArgs),
    /// Make a report (traffic summary, incidents, alerts and anomalies, top
    /// talkers, the audit trail) from the history as PDF, CSV or JSON.
    Report(ReportArgs),
    /// Check the host for live capture (kernel, XDP per interface, queues,
    /// locked memory, capabilities, disk against retention, clock) and say
    /// what to fix.
    Doctor(DoctorArgs),
}

/// What runs the engine, shared by `serve` and `run`.
#[derive(clap::Args, Debug, Default)]
pub struct EngineArgs {
    /// Data directory (default: storage.data_dir).
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
    /// Capture from this interface (repeat for several; overrides
    /// `capture.interfaces`). With none anywhere: demo traffic.
    #[arg(long = "iface", value_name = "IFACE")]
    pub ifaces: Vec<String>,
    /// Capture filter, tcpdump style (overrides `capture.filter`).
    #[arg(long)]
    pub filter: Option<String>,
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Listen on this address (default: api.listen, 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    /// Data directory (default: storage.data_dir).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: UserCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user. Prints a random password unless --password-stdin.
    Add {
        name: String,
        /// admin, analyst or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Data directory (default: storage.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Write the copy here (written beside it first, then renamed).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    /// Data directory (default: storage.data_dir).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: PluginCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum PluginCmd {
    /// Validate a plugin (manifest beside it, imports, exports, ABI version)
    /// and run it over a sample capture, printing its alerts and metrics.
    Check(PluginCheckArgs),
    /// The plugins in the plugin directory and what they have done.
    List {
        /// Plugin directory (default: plugins.dir under the data directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct PluginCheckArgs {
    /// The plugin module; its manifest is the .toml beside it.
    pub file: PathBuf,
    /// Sample capture (default: synthetic traffic with injected attacks).
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Seconds of synthetic traffic (2,000 packets/s).
    #[arg(long, default_value_t = 300)]
    pub seconds: u64,
    /// Attacks injected into the synthetic traffic (as for `run --attacks`).
    #[arg(long, default_value = "beacon:20@10+600,dns-tunnel:400@60+60,port-scan:200@120+20")]
    pub attacks: String,
    /// Workers.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    /// Data directory (default: storage.data_dir).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: AlertsCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum AlertsCmd {
    /// Acknowledge alerts by id.
    Ack {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Data directory (default: storage.data_dir).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: ModelCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum ModelCmd {
    /// Train on the history between two times (the baseline: normal traffic).
    Train {
        /// From this time (RFC 3339 or Unix seconds).
        #[arg(long)]
        from: String,
        /// Up to this time (RFC 3339 or Unix seconds).
        #[arg(long)]
        to: String,
        /// Write the model here (default: detect.ml.model under the data directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What the current model was trained on.
    Show,
}

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// Data directory (default: storage.data_dir).
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: RecordCmd,
}

#[derive(Subcommand, Debug)]
pub enum RecordCmd {
    /// Ask the appliance to record packets into pcap files under DATA/pcap/NAME.
    Start(RecordStartArgs),
    /// Stop a session (the running appliance stops it within a second).
    Stop { name: String },
    /// Sessions with their state, files, packets and bytes.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stopped session and its files.
    Delete { name: String },
    /// Write recorded packets (one flow, or a filter and time range) to a pcap file.
    Export(RecordExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct RecordStartArgs {
    /// Session name: letters, digits, `-`, `_`.
    pub name: String,
    /// Record only packets this capture filter (tcpdump style) passes.
    #[arg(long)]
    pub filter: Option<String>,
    /// Stop when the session's files reach this size (e.g. 10GiB).
    #[arg(long)]
    pub max_size: Option<String>,
    /// Stop this long after the session starts (e.g. 2h).
    #[arg(long)]
    pub max_duration: Option<String>,
    /// Start a new file when one reaches this size.
    #[arg(long, default_value = "256MiB")]
    pub rotate_size: String,
    /// Start a new file when one spans this much time.
    #[arg(long, default_value = "1h")]
    pub rotate_every: String,
    /// Bytes kept of each packet.
    #[arg(long, default_value_t = 65_535)]
    pub snaplen: u32,
}

#[derive(clap::Args, Debug)]
pub struct RecordExportArgs {
    /// Read this session only (repeat for several; default: all sessions).
    #[arg(long)]
    pub session: Vec<String>,
    /// The packets of one flow, by its id (the flows table's `uid`).
    #[arg(long, conflicts_with = "flow")]
    pub uid: Option<String>,
    /// The packets of one flow, by 5-tuple: `tcp 10.0.0.1:51000 10.0.0.2:443`.
    #[arg(long)]
    pub flow: Option<String>,
    /// Packets this capture filter passes.
    #[arg(long)]
    pub filter: Option<String>,
    /// From this time (RFC 3339 or Unix seconds; inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time (RFC 3339 or Unix seconds; inclusive).
    #[arg(long)]
    pub to: Option<String>,
    /// The pcap file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// What the files hold (flows: the columns of docs/schema.md).
    #[arg(value_parser = ["flows"])]
    pub table: String,
    /// CSV files with a header row.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Data directory (default: storage.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Import the good rows of a file with bad ones (default: a file with
    /// any bad row imports nothing).
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Write every row error here as CSV (line,column,value,reason).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SqlFormat {
    Table,
    Csv,
    Json,
    Ndjson,
    Parquet,
}

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Interface to check (repeat; default: capture.interfaces).
    #[arg(long)]
    pub interface: Vec<String>,
    /// Data directory (default: storage.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Attach the capture program to each interface and detach it again,
    /// to learn whether native XDP works (some drivers reset the link).
    #[arg(long)]
    pub probe_xdp: bool,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// What the report is about.
    #[arg(long, value_parser = ["traffic", "incidents", "alerts", "talkers", "audit"])]
    pub kind: String,
    /// Start: RFC 3339 (2026-12-01T00:00:00Z) or Unix seconds.
    #[arg(long, conflicts_with = "range")]
    pub from: Option<String>,
    /// End (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// A preset range ending at --to or now (default: day).
    #[arg(long, value_parser = ["day", "week", "month"])]
    pub range: Option<String>,
    /// Filter: either end is this address.
    #[arg(long)]
    pub ip: Option<String>,
    /// Filter: either end is inside this network.
    #[arg(long)]
    pub cidr: Option<String>,
    /// Filter: responder port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Filter: tcp, udp or icmp.
    #[arg(long)]
    pub protocol: Option<String>,
    /// Filter: either end in this country (ISO code).
    #[arg(long)]
    pub country: Option<String>,
    /// Filter: text in DNS/TLS/HTTP names, alert explanations, incident
    /// titles or audit entries.
    #[arg(long)]
    pub text: Option<String>,
    /// Data directory (default: storage.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The report file: .pdf, .csv or .json.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The query (one read-only statement).
    pub query: String,
    /// Data directory (default: storage.data_dir).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    pub format: SqlFormat,
    /// Write the whole result here (streaming, no row limit) instead of
    /// showing at most sql.max_rows rows.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Write a JSON summary of the run to this file at exit.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Interface to send from.
    #[arg(long)]
    pub iface: String,
    /// Packets per second.
    #[arg(long, default_value_t = 1000)]
    pub pps: u64,
    /// Concurrent flows (sessions for web/dns; distinct tuples for the others).
    #[arg(long, default_value_t = 100)]
    pub flows: u32,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Send exactly this many packets instead (paced at --pps).
    #[arg(long)]
    pub packets: Option<u64>,
    /// Client addresses are 10.<N>.0.0/16 (distinct values make distinct flows).
    #[arg(long, default_value_t = 77)]
    pub client_net: u8,
    /// Tag every frame with this 802.1Q VLAN id.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// Traffic: web, dns, syn-flood, udp-flood, scan.
    #[arg(long, default_value = "web")]
    pub mix: String,
    /// Write the JSON report here too (it is always printed).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// How frames leave: `packet` (an AF_PACKET socket: exact accounting of
    /// every frame), `xdp-live` (the kernel's XDP live-frame runner, for
    /// benchmarks: millions of frames/s, udp-flood only, spread over --flows
    /// source ports at random; frames the interface dropped on transmit are
    /// reported as `tx_dropped`, not as sent), or `auto` (xdp-live where it
    /// can send the traffic asked and the kernel permits it, else packet,
    /// with the reason logged). The report's `tx` says which sent.
    #[arg(long, value_enum, default_value_t = GenTx::Packet)]
    pub tx: GenTx,
    /// With `--tx xdp-live` (or auto): the share (0-1] of the runner's copies sent;
    /// the rest are dropped in its program, so the stream thins evenly to a
    /// lower rate without gaps (for a search of the highest loss-free rate).
    /// --packets is then about what is sent; the report says exactly.
    #[arg(long, default_value_t = 1.0)]
    pub send_fraction: f64,
}

/// `gen --tx`: how the generator's frames leave.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum GenTx {
    Packet,
    XdpLive,
    Auto,
}

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Data directory for history.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Worker threads (default: `pipeline.workers` when set, else one per core).
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
    /// Worker threads (default: `pipeline.workers` when set, else one per core).
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
