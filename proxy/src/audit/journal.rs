//! The audit journal: each finished call's event is appended to a local file (one
//! `write`, no fsync: it outlives the proxy process being killed, not the machine
//! losing power) before it is queued for the shipper. The queue is memory; without
//! the journal a proxy killed with SIGKILL (or by the OOM killer) loses the events it
//! had not yet delivered or spooled: those of the batch gathering (up to 100 ms of
//! calls) and of the batch being POSTed.
//!
//! The journal is a series of segments. Every queued event holds the segment it was
//! written to; the shipper starts a new segment with each batch it takes, and a
//! retired segment deletes its file when the last event holding it is delivered or
//! spooled. So what is on disk is at most the events not yet safe elsewhere, and a
//! proxy that starts finds what a killed one left and moves it into the spool
//! ([`Journal::open`]), whose delivery the control plane de-duplicates by event id:
//! an event that was delivered just before the kill is stored once all the same.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use gatehouse_config::audit::CallEvent;

/// Where events are appended now, and the segments still held by queued events.
pub struct Journal {
    dir: PathBuf,
    current: ArcSwap<Segment>,
    seq: AtomicU64,
    /// A failed write is logged once, not once per call.
    write_failed: AtomicBool,
}

/// One journal file. Deleted when dropped after it was retired: every event in it
/// is then delivered or spooled.
pub struct Segment {
    file: File,
    path: PathBuf,
    retired: AtomicBool,
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Journal {
    /// Opens the journal in `dir`, first moving the segments an earlier run left
    /// there (it was killed, or its disk was full) into `spool_dir`, as spool files
    /// named by when they were started, so they are delivered oldest first. Call it
    /// before the spool is opened, which then counts them.
    pub fn open(dir: &Path, spool_dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all(spool_dir)?;
        let mut left: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        left.sort();
        let mut recovered = Recovered::default();
        for path in &left {
            recovered.read(&std::fs::read(path)?);
        }
        if let Some((text, interrupted)) = recovered.spool_text() {
            // Written whole, as the spool writes its own files, then the segments go.
            let name = left[0]
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("0000000000000000-journal.jsonl")
                .to_string();
            let tmp = spool_dir.join(format!("{name}.tmp"));
            let mut file = File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            std::fs::rename(&tmp, spool_dir.join(&name))?;
            tracing::warn!(
                events = recovered.finished.len(),
                interrupted,
                "audit events an earlier run had not delivered (it was killed) moved to the spool"
            );
        }
        for path in &left {
            std::fs::remove_file(path)?;
        }
        let seq = AtomicU64::new(0);
        let first = Segment::create(dir, seq.fetch_add(1, Ordering::Relaxed))?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(first),
            seq,
            write_failed: AtomicBool::new(false),
        })
    }

    /// Appends `event`; returns the segment it is in, for the queued event to hold.
    pub fn write(&self, event: &CallEvent) -> Arc<Segment> {
        let mut line = Vec::with_capacity(320);
        serde_json::to_writer(&mut line, event).expect("events serialise");
        line.push(b'\n');
        self.append(&line)
    }

    /// Appends the intent of a call about to be forwarded (`event` as it will be
    /// reported if the proxy dies before the call ends); returns its segment, for
    /// the call to hold until its final event is written.
    pub fn write_intent(&self, event: &CallEvent) -> Arc<Segment> {
        let mut line = Vec::with_capacity(340);
        line.extend_from_slice(b"{\"intent\":");
        serde_json::to_writer(&mut line, event).expect("events serialise");
        line.extend_from_slice(b"}\n");
        self.append(&line)
    }

    fn append(&self, line: &[u8]) -> Arc<Segment> {
        let segment = self.current.load_full();
        // One write of a whole line to an O_APPEND file: concurrent writers' lines
        // do not interleave, and no lock is taken.
        if let Err(e) = (&segment.file).write_all(line) {
            if !self.write_failed.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    "cannot write the audit journal {}: {e}; events are only in memory until shipped",
                    segment.path.display()
                );
            }
        }
        segment
    }

    /// Starts a new segment; the current one is deleted once the events in it are
    /// delivered or spooled. The shipper calls this with each batch it takes.
    pub fn rotate(&self) {
        let next = match Segment::create(&self.dir, self.seq.fetch_add(1, Ordering::Relaxed)) {
            Ok(next) => next,
            Err(e) => {
                if !self.write_failed.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        "cannot start an audit journal segment in {}: {e}",
                        self.dir.display()
                    );
                }
                return;
            }
        };
        let old = self.current.swap(Arc::new(next));
        old.retired.store(true, Ordering::Release);
    }
}

