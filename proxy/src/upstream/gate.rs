//! Concurrency caps, one per upstream as this proxy reaches it: at most the server's
//! `max_in_flight` routed `tools/call`s run at once; beyond that, up to `max_queued`
//! more wait (no longer than the server's call timeout) for one to finish, and any
//! call past both is refused at once with a clear error instead of piling onto an
//! upstream that is already behind. A call holds its [`InFlight`] until its reply
//! has been relayed, stream and all. Keyed like the circuit breakers (config
//! fingerprint), with the caps in the key, so a config push that keeps a server keeps
//! its count; the fast path is one atomic permit, and only a waiting call touches the
//! semaphore's queue, which is this upstream's alone.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::upstream::error::UpstreamError;

/// Every upstream's cap on this proxy, by (fingerprint, in flight, queued).
#[derive(Debug, Default)]
pub struct Gates {
    by_upstream: DashMap<([u8; 16], u32, u32), Arc<Gate>>,
}

#[derive(Debug)]
struct Gate {
    running: Arc<Semaphore>,
    waiting: AtomicU32,
}

/// A call's place among an upstream's calls in flight; dropping it lets the next in.
#[derive(Debug)]
pub struct InFlight {
    _permit: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    /// A place no cap counts (a skill, which the gateway runs itself).
    pub fn uncounted() -> InFlight {
        InFlight { _permit: None }
    }
}

/// Takes `waiting` back when a queued call stops waiting, however it stops.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gates {
    /// A place among `upstream`'s calls in flight: at once when one is free, after a
    /// wait of at most `wait` when fewer than `max_queued` already wait, else an
    /// [`UpstreamError::Busy`]. A cap of 0 calls in flight means no cap.
    pub async fn enter(
        &self,
        upstream: &[u8; 16],
        max_in_flight: u32,
        max_queued: u32,
        wait: Duration,
    ) -> Result<InFlight, UpstreamError> {
        if max_in_flight == 0 {
            return Ok(InFlight::uncounted());
        }
        let gate = self.of(upstream, max_in_flight, max_queued);
        if let Ok(permit) = gate.running.clone().try_acquire_owned() {
            return Ok(InFlight {
                _permit: Some(permit),
            });
        }
        let busy = UpstreamError::Busy {
            in_flight: max_in_flight,
            queued: max_queued,
        };
        if gate.waiting.fetch_add(1, Ordering::Relaxed) >= max_queued {
            gate.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(busy);
        }
        let _waiting = Waiting(&gate.waiting);
        match tokio::time::timeout(wait, gate.running.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(InFlight {
                _permit: Some(permit),
            }),
            // Never closed; waited out its time.
            Ok(Err(_)) | Err(_) => Err(busy),
        }
    }

    fn of(&self, upstream: &[u8; 16], max_in_flight: u32, max_queued: u32) -> Arc<Gate> {
        let key = (*upstream, max_in_flight, max_queued);
        if let Some(gate) = self.by_upstream.get(&key) {
            return gate.clone();
        }
        self.by_upstream
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Gate {
                    running: Arc::new(Semaphore::new(max_in_flight as usize)),
                    waiting: AtomicU32::new(0),
                })
            })
            .clone()
    }

    /// Calls waiting for a place, summed over upstreams.
    #[cfg(test)]
    fn waiting(&self) -> u64 {
        self.by_upstream
            .iter()
            .map(|g| u64::from(g.waiting.load(Ordering::Relaxed)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: [u8; 16] = [7; 16];

    #[tokio::test]
    async fn calls_past_the_cap_wait_then_past_the_queue_are_refused() {
        let gates = Gates::default();
        let wait = Duration::from_secs(5);
        let first = gates.enter(&UP, 1, 1, wait).await.expect("a free place");
        let queued = tokio::spawn({
            let gates = Arc::new(gates);
            let g = gates.clone();
            async move {
                let got = g.enter(&UP, 1, 1, wait).await.map(|_| ());
                (got, gates)
            }
        });
        // Let the second call queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        let (got, gates) = queued.await.expect("joined");
        assert!(got.is_ok(), "the queued call got no place: {got:?}");
        assert_eq!(gates.waiting(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_wait_ends_at_its_limit() {
        let gates = Arc::new(Gates::default());
        let _running = gates.enter(&UP, 1, 1, Duration::ZERO).await.expect("place");
        let g = gates.clone();
        let waiter = tokio::spawn(async move {
            g.enter(&UP, 1, 1, Duration::from_millis(300))
                .await
                .map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(gates.waiting(), 1);
        let refused = gates.enter(&UP, 1, 1, Duration::from_secs(5)).await;
        assert!(
            matches!(
                refused,
                Err(UpstreamError::Busy {
                    in_flight: 1,
                    queued: 1
                })
            ),
            "{refused:?}"
        );
        let timed_out = waiter.await.expect("joined");
        assert!(matches!(timed_out, Err(UpstreamError::Busy { .. })));
        assert_eq!(gates.waiting(), 0, "a call that gave up still counts");
    }

    #[tokio::test]
    async fn no_cap_counts_nothing_and_other_caps_are_other_gates() {
        let gates = Gates::default();
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.push(
                gates
                    .enter(&UP, 0, 0, Duration::ZERO)
                    .await
                    .expect("no cap"),
            );
        }
        let _one = gates.enter(&UP, 1, 0, Duration::ZERO).await.expect("place");
        assert!(gates.enter(&UP, 1, 0, Duration::ZERO).await.is_err());
        // A config push that raises the cap gives the server a new count.
        assert!(gates.enter(&UP, 2, 0, Duration::ZERO).await.is_ok());
    }
}
