//! HTTP/1.x: request and response headers, body lengths (Content-Length,
//! chunked, until close), several transactions per connection.

use std::collections::VecDeque;

use super::{ProtoCtx, conn_id, malformed};
use crate::decode::Anomaly;
use crate::flow::FlowKey;
use crate::records::{HttpRecord, Sinks};

const HEADER_LIMIT: usize = 32 * 1024;
const MAX_PENDING: usize = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Headers,
    Body(u64),
    Chunked(Chunk),
    UntilClose,
    /// Not HTTP any more (a CONNECT tunnel, an upgrade, garbage).
    Dead,
}

#[derive(Clone, Debug, Default)]
struct Dir {
    state: State,
    hbuf: Vec<u8>,
    line: Vec<u8>,
    next_seq: Option<u32>,
    body: u64,
}

#[derive(Clone, Debug, Default)]
struct Req {
    ts: u64,
    depth: u32,
    /// None for a request line we could not parse (still logged, as Zeek does).
    method: Option<String>,
    uri: Option<String>,
    version: String,
    host: Option<String>,
    ua: Option<String>,
    referrer: Option<String>,
    body: u64,
    complete: bool,
}

#[derive(Clone, Debug, Default)]
struct Resp {
    code: u16,
    msg: String,
    version: String,
}

#[derive(Clone, Debug, Default)]
pub struct HttpFlow {
    /// Chosen by port (80, 8080 …): log even a first request we cannot parse.
    by_port: bool,
    dirs: [Dir; 2],
    reqs: VecDeque<Req>,
    resp: Option<Resp>,
    depth: u32,
    seen: bool,
    first_ts: u64,
    ts: u64,
}

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
    b"PATCH ",
    b"PROPFIND ",
    b"PROPPATCH ",
    b"MKCOL ",
    b"COPY ",
    b"MOVE ",
    b"LOCK ",
    b"UNLOCK ",
    b"SEARCH ",
    b"REPORT ",
];

pub fn looks_like_request(p: &[u8]) -> bool {
    if METHODS.iter().any(|m| p.starts_with(m)) {
        return true;
    }
    // A request sent a few bytes at a time: a prefix of a known method.
    if !p.is_empty() && p.len() < 10 && METHODS.iter().any(|m| m.starts_with(p)) {
        return true;
    }
    // an unusual method token, if the line ends with an HTTP version
    let line_end = p.iter().position(|&b| b == b'\n').unwrap_or(p.len());
    let line = &p[..line_end];
    let tok = line.iter().position(|&b| b == b' ').unwrap_or(0);
    tok > 0
        && tok <= 32
        && line[..tok].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && line.windows(6).any(|w| w == b" HTTP/")
}

pub fn looks_like_response(p: &[u8]) -> bool {
    p.starts_with(b"HTTP/1.") || p.starts_with(b"HTTP/0.9")
}

fn find_crlfcrlf(b: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while i + 1 < b.len() {
        if b[i] == b'\n' {
            if b[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if b[i + 1] == b'\r' && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// A request line split into method, URI and version. `method` is None
/// when the line is not a request line at all; `version` is None for an
/// HTTP/0.9 simple request.
struct RequestLine<'a> {
    method: Option<&'a [u8]>,
    uri: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_request_line(line: &[u8]) -> RequestLine<'_> {
    let bad = RequestLine { method: None, uri: None, version: None };
    let line = trim(line);
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return bad;
    };
    let method = &line[..sp];
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) {
        return bad;
    }
    let rest = trim(&line[sp + 1..]);
    if let Some(v) = rest.strip_prefix(b"HTTP/")
        && !v.contains(&b' ')
    {
        return RequestLine { method: Some(method), uri: Some(&[]), version: Some(v) };
    }
    match rest.windows(6).rposition(|w| w == b" HTTP/") {
        Some(i) => RequestLine { method: Some(method), uri: Some(trim(&rest[..i])), version: Some(&rest[i + 6..]) },
        None => RequestLine { method: Some(method), uri: Some(rest), version: None },
    }
}

/// Decode %XX escapes for logging (invalid escapes stay as they are).
fn percent_decode(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h << 4) | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let e = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |e| e + 1);
    &b[s..e.max(s)]
}

