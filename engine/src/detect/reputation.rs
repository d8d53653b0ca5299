//! Online reputation lookups (AbuseIPDB, VirusTotal, …) as the aggregation
//! stage sees them.
//!
//! The engine makes no network calls. Each second the stage offers the
//! public addresses it has not asked about recently (busiest first, a few
//! per second) to a [`Lookups`] queue that a service outside the engine
//! drains at its own pace (the binary's lookup thread, with its API key,
//! rate limit and timeout), and reads back the answers it posts. Both queues
//! are bounded and never waited on: a slow or dead service costs detection
//! nothing, and an address that finds the queue full is counted and offered
//! again when it is seen next. Answers are cached for a configured time, so
//! an address is asked about once per period however much it talks.
//!
//! An address the service flags raises one `reputation` alert while it keeps
//! talking, grouped and explained like a threat-feed hit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::detectors::{Contact, Finding};
use super::{ConvKey, ConvStat};
use crate::alert::{Category, Severity, Verdict};
use crate::decode::addr;
use crate::flow::uid_string;

/// What a lookup service said about one address.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Listed as abusive: alert on its traffic.
    Flagged(Reputation),
    /// Known and not abusive (or below the thresholds).
    Clean(IpAddr),
    /// The service could not answer (error, timeout, refused key): the
    /// address may be offered again when it is seen next.
    Failed(IpAddr),
    /// Not asked: the service's budget (requests per day) is spent. The
    /// address is offered again in ten minutes if it is still seen.
    Deferred(IpAddr),
}

/// How long a deferred address waits before it is offered again.
const DEFER_SECS: u64 = 600;

/// A flagged address and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Reputation {
    pub ip: IpAddr,
    pub severity: Severity,
    pub verdict: Verdict,
    /// The service's own figures, e.g. "abuse confidence 92%, 57 reports".
    pub detail: String,
}

/// Counters of one lookup service, as the stage and the service see them.
#[derive(Debug, Default)]
pub struct LookupStats {
    /// Addresses handed to the service.
    pub offered: AtomicU64,
    /// Addresses that found the queue full (offered again later).
    pub queue_full: AtomicU64,
    /// Answers read back, and of them flagged.
    pub answered: AtomicU64,
    pub flagged: AtomicU64,
    pub failed: AtomicU64,
    /// Not asked because the day's requests were spent.
    pub deferred: AtomicU64,
}

/// The meeting point of the stage and one lookup service.
#[derive(Debug)]
pub struct Lookups {
    /// Shown in alerts ("AbuseIPDB").
    pub name: String,
    /// How long an answer (or a question in flight) holds.
    pub cache: Duration,
    /// New addresses offered per second at most.
    pub per_second: usize,
    asks: (Sender<IpAddr>, Receiver<IpAddr>),
    answers: (Sender<Answer>, Receiver<Answer>),
    pub stats: LookupStats,
}

impl Lookups {
    /// `queue` bounds both directions.
    pub fn new(name: impl Into<String>, cache: Duration, per_second: usize, queue: usize) -> Arc<Lookups> {
        Arc::new(Lookups {
            name: name.into(),
            cache,
            per_second: per_second.max(1),
            asks: bounded(queue.max(1)),
            answers: bounded(queue.max(1)),
            stats: LookupStats::default(),
        })
    }

    /// The service's side: the next address to look up, waiting at most
    /// `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<IpAddr> {
        self.asks.1.recv_timeout(timeout).ok()
    }

    /// The service's side: post an answer. Never blocks; an answer that
    /// finds the queue full is dropped (the address is asked again later).
    pub fn answer(&self, a: Answer) {
        let _ = self.answers.0.try_send(a);
    }
}

/// Is `ip` an address a public reputation service can know: not private,
/// loopback, link-local, shared (CGNAT), multicast or unspecified.
pub fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_unspecified()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some())
        }
    }
}

/// The stage's state for one service: the addresses asked about (until
/// when they are not offered again), and what came back flagged.
pub(crate) struct Stage {
    lookups: Arc<Lookups>,
    /// Address → the second until which it is not offered again.
    asked: HashMap<IpAddr, u64>,
    flagged: HashMap<IpAddr, (Reputation, u64)>,
    last_sweep: u64,
}

impl Stage {
    pub(crate) fn new(lookups: Arc<Lookups>) -> Stage {
        Stage { lookups, asked: HashMap::new(), flagged: HashMap::new(), last_sweep: 0 }
    }

