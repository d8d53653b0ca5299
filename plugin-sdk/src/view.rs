//! Safe, zero-copy views of the records in a batch.

use crate::abi::{FieldType, Kind, dns, flow, get_addr, get_str, get_u8, get_u16, get_u32, get_u64, http, tls, window};

/// One batch as the host wrote it: records, then their strings.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    kind: Kind,
    records: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Batch<'a> {
    /// `count` records of `kind` at the start of `bytes`; `None` when
    /// `bytes` is too short for them.
    pub fn new(kind: Kind, bytes: &'a [u8], count: usize) -> Option<Batch<'a>> {
        let n = count.checked_mul(kind.stride())?;
        if n > bytes.len() {
            return None;
        }
        let (records, strings) = bytes.split_at(n);
        Some(Batch { kind, records, strings })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.records.len() / self.kind.stride()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn iter<V: 'a>(&self, want: Kind, make: fn(Rec<'a>) -> V) -> impl Iterator<Item = V> + 'a {
        let strings = self.strings;
        let records: &'a [u8] = if self.kind == want { self.records } else { &[] };
        records.chunks_exact(want.stride()).map(move |r| make(Rec { r, s: strings }))
    }

    /// The records as flows (empty unless the batch holds flows).
    pub fn flows(&self) -> impl Iterator<Item = FlowView<'a>> + 'a {
        self.iter(Kind::Flow, FlowView)
    }
    pub fn dns(&self) -> impl Iterator<Item = DnsView<'a>> + 'a {
        self.iter(Kind::Dns, DnsView)
    }
    pub fn tls(&self) -> impl Iterator<Item = TlsView<'a>> + 'a {
        self.iter(Kind::Tls, TlsView)
    }
    pub fn http(&self) -> impl Iterator<Item = HttpView<'a>> + 'a {
        self.iter(Kind::Http, HttpView)
    }
    pub fn windows(&self) -> impl Iterator<Item = WindowView<'a>> + 'a {
        self.iter(Kind::Window, WindowView)
    }
}

#[derive(Clone, Copy)]
struct Rec<'a> {
    r: &'a [u8],
    s: &'a [u8],
}

impl<'a> Rec<'a> {
    #[inline(always)]
    fn str(&self, f: (usize, FieldType)) -> &'a str {
        let (off, len) = get_str(self.r, f);
        let (off, len) = (off as usize, len as usize);
        self.s.get(off..off.saturating_add(len)).and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("")
    }
}

macro_rules! accessors {
    ($view:ident, $m:ident { $($name:ident : $f:ident => $get:ident -> $t:ty),* $(,)? }) => {
        impl<'a> $view<'a> {
            $(
                #[inline(always)]
                pub fn $name(&self) -> $t { $get(self.0.r, $m::$f) }
            )*
        }
    };
}

macro_rules! strings {
    ($view:ident, $m:ident { $($name:ident : $f:ident),* $(,)? }) => {
        impl<'a> $view<'a> {
            $(
                #[inline(always)]
                pub fn $name(&self) -> &'a str { self.0.str($m::$f) }
            )*
        }
    };
}

macro_rules! conn {
    ($view:ident, $m:ident) => {
        accessors!($view, $m {
            ts_ns: TS_NS => get_u64 -> u64, uid: UID => get_u64 -> u64,
            orig_h: ORIG_H => get_addr -> [u8; 16], resp_h: RESP_H => get_addr -> [u8; 16],
            orig_p: ORIG_P => get_u16 -> u16, resp_p: RESP_P => get_u16 -> u16,
            proto: PROTO => get_u8 -> u8,
        });
        impl<'a> $view<'a> {
            /// The addresses are IPv6 (otherwise IPv4, in their first 4 bytes).
            #[inline(always)]
            pub fn v6(&self) -> bool {
                get_u8(self.0.r, $m::V6) != 0
            }
        }
    };
}

