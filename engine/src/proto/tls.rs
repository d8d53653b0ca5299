//! TLS handshakes: ClientHello (SNI, versions, ALPN, cipher suites, JA4) and
//! ServerHello (negotiated version and cipher). One record per connection.

use sha2::{Digest, Sha256};

use super::{ProtoCtx, Reassembly, conn_id, malformed};
use crate::decode::Anomaly;
use crate::flow::FlowKey;
use crate::records::{Sinks, TlsRecord};

/// Handshake bytes buffered per direction before giving up.
const LIMIT: usize = 32 * 1024;

#[derive(Clone, Debug, Default)]
pub struct TlsFlow {
    bufs: [Reassembly; 2],
    /// Offset of the next unparsed TLS record in each buffer.
    pos: [usize; 2],
    done: [bool; 2],
    first_ts: u64,
    client_version: Option<u16>,
    version: Option<u16>,
    cipher: Option<u16>,
    server_name: Option<String>,
    alpn: Vec<String>,
    suites: Vec<u16>,
    ja4: Option<String>,
    ja3: Option<String>,
    saw_client_hello: bool,
    saw_server_hello: bool,
    app_data: [bool; 2],
    ccs: [bool; 2],
    bad: bool,
    emitted: bool,
    dtls: bool,
}

/// A DTLS handshake record (DTLS 1.0/1.2 versions are 0xfeff/0xfefd).
pub fn looks_like_dtls(p: &[u8]) -> bool {
    p.len() >= 25 && p[0] == 22 && p[1] == 0xfe && p[2] >= 0xfc && (p[13] == 1 || p[13] == 2)
}

pub fn looks_like(p: &[u8]) -> bool {
    match p {
        [22, 3, v, _, _, ht, ..] => *v <= 4 && (*ht == 1 || *ht == 2),
        // a handshake record header split over segments
        [22] | [22, 3] => true,
        [22, 3, v, ..] => *v <= 4,
        _ => false,
    }
}

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

impl TlsFlow {
    pub fn is_tls(&self) -> bool {
        self.saw_client_hello || self.saw_server_hello
    }

    /// A DTLS flow (TLS over UDP): every datagram holds whole records.
    pub fn dtls() -> TlsFlow {
        TlsFlow { dtls: true, ..TlsFlow::default() }
    }

    pub fn feed(&mut self, ctx: &ProtoCtx, payload: &[u8], sinks: &mut Sinks) {
        let d = ctx.is_orig as usize;
        if self.first_ts == 0 {
            self.first_ts = ctx.ts;
        }
        if self.bad || self.done[d] {
            return;
        }
        if self.dtls {
            return self.feed_dtls(d, payload, sinks);
        }
        if !self.bufs[d].push(ctx.layer.seq, payload, LIMIT) {
            // a gap before the handshake finished: stop this direction
            self.done[d] = true;
            return;
        }
        // Parse complete records, reading the buffer in place (taken out of
        // `self` meanwhile, so a record's body is not copied to be parsed).
        let b = std::mem::take(&mut self.bufs[d].buf);
        loop {
            let p = self.pos[d];
            if b.len() < p + 5 {
                break;
            }
            let ct = b[p];
            let len = u16::from_be_bytes([b[p + 3], b[p + 4]]) as usize;
            if !(20..=24).contains(&ct) || b[p + 1] != 3 {
                self.bad = !self.is_tls();
                if self.bad {
                    malformed(sinks, Anomaly::TlsMalformed);
                }
                self.done[d] = true;
                break;
            }
            if b.len() < p + 5 + len {
                if self.bufs[d].overflow {
                    self.done[d] = true;
                }
                break;
            }
            let body = &b[p + 5..p + 5 + len];
            self.pos[d] = p + 5 + len;
            match ct {
                22 => self.handshake(d == 1, body, sinks),
                20 => self.ccs[d] = true,
                23 => {
                    self.app_data[d] = true;
                    self.done[d] = true;
                }
                _ => {}
            }
            if self.saw_server_hello && self.ccs[0] && self.ccs[1] {
                self.done = [true, true];
            }
        }
        self.bufs[d].buf = b;
        if self.done[d] {
            self.bufs[d] = Reassembly::default();
            self.pos[d] = 0;
        }
    }

