//! The calls in flight to one hosted process ([`Exchange`]): what callers send is
//! rewritten on the way in, what the process sends is routed to the caller it
//! belongs to on the way out.
//!
//! Ids are remapped: each request gets a runner id (a number) before it reaches the
//! process, and its response gets the caller's id back, so two callers using the
//! same id never collide. Progress tokens are remapped the same way. Requests the
//! process sends (sampling, elicitation, roots) get an id `gatehouse-runner-<n>`
//! and go to the oldest call in flight; the answer is routed back by that id.
//! Change notifications (`*/list_changed`, `resources/updated`) go to the server's
//! GET streams ([`Notices`]); others (logging) to the oldest call in flight, or
//! there when none is. When the
//! process is gone, every call in flight is answered with a JSON-RPC error (-32603)
//! that names the server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::spec::HostedKey;

/// JSON-RPC "internal error": what callers get when the process is gone.
pub const INTERNAL_ERROR: i64 = -32603;
/// Ids the runner gives requests a process sends to its clients.
const ASKED_PREFIX: &str = "gatehouse-runner-";
/// Ids the runner gives progress tokens.
const PROGRESS_PREFIX: &str = "gatehouse-progress-";

/// What a caller receives for one request: messages the process sent meanwhile,
/// then the response.
#[derive(Debug)]
pub enum Relayed {
    Message(Value),
    Response(Value),
}

struct Pending {
    caller_id: Value,
    /// The caller's progress token, when it gave one.
    progress: Option<Value>,
    to_caller: mpsc::UnboundedSender<Relayed>,
}

#[derive(Default)]
struct Calls {
    pending: BTreeMap<u64, Pending>,
    /// Runner ids of requests the process sent → the process's own id.
    asked: HashMap<String, Value>,
    /// No more calls: the process has ended; what callers are told.
    closed: Option<String>,
    /// It wrote this (redacted, shortened) line that is not JSON-RPC before
    /// answering initialize.
    not_json: Option<String>,
}

/// What a hosted server says outside any call, for its GET streams; it outlives the
/// server's processes.
pub type Notices = broadcast::Sender<Value>;

/// The calls in flight to one process and the way to its stdin; shared by callers
/// and the tasks reading the process's output.
pub struct Exchange {
    pub key: HostedKey,
    /// Secret values its output is redacted of (see [`super::spec::redact`]).
    pub secrets: Vec<String>,
    calls: Mutex<Calls>,
    to_stdin: mpsc::UnboundedSender<String>,
    notices: Notices,
    next_id: AtomicU64,
    /// Set once the process answered `initialize`.
    pub initialized: AtomicBool,
}

impl Exchange {
    pub fn new(
        key: HostedKey,
        secrets: Vec<String>,
        to_stdin: mpsc::UnboundedSender<String>,
        notices: Notices,
    ) -> Arc<Exchange> {
        Arc::new(Exchange {
            notices,
            key,
            secrets,
            calls: Mutex::new(Calls::default()),
            to_stdin,
            next_id: AtomicU64::new(1),
            initialized: AtomicBool::new(false),
        })
    }

    /// Writes one message to the process as it is; an empty line closes its stdin.
    pub fn write(&self, line: String) {
        let _ = self.to_stdin.send(line);
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.calls.lock().expect("calls").pending.len()
    }

    /// Why calls are refused, once they are, and the line that was not JSON-RPC if
    /// that is why.
    pub fn closed(&self) -> (Option<String>, Option<String>) {
        let calls = self.calls.lock().expect("calls");
        (calls.closed.clone(), calls.not_json.clone())
    }

    /// Sends a request of a caller: its id and progress token are replaced on the
    /// way in and restored on the way out.
    pub fn send(self: &Arc<Self>, mut request: Value) -> Call {
        let (to_caller, from_process) = mpsc::unbounded_channel();
        let caller_id = request.get("id").cloned().unwrap_or(Value::Null);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = if request.get("method").and_then(Value::as_str) == Some("initialize") {
            0
        } else {
            id
        };
        request["id"] = json!(id);
        let progress = request
            .pointer_mut("/params/_meta/progressToken")
            .map(|token| std::mem::replace(token, json!(format!("{PROGRESS_PREFIX}{id}"))));
        {
            let mut calls = self.calls.lock().expect("calls");
            if let Some(message) = &calls.closed {
                let error = error_response(&caller_id, message);
                let _ = to_caller.send(Relayed::Response(error));
            } else {
                calls.pending.insert(
                    id,
                    Pending {
                        caller_id,
                        progress,
                        to_caller,
                    },
                );
                let _ = self.to_stdin.send(request.to_string());
            }
        }
        Call {
            exchange: self.clone(),
            id,
            from_process,
            answered: false,
        }
    }