    /// Read answers, offer new addresses, and raise findings for flagged
    /// addresses that talked in second `sec`.
    pub(crate) fn second<'a>(
        &mut self,
        sec: u64,
        convs: impl Iterator<Item = (&'a ConvKey, &'a ConvStat)>,
        out: &mut Vec<Finding>,
    ) {
        let l = self.lookups.clone();
        let ttl = l.cache.as_secs().max(1);
        while let Ok(a) = l.answers.1.try_recv() {
            l.stats.answered.fetch_add(1, Ordering::Relaxed);
            match a {
                Answer::Flagged(r) => {
                    l.stats.flagged.fetch_add(1, Ordering::Relaxed);
                    self.flagged.insert(r.ip, (r, sec));
                }
                Answer::Clean(_) => {}
                Answer::Failed(ip) => {
                    l.stats.failed.fetch_add(1, Ordering::Relaxed);
                    self.asked.remove(&ip);
                }
                Answer::Deferred(ip) => {
                    l.stats.deferred.fetch_add(1, Ordering::Relaxed);
                    self.asked.insert(ip, sec + DEFER_SECS);
                }
            }
        }
        if sec >= self.last_sweep + 60 {
            self.last_sweep = sec;
            self.asked.retain(|_, until| sec < *until);
            self.flagged.retain(|_, (_, t)| sec < *t + ttl);
        }
        let mut hits: HashMap<IpAddr, Contact> = HashMap::new();
        let mut new: HashMap<IpAddr, u64> = HashMap::new();
        for (k, s) in convs {
            for (this, peer, outbound) in [(&k.dst, &k.src, true), (&k.src, &k.dst, false)] {
                if !outbound && !k.src_known() {
                    continue;
                }
                let ip = addr(k.v6, this);
                if self.flagged.contains_key(&ip) {
                    hits.entry(ip).or_default().add(k, s, peer, outbound);
                } else if !self.asked.contains_key(&ip) && is_public(&ip) {
                    *new.entry(ip).or_default() += s.pkts + s.rpkts;
                }
            }
        }
        // The busiest new addresses first, a few per second.
        let mut new: Vec<(IpAddr, u64)> = new.into_iter().collect();
        new.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (ip, _) in new.into_iter().take(l.per_second) {
            match l.asks.0.try_send(ip) {
                Ok(()) => {
                    l.stats.offered.fetch_add(1, Ordering::Relaxed);
                    self.asked.insert(ip, sec + ttl);
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    l.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        let mut ips: Vec<IpAddr> = hits.keys().copied().collect();
        ips.sort();
        for ip in ips {
            let h = &hits[&ip];
            let (r, _) = &self.flagged[&ip];
            let peers = h.top_peers(5);
            let peer_list: Vec<String> = peers.iter().map(|(a, _)| super::detectors::ip(a)).collect();
            let (figures, ports) = (h.figures(), h.port_list());
            let explanation = if h.outbound {
                format!(
                    "{} talked to {ip}, which {} reports as abusive ({}): {figures}, ports {ports}",
                    peer_list.join(", "),
                    l.name,
                    r.detail
                )
            } else {
                format!(
                    "{ip}, which {} reports as abusive ({}), reached {}: {figures}",
                    l.name,
                    r.detail,
                    peer_list.join(", ")
                )
            };
            let (src_ips, dst_ips) = if h.outbound {
                (peer_list.clone(), vec![ip.to_string()])
            } else {
                (vec![ip.to_string()], peer_list.clone())
            };
            out.push(Finding {
                group: format!("reputation:{}:{ip}", l.name),
                absorbed_by: vec![format!("intel:{ip}")],
                rule_name: None,
                rule: "reputation",
                severity: r.severity,
                category: Category::Intel,
                verdict: r.verdict,
                src_ips,
                dst_ips,
                ports: h.ports.clone(),
                packets: h.pkts,
                bytes: h.bytes,
                flows: h.flows,
                rate: h.pkts as f64,
                rate_unit: "packets/s".into(),
                top_sources: peer_list.iter().zip(&peers).map(|(a, (_, n))| format!("{a} ({n})")).collect(),
                sample_flows: h.samples.iter().map(|u| uid_string(*u)).collect(),
                explanation,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    fn conv(src: [u8; 4], dst: [u8; 4], pkts: u64) -> (ConvKey, ConvStat) {
        (
            ConvKey { src: v4(src), dst: v4(dst), v6: false, proto: 6, dport: 443 },
            ConvStat {
                pkts,
                rpkts: pkts,
                bytes: pkts * 100,
                rbytes: pkts * 100,
                flows: 1,
                sample: 7,
                ..Default::default()
            },
        )
    }

    #[test]
    fn public_addresses_only() {
        for p in ["8.8.8.8", "198.51.100.7", "2001:db8::1", "2a00:1450::1"] {
            assert!(is_public(&p.parse().unwrap()), "{p}");
        }
        for p in ["10.1.2.3", "192.168.1.1", "172.16.0.1", "127.0.0.1", "100.64.0.1", "169.254.1.1", "224.0.0.1"] {
            assert!(!is_public(&p.parse().unwrap()), "{p}");
        }
        for p in ["::1", "fe80::1", "fd01::2", "ff02::1", "::", "::ffff:10.0.0.1"] {
            assert!(!is_public(&p.parse().unwrap()), "{p}");
        }
    }

    /// Addresses are offered once per cache period, busiest first and at
    /// most `per_second` a second; a full queue is counted, never waited on;
    /// a flagged address raises a finding while it talks; a failed lookup is
    /// offered again.
    #[test]
    fn offers_once_caches_and_flags() {
        let l = Lookups::new("TestRep", Duration::from_secs(3600), 2, 3);
        let mut st = Stage::new(l.clone());
        let convs: Vec<(ConvKey, ConvStat)> = vec![
            conv([10, 0, 0, 1], [198, 51, 100, 1], 5),
            conv([10, 0, 0, 1], [198, 51, 100, 2], 50),
            conv([10, 0, 0, 2], [198, 51, 100, 3], 20),
            conv([10, 0, 0, 2], [192, 168, 0, 9], 99),
        ];
        let mut f = Vec::new();
        st.second(1, convs.iter().map(|(k, s)| (k, s)), &mut f);
        assert!(f.is_empty());
        // Two a second, busiest first.
        let got: Vec<IpAddr> = std::iter::from_fn(|| l.next(Duration::ZERO)).collect();
        assert_eq!(got, ["198.51.100.2".parse::<IpAddr>().unwrap(), "198.51.100.3".parse().unwrap()]);
        st.second(2, convs.iter().map(|(k, s)| (k, s)), &mut f);
        assert_eq!(l.next(Duration::ZERO), Some("198.51.100.1".parse().unwrap()));
        // Nothing new to offer: each was asked once.
        st.second(3, convs.iter().map(|(k, s)| (k, s)), &mut f);
        assert_eq!(l.next(Duration::ZERO), None);
        assert_eq!(l.stats.offered.load(Ordering::Relaxed), 3);
        // One flagged, one failed (offered again), one clean.
        l.answer(Answer::Flagged(Reputation {
            ip: "198.51.100.2".parse().unwrap(),
            severity: Severity::High,
            verdict: Verdict::Malicious,
            detail: "abuse confidence 97%".into(),
        }));
        l.answer(Answer::Failed("198.51.100.3".parse().unwrap()));
        l.answer(Answer::Clean("198.51.100.1".parse().unwrap()));
        st.second(4, convs.iter().map(|(k, s)| (k, s)), &mut f);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].rule, "reputation");
        assert_eq!(f[0].dst_ips, ["198.51.100.2"]);
        assert_eq!(f[0].src_ips, ["10.0.0.1"]);
        assert_eq!(f[0].packets, 100);
        assert_eq!(
            f[0].explanation,
            "10.0.0.1 talked to 198.51.100.2, which TestRep reports as abusive (abuse confidence 97%): 100 packets, 10,000 bytes, 1 new flows, ports 443"
        );
        assert_eq!(l.next(Duration::ZERO), Some("198.51.100.3".parse().unwrap()), "a failed lookup is offered again");
        // Deferred (the day's budget spent): not offered again for ten
        // minutes, then offered again.
        l.answer(Answer::Deferred("198.51.100.3".parse().unwrap()));
        st.second(5, convs.iter().map(|(k, s)| (k, s)), &mut Vec::new());
        st.second(300, convs.iter().map(|(k, s)| (k, s)), &mut Vec::new());
        assert_eq!(l.next(Duration::ZERO), None, "still deferred");
        assert_eq!(l.stats.deferred.load(Ordering::Relaxed), 1);
        assert_eq!(l.stats.failed.load(Ordering::Relaxed), 1, "a deferral is not a failure");
        st.second(700, convs.iter().map(|(k, s)| (k, s)), &mut Vec::new());
        assert_eq!(l.next(Duration::ZERO), Some("198.51.100.3".parse().unwrap()), "offered again after ten minutes");
        // A full queue: counted, nothing blocks.
        let many: Vec<(ConvKey, ConvStat)> = (0..50).map(|i| conv([10, 0, 0, 1], [203, 0, 113, i], 1)).collect();
        let l2 = Lookups::new("Full", Duration::from_secs(60), 10, 3);
        let mut st2 = Stage::new(l2.clone());
        st2.second(1, many.iter().map(|(k, s)| (k, s)), &mut Vec::new());
        assert_eq!(l2.stats.offered.load(Ordering::Relaxed), 3);
        assert_eq!(l2.stats.queue_full.load(Ordering::Relaxed), 1);
        // The cache expires: asked again after its period.
        while l2.next(Duration::ZERO).is_some() {}
        st2.second(2, many.iter().map(|(k, s)| (k, s)), &mut Vec::new());
        let before = l2.stats.offered.load(Ordering::Relaxed);
        while l2.next(Duration::ZERO).is_some() {}
        st2.second(200, many[..1].iter().map(|(k, s)| (k, s)), &mut Vec::new());
        assert_eq!(l2.stats.offered.load(Ordering::Relaxed), before + 1, "asked again once the cache expired");
    }
}