/// What a killed run's segments say: the events of calls that ended, and the
/// intents of calls that had not (in the order they were written).
#[derive(Default)]
struct Recovered {
    finished: Vec<CallEvent>,
    intents: Vec<CallEvent>,
}

impl Recovered {
    /// Reads one segment's lines; a line cut short by the kill is skipped.
    fn read(&mut self, text: &[u8]) {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Line {
            Intent { intent: CallEvent },
            Event(CallEvent),
        }
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<Line>(line) {
                Ok(Line::Intent { intent }) => self.intents.push(intent),
                Ok(Line::Event(event)) => self.finished.push(event),
                Err(_) => {}
            }
        }
    }

    /// The spool file's text: every finished event, and every interrupted call (an
    /// intent without a final event) as an event of its own; with how many were
    /// interrupted. `None` when there is nothing to deliver.
    fn spool_text(&self) -> Option<(Vec<u8>, usize)> {
        let done: std::collections::HashSet<&str> =
            self.finished.iter().map(|e| e.id.as_str()).collect();
        let interrupted: Vec<&CallEvent> = self
            .intents
            .iter()
            .filter(|i| !done.contains(i.id.as_str()))
            .collect();
        let mut text = Vec::new();
        for event in self.finished.iter().chain(interrupted.iter().copied()) {
            serde_json::to_writer(&mut text, event).expect("events serialise");
            text.push(b'\n');
        }
        (!text.is_empty()).then_some((text, interrupted.len()))
    }
}

impl Segment {
    /// `<millis:016>-<pid:08>-j<seq:06>.jsonl`: sorts with the spool's own files by
    /// time when recovered into it.
    fn create(dir: &Path, seq: u64) -> std::io::Result<Segment> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = dir.join(format!(
            "{millis:016}-{:08}-j{seq:06}.jsonl",
            std::process::id()
        ));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        Ok(Segment {
            file,
            path,
            retired: AtomicBool::new(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::audit::{CallAction, CallOutcome};

    fn event(n: u32) -> CallEvent {
        CallEvent {
            id: format!("ce_{n:032}"),
            time_ms: 1_700_000_000_000 + i64::from(n),
            workspace: "eng".into(),
            token_id: "tok".into(),
            token_name: "Alice".into(),
            action: CallAction::ToolCall,
            server: "github".into(),
            target: "github__create_issue".into(),
            outcome: CallOutcome::Ok,
            latency_us: 10,
            request_id: n.to_string(),
            transport: "streamable_http".into(),
        }
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_segment_lives_until_its_events_are_safe_and_a_killed_run_is_recovered() {
        let root = std::env::temp_dir().join(format!(
            "gatehouse-journal-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let (dir, spool) = (root.join("journal"), root.join("spool"));
        let journal = Journal::open(&dir, &spool).unwrap();
        let held = [journal.write(&event(1)), journal.write(&event(2))];
        journal.rotate();
        // Retired but held by two queued events: still on disk.
        assert_eq!(files(&dir).len(), 2);
        drop(held);
        assert_eq!(files(&dir).len(), 1, "the retired segment is deleted");

        // A run killed with events written and not delivered: the next run moves
        // them to the spool, in order, and starts an empty journal.
        drop(journal.write(&event(3)));
        drop(journal.write(&event(4)));
        std::mem::forget(journal);
        let _next = Journal::open(&dir, &spool).unwrap();
        let spooled = files(&spool);
        assert_eq!(spooled.len(), 1);
        let text = std::fs::read_to_string(&spooled[0]).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<CallEvent>(l).unwrap().id)
            .collect();
        assert_eq!(ids, [event(3).id, event(4).id]);
        assert_eq!(files(&dir).len(), 1);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_call_in_flight_when_the_proxy_dies_is_reported_interrupted() {
        let root = std::env::temp_dir().join(format!(
            "gatehouse-journal-intent-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let (dir, spool) = (root.join("journal"), root.join("spool"));
        let journal = Journal::open(&dir, &spool).unwrap();
        let mut in_flight = event(5);
        in_flight.outcome = CallOutcome::Interrupted;
        let mut finished = event(6);
        finished.outcome = CallOutcome::Interrupted;
        // Both calls begin; call 6 ends (its final event in the next segment).
        let _held = journal.write_intent(&in_flight);
        let _held6 = journal.write_intent(&finished);
        journal.rotate();
        let _queued = journal.write(&event(6));
        // The line a kill cut short.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&files(&dir)[1])
            .unwrap()
            .write_all(b"{\"id\":\"ce_")
            .unwrap();
        std::mem::forget((journal, _held, _held6, _queued));
        let _next = Journal::open(&dir, &spool).unwrap();
        let text = std::fs::read_to_string(&files(&spool)[0]).unwrap();
        let events: Vec<CallEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events, [event(6), in_flight]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