    /// A notification from a caller. `notifications/cancelled` reaches the process
    /// only when exactly one call in flight has that id (with the runner's id).
    pub fn notify(&self, mut notification: Value) {
        if notification.get("method").and_then(Value::as_str) == Some("notifications/cancelled") {
            let Some(caller_id) = notification.pointer("/params/requestId").cloned() else {
                return;
            };
            let calls = self.calls.lock().expect("calls");
            let mut matching = calls
                .pending
                .iter()
                .filter(|(_, p)| p.caller_id == caller_id)
                .map(|(id, _)| *id);
            let (Some(id), None) = (matching.next(), matching.next()) else {
                return;
            };
            notification["params"]["requestId"] = json!(id);
        }
        let _ = self.to_stdin.send(notification.to_string());
    }

    /// A caller's answer to a request the process sent: routed back by the runner
    /// id; an id the runner never issued is dropped.
    pub fn answer(&self, mut response: Value) {
        let Some(id) = response.get("id").and_then(Value::as_str) else {
            return;
        };
        let original = self.calls.lock().expect("calls").asked.remove(id);
        match original {
            Some(original) => {
                response["id"] = original;
                let _ = self.to_stdin.send(response.to_string());
            }
            None => {
                tracing::debug!(server = %self.key, "an answer to a request the hosted server never sent was dropped")
            }
        }
    }

    /// One message the process sent: a response to a caller, a request or a
    /// notification for one.
    pub fn route(&self, mut message: Value) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        let mut calls = self.calls.lock().expect("calls");
        match (method, id) {
            (None, Some(id)) => {
                let Some(pending) = id.as_u64().and_then(|id| calls.pending.remove(&id)) else {
                    tracing::debug!(server = %self.key, "a response to no call in flight was dropped");
                    return;
                };
                message["id"] = pending.caller_id;
                let _ = pending.to_caller.send(Relayed::Response(message));
            }
            (Some(method), Some(id)) => {
                if method == "ping" {
                    let pong = json!({"jsonrpc": "2.0", "id": id, "result": {}});
                    let _ = self.to_stdin.send(pong.to_string());
                    return;
                }
                let Some((_, oldest)) = calls.pending.iter().find(|(id, _)| **id != 0) else {
                    let refusal = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("no client is waiting for {method}")}});
                    let _ = self.to_stdin.send(refusal.to_string());
                    return;
                };
                let runner_id = format!(
                    "{ASKED_PREFIX}{}",
                    self.next_id.fetch_add(1, Ordering::Relaxed)
                );
                message["id"] = json!(runner_id);
                let _ = oldest.to_caller.send(Relayed::Message(message));
                calls.asked.insert(runner_id, id);
            }
            (Some(_), None) => {
                let token = message
                    .pointer("/params/progressToken")
                    .and_then(Value::as_str)
                    .and_then(|t| t.strip_prefix(PROGRESS_PREFIX))
                    .and_then(|n| n.parse::<u64>().ok());
                let method = message["method"].as_str().unwrap_or_default();
                let change = method.ends_with("/list_changed")
                    || method == "notifications/resources/updated";
                let target = match token {
                    Some(id) => calls.pending.get(&id),
                    None if change => None,
                    None => calls
                        .pending
                        .iter()
                        .find(|(id, _)| **id != 0)
                        .map(|(_, p)| p),
                };
                let Some(pending) = target else {
                    if token.is_none() {
                        // Nobody listening is fine: nothing to tell.
                        let _ = self.notices.send(message);
                    }
                    return;
                };
                if token.is_some() {
                    if let Some(original) = &pending.progress {
                        message["params"]["progressToken"] = original.clone();
                    }
                }
                let _ = pending.to_caller.send(Relayed::Message(message));
            }
            (None, None) => {
                tracing::debug!(server = %self.key, "a message that is neither request, response nor notification was dropped");
            }
        }
    }

    /// Answers every call in flight with an error saying `message` and refuses new
    /// ones.
    pub fn fail_all(&self, message: &str) {
        let mut calls = self.calls.lock().expect("calls");
        if calls.closed.is_none() {
            calls.closed = Some(message.to_owned());
        }
        for (_, pending) in std::mem::take(&mut calls.pending) {
            let error = error_response(&pending.caller_id, message);
            let _ = pending.to_caller.send(Relayed::Response(error));
        }
        calls.asked.clear();
    }

    /// The process wrote `line` (redacted, shortened), which is not JSON-RPC, before
    /// answering initialize: no call can work.
    pub fn refuse_not_json(&self, line: String) {
        self.calls.lock().expect("calls").not_json = Some(line);
        let message = format!(
            "hosted server {} wrote something that is not JSON-RPC on stdout",
            self.key.server
        );
        self.fail_all(&message);
    }
}

