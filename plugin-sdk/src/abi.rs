//! The binary layout of ABI version 1: record kinds, their fixed layouts,
//! the alert structure. `plugin-sdk/ABI.md` is the prose form of this file;
//! the C header and the AssemblyScript library are checked against it by
//! tests on the host side.
//!
//! All integers are little-endian. A batch handed to a plugin is `count`
//! records of `stride(kind)` bytes each, then a string area: a string field
//! ([`Str`]) is a `u32` offset into that area and a `u32` length, UTF-8.

/// The ABI version this SDK speaks; a plugin exports it from `tapstream_abi`.
pub const ABI_VERSION: u32 = 1;

/// The buffer a plugin gives the host (`tapstream_buffer`) holds at least
/// this many bytes; the host never writes a larger batch.
pub const BUFFER_BYTES: usize = 128 * 1024;

/// Records in one batch, at most.
pub const BATCH_RECORDS: usize = 256;

/// Longest string field the host writes (longer values are cut at a
/// character boundary).
pub const MAX_STR: usize = 1024;

/// What a batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Flow records: a flow ended, or an active flow's periodic update.
    Flow = 1,
    /// DNS transactions.
    Dns = 2,
    /// TLS handshakes.
    Tls = 3,
    /// HTTP transactions.
    Http = 4,
    /// One-second conversation statistics (source, destination, protocol,
    /// destination port), merged over every worker: global plugins only.
    Window = 5,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Flow, Kind::Dns, Kind::Tls, Kind::Http, Kind::Window];

    pub fn from_u32(v: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u32 == v)
    }

    /// The manifest's name for it (`subscribe = ["flow", "dns"]`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Flow => "flow",
            Kind::Dns => "dns",
            Kind::Tls => "tls",
            Kind::Http => "http",
            Kind::Window => "window",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Bytes per record.
    pub fn stride(self) -> usize {
        match self {
            Kind::Flow => flow::SIZE,
            Kind::Dns => dns::SIZE,
            Kind::Tls => tls::SIZE,
            Kind::Http => http::SIZE,
            Kind::Window => window::SIZE,
        }
    }
}

