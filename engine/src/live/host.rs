//! Facts about the host a capture appliance depends on: the kernel
//! release, the locked-memory limit (UMEM is pinned memory), the process's
//! capabilities, clock synchronisation, free disk and huge pages. Read by
//! `tapstream doctor`; nothing here changes the host.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// The kernel release (`6.1.0-18-amd64`).
pub fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string())
}

/// Major and minor version of a release string.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// RLIMIT_MEMLOCK's soft limit in bytes (None: unlimited).
pub fn memlock_limit() -> io::Result<Option<u64>> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // Safety: getrlimit writes one rlimit struct, which `r` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur))
}

/// Capability numbers (linux/capability.h).
pub mod cap {
    pub const NET_ADMIN: u32 = 12;
    pub const NET_RAW: u32 = 13;
    pub const IPC_LOCK: u32 = 14;
    pub const SYS_ADMIN: u32 = 21;
    pub const PERFMON: u32 = 38;
    pub const BPF: u32 = 39;
}

/// This process's effective capability set (from /proc/self/status).
pub fn effective_caps() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Is the system clock synchronised (NTP, PTP), as the kernel sees it?
pub fn clock_synced() -> io::Result<bool> {
    // Safety: an all-zero timex is a valid argument (modes = 0 reads only).
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // Safety: adjtimex with modes 0 only fills `t`.
    let state = unsafe { libc::adjtimex(&mut t) };
    if state < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(state != libc::TIME_ERROR && t.status & libc::STA_UNSYNC == 0)
}

/// Available and total bytes of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // Safety: an all-zero statvfs is valid storage for the call to fill.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // Safety: `c` is NUL-terminated; statvfs fills `s` only.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((s.f_bavail as u64 * s.f_frsize as u64, s.f_blocks as u64 * s.f_frsize as u64))
}

/// Huge pages: total, free, and the page size in bytes (/proc/meminfo).
pub fn hugepages() -> Option<(u64, u64, u64)> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
    };
    Some((field("HugePages_Total:")?, field("HugePages_Free:")?, field("Hugepagesize:")? * 1024))
}

/// Is the interface up (operstate `up`, or `unknown` for virtual ones
/// that do not report)?
pub fn link_state(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")).ok().map(|s| s.trim().to_string())
}

/// Is the interface in promiscuous mode (IFF_PROMISC)?
pub fn promiscuous(name: &str) -> Option<bool> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).ok()?;
    let flags = u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & 0x100 != 0)
}

/// Drivers with native XDP, and those of them with AF_XDP zero-copy, in
/// mainline kernels (5.10 and later).
pub fn driver_xdp(driver: &str) -> (bool, bool) {
    const ZERO_COPY: &[&str] = &["i40e", "ice", "ixgbe", "igc", "mlx5_core", "stmmac"];
    const NATIVE: &[&str] = &[
        "veth",
        "virtio_net",
        "tun",
        "mlx4_en",
        "nfp",
        "qede",
        "sfc",
        "bnxt_en",
        "thunderx",
        "netsec",
        "dpaa2",
        "ixgbevf",
        "igb",
        "ena",
        "gve",
        "idpf",
        "tsnep",
        "mvneta",
        "mvpp2",
        "lan966x",
        "fec",
        "enetc",
        "xen-netfront",
        "hv_netvsc",
        "cpsw",
        "octeontx2",
        "atlantic",
    ];
    let zc = ZERO_COPY.contains(&driver);
    (zc || NATIVE.contains(&driver), zc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_host_read() {
        let r = kernel_release().unwrap();
        let (major, _) = kernel_version(&r).unwrap();
        assert!(major >= 4, "{r}");
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert!(effective_caps().is_some());
        memlock_limit().unwrap();
        clock_synced().unwrap();
        let (avail, total) = disk_space(Path::new("/")).unwrap();
        assert!(total > 0 && avail <= total);
        assert!(hugepages().is_some());
        assert_eq!(link_state("lo").as_deref(), Some("unknown"));
        assert_eq!(driver_xdp("ice"), (true, true));
        assert_eq!(driver_xdp("veth"), (true, false));
        assert_eq!(driver_xdp("e1000"), (false, false));
    }
}