struct Headers<'a> {
    first: &'a [u8],
    lines: Vec<(&'a [u8], &'a [u8])>,
}

fn parse_headers(b: &[u8]) -> Headers<'_> {
    let mut it = b.split(|&c| c == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = it.next().unwrap_or(&[]);
    let mut lines = Vec::new();
    for l in it {
        if l.is_empty() {
            break;
        }
        if let Some(c) = l.iter().position(|&x| x == b':') {
            lines.push((trim(&l[..c]), trim(&l[c + 1..])));
        }
    }
    Headers { first, lines }
}

impl Headers<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.lines.iter().find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| *v)
    }
    fn body_state(&self) -> State {
        if let Some(te) = self.get("transfer-encoding")
            && te.to_ascii_lowercase().windows(7).any(|w| w == b"chunked")
        {
            return State::Chunked(Chunk::Size);
        }
        if let Some(cl) = self.get("content-length") {
            return match std::str::from_utf8(cl).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(0) => State::Headers,
                Some(n) => State::Body(n),
                None => State::Headers,
            };
        }
        State::Headers
    }
}

impl HttpFlow {
    /// A flow on an HTTP port, analysed whatever its first bytes look like.
    pub fn on_http_port() -> HttpFlow {
        HttpFlow { by_port: true, ..HttpFlow::default() }
    }

    pub fn is_http(&self) -> bool {
        self.seen
    }

    pub fn feed(&mut self, ctx: &ProtoCtx, payload: &[u8], sinks: &mut Sinks) {
        if self.first_ts == 0 {
            self.first_ts = ctx.ts;
        }
        self.ts = ctx.ts;
        let d = if ctx.is_orig { 0 } else { 1 };
        let seq = ctx.layer.seq;
        // keep in order, drop retransmitted bytes; after a gap, resync
        let mut data = payload;
        if let Some(n) = self.dirs[d].next_seq {
            let delta = seq.wrapping_sub(n) as i32;
            if delta < 0 {
                let skip = delta.unsigned_abs() as usize;
                if skip >= data.len() {
                    return;
                }
                data = &data[skip..];
            }
        }
        self.dirs[d].next_seq = Some(seq.wrapping_add(payload.len() as u32));
        self.consume(d, data, ctx, sinks);
    }