macro_rules! layout {
    ($(#[$m:meta])* $name:ident, $size:literal { $($(#[$fm:meta])* $field:ident : $ty:ident @ $off:literal),* $(,)? }) => {
        $(#[$m])*
        pub mod $name {
            /// Bytes per record.
            pub const SIZE: usize = $size;
            $($(#[$fm])* pub const $field: (usize, super::FieldType) = ($off, super::FieldType::$ty);)*
            /// Every field: name, offset, type (for generated headers and tests).
            pub const FIELDS: &[(&str, usize, super::FieldType)] = &[$((stringify!($field), $off, super::FieldType::$ty)),*];
        }
    };
}

/// The type of a layout field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    U8,
    U16,
    U32,
    U64,
    F64,
    /// 16 bytes: an IPv6 address, or an IPv4 address in the first 4 bytes.
    Addr,
    /// 8 bytes: offset and length into the string area.
    Str,
}

impl FieldType {
    pub fn size(self) -> usize {
        match self {
            FieldType::U8 => 1,
            FieldType::U16 => 2,
            FieldType::U32 => 4,
            FieldType::U64 | FieldType::F64 | FieldType::Str => 8,
            FieldType::Addr => 16,
        }
    }
}

layout!(
    /// Kind 1: a flow record. `kind`: 0 final (the flow ended), 1 interim
    /// (active timeout: counters cover the period since the last record),
    /// 2 evicted (the flow table was full). `v6`: 1 when the addresses are
    /// IPv6. Flags: the TCP flags seen from each side, OR-ed.
    flow, 136 {
        TS_NS: U64 @ 0, UID: U64 @ 8, ORIG_H: Addr @ 16, RESP_H: Addr @ 32,
        ORIG_P: U16 @ 48, RESP_P: U16 @ 50, PROTO: U8 @ 52, V6: U8 @ 53, IFACE: U16 @ 54, VLAN: U16 @ 56,
        KIND: U8 @ 60, ORIG_FLAGS: U8 @ 62, RESP_FLAGS: U8 @ 63,
        FIRST_TS: U64 @ 64, LAST_TS: U64 @ 72,
        ORIG_BYTES: U64 @ 80, RESP_BYTES: U64 @ 88, ORIG_PKTS: U64 @ 96, RESP_PKTS: U64 @ 104,
        HISTORY: Str @ 112, STATE: Str @ 120, SERVICE: Str @ 128,
    }
);

layout!(
    /// Kind 2: a DNS transaction. `rcode` 255: no response. `flags`: 1 AA,
    /// 2 TC, 4 RD, 8 RA, 16 rejected, 32 `rtt_ns` is known. `answers`: the
    /// answers joined with `,`.
    dns, 96 {
        TS_NS: U64 @ 0, UID: U64 @ 8, ORIG_H: Addr @ 16, RESP_H: Addr @ 32,
        ORIG_P: U16 @ 48, RESP_P: U16 @ 50, PROTO: U8 @ 52, V6: U8 @ 53,
        QTYPE: U16 @ 58, QCLASS: U16 @ 60, RCODE: U8 @ 62, FLAGS: U8 @ 63,
        TRANS_ID: U16 @ 64, ANSWER_COUNT: U16 @ 66,
        RTT_NS: U64 @ 72, QUERY: Str @ 80, ANSWERS: Str @ 88,
    }
);

layout!(
    /// Kind 3: a TLS handshake. Versions and cipher as on the wire (0:
    /// not seen). `alpn`: the offered protocols joined with `,`.
    tls, 104 {
        TS_NS: U64 @ 0, UID: U64 @ 8, ORIG_H: Addr @ 16, RESP_H: Addr @ 32,
        ORIG_P: U16 @ 48, RESP_P: U16 @ 50, PROTO: U8 @ 52, V6: U8 @ 53,
        VERSION: U16 @ 58, CLIENT_VERSION: U16 @ 60, CIPHER: U16 @ 62, ESTABLISHED: U8 @ 64,
        SERVER_NAME: Str @ 72, JA3: Str @ 80, JA4: Str @ 88, ALPN: Str @ 96,
    }
);

layout!(
    /// Kind 4: an HTTP transaction. `status` 0: no response.
    http, 128 {
        TS_NS: U64 @ 0, UID: U64 @ 8, ORIG_H: Addr @ 16, RESP_H: Addr @ 32,
        ORIG_P: U16 @ 48, RESP_P: U16 @ 50, PROTO: U8 @ 52, V6: U8 @ 53,
        STATUS: U16 @ 58, TRANS_DEPTH: U32 @ 60, REQUEST_BODY_LEN: U64 @ 64, RESPONSE_BODY_LEN: U64 @ 72,
        METHOD: Str @ 80, HOST: Str @ 88, URI: Str @ 96, USER_AGENT: Str @ 104, REFERRER: Str @ 112,
        STATUS_MSG: Str @ 120,
    }
);

layout!(
    /// Kind 5: what one conversation (originator → responder, protocol,
    /// responder port) did in one second, over every worker. `flows`: flows
    /// started in the second; `syn`: of them, TCP opened with a SYN;
    /// `answered`/`rejected`/`failed`: connection attempts answered,
    /// refused with a RST, or failed (refused or unanswered). `sample`: the
    /// uid of one new flow. A source of all zeroes stands for sources
    /// folded together because a worker's table was full.
    window, 104 {
        SEC_NS: U64 @ 0, SRC: Addr @ 8, DST: Addr @ 24, V6: U8 @ 40, PROTO: U8 @ 41, DPORT: U16 @ 42,
        FLOWS: U32 @ 44, PKTS: U64 @ 48, BYTES: U64 @ 56, RPKTS: U64 @ 64, RBYTES: U64 @ 72,
        SYN: U32 @ 80, ANSWERED: U32 @ 84, REJECTED: U32 @ 88, FAILED: U32 @ 92, SAMPLE: U64 @ 96,
    }
);

layout!(
    /// The alert a plugin passes to `alert(ptr)`. Strings here are
    /// (pointer, length) pairs into the plugin's own memory. `severity`: 0
    /// info … 4 critical; `category`: see [`Category`]; `verdict`: 0 normal,
    /// 1 suspicious, 2 malicious. `rule`: 1 to 64 of `a-z 0-9 _ -`; alerts
    /// with the same rule and `group` are one alert. `src_ips`, `dst_ips`,
    /// `sample_flows`: comma-separated. `ports`: up to 4, 0 for none.
    alert, 112 {
        SEVERITY: U32 @ 0, CATEGORY: U32 @ 4, VERDICT: U32 @ 8,
        RULE: Str @ 16, GROUP: Str @ 24, EXPLANATION: Str @ 32, SRC_IPS: Str @ 40, DST_IPS: Str @ 48,
        SAMPLE_FLOWS: Str @ 56, RATE_UNIT: Str @ 64,
        PACKETS: U64 @ 72, BYTES: U64 @ 80, FLOWS: U64 @ 88, RATE: F64 @ 96,
        PORT0: U16 @ 104, PORT1: U16 @ 106, PORT2: U16 @ 108, PORT3: U16 @ 110,
    }
);

/// Alert categories, as numbers in [`alert::CATEGORY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Category {
    Ddos = 0,
    Scan = 1,
    Flood = 2,
    Policy = 3,
    Intel = 4,
    Anomaly = 5,
    Malware = 6,
    Exfiltration = 7,
}

/// Alert severities, as numbers in [`alert::SEVERITY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Severity {
    Info = 0,
    Low = 1,
    Medium = 2,
    High = 3,
    Critical = 4,
}

/// Verdicts, as numbers in [`alert::VERDICT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    Normal = 0,
    Suspicious = 1,
    Malicious = 2,
}