    fn feed_dtls(&mut self, d: usize, mut p: &[u8], sinks: &mut Sinks) {
        // record: type(1) version(2) epoch(2) sequence(6) length(2)
        while p.len() >= 13 {
            let ct = p[0];
            let len = u16::from_be_bytes([p[11], p[12]]) as usize;
            if p[1] != 0xfe || p.len() < 13 + len {
                if !self.is_tls() {
                    malformed(sinks, Anomaly::TlsMalformed);
                    self.bad = true;
                }
                return;
            }
            let body = &p[13..13 + len];
            let epoch = u16::from_be_bytes([p[3], p[4]]);
            match ct {
                // handshake header: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)
                22 if epoch == 0 && body.len() >= 12 => {
                    let ht = body[0];
                    let total = u32::from_be_bytes([0, body[1], body[2], body[3]]) as usize;
                    let frag_off = u32::from_be_bytes([0, body[6], body[7], body[8]]) as usize;
                    let frag_len = u32::from_be_bytes([0, body[9], body[10], body[11]]) as usize;
                    let frag = &body[12..(12 + frag_len).min(body.len())];
                    let wanted = match ht {
                        1 => d == 1 && !self.saw_client_hello,
                        2 => d == 0 && !self.saw_server_hello,
                        _ => false,
                    };
                    if !wanted || total > LIMIT || frag_off + frag.len() > total {
                        p = &p[13 + len..];
                        continue;
                    }
                    // Reassemble the hello from its fragments (they may span datagrams).
                    let buf = &mut self.bufs[d];
                    if buf.buf.len() != total || self.pos[d] != ht as usize {
                        buf.buf.clear();
                        buf.buf.resize(total, 0);
                        buf.next_seq = Some(0); // bytes filled so far
                        self.pos[d] = ht as usize;
                    }
                    let have = buf.next_seq.unwrap_or(0) as usize;
                    if frag_off != have {
                        // out of order or repeated: keep only in-order fragments
                        p = &p[13 + len..];
                        continue;
                    }
                    buf.buf[frag_off..frag_off + frag.len()].copy_from_slice(frag);
                    let filled = have + frag.len();
                    buf.next_seq = Some(filled as u32);
                    if filled >= total {
                        let msg = std::mem::take(&mut buf.buf);
                        self.pos[d] = 0;
                        let ok = if ht == 1 { self.client_hello(&msg) } else { self.server_hello(&msg) };
                        if ok.is_none() {
                            malformed(sinks, Anomaly::TlsMalformed);
                        }
                    }
                }
                20 => self.ccs[d] = true,
                23 => {
                    self.app_data[d] = true;
                    self.done[d] = true;
                }
                _ => {}
            }
            p = &p[13 + len..];
        }
    }

    fn handshake(&mut self, from_client: bool, body: &[u8], sinks: &mut Sinks) {
        // A record may hold several handshake messages; a message spanning
        // records is rare for hellos, which is all we need.
        let mut p = 0;
        while p + 4 <= body.len() {
            let ht = body[p];
            let len = u32::from_be_bytes([0, body[p + 1], body[p + 2], body[p + 3]]) as usize;
            let end = (p + 4 + len).min(body.len());
            let msg = &body[p + 4..end];
            match (ht, from_client) {
                (1, true) if !self.saw_client_hello && self.client_hello(msg).is_none() => {
                    malformed(sinks, Anomaly::TlsMalformed);
                }
                (2, false) if !self.saw_server_hello && self.server_hello(msg).is_none() => {
                    malformed(sinks, Anomaly::TlsMalformed);
                }
                _ => {}
            }
            p = end;
        }
    }