    fn consume(&mut self, d: usize, mut data: &[u8], ctx: &ProtoCtx, sinks: &mut Sinks) {
        while !data.is_empty() {
            match self.dirs[d].state {
                State::Dead => return,
                State::Headers => {
                    let dir = &mut self.dirs[d];
                    if dir.hbuf.is_empty() {
                        // skip blank lines between messages
                        let n = data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        data = &data[n..];
                        if data.is_empty() {
                            return;
                        }
                        let ok = if d == 0 {
                            // once a connection spoke HTTP (or sits on an HTTP
                            // port), even a bad request line is logged
                            looks_like_request(data) || self.seen || self.by_port
                        } else {
                            looks_like_response(data)
                        };
                        if !ok {
                            malformed(sinks, Anomaly::HttpMalformed);
                            dir.state = State::Dead;
                            return;
                        }
                    }
                    let before = dir.hbuf.len();
                    let room = HEADER_LIMIT - before;
                    let take = data.len().min(room);
                    dir.hbuf.extend_from_slice(&data[..take]);
                    match find_crlfcrlf(&dir.hbuf, before) {
                        Some(end) => {
                            let used = end - before;
                            data = &data[used.min(data.len())..];
                            let h = std::mem::take(&mut dir.hbuf);
                            self.headers(d, &h[..end], ctx, sinks);
                        }
                        None => {
                            // HTTP/0.9 simple request: "GET /path\r\n" with no version
                            if d == 0
                                && !dir.hbuf.windows(5).any(|w| w == b"HTTP/")
                                && let Some(nl) = dir.hbuf.iter().position(|&b| b == b'\n')
                            {
                                let h = std::mem::take(&mut dir.hbuf);
                                let used = (nl + 1).saturating_sub(before);
                                data = &data[used.min(data.len())..];
                                self.headers(d, &h[..nl + 1], ctx, sinks);
                                continue;
                            }
                            if take < data.len() {
                                malformed(sinks, Anomaly::HttpMalformed);
                                dir.state = State::Dead;
                            }
                            return;
                        }
                    }
                }
                State::Body(n) => {
                    let k = (data.len() as u64).min(n);
                    self.dirs[d].body += k;
                    data = &data[k as usize..];
                    if n - k == 0 {
                        self.message_done(d, ctx, sinks);
                    } else {
                        self.dirs[d].state = State::Body(n - k);
                    }
                }
                State::UntilClose => {
                    self.dirs[d].body += data.len() as u64;
                    return;
                }
                State::Chunked(c) => match c {
                    Chunk::Size | Chunk::Trailer | Chunk::DataEnd => {
                        let dir = &mut self.dirs[d];
                        let nl = data.iter().position(|&b| b == b'\n');
                        let (part, rest) = match nl {
                            Some(i) => (&data[..=i], &data[i + 1..]),
                            None => (data, &data[data.len()..]),
                        };
                        if dir.line.len() + part.len() > 4096 {
                            malformed(sinks, Anomaly::HttpMalformed);
                            dir.state = State::Dead;
                            return;
                        }
                        dir.line.extend_from_slice(part);
                        data = rest;
                        if nl.is_none() {
                            return;
                        }
                        let line = std::mem::take(&mut dir.line);
                        let l = trim(&line);
                        match c {
                            Chunk::DataEnd => dir.state = State::Chunked(Chunk::Size),
                            Chunk::Trailer => {
                                if l.is_empty() {
                                    self.message_done(d, ctx, sinks);
                                }
                            }
                            Chunk::Size => {
                                let hex = l.split(|&b| b == b';').next().unwrap_or(&[]);
                                let n =
                                    std::str::from_utf8(hex).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                                match n {
                                    Some(0) => dir.state = State::Chunked(Chunk::Trailer),
                                    Some(n) => dir.state = State::Chunked(Chunk::Data(n)),
                                    None => {
                                        malformed(sinks, Anomaly::HttpMalformed);
                                        dir.state = State::Dead;
                                        return;
                                    }
                                }
                            }
                            Chunk::Data(_) => {}
                        }
                    }
                    Chunk::Data(n) => {
                        let k = (data.len() as u64).min(n);
                        let dir = &mut self.dirs[d];
                        dir.body += k;
                        data = &data[k as usize..];
                        dir.state = if n - k == 0 {
                            State::Chunked(Chunk::DataEnd)
                        } else {
                            State::Chunked(Chunk::Data(n - k))
                        };
                    }
                },
            }
        }
    }

