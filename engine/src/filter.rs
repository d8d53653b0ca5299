//! Capture filters in the familiar tcpdump style, parsed once into a
//! predicate over a decoded packet.
//!
//! Grammar (a subset of pcap-filter(7)):
//!
//! ```text
//! expr    := and (("or" | "||") and)*
//! and     := unary (("and" | "&&") unary)*
//! unary   := ("not" | "!") unary | "(" expr ")" | prim
//! prim    := [proto] [dir] "host" ADDR | [dir] "net" CIDR
//!          | [proto] [dir] "port" N | [proto] [dir] "portrange" N-M
//!          | "tcp" | "udp" | "icmp" | "icmp6" | "ip" | "ip6" | "vlan" [N]
//!          | VALUE            (repeats the previous qualifier: `host a or b`)
//! dir     := "src" | "dst" | "src or dst" | "src and dst"
//! ```
//!
//! Addresses, nets and ports are matched on the outermost IP layer, as
//! tcpdump does.

use std::net::IpAddr;

use crate::decode::{Decoded, IpLayer, PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP};

/// A bad filter: what is wrong and at which column (1-based) of the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter `{text}`: column {column}: {message}")]
pub struct FilterError {
    pub text: String,
    pub column: usize,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Src,
    Dst,
    Either,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Host,
    Net,
    Port,
    PortRange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Proto(u8),
    Ip { v6: bool },
    Vlan(Option<u16>),
    Net { dir: Dir, v6: bool, addr: [u8; 16], prefix: u8, proto: Option<u8> },
    Ports { dir: Dir, lo: u16, hi: u16, proto: Option<u8> },
}

/// A compiled capture filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    root: Node,
    text: String,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let toks = lex(text)?;
        let mut p = Parser { text, toks: &toks, i: 0, last: None, depth: 0, terms: 0 };
        if toks.is_empty() {
            return Err(p.err_at(1, "empty filter"));
        }
        let root = p.expr()?;
        if let Some(t) = toks.get(p.i) {
            return Err(p.err_at(t.col, &format!("unexpected `{}`", t.s)));
        }
        Ok(Filter { root, text: text.to_string() })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Does the packet pass?
    #[inline]
    pub fn matches(&self, d: &Decoded) -> bool {
        eval(&self.root, d)
    }
}

fn eval(n: &Node, d: &Decoded) -> bool {
    match n {
        Node::Or(a, b) => eval(a, d) || eval(b, d),
        Node::And(a, b) => eval(a, d) && eval(b, d),
        Node::Not(a) => !eval(a, d),
        Node::Proto(p) => d.outer().is_some_and(|l| l.proto == *p),
        Node::Ip { v6 } => d.outer().is_some_and(|l| l.v6 == *v6),
        Node::Vlan(id) => d.n_vlan > 0 && id.is_none_or(|v| d.vlan[..d.n_vlan as usize].contains(&v)),
        Node::Net { dir, v6, addr, prefix, proto } => d.outer().is_some_and(|l| {
            l.v6 == *v6
                && proto.is_none_or(|p| l.proto == p)
                && dir_match(*dir, in_net(&l.src, addr, *prefix), in_net(&l.dst, addr, *prefix))
        }),
        Node::Ports { dir, lo, hi, proto } => d.outer().is_some_and(|l| ports_match(l, *dir, *lo, *hi, *proto)),
    }
}

fn ports_match(l: &IpLayer, dir: Dir, lo: u16, hi: u16, proto: Option<u8>) -> bool {
    let has_ports = l.l4_ok && (l.proto == PROTO_TCP || l.proto == PROTO_UDP || l.proto == 132);
    has_ports
        && proto.is_none_or(|p| l.proto == p)
        && dir_match(dir, (lo..=hi).contains(&l.sport), (lo..=hi).contains(&l.dport))
}

fn dir_match(dir: Dir, s: bool, d: bool) -> bool {
    match dir {
        Dir::Src => s,
        Dir::Dst => d,
        Dir::Either => s || d,
        Dir::Both => s && d,
    }
}