/// One request in flight. Dropped before its response (the HTTP caller went
/// away), it tells the process the request is cancelled.
pub struct Call {
    exchange: Arc<Exchange>,
    id: u64,
    from_process: mpsc::UnboundedReceiver<Relayed>,
    answered: bool,
}

impl Call {
    /// The next message for this caller; the last one is the response. `None` only
    /// after the response.
    pub async fn next(&mut self) -> Option<Relayed> {
        if self.answered {
            return None;
        }
        let next = self.from_process.recv().await;
        match &next {
            Some(Relayed::Response(_)) => self.answered = true,
            Some(Relayed::Message(_)) => {}
            None => {
                self.answered = true;
                let error = error_response(
                    &Value::Null,
                    &format!(
                        "hosted server {} dropped the call",
                        self.exchange.key.server
                    ),
                );
                return Some(Relayed::Response(error));
            }
        }
        next
    }

    /// The response alone, skipping what came before it.
    pub async fn response(&mut self) -> Value {
        loop {
            if let Some(Relayed::Response(response)) = self.next().await {
                return response;
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let removed = self
            .exchange
            .calls
            .lock()
            .expect("calls")
            .pending
            .remove(&self.id);
        if removed.is_some() {
            let cancel = json!({
                "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": self.id, "reason": "the client went away"},
            });
            let _ = self.exchange.to_stdin.send(cancel.to_string());
        }
    }
}

fn error_response(id: &Value, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": INTERNAL_ERROR, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> (Arc<Exchange>, mpsc::UnboundedReceiver<String>) {
        let (to_stdin, stdin) = mpsc::unbounded_channel();
        let key = HostedKey {
            workspace: "eng".into(),
            server: "fx".into(),
        };
        (
            Exchange::new(key, vec![], to_stdin, broadcast::channel(8).0),
            stdin,
        )
    }

    fn written(stdin: &mut mpsc::UnboundedReceiver<String>) -> Value {
        serde_json::from_str(&stdin.try_recv().expect("a line for the process")).unwrap()
    }

