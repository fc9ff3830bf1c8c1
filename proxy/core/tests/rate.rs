//! Properties of the rate budgets: over any arrivals, no more is let in than the burst
//! plus one per interval elapsed, and a refusal's wait is exact — one nanosecond
//! sooner is refused, at the wait the request is let in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gatehouse_mcp::rate::Rate;
use proptest::collection::vec;
use proptest::prelude::*;

proptest! {
    #[test]
    fn never_more_than_the_burst_plus_the_rate(
        per_second in 1u32..1_000,
        burst in 1u32..50,
        gaps in vec(0u64..50_000_000, 1..400),
    ) {
        let rate = Rate::per_second(f64::from(per_second), burst).unwrap();
        let interval = 1_000_000_000 / u64::from(per_second);
        let tat = AtomicU64::new(0);
        let start = 1_000_000_000u64;
        let mut now = start;
        let mut admitted = 0u64;
        for gap in gaps {
            now += gap;
            if rate.admit(&tat, now).is_ok() {
                admitted += 1;
            }
        }
        prop_assert!(admitted <= u64::from(burst) + (now - start) / interval + 1);
    }

    #[test]
    fn a_refusal_names_the_exact_wait(
        per_second in 1u32..1_000,
        burst in 1u32..20,
        extra in 1u32..20,
    ) {
        let rate = Rate::per_second(f64::from(per_second), burst).unwrap();
        let tat = AtomicU64::new(0);
        let now = 7_000_000_000u64;
        for _ in 0..burst {
            prop_assert!(rate.admit(&tat, now).is_ok());
        }
        for _ in 0..extra {
            let wait = rate.admit(&tat, now).unwrap_err();
            prop_assert!(wait > Duration::ZERO);
            let at = now + wait.as_nanos() as u64;
            let probe = AtomicU64::new(tat.load(Ordering::Relaxed));
            prop_assert!(rate.admit(&probe, at - 1).is_err());
            prop_assert!(rate.admit(&probe, at).is_ok());
        }
    }
}