fn in_net(a: &[u8; 16], net: &[u8; 16], prefix: u8) -> bool {
    let full = (prefix / 8) as usize;
    if a[..full] != net[..full] {
        return false;
    }
    let rem = prefix % 8;
    rem == 0 || {
        let mask = 0xffu8 << (8 - rem);
        a[full] & mask == net[full] & mask
    }
}

#[derive(Debug)]
struct Tok<'a> {
    s: &'a str,
    col: usize,
}

fn lex(text: &str) -> Result<Vec<Tok<'_>>, FilterError> {
    let mut v = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'(' || c == b')' || c == b'!' {
            i += 1;
        } else if (c == b'&' || c == b'|') && b.get(i + 1) == Some(&c) {
            i += 2;
        } else if c.is_ascii_alphanumeric() || b":./-_".contains(&c) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b":./-_".contains(&b[i])) {
                i += 1;
            }
        } else {
            return Err(FilterError {
                text: text.to_string(),
                column: text[..i].chars().count() + 1,
                message: format!("unexpected character `{}`", text[i..].chars().next().unwrap_or('?')),
            });
        }
        v.push(Tok { s: &text[start..i], col: text[..start].chars().count() + 1 });
    }
    Ok(v)
}

/// The last qualifier, for bare values (`host a or b`).
#[derive(Clone, Copy)]
struct Qual {
    kind: Kind,
    dir: Dir,
    proto: Option<u8>,
}

struct Parser<'a, 't> {
    text: &'a str,
    toks: &'t [Tok<'a>],
    i: usize,
    last: Option<Qual>,
    depth: usize,
    terms: usize,
}

/// Nesting (parentheses, `not`) deeper than this is an error, not a stack overflow.
const MAX_DEPTH: usize = 200;
/// Primitives in one filter (the tree is evaluated per packet).
const MAX_TERMS: usize = 1000;