/// Log levels of `log(level, ptr, len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// DNS `flags` bits.
pub mod dns_flags {
    pub const AA: u8 = 1;
    pub const TC: u8 = 2;
    pub const RD: u8 = 4;
    pub const RA: u8 = 8;
    pub const REJECTED: u8 = 16;
    pub const HAS_RTT: u8 = 32;
}

/// What host functions return when they refuse.
pub mod errno {
    /// A pointer or length is outside the plugin's memory.
    pub const BOUNDS: i32 = -1;
    /// A string is not UTF-8, or a field is out of range (e.g. the rule name).
    pub const INVALID: i32 = -2;
    /// Over a limit (alerts per second, key-value entries or bytes).
    pub const LIMIT: i32 = -3;
    /// Not found (config key, key-value key).
    pub const NOT_FOUND: i32 = -4;
}

// Little-endian field access, shared by the host's writer and the plugin's views.

#[inline(always)]
pub fn get_u8(r: &[u8], f: (usize, FieldType)) -> u8 {
    r[f.0]
}
#[inline(always)]
pub fn get_u16(r: &[u8], f: (usize, FieldType)) -> u16 {
    u16::from_le_bytes([r[f.0], r[f.0 + 1]])
}
#[inline(always)]
pub fn get_u32(r: &[u8], f: (usize, FieldType)) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&r[f.0..f.0 + 4]);
    u32::from_le_bytes(b)
}
#[inline(always)]
pub fn get_u64(r: &[u8], f: (usize, FieldType)) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&r[f.0..f.0 + 8]);
    u64::from_le_bytes(b)
}
#[inline(always)]
pub fn get_f64(r: &[u8], f: (usize, FieldType)) -> f64 {
    f64::from_bits(get_u64(r, f))
}
#[inline(always)]
pub fn get_addr(r: &[u8], f: (usize, FieldType)) -> [u8; 16] {
    let mut b = [0; 16];
    b.copy_from_slice(&r[f.0..f.0 + 16]);
    b
}
/// A string field's (offset, length).
#[inline(always)]
pub fn get_str(r: &[u8], f: (usize, FieldType)) -> (u32, u32) {
    (get_u32(r, (f.0, FieldType::U32)), get_u32(r, (f.0 + 4, FieldType::U32)))
}

