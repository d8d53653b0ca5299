//! Live capture from network interfaces (Linux): AF_XDP sockets fed by an
//! XDP redirect program the engine loads itself.
//!
//! [`open`] turns a list of interfaces into packet sources, one per
//! (interface, RX queue), each to be driven by its own RX thread (see
//! [`crate::pipeline::run_live`]). The XDP programs it attached are returned
//! with them and detached when dropped.

pub mod bpf;
pub mod cores;
pub mod host;
pub mod iface;
pub mod netlink;
pub mod packet;
pub mod traffic;
pub mod xsk;

use std::io;

pub use bpf::{XdpAttachMode, XdpProgram};
pub use xsk::{BindMode, XskConfig, XskSource};

use crate::source::PacketSource;

/// Errors opening a live capture. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("{what}: permission denied: needs {capability} (run as root or grant it, e.g. setcap {capability}+ep)")]
    Permission { what: String, capability: &'static str },
    #[error("{iface}: XDP is not supported here: {reason}")]
    Unsupported { iface: String, reason: String },
    #[error(
        "{iface}: cannot lock {bytes} bytes of packet memory (memlock limit too low: raise `ulimit -l`, or grant CAP_IPC_LOCK)"
    )]
    Memlock { iface: String, bytes: u64, source: io::Error },
    #[error("{iface} queue {queue}: binding the AF_XDP socket in {} mode failed", if *zero_copy { "zero-copy" } else { "copy" })]
    Bind { iface: String, queue: u32, zero_copy: bool, source: io::Error },
    #[error(
        "{iface}: the kernel refused to run XDP live frames (BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES); \
         a security policy or the kernel's build forbids it on this machine: send with --tx packet, or --tx auto to fall back by itself"
    )]
    LiveFramesRefused { iface: String, source: io::Error },
    #[error("{context}")]
    Io { context: String, source: io::Error },
}

/// An error and its causes on one line (`a: b: c`).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl LiveError {
    pub fn io(context: impl Into<String>, source: io::Error) -> LiveError {
        LiveError::Io { context: context.into(), source }
    }
}

/// Which XDP attach mode to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpModeChoice {
    /// Native when the driver has it, generic otherwise.
    #[default]
    Auto,
    Native,
    Generic,
}

/// How frames are taken from an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureMethod {
    /// AF_XDP, falling back to AF_PACKET (with the reason logged) when XDP
    /// cannot be attached.
    #[default]
    Auto,
    AfXdp,
    AfPacket,
}

/// One interface to capture from.
#[derive(Clone, Debug)]
pub struct InterfaceSpec {
    pub name: String,
    /// RX queues to open (`None`: all of them, as ethtool reports).
    pub queues: Option<u32>,
}

/// Capture settings shared by every interface.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub method: CaptureMethod,
    pub xdp_mode: XdpModeChoice,
    pub xsk: XskConfig,
    /// AF_PACKET ring: block size (bytes, a multiple of the page size) and blocks per socket.
    pub packet_block_size: u32,
    pub packet_blocks: u32,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            method: CaptureMethod::default(),
            xdp_mode: XdpModeChoice::default(),
            xsk: XskConfig::default(),
            packet_block_size: 1 << 20,
            packet_blocks: 32,
        }
    }
}

/// Open sources, and what keeps them fed (attached programs).
pub struct LiveCapture {
    /// One per (interface, queue), in interface order.
    pub sources: Vec<Box<dyn PacketSource>>,
    /// Attached XDP programs: detached when dropped (drop them after the
    /// sources have stopped).
    pub programs: Vec<XdpProgram>,
    /// One line per interface saying how it is captured (for the log).
    pub report: Vec<String>,
}

fn map_bpf_err(iface: &str, e: io::Error) -> LiveError {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => LiveError::Permission {
            what: format!("{iface}: loading the XDP program"),
            capability: "cap_bpf,cap_net_admin",
        },
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            LiveError::Unsupported { iface: iface.to_string(), reason: e.to_string() }
        }
        Some(libc::ERANGE) => LiveError::Unsupported {
            iface: iface.to_string(),
            reason:
                "the MTU (here or on a veth peer) is too large for native XDP: lower it, or use xdp_mode = \"generic\""
                    .into(),
        },
        _ => LiveError::io(format!("{iface}: attaching the XDP program"), e),
    }
}

