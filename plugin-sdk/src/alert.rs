//! Building an alert without an allocator.

use core::fmt::Write;

use crate::abi::{Category, Severity, Verdict};
use crate::{Host, fmt_addr};

/// A fixed-capacity text buffer; writes past its end are cut at a
/// character boundary.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Text { buf: [0; N], len: 0 }
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = N - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// What an alert says, as the host receives it.
pub struct AlertFields<'a> {
    pub rule: &'a str,
    pub severity: Severity,
    pub category: Category,
    pub verdict: Verdict,
    pub group: &'a str,
    pub explanation: &'a str,
    pub src_ips: &'a str,
    pub dst_ips: &'a str,
    pub sample_flows: &'a str,
    pub rate_unit: &'a str,
    pub packets: u64,
    pub bytes: u64,
    pub flows: u64,
    pub rate: f64,
    pub ports: [u16; 4],
}

/// An alert under construction:
/// `Alert::new("beacon").severity(Severity::High).src(a, false).explanation_fmt(format_args!(..)).emit(host)`.
///
/// `rule` names the condition (1 to 64 of `a-z 0-9 _ -`); `group` the thing
/// it is about: alerts with the same rule and group are one alert, updated
/// while the condition repeats, closed when it has been quiet.
pub struct Alert<'r> {
    rule: &'r str,
    severity: Severity,
    category: Category,
    verdict: Verdict,
    group: Text<128>,
    explanation: Text<512>,
    src: Text<160>,
    dst: Text<160>,
    samples: Text<112>,
    rate_unit: &'r str,
    packets: u64,
    bytes: u64,
    flows: u64,
    rate: f64,
    ports: [u16; 4],
}

impl<'r> Alert<'r> {
    pub fn new(rule: &'r str) -> Self {
        Alert {
            rule,
            severity: Severity::Medium,
            category: Category::Anomaly,
            verdict: Verdict::Suspicious,
            group: Text::new(),
            explanation: Text::new(),
            src: Text::new(),
            dst: Text::new(),
            samples: Text::new(),
            rate_unit: "",
            packets: 0,
            bytes: 0,
            flows: 0,
            rate: 0.0,
            ports: [0; 4],
        }
    }
    pub fn severity(mut self, s: Severity) -> Self {
        self.severity = s;
        self
    }
    pub fn category(mut self, c: Category) -> Self {
        self.category = c;
        self
    }
    pub fn verdict(mut self, v: Verdict) -> Self {
        self.verdict = v;
        self
    }
    /// What the alert is about (default: the first source address).
    pub fn group(mut self, g: &str) -> Self {
        self.group.clear();
        let _ = self.group.write_str(g);
        self
    }
    pub fn group_fmt(mut self, args: core::fmt::Arguments<'_>) -> Self {
        self.group.clear();
        let _ = self.group.write_fmt(args);
        self
    }
    pub fn explanation(mut self, e: &str) -> Self {
        self.explanation.clear();
        let _ = self.explanation.write_str(e);
        self
    }
    pub fn explanation_fmt(mut self, args: core::fmt::Arguments<'_>) -> Self {
        self.explanation.clear();
        let _ = self.explanation.write_fmt(args);
        self
    }
    /// Add a source address.
    pub fn src(mut self, a: &[u8; 16], v6: bool) -> Self {
        list_addr(&mut self.src, a, v6);
        self
    }
    /// Add a destination address.
    pub fn dst(mut self, a: &[u8; 16], v6: bool) -> Self {
        list_addr(&mut self.dst, a, v6);
        self
    }
    /// Add a port (up to 4).
    pub fn port(mut self, p: u16) -> Self {
        if let Some(slot) = self.ports.iter_mut().find(|x| **x == 0 || **x == p) {
            *slot = p;
        }
        self
    }
    /// Add a flow (by uid) to the evidence.
    pub fn sample_flow(mut self, uid: u64) -> Self {
        if self.samples.len > 0 {
            let _ = self.samples.write_str(",");
        }
        let _ = write_uid(&mut self.samples, uid);
        self
    }
    pub fn counters(mut self, packets: u64, bytes: u64, flows: u64) -> Self {
        self.packets = packets;
        self.bytes = bytes;
        self.flows = flows;
        self
    }
    /// The measured rate that tripped it, e.g. `(0.98, "score")`.
    pub fn rate(mut self, rate: f64, unit: &'r str) -> Self {
        self.rate = rate;
        self.rate_unit = unit;
        self
    }

    pub fn fields(&self) -> AlertFields<'_> {
        AlertFields {
            rule: self.rule,
            severity: self.severity,
            category: self.category,
            verdict: self.verdict,
            group: self.group.as_str(),
            explanation: self.explanation.as_str(),
            src_ips: self.src.as_str(),
            dst_ips: self.dst.as_str(),
            sample_flows: self.samples.as_str(),
            rate_unit: self.rate_unit,
            packets: self.packets,
            bytes: self.bytes,
            flows: self.flows,
            rate: self.rate,
            ports: self.ports,
        }
    }

    /// Send it. Err: the host refused it (see [`crate::abi::errno`]).
    pub fn emit(self, host: &mut dyn Host) -> Result<(), i32> {
        host.alert(&self.fields())
    }
}

fn list_addr<const N: usize>(t: &mut Text<N>, a: &[u8; 16], v6: bool) {
    if t.len > 0 {
        let _ = t.write_str(",");
    }
    let _ = fmt_addr(t, a, v6);
}

/// A flow uid as the appliance prints it: `C` and 11 base-62 digits.
pub fn write_uid(w: &mut dyn Write, uid: u64) -> core::fmt::Result {
    const A: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = [0u8; 12];
    let mut n = uid;
    for i in (1..12).rev() {
        s[i] = A[(n % 62) as usize];
        n /= 62;
    }
    s[0] = b'C';
    w.write_str(core::str::from_utf8(&s).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cuts_at_a_character_boundary() {
        let mut t = Text::<4>::new();
        let _ = t.write_str("abé!");
        assert_eq!(t.as_str(), "abé");
        let _ = t.write_str("x");
        assert_eq!(t.as_str(), "abé");
    }

    #[test]
    fn builder_lists_addresses_and_ports() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 0, 0, 1]);
        let b = Alert::new("r").src(&a, false).src(&a, false).port(443).port(443).port(80).sample_flow(0);
        let f = b.fields();
        assert_eq!(f.src_ips, "10.0.0.1,10.0.0.1");
        assert_eq!(f.ports, [443, 80, 0, 0]);
        assert_eq!(f.sample_flows, "C00000000000");
    }
}
