//! What one replica knows about the sessions it is serving *right now*: things that
//! live exactly as long as a connection or a request on this process, and that another
//! replica never needs. Everything a session needs to continue elsewhere is in its
//! sealed envelope; losing all of this (a restart) costs at most a reconnect.
//!
//! - which upstream owns a client request in flight (for `notifications/cancelled`);
//! - sessions ended with `DELETE` here (their open streams close);
//! - what each upstream said it can do at `initialize` (to merge capabilities and skip
//!   servers without prompts or resources when listing);
//! - the last events of each client's GET stream (for `Last-Event-ID` resumption);
//! - legacy HTTP+SSE client sessions, whose stream is a connection to this replica.
//!
//! It is one registry per process, like the listening socket — kept in a `static` so
//! the data plane's per-connection code can reach it without threading it through
//! `Shared`'s constructor.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use serde_json::Value;

/// Events kept per client session for resumption.
pub const REPLAY_EVENTS: usize = 256;
/// Bound on sessions with resumption buffers; beyond it the oldest are dropped.
const MAX_REPLAY_SESSIONS: usize = 20_000;
/// How long an ended session id is remembered (streams notice within a tick).
const ENDED_MEMORY: Duration = Duration::from_secs(600);
const MAX_ENDED: usize = 100_000;
const MAX_IN_FLIGHT: usize = 200_000;

/// An upstream's `initialize` result capabilities, valid while its config is unchanged.
#[derive(Debug, Clone)]
pub struct KnownCapabilities {
    pub fingerprint: [u8; 16],
    pub capabilities: Value,
}

/// The last events of one GET stream, for resumption.
#[derive(Debug)]
pub struct ReplayBuffer {
    /// (event counter, the whole event as written).
    pub events: VecDeque<(u64, Bytes)>,
    pub touched: Instant,
}

#[derive(Default)]
pub struct Live {
    /// (client session, client request id as raw JSON) -> server slug.
    in_flight: DashMap<([u8; 16], String), String>,
    ended: DashMap<[u8; 16], Instant>,
    /// (workspace, server) -> capabilities.
    capabilities: DashMap<(String, String), KnownCapabilities>,
    /// (client session, stream nonce) -> the stream's last events.
    replay: DashMap<([u8; 16], String), Arc<Mutex<ReplayBuffer>>>,
}

/// This process's registry.
pub fn live() -> &'static Live {
    static LIVE: OnceLock<Live> = OnceLock::new();
    LIVE.get_or_init(Live::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Live {
    /// Records that client request `id` of session `sid` went to `server`; the guard
    /// forgets it when the request is over.
    pub fn track_request(&'static self, sid: [u8; 16], id: &str, server: &str) -> InFlight {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            // Guards always remove their entries; this only bounds a leak by a bug.
            self.in_flight.clear();
        }
        let key = (sid, id.to_string());
        self.in_flight.insert(key.clone(), server.to_string());
        InFlight { live: self, key }
    }

    /// The server a request of this session is in flight on, if on this replica.
    pub fn owner_of(&self, sid: [u8; 16], id: &str) -> Option<String> {
        self.in_flight
            .get(&(sid, id.to_string()))
            .map(|e| e.value().clone())
    }

    pub fn end_session(&self, sid: [u8; 16]) {
        if self.ended.len() >= MAX_ENDED {
            self.ended.retain(|_, at| at.elapsed() < ENDED_MEMORY);
        }
        self.ended.insert(sid, Instant::now());
        self.replay.retain(|(s, _), _| *s != sid);
    }

    pub fn is_ended(&self, sid: [u8; 16]) -> bool {
        self.ended.contains_key(&sid)
    }

    pub fn remember_capabilities(
        &self,
        workspace: &str,
        server: &str,
        fingerprint: [u8; 16],
        capabilities: Value,
    ) {
        self.capabilities.insert(
            (workspace.to_string(), server.to_string()),
            KnownCapabilities {
                fingerprint,
                capabilities,
            },
        );
    }

    /// What the server advertised, if this replica has seen it under this config.
    pub fn capabilities(
        &self,
        workspace: &str,
        server: &str,
        fingerprint: [u8; 16],
    ) -> Option<Value> {
        self.capabilities
            .get(&(workspace.to_string(), server.to_string()))
            .filter(|k| k.fingerprint == fingerprint)
            .map(|k| k.capabilities.clone())
    }

    /// The resumption buffer of GET stream `nonce` of a session, created if new.
    pub fn replay_buffer(&self, sid: [u8; 16], nonce: &str) -> Arc<Mutex<ReplayBuffer>> {
        let key = (sid, nonce.to_string());
        if let Some(b) = self.replay.get(&key) {
            return b.clone();
        }
        if self.replay.len() >= MAX_REPLAY_SESSIONS {
            let oldest = self
                .replay
                .iter()
                .min_by_key(|e| lock(e.value()).touched)
                .map(|e| e.key().clone());
            if let Some(key) = oldest {
                self.replay.remove(&key);
            }
        }
        self.replay
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Mutex::new(ReplayBuffer {
                    events: VecDeque::new(),
                    touched: Instant::now(),
                }))
            })
            .clone()
    }

    /// The events after `counter` of stream `nonce` in session `sid`, when this
    /// replica still has all of them; `None` when it cannot resume.
    pub fn replay_after(&self, sid: [u8; 16], nonce: &str, counter: u64) -> Option<Vec<Bytes>> {
        let buffer = self.replay.get(&(sid, nonce.to_string()))?.clone();
        let b = lock(&buffer);
        // Resumable only if nothing after `counter` was dropped from the front.
        let first = b.events.front().map_or(counter + 1, |(c, _)| *c);
        if first > counter + 1 || counter > b.last_counter() {
            return None;
        }
        Some(
            b.events
                .iter()
                .filter(|(c, _)| *c > counter)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }
}

impl ReplayBuffer {
    pub fn push(&mut self, counter: u64, event: Bytes) {
        if self.events.len() >= REPLAY_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((counter, event));
        self.touched = Instant::now();
    }

    /// The counter of the last event, 0 when there is none.
    pub fn last_counter(&self) -> u64 {
        self.events.back().map_or(0, |(c, _)| *c)
    }
}

/// A client request in flight on an upstream; dropping it forgets the request.
pub struct InFlight {
    live: &'static Live,
    key: ([u8; 16], String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.live.in_flight.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_resumes_only_without_gaps() {
        let live = Live::default();
        let buffer = live.replay_buffer([1; 16], "n1");
        {
            let mut b = lock(&buffer);
            for c in 1..=(REPLAY_EVENTS as u64 + 10) {
                b.push(c, Bytes::from(format!("e{c}")));
            }
        }
        let last = REPLAY_EVENTS as u64 + 10;
        assert_eq!(
            live.replay_after([1; 16], "n1", last - 2),
            Some(vec![
                Bytes::from(format!("e{}", last - 1)),
                Bytes::from(format!("e{last}"))
            ])
        );
        assert_eq!(live.replay_after([1; 16], "n1", last), Some(vec![]));
        assert_eq!(
            live.replay_after([1; 16], "n1", 3),
            None,
            "events were dropped"
        );
        assert_eq!(live.replay_after([1; 16], "other", last - 1), None);
        assert_eq!(live.replay_after([2; 16], "n1", last - 1), None);
    }
}
