//! Rate budgets as the generic cell rate algorithm (GCRA): a budget of `count` per
//! period with a burst is one atomic "theoretical arrival time" (TAT). A request is let
//! in when the schedule it would take is no further ahead of now than the burst's
//! tolerance; letting it in moves the schedule one interval on. One compare-and-swap
//! per admitted request, no lock, no timer, and the refusal says exactly how long to
//! wait. No clock of its own: callers pass the time, in nanoseconds of a monotonic
//! clock that never reads 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A budget: one request per `interval_ns`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    interval_ns: u64,
    /// How far ahead of now the schedule may run: `(burst - 1)` intervals.
    tolerance_ns: u64,
}

impl Rate {
    /// `count` requests per `period`, `burst` of them at once (at least 1). `None` for
    /// a count that is not a positive number: no budget.
    pub fn new(count: f64, period: Duration, burst: u32) -> Option<Rate> {
        if !(count.is_finite() && count > 0.0) {
            return None;
        }
        let interval_ns = ((period.as_nanos() as f64 / count) as u64).max(1);
        Some(Rate::from_interval(interval_ns, burst))
    }

    /// `count` requests per second.
    pub fn per_second(count: f64, burst: u32) -> Option<Rate> {
        Rate::new(count, Duration::from_secs(1), burst)
    }

    /// `count` requests per minute.
    pub fn per_minute(count: u32, burst: u32) -> Option<Rate> {
        Rate::new(f64::from(count), Duration::from_secs(60), burst)
    }

    fn from_interval(interval_ns: u64, burst: u32) -> Rate {
        Rate {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// This budget shared by `parts` enforcers (proxies) that each see about one
    /// `parts`-th of the traffic: each gets the `parts`-th of the rate and of the burst
    /// (at least one request).
    pub fn share(self, parts: u32) -> Rate {
        if parts <= 1 {
            return self;
        }
        let burst = (self.tolerance_ns / self.interval_ns + 1) as u32;
        Rate::from_interval(
            self.interval_ns.saturating_mul(u64::from(parts)),
            (burst / parts).max(1),
        )
    }

    /// The burst: how many requests a fresh budget lets in at once.
    pub fn burst(&self) -> u64 {
        self.tolerance_ns / self.interval_ns + 1
    }

    /// Lets one request in at `now_ns` against the schedule `tat`, or says how long
    /// until one would be let in.
    pub fn admit(&self, tat: &AtomicU64, now_ns: u64) -> Result<(), Duration> {
        let mut seen = tat.load(Ordering::Relaxed);
        loop {
            let start = seen.max(now_ns);
            let ahead = start - now_ns;
            if ahead > self.tolerance_ns {
                return Err(Duration::from_nanos(ahead - self.tolerance_ns));
            }
            match tat.compare_exchange_weak(
                seen,
                start + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now_seen) => seen = now_seen,
            }
        }
    }
}

/// A wait as the whole seconds of a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let nanos = wait.as_nanos() as u64;
    nanos.div_ceil(NANOS_PER_SECOND).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SECOND;

    #[test]
    fn a_fresh_budget_lets_its_burst_in_then_one_per_interval() {
        let rate = Rate::per_second(10.0, 5).unwrap();
        let tat = AtomicU64::new(0);
        let now = 100 * S;
        for _ in 0..5 {
            assert_eq!(rate.admit(&tat, now), Ok(()));
        }
        // The sixth waits one interval (100 ms) from now.
        assert_eq!(rate.admit(&tat, now), Err(Duration::from_millis(100)));
        assert_eq!(
            rate.admit(&tat, now + S / 10 - 1),
            Err(Duration::from_nanos(1))
        );
        assert_eq!(rate.admit(&tat, now + S / 10), Ok(()));
        // Idle long enough, the whole burst is back, and no more.
        let later = now + 10 * S;
        for _ in 0..5 {
            assert_eq!(rate.admit(&tat, later), Ok(()));
        }
        assert!(rate.admit(&tat, later).is_err());
    }

    #[test]
    fn per_minute_budgets_and_retry_after() {
        let rate = Rate::per_minute(6, 1).unwrap();
        let tat = AtomicU64::new(0);
        assert_eq!(rate.admit(&tat, S), Ok(()));
        let wait = rate.admit(&tat, S).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(retry_after_seconds(wait), 10);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1_001)), 2);
    }

    #[test]
    fn no_budget_for_nonsense_counts() {
        assert_eq!(Rate::per_second(0.0, 1), None);
        assert_eq!(Rate::per_second(-1.0, 1), None);
        assert_eq!(Rate::per_second(f64::NAN, 1), None);
        assert_eq!(Rate::per_second(f64::INFINITY, 1), None);
        // A burst of 0 is a burst of 1.
        assert_eq!(Rate::per_second(1.0, 0).unwrap().burst(), 1);
    }

    #[test]
    fn a_share_divides_rate_and_burst() {
        let rate = Rate::per_second(30.0, 9).unwrap();
        let third = rate.share(3);
        assert_eq!(third.burst(), 3);
        // 1/30 s rounds down to whole nanoseconds; three of them are 1/10 s within 3 ns.
        let tenth = Rate::per_second(10.0, 3).unwrap();
        assert!(tenth.interval_ns.abs_diff(third.interval_ns) <= 3);
        assert_eq!(rate.share(1), rate);
        assert_eq!(rate.share(0), rate);
        // Never below one request at once.
        assert_eq!(rate.share(100).burst(), 1);
    }

    #[test]
    fn racing_threads_get_exactly_the_burst() {
        let rate = Rate::per_second(1.0, 1_000).unwrap();
        let tat = AtomicU64::new(0);
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        if rate.admit(&tat, 5 * S).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 1_000);
    }
}
