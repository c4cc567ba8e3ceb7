//! What a server does for datagrams that proved no key (client traffic, and everything when
//! the cluster runs unsealed): per-source rate limits on the requests anyone may send, and
//! answers no larger than the request, sent only to its source.
//!
//! A sealed server datagram proved the cluster key before it reached the core; a client's
//! `Status`, `Find`, `Who` and `Login` proved nothing, and their answers go to a source
//! address anyone can write. So:
//! - each source address has a token bucket ([`RATE_BURST`] requests, refilled at
//!   [`RATE_PER_S`] a second) in a table of at most [`MAX_SOURCES`] sources; a request over
//!   the rate is dropped and counted (`rate_limited`), without an answer;
//! - a direct answer (`Status`, `Assign`, `Who`, refusals, `Pong`, `LoggedOut`) to the source
//!   of the datagram being handled is sent only if it is no larger than that datagram, else
//!   dropped and counted (`reply_too_large`). Clients pad the requests whose answers are large
//!   (see [`crate::wire::encode`]), so honest ones get their answers and nobody gets more
//!   bytes out than they put in;
//! - every answer goes to the datagram's source address (`from`), never to an address
//!   written in its body.

use crate::time::Instant;
use crate::wire::{ClientMsg, ServerMsg};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Requests a source may send at once before the rate applies.
pub const RATE_BURST: u32 = 32;
/// Requests a second a source may send in the long run.
pub const RATE_PER_S: u32 = 16;
/// Sources whose buckets are kept; beyond it the longest-idle source is forgotten.
pub const MAX_SOURCES: usize = 1024;

/// Whether a client message is a request anyone may send before proving anything (and so
/// rate-limited per source). Session traffic (`Send`, `Ack`, `Ping`, `Logout`) is answered
/// only for the session's own address and is not limited here.
pub fn is_unproven_request(msg: &ClientMsg) -> bool {
    matches!(msg, ClientMsg::Status | ClientMsg::Find { .. } | ClientMsg::Who { .. } | ClientMsg::Login { .. })
}

/// Whether a server message is a direct answer to the datagram that asked (bounded by its size).
pub fn is_direct_answer(msg: &ServerMsg) -> bool {
    matches!(
        msg,
        ServerMsg::Status(_)
            | ServerMsg::Assign { .. }
            | ServerMsg::Who { .. }
            | ServerMsg::Refused { .. }
            | ServerMsg::LoginRefused { .. }
            | ServerMsg::Pong { .. }
            | ServerMsg::LoggedOut { .. }
    )
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens, in millionths of a request.
    micros: u64,
    at: Instant,
}

/// Per-source token buckets, bounded by [`MAX_SOURCES`].
#[derive(Clone, Debug, Default)]
pub struct RateLimit {
    buckets: BTreeMap<SocketAddr, Bucket>,
}

const FULL: u64 = RATE_BURST as u64 * 1_000_000;

impl RateLimit {
    /// Takes one request's token for `from` at `now`; `false` if the source is over its rate.
    pub fn allow(&mut self, from: SocketAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&from) && self.buckets.len() >= MAX_SOURCES {
            // Forget the source idle longest (a full bucket again, had it been kept).
            if let Some(oldest) = self.buckets.iter().min_by_key(|(a, b)| (b.at, **a)).map(|(a, _)| *a) {
                self.buckets.remove(&oldest);
            }
        }
        let b = self.buckets.entry(from).or_insert(Bucket { micros: FULL, at: now });
        let elapsed_us = now.since(b.at);
        b.micros = (b.micros + elapsed_us.saturating_mul(RATE_PER_S as u64)).min(FULL);
        b.at = b.at.max(now);
        if b.micros < 1_000_000 {
            return false;
        }
        b.micros -= 1_000_000;
        true
    }

    /// Sources tracked now (at most [`MAX_SOURCES`]).
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9000))
    }

    #[test]
    fn a_source_over_its_rate_is_refused_and_recovers() {
        let mut r = RateLimit::default();
        let t = Instant(5_000_000);
        let allowed = (0..100).filter(|_| r.allow(src(1), t)).count();
        assert_eq!(allowed, RATE_BURST as usize);
        assert!(r.allow(src(2), t), "another source has its own bucket");
        assert!(!r.allow(src(1), t.plus_us(10_000)));
        assert!(r.allow(src(1), t.plus_ms(1_000 / RATE_PER_S as u64 + 1)), "a token comes back with time");
    }

    #[test]
    fn the_rate_table_stays_bounded_under_many_sources() {
        let mut r = RateLimit::default();
        for i in 0..(MAX_SOURCES as u32 * 3) {
            assert!(r.allow(src(i), Instant(i as u64)));
            assert!(r.len() <= MAX_SOURCES);
        }
        assert_eq!(r.len(), MAX_SOURCES);
    }
}