/// Attach the redirect program to `ifindex`, in the mode asked for.
fn attach(iface: &str, ifindex: u32, queues: u32, choice: XdpModeChoice) -> Result<XdpProgram, LiveError> {
    let modes: &[XdpAttachMode] = match choice {
        XdpModeChoice::Auto => &[XdpAttachMode::Native, XdpAttachMode::Generic],
        XdpModeChoice::Native => &[XdpAttachMode::Native],
        XdpModeChoice::Generic => &[XdpAttachMode::Generic],
    };
    let mut last = None;
    for &m in modes {
        match XdpProgram::attach(ifindex, queues, m) {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(map_bpf_err(iface, e)),
        }
        if matches!(last, Some(LiveError::Permission { .. })) {
            break;
        }
    }
    Err(last.expect("at least one mode tried"))
}

/// Check the privileges live capture needs, before touching anything.
fn check_raw_socket(iface: &str) -> Result<(), LiveError> {
    // Safety: plain socket(2) call; closed right away.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Err(LiveError::Permission {
                what: format!("{iface}: opening a capture socket"),
                capability: "cap_net_raw",
            }),
            _ => Ok(()), // no AF_XDP: the caller falls back
        };
    }
    // Safety: `fd` was just opened here.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Open every interface of `specs`. Interface numbers in records are the
/// positions in `specs`.
pub fn open(specs: &[InterfaceSpec], cfg: &LiveConfig) -> Result<LiveCapture, LiveError> {
    let mut cap = LiveCapture { sources: Vec::new(), programs: Vec::new(), report: Vec::new() };
    for (i, spec) in specs.iter().enumerate() {
        let name = spec.name.as_str();
        let ifindex = iface::ifindex(name).ok_or_else(|| LiveError::NoSuchInterface(name.to_string()))?;
        check_raw_socket(name)?;
        let hw_queues = iface::rx_queues(name);
        let queues = spec.queues.unwrap_or(hw_queues).clamp(1, hw_queues.max(1));
        let xdp = match cfg.method {
            CaptureMethod::AfPacket => Err(None),
            _ => match open_xdp(name, i as u16, ifindex, queues, cfg) {
                Ok(v) => Ok(v),
                Err(e @ (LiveError::Permission { .. } | LiveError::Memlock { .. })) => return Err(e),
                Err(e) if cfg.method == CaptureMethod::AfXdp => return Err(e),
                Err(e) => Err(Some(e)),
            },
        };
        match xdp {
            Err(reason) => {
                let why = match reason {
                    Some(e) => format!("XDP unavailable ({}); fell back to AF_PACKET", describe(&e)),
                    None => "AF_PACKET as configured".to_string(),
                };
                let group = ((std::process::id() ^ ifindex.rotate_left(8)) & 0xffff) as u16;
                for q in 0..queues {
                    let s =
                        packet::PacketSocket::open(name, i as u16, q, group, cfg.packet_block_size, cfg.packet_blocks)?;
                    cap.sources.push(Box::new(s));
                }
                cap.report.push(format!("{name}: af_packet tpacket_v3, {queues} socket(s) in a fanout group: {why}"));
            }
            Ok((prog, socks)) => {
                let mode = socks.first().map(|s| s.mode().to_string()).unwrap_or_default();
                let driver = iface::driver(name).unwrap_or_else(|| "unknown driver".into());
                cap.report.push(format!(
                    "{name} ({driver}): {mode}, {queues} queue(s){}",
                    if prog.replaced_stale { ", replaced a stale XDP program" } else { "" }
                ));
                cap.programs.push(prog);
                cap.sources.extend(socks.into_iter().map(|s| Box::new(s) as Box<dyn PacketSource>));
            }
        }
    }
    Ok(cap)
}

fn open_xdp(
    name: &str,
    iface_no: u16,
    ifindex: u32,
    queues: u32,
    cfg: &LiveConfig,
) -> Result<(XdpProgram, Vec<XskSource>), LiveError> {
    let prog = attach(name, ifindex, queues, cfg.xdp_mode)?;
    let mut socks = Vec::with_capacity(queues as usize);
    for q in 0..queues {
        let s = XskSource::open(name, iface_no, q, &cfg.xsk, prog.mode.name())?;
        prog.register(q, s.fd()).map_err(|e| LiveError::io(format!("{name}: registering queue {q}"), e))?;
        socks.push(s);
    }
    Ok((prog, socks))
}
