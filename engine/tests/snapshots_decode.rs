//! Snapshot tests (insta) of the decoders over the reference captures: one
//! capture per link type and tunnel kind, every packet rendered compactly.

use std::fmt::Write;
use std::path::PathBuf;

use tapstream_engine::decode::{DecodeConfig, Decoded, decode};
use tapstream_engine::source::{Batch, PacketSource, open_capture};

fn corpus(name: &str) -> String {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/zeek").join(name);
    for f in ["trace.pcap", "trace.pcapng"] {
        if base.join(f).exists() {
            return base.join(f).display().to_string();
        }
    }
    panic!("no capture in {}", base.display());
}

fn render(name: &str, limit: usize) -> String {
    let mut src = open_capture(&corpus(name)).unwrap();
    let cfg = DecodeConfig::default();
    let mut d = Decoded::default();
    let mut out = String::new();
    let mut b = Batch::with_capacity(64);
    let mut n = 0;
    'outer: loop {
        b.clear();
        if src.fill(&mut b, 64).unwrap() == 0 {
            break;
        }
        for (desc, frame) in b.frames() {
            if n == limit {
                break 'outer;
            }
            n += 1;
            decode(desc.link, frame, &cfg, &mut d);
            let _ = write!(out, "#{n} {} len={} iface={}", desc.link.name(), desc.caplen, desc.iface);
            if d.n_vlan > 0 {
                let _ = write!(out, " vlan={:?}", &d.vlan[..d.n_vlan as usize]);
            }
            if d.non_ip {
                out.push_str(" non-ip");
            }
            for l in d.layers() {
                let _ = write!(
                    out,
                    "\n   ip{} {} > {} proto={} ip_len={} frag={:?}",
                    if l.v6 { 6 } else { 4 },
                    l.src_addr(),
                    l.dst_addr(),
                    l.proto,
                    l.ip_len,
                    l.frag
                );
                if l.l4_ok {
                    let _ = write!(
                        out,
                        " ports={}>{} flags={:#04x} icmp={}/{}",
                        l.sport, l.dport, l.tcp_flags, l.icmp_type, l.icmp_code
                    );
                }
                let _ = write!(out, " payload={}/{}", l.payload_len, l.payload_cap);
                if l.encap != tapstream_engine::decode::Tunnel::None {
                    let _ = write!(out, " encap={}", l.encap.name());
                }
            }
            let an: Vec<&str> = d.anomalies.iter().map(|a| a.name()).collect();
            if !an.is_empty() {
                let _ = write!(out, "\n   anomalies: {}", an.join(","));
            }
            out.push('\n');
        }
    }
    out
}

macro_rules! snap {
    ($test:ident, $name:literal, $limit:expr) => {
        #[test]
        fn $test() {
            insta::assert_snapshot!(render($name, $limit));
        }
    };
}

snap!(ethernet_ipv4_tcp, "http-get", 4);
snap!(qinq_vlan, "q-in-q", 5);
snap!(mpls_in_vlan, "mpls-in-vlan", 3);
snap!(pppoe_ipv6_icmp6, "pppoe-ipv6-icmp6", 4);
snap!(ppp_link, "ppp-quic-retry", 3);
snap!(radiotap_80211, "radiotap-80211", 3);
snap!(nflog_link, "nflog-http", 3);
snap!(llc_snap, "snap-tcp-http", 3);
snap!(fddi_link, "llc-fddi-many-conns", 3);
snap!(linux_sll, "tls-irc-starttls", 3);
snap!(bsd_null, "tls-pop3-starttls", 3);
snap!(raw_ipv4, "http-te-cl-desync", 3);
snap!(vntag_nsec, "vntag-nsec", 3);
snap!(pcapng_interfaces, "pcapng-multi-interface", 6);
snap!(gre_tunnel, "tunnel-gre-sample", 3);
snap!(vxlan_tunnel, "tunnel-vxlan", 3);
snap!(geneve_ipv6, "tunnel-geneve-ipv6", 2);
snap!(ayiya_tunnel, "tunnel-ayiya", 4);
snap!(gtp_outer_fragments, "tunnel-gtp-outer-ip-frag", 6);
snap!(checksum_padding, "tcp-http-with-padding", 3);