    fn headers(&mut self, d: usize, h: &[u8], ctx: &ProtoCtx, sinks: &mut Sinks) {
        let hs = parse_headers(h);
        let mut parts = hs.first.splitn(3, |&b| b == b' ');
        let a = parts.next().unwrap_or(&[]);
        let b = parts.next().unwrap_or(&[]);
        let c = parts.next().unwrap_or(&[]);
        self.seen = true;
        self.dirs[d].body = 0;
        if d == 0 {
            self.depth += 1;
            let rl = parse_request_line(hs.first);
            if rl.method.is_none() {
                malformed(sinks, Anomaly::HttpMalformed);
            }
            let http09 = rl.method.is_some() && rl.version.is_none();
            let r = Req {
                ts: ctx.ts,
                depth: self.depth,
                method: rl.method.map(text),
                uri: rl.uri.map(percent_decode),
                version: rl.version.map(text).unwrap_or_else(|| "0.9".into()),
                host: rl.method.and(hs.get("host")).map(text),
                ua: rl.method.and(hs.get("user-agent")).map(text),
                referrer: rl.method.and(hs.get("referer")).map(text),
                body: 0,
                complete: false,
            };
            if self.reqs.len() >= MAX_PENDING
                && let Some(old) = self.reqs.pop_front()
            {
                self.emit(Some(&old), None, 0, ctx.uid, &ctx.key, ctx.orig_is_lo, sinks);
            }
            self.reqs.push_back(r);
            self.dirs[0].state = if http09 { State::Dead } else { hs.body_state() };
            if http09 {
                // An HTTP/0.9 response is the raw body, up to the close.
                self.dirs[1].state = State::UntilClose;
                self.dirs[1].body = 0;
                self.resp = Some(Resp { code: 0, msg: String::new(), version: "0.9".into() });
            }
            if self.dirs[0].state == State::Headers {
                self.message_done(0, ctx, sinks);
            }
        } else {
            let code = std::str::from_utf8(b).ok().and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
            let version = a.strip_prefix(b"HTTP/").map(text).unwrap_or_default();
            if (100..200).contains(&code) && code != 101 {
                // interim response: the real one follows
                self.dirs[1].state = State::Headers;
                return;
            }
            self.resp = Some(Resp { code, msg: text(trim(c)), version });
            let req_method = self.reqs.front().and_then(|r| r.method.clone());
            let no_body = req_method.as_deref() == Some("HEAD") || code == 204 || code == 304;
            let connect_ok = req_method.as_deref() == Some("CONNECT") && (200..300).contains(&code);
            self.dirs[1].state = if no_body {
                State::Headers
            } else {
                match hs.body_state() {
                    State::Headers if hs.get("content-length").is_none() => State::UntilClose,
                    s => s,
                }
            };
            if connect_ok || code == 101 {
                self.dirs[1].state = State::Dead;
                self.dirs[0].state = State::Dead;
                self.message_done_resp(ctx, sinks);
                return;
            }
            if self.dirs[1].state == State::Headers {
                self.message_done(1, ctx, sinks);
            }
        }
    }

    fn message_done(&mut self, d: usize, ctx: &ProtoCtx, sinks: &mut Sinks) {
        if d == 0 {
            if let Some(r) = self.reqs.iter_mut().rev().find(|r| !r.complete) {
                r.complete = true;
                r.body = self.dirs[0].body;
            }
            if self.dirs[0].state != State::Dead {
                self.dirs[0].state = State::Headers;
            }
        } else {
            self.dirs[1].state = State::Headers;
            self.message_done_resp(ctx, sinks);
        }
    }

    fn message_done_resp(&mut self, ctx: &ProtoCtx, sinks: &mut Sinks) {
        let req = self.reqs.pop_front();
        let resp = self.resp.take();
        let body = self.dirs[1].body;
        self.dirs[1].body = 0;
        self.emit(req.as_ref(), resp.as_ref(), body, ctx.uid, &ctx.key, ctx.orig_is_lo, sinks);
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        req: Option<&Req>,
        resp: Option<&Resp>,
        resp_body: u64,
        uid: u64,
        key: &FlowKey,
        orig_is_lo: bool,
        sinks: &mut Sinks,
    ) {
        let ts = req.map(|r| r.ts).unwrap_or(self.ts);
        let c = conn_id(ts, uid, key, orig_is_lo);
        let depth = req.map(|r| r.depth).unwrap_or_else(|| {
            self.depth += 1;
            self.depth
        });
        let r = HttpRecord {
            trans_depth: depth,
            method: req.and_then(|r| r.method.as_deref()),
            host: req.and_then(|r| r.host.as_deref()),
            uri: req.and_then(|r| r.uri.as_deref()),
            referrer: req.and_then(|r| r.referrer.as_deref()),
            version: resp.map(|r| r.version.as_str()).or(req.map(|r| r.version.as_str())),
            user_agent: req.and_then(|r| r.ua.as_deref()),
            request_body_len: req.map(|r| r.body).unwrap_or(0),
            response_body_len: resp_body,
            status_code: resp.map(|r| r.code),
            status_msg: resp.map(|r| r.msg.as_str()),
        };
        sinks.http(&c, &r);
    }