    fn client_hello(&mut self, m: &[u8]) -> Option<()> {
        let mut r = Rd(m);
        let legacy = r.u16()?;
        r.skip(32)?;
        let sid = r.u8()? as usize;
        r.skip(sid)?;
        if self.dtls {
            let cookie = r.u8()? as usize;
            r.skip(cookie)?;
        }
        let cs_len = r.u16()? as usize;
        let cs = r.take(cs_len)?;
        self.suites = cs.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        let comp = r.u8()? as usize;
        r.skip(comp)?;
        self.saw_client_hello = true;
        self.client_version = Some(legacy);
        let mut exts: Vec<u16> = Vec::new();
        let mut sig_algs: Vec<u16> = Vec::new();
        let mut groups: Vec<u16> = Vec::new();
        let mut point_formats: Vec<u8> = Vec::new();
        let mut best_version = legacy;
        let mut has_sni = false;
        if r.0.len() >= 2 {
            let ext_len = r.u16()? as usize;
            let mut e = Rd(r.take(ext_len.min(r.0.len()))?);
            while e.0.len() >= 4 {
                let ty = e.u16()?;
                let len = e.u16()? as usize;
                let data = e.take(len)?;
                exts.push(ty);
                let mut d = Rd(data);
                match ty {
                    0 => {
                        has_sni = true;
                        let _list = d.u16()?;
                        while d.0.len() >= 3 {
                            let nt = d.u8()?;
                            let nl = d.u16()? as usize;
                            let name = d.take(nl)?;
                            if nt == 0 && self.server_name.is_none() {
                                self.server_name = Some(String::from_utf8_lossy(name).into_owned());
                            }
                        }
                    }
                    16 => {
                        let _list = d.u16()?;
                        while !d.0.is_empty() {
                            let l = d.u8()? as usize;
                            let v = d.take(l)?;
                            self.alpn.push(String::from_utf8_lossy(v).into_owned());
                        }
                    }
                    10 => {
                        let l = d.u16()? as usize;
                        let v = d.take(l)?;
                        groups = v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                    }
                    11 => {
                        let l = d.u8()? as usize;
                        point_formats = d.take(l)?.to_vec();
                    }
                    13 => {
                        let l = d.u16()? as usize;
                        let v = d.take(l)?;
                        sig_algs = v.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                    }
                    43 => {
                        let l = d.u8()? as usize;
                        let v = d.take(l)?;
                        best_version = v
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .filter(|v| !is_grease(*v))
                            .max()
                            .unwrap_or(legacy);
                    }
                    _ => {}
                }
            }
        }
        self.ja3 = Some(ja3(legacy, &self.suites, &exts, &groups, &point_formats));
        self.ja4 = Some(ja4(
            if self.dtls { 'd' } else { 't' },
            best_version,
            has_sni,
            &self.suites,
            &exts,
            &self.alpn,
            &sig_algs,
        ));
        Some(())
    }

    fn server_hello(&mut self, m: &[u8]) -> Option<()> {
        let mut r = Rd(m);
        let legacy = r.u16()?;
        r.skip(32)?;
        let sid = r.u8()? as usize;
        r.skip(sid)?;
        let cipher = r.u16()?;
        let _comp = r.u8()?;
        self.saw_server_hello = true;
        self.version = Some(legacy);
        self.cipher = Some(cipher);
        if r.0.len() >= 2 {
            let ext_len = r.u16()? as usize;
            let mut e = Rd(r.take(ext_len.min(r.0.len()))?);
            while e.0.len() >= 4 {
                let ty = e.u16()?;
                let len = e.u16()? as usize;
                let data = e.take(len)?;
                if ty == 43 && data.len() == 2 {
                    self.version = Some(u16::from_be_bytes([data[0], data[1]]));
                }
            }
        }
        Some(())
    }