impl<'a> Parser<'a, '_> {
    fn err_at(&self, column: usize, message: &str) -> FilterError {
        FilterError { text: self.text.to_string(), column, message: message.to_string() }
    }

    fn err_here(&self, message: &str) -> FilterError {
        let col = self.toks.get(self.i).map_or(self.text.chars().count() + 1, |t| t.col);
        self.err_at(col, message)
    }

    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.i).map(|t| t.s)
    }

    fn peek_at(&self, k: usize) -> Option<&'a str> {
        self.toks.get(self.i + k).map(|t| t.s)
    }

    fn next(&mut self) -> Option<&'a str> {
        let t = self.peek();
        self.i += 1;
        t
    }

    fn expr(&mut self) -> Result<Node, FilterError> {
        let mut n = self.and()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.i += 1;
            n = Node::Or(Box::new(n), Box::new(self.and()?));
        }
        Ok(n)
    }

    fn and(&mut self) -> Result<Node, FilterError> {
        let mut n = self.unary()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.i += 1;
            n = Node::And(Box::new(n), Box::new(self.unary()?));
        }
        Ok(n)
    }

    fn unary(&mut self) -> Result<Node, FilterError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err_here("nested too deeply"));
        }
        self.depth += 1;
        let r = self.unary_inner();
        self.depth -= 1;
        r
    }

    fn unary_inner(&mut self) -> Result<Node, FilterError> {
        match self.peek() {
            Some("not" | "!") => {
                self.i += 1;
                Ok(Node::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.i += 1;
                let n = self.expr()?;
                if self.peek() != Some(")") {
                    return Err(self.err_here("expected `)`"));
                }
                self.i += 1;
                Ok(n)
            }
            Some(_) => self.prim(),
            None => Err(self.err_here("expression expected after this point")),
        }
    }

    fn proto_kw(s: &str) -> Option<u8> {
        match s {
            "tcp" => Some(PROTO_TCP),
            "udp" => Some(PROTO_UDP),
            "icmp" => Some(PROTO_ICMP),
            "icmp6" => Some(PROTO_ICMP6),
            "sctp" => Some(132),
            _ => None,
        }
    }

    fn dir(&mut self) -> Option<Dir> {
        let d = match self.peek()? {
            "src" => Dir::Src,
            "dst" => Dir::Dst,
            _ => return None,
        };
        self.i += 1;
        // "src or dst" / "src and dst" (only when followed by the other direction).
        if matches!(self.peek(), Some("or" | "and")) && matches!(self.peek_at(1), Some("src" | "dst")) {
            let both = self.next() == Some("and");
            self.i += 1;
            return Some(if both { Dir::Both } else { Dir::Either });
        }
        Some(d)
    }

    fn prim(&mut self) -> Result<Node, FilterError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(self.err_here(&format!("too many terms (at most {MAX_TERMS})")));
        }
        let start = self.i;
        let mut proto = None;
        let mut proto_node = None;
        if let Some(s) = self.peek() {
            if let Some(p) = Self::proto_kw(s) {
                self.i += 1;
                proto = Some(p);
                proto_node = Some(Node::Proto(p));
            } else if s == "ip" || s == "ip6" {
                self.i += 1;
                proto_node = Some(Node::Ip { v6: s == "ip6" });
            } else if s == "vlan" {
                self.i += 1;
                if let Some(v) = self.peek().filter(|v| v.bytes().all(|b| b.is_ascii_digit())) {
                    let id: u16 =
                        v.parse().ok().filter(|&x| x < 4096).ok_or_else(|| self.err_here("VLAN id must be 0-4095"))?;
                    self.i += 1;
                    return Ok(Node::Vlan(Some(id)));
                }
                return Ok(Node::Vlan(None));
            }
        }
        let dir = self.dir();
        let kind = match self.peek() {
            Some("host") => Some(Kind::Host),
            Some("net") => Some(Kind::Net),
            Some("port") => Some(Kind::Port),
            Some("portrange") => Some(Kind::PortRange),
            _ => None,
        };
        let Some(kind) = kind else {
            if let Some(n) = proto_node
                && dir.is_none()
            {
                return Ok(n);
            }
            if dir.is_some() {
                return Err(self.err_here("expected `host`, `net`, `port` or `portrange`"));
            }
            // A bare value repeats the last qualifier.
            if let (Some(q), Some(_)) = (self.last, self.peek())
                && self.i == start
            {
                return self.value(q);
            }
            return Err(match self.peek() {
                Some(t) => self.err_here(&format!("unknown keyword `{t}`")),
                None => self.err_here("expression expected"),
            });
        };
        self.i += 1;
        let q = Qual { kind, dir: dir.unwrap_or(Dir::Either), proto };
        self.last = Some(q);
        let v = self.value(q)?;
        Ok(match proto_node {
            Some(n @ Node::Ip { .. }) => Node::And(Box::new(n), Box::new(v)),
            _ => v,
        })
    }

    fn value(&mut self, q: Qual) -> Result<Node, FilterError> {
        let Some(v) = self.peek() else { return Err(self.err_here("value expected")) };
        let node = match q.kind {
            Kind::Host => {
                let a: IpAddr = v.parse().map_err(|_| self.err_here(&format!("`{v}` is not an IP address")))?;
                let (v6, addr) = to16(a);
                Node::Net { dir: q.dir, v6, addr, prefix: if v6 { 128 } else { 32 }, proto: q.proto }
            }
            Kind::Net => {
                let (a, len) = v.split_once('/').unwrap_or((v, ""));
                let a: IpAddr =
                    a.parse().map_err(|_| self.err_here(&format!("`{v}` is not a network (e.g. 10.0.0.0/8)")))?;
                let (v6, addr) = to16(a);
                let max = if v6 { 128 } else { 32 };
                let prefix: u8 = if len.is_empty() {
                    max
                } else {
                    len.parse()
                        .ok()
                        .filter(|&p| p <= max)
                        .ok_or_else(|| self.err_here(&format!("bad prefix length in `{v}`")))?
                };
                let mut masked = addr;
                for (i, b) in masked.iter_mut().enumerate() {
                    let bits = (prefix as usize).saturating_sub(i * 8).min(8);
                    *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
                }
                Node::Net { dir: q.dir, v6, addr: masked, prefix, proto: q.proto }
            }
            Kind::Port => {
                let p = port(v).ok_or_else(|| self.err_here(&format!("`{v}` is not a port (0-65535)")))?;
                Node::Ports { dir: q.dir, lo: p, hi: p, proto: q.proto }
            }
            Kind::PortRange => {
                let (a, b) = v
                    .split_once('-')
                    .ok_or_else(|| self.err_here(&format!("`{v}` is not a port range (e.g. 1000-2000)")))?;
                let (lo, hi) = match (port(a), port(b)) {
                    (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                    _ => return Err(self.err_here(&format!("`{v}` is not a port range (e.g. 1000-2000)"))),
                };
                Node::Ports { dir: q.dir, lo, hi, proto: q.proto }
            }
        };
        self.i += 1;
        Ok(node)
    }
}

