//! Named decode anomalies. Every malformation has one; counters are per worker
//! and summed when read.

macro_rules! anomalies {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// A malformation or oddity found while decoding.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Anomaly { $($variant),* }

        impl Anomaly {
            pub const ALL: &'static [Anomaly] = &[$(Anomaly::$variant),*];
            /// Stable snake_case name, as exported in statistics.
            pub fn name(self) -> &'static str {
                match self { $(Anomaly::$variant => $name),* }
            }
        }
    };
}

anomalies! {
    UnknownLinkType => "unknown_link_type",
    TruncatedLinkHeader => "truncated_link_header",
    UnknownEthertype => "unknown_ethertype",
    TruncatedVlan => "truncated_vlan",
    TruncatedMpls => "truncated_mpls",
    TruncatedPppoe => "truncated_pppoe",
    UnknownPppProtocol => "unknown_ppp_protocol",
    TruncatedLlc => "truncated_llc",
    TruncatedIpv4 => "truncated_ipv4",
    BadIpVersion => "bad_ip_version",
    BadIpv4HeaderLength => "bad_ipv4_header_length",
    BadIpv4TotalLength => "bad_ipv4_total_length",
    BadIpv4Checksum => "bad_ipv4_checksum",
    TruncatedIpv6 => "truncated_ipv6",
    BadIpv6PayloadLength => "bad_ipv6_payload_length",
    TruncatedIpv6ExtensionHeader => "truncated_ipv6_extension_header",
    IpPayloadTruncatedBySnaplen => "ip_payload_truncated_by_snaplen",
    FragmentedPacket => "fragmented_packet",
    FragmentOverlap => "fragment_overlap",
    FragmentTableFull => "fragment_table_full",
    FragmentTooLarge => "fragment_too_large",
    TruncatedTcp => "truncated_tcp",
    BadTcpHeaderLength => "bad_tcp_header_length",
    BadTcpChecksum => "bad_tcp_checksum",
    TcpSynWithFin => "tcp_syn_with_fin",
    TcpSynWithRst => "tcp_syn_with_rst",
    TruncatedUdp => "truncated_udp",
    BadUdpLength => "bad_udp_length",
    BadUdpChecksum => "bad_udp_checksum",
    TruncatedIcmp => "truncated_icmp",
    BadIcmpChecksum => "bad_icmp_checksum",
    TruncatedTunnel => "truncated_tunnel",
    TunnelDepthExceeded => "tunnel_depth_exceeded",
    TruncatedRadiotap => "truncated_radiotap",
    TruncatedNflog => "truncated_nflog",
    DnsMalformed => "dns_malformed",
    DnsCompressionLoop => "dns_compression_loop",
    TlsMalformed => "tls_malformed",
    HttpMalformed => "http_malformed",
    DhcpMalformed => "dhcp_malformed",
    FlowTableEviction => "flow_table_eviction",
}

/// A set of anomalies seen on one packet (bit per [`Anomaly`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnomalySet(pub u64);

impl AnomalySet {
    #[inline]
    pub fn add(&mut self, a: Anomaly) {
        self.0 |= 1u64 << (a as u8);
    }
    #[inline]
    pub fn contains(&self, a: Anomaly) -> bool {
        self.0 & (1u64 << (a as u8)) != 0
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Anomaly> {
        Anomaly::ALL.iter().copied().filter(move |a| self.contains(*a))
    }
}

/// Per-anomaly counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalyCounters(pub [u64; 64]);

impl Default for AnomalyCounters {
    fn default() -> Self {
        AnomalyCounters([0; 64])
    }
}

impl AnomalyCounters {
    #[inline]
    pub fn record(&mut self, set: AnomalySet) {
        let mut bits = set.0;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            self.0[i] += 1;
            bits &= bits - 1;
        }
    }
    #[inline]
    pub fn bump(&mut self, a: Anomaly) {
        self.0[a as usize] += 1;
    }
    pub fn get(&self, a: Anomaly) -> u64 {
        self.0[a as usize]
    }
    pub fn merge(&mut self, o: &AnomalyCounters) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }
    /// Non-zero counters by name.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Anomaly::ALL.iter().filter(|a| self.get(**a) > 0).map(|a| (a.name(), self.get(*a)))
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}