    fn request(id: Value, token: Option<&str>) -> Value {
        let mut request =
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "t"}});
        if let Some(token) = token {
            request["params"]["_meta"] = json!({"progressToken": token});
        }
        request
    }

    #[tokio::test]
    async fn callers_using_the_same_id_and_token_get_their_own_answers() {
        let (exchange, mut stdin) = exchange();
        let mut a = exchange.send(request(json!(7), Some("p")));
        let mut b = exchange.send(request(json!(7), Some("p")));
        let (to_a, to_b) = (written(&mut stdin), written(&mut stdin));
        assert_ne!(to_a["id"], to_b["id"]);
        assert_ne!(
            to_a["params"]["_meta"]["progressToken"],
            to_b["params"]["_meta"]["progressToken"]
        );
        // Answers in the other order, progress for b first.
        exchange.route(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": to_b["params"]["_meta"]["progressToken"], "progress": 1}}));
        exchange.route(json!({"jsonrpc": "2.0", "id": to_b["id"], "result": {"who": "b"}}));
        exchange.route(json!({"jsonrpc": "2.0", "id": to_a["id"], "result": {"who": "a"}}));
        match b.next().await {
            Some(Relayed::Message(m)) => assert_eq!(m["params"]["progressToken"], "p"),
            other => panic!("{other:?}"),
        }
        let (ra, rb) = (a.response().await, b.response().await);
        assert_eq!(
            (ra["id"].clone(), ra["result"]["who"].clone()),
            (json!(7), json!("a"))
        );
        assert_eq!(
            (rb["id"].clone(), rb["result"]["who"].clone()),
            (json!(7), json!("b"))
        );
        assert_eq!(exchange.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_request_of_the_process_goes_to_the_oldest_call_and_its_answer_comes_back() {
        let (exchange, mut stdin) = exchange();
        let mut call = exchange.send(request(json!("c1"), None));
        let _ = written(&mut stdin);
        exchange.route(
            json!({"jsonrpc": "2.0", "id": 0, "method": "sampling/createMessage", "params": {}}),
        );
        let asked = match call.next().await {
            Some(Relayed::Message(m)) => m,
            other => panic!("{other:?}"),
        };
        let runner_id = asked["id"].as_str().unwrap().to_owned();
        assert!(runner_id.starts_with(ASKED_PREFIX), "{asked}");
        exchange.answer(json!({"jsonrpc": "2.0", "id": "an id never issued", "result": {}}));
        exchange.answer(json!({"jsonrpc": "2.0", "id": runner_id, "result": {"ok": true}}));
        assert_eq!(
            written(&mut stdin),
            json!({"jsonrpc": "2.0", "id": 0, "result": {"ok": true}})
        );
        assert!(
            stdin.try_recv().is_err(),
            "the unknown answer reached the process"
        );
        // No call in flight: the process is told nobody is waiting.
        exchange.route(json!({"jsonrpc": "2.0", "id": 0, "result": {}}));
        drop(call);
        let _cancelled = written(&mut stdin);
        exchange.route(json!({"jsonrpc": "2.0", "id": 5, "method": "roots/list"}));
        assert_eq!(written(&mut stdin)["error"]["code"], -32601);
    }

    #[tokio::test]
    async fn list_changes_go_to_the_stream_even_while_a_call_runs() {
        let (to_stdin, _stdin) = mpsc::unbounded_channel();
        let (notices, mut heard) = broadcast::channel(8);
        let key = HostedKey {
            workspace: "eng".into(),
            server: "fx".into(),
        };
        let exchange = Exchange::new(key, vec![], to_stdin, notices);
        let mut call = exchange.send(request(json!(1), None));
        let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        exchange.route(changed.clone());
        let log =
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": "x"}});
        exchange.route(log.clone());
        assert_eq!(heard.try_recv().unwrap(), changed);
        assert!(
            heard.try_recv().is_err(),
            "the log message went to the stream"
        );
        match call.next().await {
            Some(Relayed::Message(m)) => assert_eq!(m, log),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_cancellation_reaches_the_process_only_when_it_names_one_call() {
        let (exchange, mut stdin) = exchange();
        let _one = exchange.send(request(json!(1), None));
        let _other = exchange.send(request(json!(1), None));
        let _unique = exchange.send(request(json!(2), None));
        let runner_id_of_2 = {
            let _ = (written(&mut stdin), written(&mut stdin));
            written(&mut stdin)["id"].clone()
        };
        let cancel = |id: i64| json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}});
        exchange.notify(cancel(1));
        assert!(
            stdin.try_recv().is_err(),
            "an ambiguous cancellation was sent"
        );
        exchange.notify(cancel(2));
        assert_eq!(written(&mut stdin)["params"]["requestId"], runner_id_of_2);
    }

    #[tokio::test]
    async fn a_process_gone_fails_the_calls_in_flight_and_refuses_new_ones() {
        let (exchange, _stdin) = exchange();
        let mut call = exchange.send(request(json!("x"), None));
        exchange.fail_all("hosted server fx exited (exit status: 3)");
        let response = call.response().await;
        assert_eq!(response["id"], "x");
        assert_eq!(response["error"]["code"], INTERNAL_ERROR);
        assert_eq!(
            response["error"]["message"],
            "hosted server fx exited (exit status: 3)"
        );
        let late = exchange.send(request(json!("y"), None)).response().await;
        assert_eq!(late["id"], "y");
        assert_eq!(
            late["error"]["message"],
            "hosted server fx exited (exit status: 3)"
        );
    }
}