fn port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn to16(a: IpAddr) -> (bool, [u8; 16]) {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (false, b)
        }
        IpAddr::V6(v6) => (true, v6.octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{DecodeConfig, decode};
    use crate::live::traffic::{GenMix, TrafficGen};
    use crate::source::LinkType;

    fn packet(mix: GenMix, n: usize) -> Decoded {
        let mut g = TrafficGen::new(mix, 1);
        let mut buf = Vec::new();
        for _ in 0..=n {
            g.next_frame(&mut buf);
        }
        let mut d = Decoded::default();
        decode(LinkType::ETHERNET, &buf, &DecodeConfig::default(), &mut d);
        d
    }

    #[test]
    fn matches_like_tcpdump() {
        // web: 10.77.0.0:1025 -> 10.78.0.80:80 (first packet, a SYN from the client)
        let syn = packet(GenMix::Web, 0);
        let dns = packet(GenMix::Dns, 0);
        let t = |f: &str, d: &Decoded| Filter::parse(f).unwrap().matches(d);
        assert!(t("tcp", &syn) && !t("udp", &syn) && t("udp", &dns));
        assert!(t("port 80", &syn) && t("dst port 80", &syn) && !t("src port 80", &syn));
        assert!(t("tcp port 80", &syn) && !t("udp port 80", &syn));
        assert!(t("host 10.78.0.80", &syn) && t("dst host 10.78.0.80", &syn) && !t("src host 10.78.0.80", &syn));
        assert!(t("net 10.78.0.0/16", &syn) && !t("net 10.99.0.0/16", &syn) && t("src net 10.77.0.0/24", &syn));
        assert!(t("portrange 50-100", &syn) && !t("portrange 81-90", &syn));
        assert!(t("ip", &syn) && !t("ip6", &syn) && !t("vlan", &syn) && !t("icmp", &syn));
        assert!(t("not port 22 and (udp or tcp dst port 80)", &syn));
        assert!(!t("!(tcp) && port 80", &syn) && t("tcp || udp", &dns));
        assert!(t("host 10.1.1.1 or 10.78.0.80", &syn), "bare value repeats the qualifier");
        assert!(t("src or dst port 80", &syn) && !t("src and dst port 80", &syn));
        assert!(t("udp and port 53 and not host 192.0.2.1", &dns));
    }

    #[test]
    fn errors_name_the_column() {
        let e = |f: &str| Filter::parse(f).unwrap_err();
        assert_eq!(e("tcp and port 99999").column, 14);
        assert_eq!(e("host 10.0.0.300").column, 6);
        assert_eq!(e("tcp and (port 80").column, 17);
        assert_eq!(e("tcp or bogus").column, 8);
        assert_eq!(e("portrange 90-80").column, 11);
        assert_eq!(e("tcp $").column, 5);
        assert_eq!(e("").column, 1);
        assert!(e("net 10.0.0.0/33").to_string().contains("prefix"));
        assert_eq!(e("tcp port 80)").column, 12);
        let deep = format!("{}tcp{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(e(&deep).to_string().contains("nested too deeply"));
        assert!(e(&"not ".repeat(100_000)).to_string().contains("nested too deeply"));
        assert!(e(&vec!["tcp"; 5000].join(" or ")).to_string().contains("too many terms"));
        let msg = e("port x").to_string();
        assert!(msg.contains("column 6") && msg.contains("`x` is not a port"), "{msg}");
    }
}
