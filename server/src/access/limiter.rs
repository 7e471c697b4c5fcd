//! Failed authentications, counted per source address: after
//! [`MAX_FAILURES`] within [`WINDOW`], every attempt from that address is
//! answered `CLIENT_ERROR authentication failure` for [`BLOCK`] without
//! its password being checked (so guessing costs the guesser time, and
//! the server no CPU for argon2).
//!
//! An IPv6 source is counted by its /64 (one host usually has a whole
//! one), an IPv4-mapped one as the IPv4 address. Attempts refused while
//! blocked do not extend the block. At most [`MAX_SOURCES`] addresses
//! are tracked: past that, expired entries are dropped, and if none has
//! expired a new address is not tracked (logged) until some do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const BLOCK: Duration = Duration::from_secs(60);
pub const MAX_SOURCES: usize = 65536;

#[derive(Debug, Default)]
pub struct Limiter {
    sources: HashMap<[u8; 16], Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since `since`.
    failures: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.blocked_until.is_none_or(|t| t <= now) && now.duration_since(self.since) >= WINDOW
    }
}

/// What a failure did.
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    Counted,
    /// This failure blocked its address.
    Blocked,
    /// The table is full: not counted.
    Untracked,
}

/// The key an address is counted under.
fn source(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_ipv6_mapped().octets(),
            None => {
                let mut key = v6.octets();
                key[8..].fill(0);
                key
            }
        },
    }
}

impl Limiter {
    /// Whether attempts from `ip` are refused now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source(ip))
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> Failed {
        let key = source(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, e| !e.expired(now));
            if self.sources.len() >= MAX_SOURCES {
                return Failed::Untracked;
            }
        }
        let entry = self.sources.entry(key).or_insert(Entry {
            failures: 0,
            since: now,
            blocked_until: None,
        });
        if entry.blocked_until.is_some_and(|until| now < until) {
            return Failed::Counted;
        }
        if entry.blocked_until.is_some() || now.duration_since(entry.since) >= WINDOW {
            *entry = Entry {
                failures: 0,
                since: now,
                blocked_until: None,
            };
        }
        entry.failures += 1;
        if entry.failures >= MAX_FAILURES {
            entry.blocked_until = Some(now + BLOCK);
            return Failed::Blocked;
        }
        Failed::Counted
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_failures_within_the_window_then_lets_go() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 1..MAX_FAILURES {
            assert_eq!(
                l.failed(a, t0 + Duration::from_secs(i.into())),
                Failed::Counted
            );
        }
        assert!(!l.blocked(a, t0 + Duration::from_secs(20)));
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(l.failed(a, t1), Failed::Blocked);
        assert!(l.blocked(a, t1) && !l.blocked(b, t1));
        // Failures while blocked do not extend it.
        l.failed(a, t1 + Duration::from_secs(59));
        assert!(!l.blocked(a, t1 + BLOCK));
        // After the block, a fresh window.
        assert_eq!(l.failed(a, t1 + BLOCK), Failed::Counted);
        assert!(!l.blocked(a, t1 + BLOCK));
    }

    #[test]
    fn failures_spread_wider_than_the_window_never_block() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "::1".parse().unwrap();
        for i in 0..3 * MAX_FAILURES {
            let at = t0 + (WINDOW / (MAX_FAILURES - 1) + Duration::from_millis(1)) * i;
            assert_ne!(l.failed(a, at), Failed::Blocked, "{i}");
        }
    }

    #[test]
    fn ipv6_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for i in 0..MAX_FAILURES {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            l.failed(ip, t0);
        }
        assert!(l.blocked("2001:db8::ffff:1".parse().unwrap(), t0));
        assert!(!l.blocked("2001:db8:0:1::1".parse().unwrap(), t0));
        for _ in 0..MAX_FAILURES {
            l.failed("::ffff:192.0.2.9".parse().unwrap(), t0);
        }
        assert!(l.blocked("192.0.2.9".parse().unwrap(), t0));
    }

    #[test]
    fn a_full_table_drops_expired_sources_first() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        for i in 0..MAX_SOURCES as u32 {
            l.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        let new: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(l.failed(new, t0), Failed::Untracked);
        assert_eq!(l.failed(new, t0 + WINDOW), Failed::Counted);
        assert_eq!(l.tracked(), 1);
    }
}