#[inline(always)]
pub fn put_u8(r: &mut [u8], f: (usize, FieldType), v: u8) {
    r[f.0] = v;
}
#[inline(always)]
pub fn put_u16(r: &mut [u8], f: (usize, FieldType), v: u16) {
    r[f.0..f.0 + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline(always)]
pub fn put_u32(r: &mut [u8], f: (usize, FieldType), v: u32) {
    r[f.0..f.0 + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline(always)]
pub fn put_u64(r: &mut [u8], f: (usize, FieldType), v: u64) {
    r[f.0..f.0 + 8].copy_from_slice(&v.to_le_bytes());
}
#[inline(always)]
pub fn put_f64(r: &mut [u8], f: (usize, FieldType), v: f64) {
    put_u64(r, f, v.to_bits());
}
#[inline(always)]
pub fn put_addr(r: &mut [u8], f: (usize, FieldType), v: &[u8; 16]) {
    r[f.0..f.0 + 16].copy_from_slice(v);
}
#[inline(always)]
pub fn put_str(r: &mut [u8], f: (usize, FieldType), off: u32, len: u32) {
    put_u32(r, (f.0, FieldType::U32), off);
    put_u32(r, (f.0 + 4, FieldType::U32), len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, size: usize, fields: &[(&str, usize, FieldType)]) {
        let mut used = [false; 256];
        for (f, off, t) in fields {
            let align = t.size().min(8);
            assert_eq!(off % align, 0, "{name}.{f} at {off} is not aligned to {align}");
            assert!(off + t.size() <= size, "{name}.{f} ends past the record ({size} bytes)");
            for (b, u) in used.iter_mut().enumerate().take(off + t.size()).skip(*off) {
                assert!(!*u, "{name}.{f} overlaps another field at byte {b}");
                *u = true;
            }
        }
        assert_eq!(size % 8, 0, "{name}: records must stay 8-byte aligned");
    }

    #[test]
    fn layouts_are_aligned_and_do_not_overlap() {
        check("flow", flow::SIZE, flow::FIELDS);
        check("dns", dns::SIZE, dns::FIELDS);
        check("tls", tls::SIZE, tls::FIELDS);
        check("http", http::SIZE, http::FIELDS);
        check("window", window::SIZE, window::FIELDS);
        check("alert", alert::SIZE, alert::FIELDS);
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_u32(k as u32), Some(k));
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_u32(0), None);
        assert_eq!(Kind::from_u32(6), None);
    }

    #[test]
    fn fields_round_trip() {
        let mut r = [0u8; flow::SIZE];
        put_u64(&mut r, flow::TS_NS, 0x0102_0304_0506_0708);
        put_u16(&mut r, flow::RESP_P, 443);
        put_addr(&mut r, flow::ORIG_H, &[7; 16]);
        put_str(&mut r, flow::HISTORY, 12, 3);
        put_u8(&mut r, flow::PROTO, 6);
        assert_eq!(get_u64(&r, flow::TS_NS), 0x0102_0304_0506_0708);
        assert_eq!(get_u16(&r, flow::RESP_P), 443);
        assert_eq!(get_addr(&r, flow::ORIG_H), [7; 16]);
        assert_eq!(get_str(&r, flow::HISTORY), (12, 3));
        assert_eq!(get_u8(&r, flow::PROTO), 6);
        assert_eq!(r[0], 8, "little-endian");
    }
}