    pub fn finish(&mut self, uid: u64, key: &FlowKey, orig_is_lo: bool, sinks: &mut Sinks) {
        if self.emitted || !self.is_tls() {
            return;
        }
        self.emitted = true;
        let c = conn_id(self.first_ts, uid, key, orig_is_lo);
        let established =
            self.saw_server_hello && ((self.ccs[0] && self.ccs[1]) || (self.app_data[0] && self.app_data[1]));
        let r = TlsRecord {
            client_version: self.client_version,
            version: self.version,
            cipher: self.cipher,
            server_name: self.server_name.as_deref(),
            alpn: &self.alpn,
            cipher_suites: &self.suites,
            ja3: self.ja3.as_deref(),
            ja4: self.ja4.as_deref(),
            established,
        };
        sinks.tls(&c, &r);
    }
}

/// The JA3 TLS client fingerprint (Salesforce's): the MD5, in hex, of
/// `version,ciphers,extensions,groups,point_formats` in decimal, lists
/// joined with `-`, GREASE values left out.
pub fn ja3(version: u16, suites: &[u16], exts: &[u16], groups: &[u16], point_formats: &[u8]) -> String {
    use md5::{Digest, Md5};
    let mut digits = itoa::Buffer::new();
    let mut list = |v: &mut String, xs: &mut dyn Iterator<Item = u16>| {
        for (i, x) in xs.enumerate() {
            if i > 0 {
                v.push('-');
            }
            v.push_str(digits.format(x));
        }
    };
    let mut s = String::with_capacity(256);
    s.push_str(itoa::Buffer::new().format(version));
    s.push(',');
    list(&mut s, &mut suites.iter().copied().filter(|x| !is_grease(*x)));
    s.push(',');
    list(&mut s, &mut exts.iter().copied().filter(|x| !is_grease(*x)));
    s.push(',');
    list(&mut s, &mut groups.iter().copied().filter(|x| !is_grease(*x)));
    s.push(',');
    list(&mut s, &mut point_formats.iter().map(|x| *x as u16));
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The JA4 TLS client fingerprint (FoxIO's JA4 specification, TCP variant).
/// `transport` is 't' (TCP), 'q' (QUIC) or 'd' (DTLS).
pub fn ja4(
    transport: char,
    version: u16,
    sni: bool,
    suites: &[u16],
    exts: &[u16],
    alpn: &[String],
    sig_algs: &[u16],
) -> String {
    let v = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    };
    let ciphers: Vec<u16> = suites.iter().copied().filter(|c| !is_grease(*c)).collect();
    let ext: Vec<u16> = exts.iter().copied().filter(|c| !is_grease(*c)).collect();
    let a = match alpn.first().map(|s| s.as_bytes()) {
        Some(b) if !b.is_empty() => {
            let (f, l) = (b[0], b[b.len() - 1]);
            if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
                format!("{}{}", f as char, l as char)
            } else {
                let hx = format!("{:02x}{:02x}", f, l);
                format!("{}{}", &hx[0..1], &hx[3..4])
            }
        }
        _ => "00".to_string(),
    };
    let mut out = format!(
        "{}{}{}{:02}{:02}{}_",
        transport,
        v,
        if sni { 'd' } else { 'i' },
        ciphers.len().min(99),
        ext.len().min(99),
        a
    );
    let mut cs = ciphers.clone();
    cs.sort_unstable();
    out.push_str(&hash12(&join_hex(&cs)));
    out.push('_');
    let mut es: Vec<u16> = ext.into_iter().filter(|e| *e != 0 && *e != 16).collect();
    es.sort_unstable();
    let mut s = join_hex(&es);
    if !sig_algs.is_empty() {
        s.push('_');
        s.push_str(&join_hex(sig_algs));
    }
    out.push_str(&if es.is_empty() { "000000000000".to_string() } else { hash12(&s) });
    out
}

fn join_hex(v: &[u16]) -> String {
    let mut s = String::with_capacity(v.len() * 5);
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let mut four = [0u8; 4];
        if hex::encode_to_slice(x.to_be_bytes(), &mut four).is_ok() {
            s.extend(four.map(char::from));
        }
    }
    s
}

fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = Sha256::digest(s.as_bytes());
    hex::encode(&d[..6])
}

struct Rd<'a>(&'a [u8]);
impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

pub fn version_name(v: u16) -> &'static str {
    match v {
        0x0300 => "SSLv3",
        0x0301 => "TLSv10",
        0x0302 => "TLSv11",
        0x0303 => "TLSv12",
        0x0304 => "TLSv13",
        0xfeff => "DTLSv10",
        0xfefd => "DTLSv12",
        0xfefc => "DTLSv13",
        0x0002 => "SSLv2",
        _ => "unknown",
    }
}

/// IANA names of common cipher suites (as Zeek logs them).
pub fn cipher_name(c: u16) -> Option<&'static str> {
    Some(match c {
        0x1301 => "TLS_AES_128_GCM_SHA256",
        0x1302 => "TLS_AES_256_GCM_SHA384",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xc013 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        0xc014 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        0xc009 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        0xc00a => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        0xc027 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        0xc028 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        0x009c => "TLS_RSA_WITH_AES_128_GCM_SHA256",
        0x009d => "TLS_RSA_WITH_AES_256_GCM_SHA384",
        0x002f => "TLS_RSA_WITH_AES_128_CBC_SHA",
        0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA",
        0x003c => "TLS_RSA_WITH_AES_128_CBC_SHA256",
        0x003d => "TLS_RSA_WITH_AES_256_CBC_SHA256",
        0x000a => "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        0x0005 => "TLS_RSA_WITH_RC4_128_SHA",
        0x0004 => "TLS_RSA_WITH_RC4_128_MD5",
        0x0033 => "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
        0x0039 => "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
        0x009e => "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        0x009f => "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
        0x0016 => "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
        0x0001 => "TLS_RSA_WITH_NULL_MD5",
        0x0002 => "TLS_RSA_WITH_NULL_SHA",
        0x003b => "TLS_RSA_WITH_NULL_SHA256",
        0x0032 => "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
        0x0038 => "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
        0x0067 => "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
        0x006b => "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
        0xc007 => "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
        0xc008 => "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
        0xc011 => "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
        0xc012 => "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
        0xc023 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        0xc024 => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        0xc0ac => "TLS_ECDHE_ECDSA_WITH_AES_128_CCM",
        0xc0ad => "TLS_ECDHE_ECDSA_WITH_AES_256_CCM",
        0x00ff => "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
        0x5600 => "TLS_FALLBACK_SCSV",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ja3_matches_suricata() {
        // suricata-verify tls__tls13-draft28: the string and hash Suricata gives.
        let suites = [
            4866, 4867, 4865, 4868, 49196, 52393, 49325, 49162, 49195, 49324, 49161, 49200, 52392, 49172, 49199, 49171,
            157, 49309, 53, 156, 49308, 47, 159, 52394, 49311, 57, 158, 49310, 51,
        ];
        let exts = [5, 10, 11, 13, 22, 23, 35, 51, 43, 65281, 0, 45, 41];
        assert_eq!(ja3(771, &suites, &exts, &[23], &[0]), "d00857e0c8e7a7f35e446508c6233460");
        // GREASE values are left out.
        let mut greasy = suites.to_vec();
        greasy.insert(0, 0x2a2a);
        let mut ge = exts.to_vec();
        ge.push(0xfafa);
        assert_eq!(ja3(771, &greasy, &ge, &[0x3a3a, 23], &[0]), "d00857e0c8e7a7f35e446508c6233460");
    }

    #[test]
    fn ja4_shape() {
        let j = ja4('t', 0x0304, true, &[0x1301, 0x1302, 0x0a0a], &[0, 16, 43, 13, 0x1a1a], &["h2".into()], &[0x0403]);
        assert!(j.starts_with("t13d0204h2_"), "{j}");
        assert_eq!(j.len(), "t13d0203h2_".len() + 12 + 1 + 12);
    }
}