/// A flow record.
#[derive(Clone, Copy)]
pub struct FlowView<'a>(Rec<'a>);
conn!(FlowView, flow);
accessors!(FlowView, flow {
    kind: KIND => get_u8 -> u8, orig_flags: ORIG_FLAGS => get_u8 -> u8, resp_flags: RESP_FLAGS => get_u8 -> u8,
    first_ts: FIRST_TS => get_u64 -> u64, last_ts: LAST_TS => get_u64 -> u64,
    orig_bytes: ORIG_BYTES => get_u64 -> u64, resp_bytes: RESP_BYTES => get_u64 -> u64,
    orig_pkts: ORIG_PKTS => get_u64 -> u64, resp_pkts: RESP_PKTS => get_u64 -> u64,
});
accessors!(FlowView, flow { iface: IFACE => get_u16 -> u16, vlan: VLAN => get_u16 -> u16 });
strings!(FlowView, flow { history: HISTORY, state: STATE, service: SERVICE });

/// A DNS transaction.
#[derive(Clone, Copy)]
pub struct DnsView<'a>(Rec<'a>);
conn!(DnsView, dns);
accessors!(DnsView, dns {
    qtype: QTYPE => get_u16 -> u16, qclass: QCLASS => get_u16 -> u16, rcode: RCODE => get_u8 -> u8,
    flags: FLAGS => get_u8 -> u8, trans_id: TRANS_ID => get_u16 -> u16, answer_count: ANSWER_COUNT => get_u16 -> u16,
    rtt_ns: RTT_NS => get_u64 -> u64,
});
strings!(DnsView, dns { query: QUERY, answers: ANSWERS });

/// A TLS handshake.
#[derive(Clone, Copy)]
pub struct TlsView<'a>(Rec<'a>);
conn!(TlsView, tls);
accessors!(TlsView, tls {
    version: VERSION => get_u16 -> u16, client_version: CLIENT_VERSION => get_u16 -> u16,
    cipher: CIPHER => get_u16 -> u16,
});
strings!(TlsView, tls { server_name: SERVER_NAME, ja3: JA3, ja4: JA4, alpn: ALPN });
impl TlsView<'_> {
    pub fn established(&self) -> bool {
        get_u8(self.0.r, tls::ESTABLISHED) != 0
    }
}

/// An HTTP transaction.
#[derive(Clone, Copy)]
pub struct HttpView<'a>(Rec<'a>);
conn!(HttpView, http);
accessors!(HttpView, http {
    status: STATUS => get_u16 -> u16, trans_depth: TRANS_DEPTH => get_u32 -> u32,
    request_body_len: REQUEST_BODY_LEN => get_u64 -> u64, response_body_len: RESPONSE_BODY_LEN => get_u64 -> u64,
});
strings!(
    HttpView,
    http { method: METHOD, host: HOST, uri: URI, user_agent: USER_AGENT, referrer: REFERRER, status_msg: STATUS_MSG }
);

/// One conversation's second.
#[derive(Clone, Copy)]
pub struct WindowView<'a>(Rec<'a>);
accessors!(WindowView, window {
    sec_ns: SEC_NS => get_u64 -> u64, src: SRC => get_addr -> [u8; 16], dst: DST => get_addr -> [u8; 16],
    proto: PROTO => get_u8 -> u8, dport: DPORT => get_u16 -> u16, flows: FLOWS => get_u32 -> u32,
    pkts: PKTS => get_u64 -> u64, bytes: BYTES => get_u64 -> u64, rpkts: RPKTS => get_u64 -> u64,
    rbytes: RBYTES => get_u64 -> u64, syn: SYN => get_u32 -> u32, answered: ANSWERED => get_u32 -> u32,
    rejected: REJECTED => get_u32 -> u32, failed: FAILED => get_u32 -> u32, sample: SAMPLE => get_u64 -> u64,
});
impl WindowView<'_> {
    pub fn v6(&self) -> bool {
        get_u8(self.0.r, window::V6) != 0
    }
}

/// Write an address as text (dotted quad, or RFC 5952 IPv6).
pub fn fmt_addr(w: &mut dyn core::fmt::Write, a: &[u8; 16], v6: bool) -> core::fmt::Result {
    if v6 {
        let mut b = [0u8; 16];
        b.copy_from_slice(a);
        write!(w, "{}", core::net::Ipv6Addr::from(b))
    } else {
        write!(w, "{}", core::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}