    pub fn finish(&mut self, uid: u64, key: &FlowKey, orig_is_lo: bool, sinks: &mut Sinks) {
        // A response being read until close ends here.
        if self.resp.is_some() {
            let req = self.reqs.pop_front();
            let resp = self.resp.take();
            let body = self.dirs[1].body;
            self.emit(req.as_ref(), resp.as_ref(), body, uid, key, orig_is_lo, sinks);
        }
        while let Some(req) = self.reqs.pop_front() {
            self.emit(Some(&req), None, 0, uid, key, orig_is_lo, sinks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_detection() {
        assert!(looks_like_request(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_request(b"FOOBAR /x HTTP/1.0\r\n"));
        assert!(looks_like_request(b"G"));
        assert!(looks_like_request(b"POS"));
        assert!(!looks_like_request(b"X"));
        assert!(!looks_like_request(b"EHLO mail.example.com\r\n"));
        assert!(looks_like_response(b"HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn request_lines() {
        let p = |l: &'static [u8]| {
            let r = parse_request_line(l);
            (r.method, r.uri, r.version)
        };
        let s = |b: &'static [u8]| Some(b);
        assert_eq!(p(b"GET /a b HTTP/1.1"), (s(b"GET"), s(b"/a b"), s(b"1.1")));
        assert_eq!(p(b"OPTIONS HTTP/1.1"), (s(b"OPTIONS"), s(b""), s(b"1.1")));
        assert_eq!(p(b"GET /HTTP/1.1"), (s(b"GET"), s(b"/HTTP/1.1"), None));
        assert_eq!(p(b"GET/ HTTP/1.1"), (None, None, None));
        assert_eq!(p(b"OPTIONS"), (None, None, None));
    }

    #[test]
    fn header_end() {
        assert_eq!(find_crlfcrlf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", 0), Some(27));
        assert_eq!(find_crlfcrlf(b"GET / HTTP/1.0\n\nX", 0), Some(16));
    }
}

#[cfg(test)]
mod flow_tests {
    use super::*;
    use crate::decode::IpLayer;
    use crate::flow::FlowKey;

    fn feed(h: &mut HttpFlow, sinks: &mut Sinks, is_orig: bool, seq: u32, data: &[u8]) {
        let layer = IpLayer { seq, proto: 6, ..IpLayer::default() };
        let key = FlowKey { lo_port: 80, hi_port: 40000, proto: 6, ..FlowKey::default() };
        let ctx = ProtoCtx { ts: 1, uid: 1, key, orig_is_lo: false, is_orig, layer: &layer };
        h.feed(&ctx, data, sinks);
    }

    fn rows(sinks: &mut Sinks) -> Vec<(Option<String>, Option<String>, Option<u16>)> {
        use arrow::array::{Array, StringArray, UInt16Array};
        let b = sinks.http.finish();
        let m = b.column_by_name("method").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let u = b.column_by_name("uri").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let s = b.column_by_name("status_code").unwrap().as_any().downcast_ref::<UInt16Array>().unwrap().clone();
        (0..b.num_rows())
            .map(|i| {
                (
                    (!m.is_null(i)).then(|| m.value(i).to_string()),
                    (!u.is_null(i)).then(|| u.value(i).to_string()),
                    (!s.is_null(i)).then(|| s.value(i)),
                )
            })
            .collect()
    }

    #[test]
    fn http09_request_gets_a_raw_response() {
        let mut sinks = Sinks::new(100);
        let mut h = HttpFlow::on_http_port();
        feed(&mut h, &mut sinks, true, 1, b"CCM_POST /HTTP/1.1\nHost: www.google.com\n\n");
        feed(&mut h, &mut sinks, false, 1, b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nabc");
        h.finish(1, &FlowKey::default(), false, &mut sinks);
        assert_eq!(rows(&mut sinks), vec![(Some("CCM_POST".into()), Some("/HTTP/1.1".into()), Some(0))]);
    }

    #[test]
    fn pipelined_chunked_and_content_length() {
        let mut sinks = Sinks::new(100);
        let mut h = HttpFlow::default();
        let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody";
        feed(&mut h, &mut sinks, true, 1, req);
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        feed(&mut h, &mut sinks, false, 1, &resp[..40]);
        feed(&mut h, &mut sinks, false, 41, &resp[40..]);
        h.finish(1, &FlowKey::default(), false, &mut sinks);
        assert_eq!(
            rows(&mut sinks),
            vec![
                (Some("GET".into()), Some("/a".into()), Some(200)),
                (Some("POST".into()), Some("/b".into()), Some(201))
            ]
        );
    }
}
