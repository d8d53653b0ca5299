use super::*;

fn eth_ipv4_tcp() -> Vec<u8> {
    let mut f = vec![0u8; 14];
    f[12] = 0x08;
    let mut ip = vec![0x45, 0, 0, 44, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    let tcp = [0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0];
    ip.extend_from_slice(&tcp);
    ip.extend_from_slice(b"ping");
    f.extend_from_slice(&ip);
    f
}

#[test]
fn decodes_tcp_over_ethernet() {
    let f = eth_ipv4_tcp();
    let mut d = Decoded::default();
    decode(LinkType::ETHERNET, &f, &DecodeConfig::default(), &mut d);
    assert_eq!(d.depth, 1);
    let l = d.layers[0];
    assert_eq!((l.sport, l.dport, l.proto, l.ip_len), (12345, 80, 6, 44));
    assert_eq!(l.payload(&f), b"ping");
    assert!(d.anomalies.is_empty());
}

#[test]
fn every_prefix_is_safe_and_named() {
    let f = eth_ipv4_tcp();
    for n in 0..f.len() {
        let mut d = Decoded::default();
        decode(LinkType::ETHERNET, &f[..n], &DecodeConfig::default(), &mut d);
        if n < 14 + 20 {
            assert!(!d.anomalies.is_empty(), "prefix {n} should be flagged");
        }
    }
}
