//! Circuit breakers, one per upstream as this proxy reaches it (its config
//! fingerprint): after [`FAILURES_TO_OPEN`] consecutive failures (no connection, a
//! timeout, an HTTP 5xx) the breaker opens and requests to that upstream fail at once
//! with a clear error instead of each waiting out a timeout; after [`COOL_DOWN`] one
//! request goes through as a probe (half-open): its success closes the breaker, its
//! failure opens it for another cool-down. An upstream's own JSON-RPC error, a 4xx or
//! a forgotten session is an answer, not a failure. A reply whose head came back is
//! judged when its relay ends ([`Breakers::settle`]): a reply stream that breaks off,
//! stalls, carries an oversized event or is not a response to the call is a failure
//! too, so an upstream that answers every call with a good head and a bad body is
//! stopped like one that refuses connections. Lock-free: a few atomics per upstream,
//! found in a map keyed by fingerprint.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::upstream::error::UpstreamError;

/// Consecutive failures that open a breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long an open breaker refuses before it lets a probe through.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

/// Every upstream's breaker on this proxy.
#[derive(Debug, Default)]
pub struct Breakers {
    by_upstream: DashMap<[u8; 16], Arc<Breaker>>,
}

/// Where one upstream's breaker stands.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: AtomicU32,
    /// When it opened (ns of [`now_ns`]); 0 while closed.
    opened_at: AtomicU64,
    /// When the current probe was let through; 0 when none is out.
    probe_at: AtomicU64,
}

/// What [`Breakers::record`] did to a breaker, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Opened,
    Closed,
}

impl Breakers {
    fn of(&self, upstream: &[u8; 16]) -> Arc<Breaker> {
        if let Some(b) = self.by_upstream.get(upstream) {
            return b.clone();
        }
        self.by_upstream.entry(*upstream).or_default().clone()
    }

    /// Lets a request to `upstream` through, or refuses it while the breaker is open.
    pub fn admit(&self, upstream: &[u8; 16]) -> Result<(), UpstreamError> {
        let Some(breaker) = self.by_upstream.get(upstream) else {
            return Ok(());
        };
        breaker.admit(now_ns(), COOL_DOWN)
    }

    /// Counts how a request to `upstream` ended.
    pub fn record<T>(&self, upstream: &[u8; 16], result: &Result<T, UpstreamError>) -> Change {
        self.settle(upstream, result.as_ref().err().is_some_and(is_failure))
    }

    /// Counts a request to `upstream` that `failed`, or was answered.
    pub fn settle(&self, upstream: &[u8; 16], failed: bool) -> Change {
        if !failed {
            // The common case touches nothing unless a breaker exists.
            return match self.by_upstream.get(upstream) {
                Some(b) => b.succeeded(),
                None => Change::None,
            };
        }
        self.of(upstream).failed(now_ns())
    }
}

impl Breaker {
    fn admit(&self, now: u64, cool_down: Duration) -> Result<(), UpstreamError> {
        let opened = self.opened_at.load(Ordering::Acquire);
        if opened == 0 {
            return Ok(());
        }
        let cool = cool_down.as_nanos() as u64;
        let reopen_at = opened + cool;
        if now < reopen_at {
            return Err(UpstreamError::CircuitOpen {
                retry_in: Duration::from_nanos(reopen_at - now),
            });
        }
        // Half-open: one probe at a time (a probe that never reported is replaced
        // after a cool-down).
        let probe = self.probe_at.load(Ordering::Acquire);
        if (probe == 0 || now.saturating_sub(probe) > cool)
            && self
                .probe_at
                .compare_exchange(probe, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(());
        }
        Err(UpstreamError::CircuitOpen {
            retry_in: cool_down,
        })
    }

    fn succeeded(&self) -> Change {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.opened_at.load(Ordering::Acquire) == 0 {
            return Change::None;
        }
        self.probe_at.store(0, Ordering::Release);
        match self.opened_at.swap(0, Ordering::AcqRel) {
            0 => Change::None,
            _ => Change::Closed,
        }
    }

    fn failed(&self, now: u64) -> Change {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let open = self.opened_at.load(Ordering::Acquire);
        if open != 0 {
            // A failed probe: open for another cool-down.
            if self.probe_at.swap(0, Ordering::AcqRel) != 0 {
                self.opened_at.store(now, Ordering::Release);
            }
            return Change::None;
        }
        if failures >= FAILURES_TO_OPEN
            && self
                .opened_at
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Change::Opened;
        }
        Change::None
    }
}

/// Whether an error says the upstream is failing (rather than answering).
pub fn is_failure(e: &UpstreamError) -> bool {
    match e {
        UpstreamError::Connect | UpstreamError::Timeout => true,
        UpstreamError::Status(code) => *code >= 500,
        _ => false,
    }
}

/// Nanoseconds of a monotonic clock, never 0.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn failure() -> Result<(), UpstreamError> {
        Err(UpstreamError::Connect)
    }

    #[test]
    fn opens_after_consecutive_failures_probes_then_closes() {
        let b = Breaker::default();
        let cool = Duration::from_secs(5);
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert_eq!(b.failed(S), Change::None);
        }
        // A success in between starts the count again.
        assert_eq!(b.succeeded(), Change::None);
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.failed(S);
        }
        assert_eq!(b.failed(S), Change::Opened);
        assert!(matches!(
            b.admit(2 * S, cool),
            Err(UpstreamError::CircuitOpen { retry_in }) if retry_in == Duration::from_secs(4)
        ));
        // After the cool-down one probe goes through, the next waits.
        assert!(b.admit(6 * S + 1, cool).is_ok());
        assert!(b.admit(6 * S + 2, cool).is_err());
        // The probe fails: open again from then.
        assert_eq!(b.failed(7 * S), Change::None);
        assert!(b.admit(8 * S, cool).is_err());
        assert!(b.admit(12 * S + 1, cool).is_ok());
        // The probe succeeds: closed, everything goes through.
        assert_eq!(b.succeeded(), Change::Closed);
        assert!(b.admit(12 * S + 2, cool).is_ok());
        assert!(b.admit(12 * S + 3, cool).is_ok());
    }

    #[test]
    fn answers_are_not_failures() {
        let breakers = Breakers::default();
        let up = [7u8; 16];
        for _ in 0..10 {
            breakers.record::<()>(&up, &Err(UpstreamError::Status(404)));
            breakers.record::<()>(
                &up,
                &Err(UpstreamError::Rpc {
                    code: -32602,
                    message: "bad".into(),
                    data: None,
                }),
            );
            breakers.record::<()>(&up, &Err(UpstreamError::SessionGone));
        }
        assert!(breakers.admit(&up).is_ok());
        let opened: Vec<Change> = (0..FAILURES_TO_OPEN)
            .map(|_| breakers.record(&up, &failure()))
            .collect();
        assert_eq!(opened.last(), Some(&Change::Opened));
        assert!(breakers.admit(&up).is_err());
        assert!(breakers.admit(&[8u8; 16]).is_ok());
    }
}
