//! Micro-benchmarks of the request path's hot spots, on inputs shaped like real traffic:
//! session envelope seal/open, token lookup among 1,000 tokens, tool-name routing and
//! splicing of a `tools/call` body, SSE splitting, and the merged catalog build.
//!
//! Budgets (checked by `gatehouse-bench hot-paths`): seal+open <= 2 us, token lookup
//! <= 200 ns.
//!
//! They run with the proxy binary's allocator (mimalloc), so a figure is what the
//! proxy pays for the same work.

use std::hint::black_box;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gatehouse_config::audit::CallOutcome;
use gatehouse_config::policy::CompiledScope;
use gatehouse_config::{
    hash_token_hex, McpServer, RateLimit, SessionKey, Snapshot, TokenScope, Workspace,
    WorkspaceLimits, WorkspaceToken,
};
use gatehouse_mcp::catalog::{ServerTools, ToolCatalog, ToolList};
use gatehouse_mcp::envelope::{SessionEnvelope, SessionKeys, UpstreamSession};
use gatehouse_mcp::jsonrpc::{self, Parsed};
use gatehouse_mcp::reply::ReplyScan;
use gatehouse_mcp::sse::SseSplitter;
use gatehouse_proxy::config::auth::TokenIndex;
use gatehouse_proxy::config::runtime::Runtime;
use gatehouse_proxy::limits::{self, Schedules};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A session with three upstreams, two of them stateful: a typical workspace.
fn envelope() -> SessionEnvelope {
    SessionEnvelope {
        sid: [7; 16],
        issued_at: 1_750_000_000,
        workspace: "engineering".into(),
        token_id: "tok_01HZX3K9V2M4".into(),
        client_version: "2025-06-18".into(),
        client_init: r#"{"capabilities":{"roots":{"listChanged":true},"sampling":{}},"clientInfo":{"name":"claude-code","version":"1.0.98"}}"#.into(),
        upstreams: vec![
            UpstreamSession {
                server: "github".into(),
                session_id: Some("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
                protocol_version: "2025-06-18".into(),
            },
            UpstreamSession {
                server: "linear".into(),
                session_id: Some("7c9e6679-7425-40de-944b-e07fc1f90ae7".into()),
                protocol_version: "2025-03-26".into(),
            },
            UpstreamSession {
                server: "search".into(),
                session_id: None,
                protocol_version: "2025-06-18".into(),
            },
        ],
    }
}

fn envelope_benches(c: &mut Criterion) {
    let keys = SessionKeys::from_config(&[SessionKey {
        id: "k1".into(),
        key: gatehouse_config::Secret::new(STANDARD.encode([42u8; 32])),
    }])
    .expect("valid key");
    let env = envelope();
    let sealed = keys.seal(&env);
    assert_eq!(keys.open(&sealed).expect("opens"), env);
    let mut g = c.benchmark_group("envelope");
    g.bench_function("seal", |b| b.iter(|| keys.seal(black_box(&env))));
    g.bench_function("open", |b| b.iter(|| keys.open(black_box(&sealed))));
    g.bench_function("seal_open", |b| {
        b.iter(|| keys.open(&keys.seal(black_box(&env))))
    });
    g.finish();
}

fn token_text(rng: &mut StdRng) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body: String = (0..43)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    format!("mwt_{body}")
}

fn auth_benches(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let tokens: Vec<String> = (0..1_000).map(|_| token_text(&mut rng)).collect();
    // Ten workspaces of 100 tokens each.
    let workspaces = (0..10)
        .map(|w| Workspace {
            slug: format!("ws{w}"),
            name: format!("Workspace {w}"),
            owner: None,
            servers: vec![],
            tokens: tokens[w * 100..(w + 1) * 100]
                .iter()
                .enumerate()
                .map(|(i, t)| WorkspaceToken {
                    id: format!("t{w}-{i}"),
                    name: format!("token {i}"),
                    sha256: hash_token_hex(t),
                    expires_at: None,
                    revoked: false,
                    limits: None,
                    scope: None,
                })
                .collect(),
            limits: Default::default(),
        })
        .collect();
    let snapshot = Snapshot {
        workspaces,
        ..Snapshot::default()
    };
    let index = TokenIndex::build(&snapshot).expect("index builds");
    let header = format!("Bearer {}", tokens[555]);
    let now = 1_750_000_000;
    assert!(index
        .authenticate(Some(header.as_bytes()), "ws5", now)
        .is_ok());
    let unknown = format!("Bearer {}", token_text(&mut rng));
    assert!(index
        .authenticate(Some(unknown.as_bytes()), "ws5", now)
        .is_err());

    let mut g = c.benchmark_group("auth");
    g.bench_function("lookup_1000_tokens", |b| {
        b.iter(|| {
            index
                .authenticate(Some(black_box(header.as_bytes())), "ws5", now)
                .is_ok()
        })
    });
    g.bench_function("unknown_token", |b| {
        b.iter(|| {
            index
                .authenticate(Some(black_box(unknown.as_bytes())), "ws5", now)
                .is_err()
        })
    });
    g.finish();
}

/// What the rate limiter adds to a request: the token's and the workspace's request
/// budgets checked (budgets large enough never to refuse), against no budget at all.
fn limits_benches(c: &mut Criterion) {
    let rate = RateLimit {
        requests_per_second: Some(1e9),
        burst: Some(1_000_000),
        tool_calls_per_minute: Some(u32::MAX),
        sessions_per_minute: None,
    };
    let ws = Workspace {
        slug: "ws".into(),
        name: String::new(),
        owner: None,
        servers: vec![],
        tokens: vec![],
        limits: WorkspaceLimits {
            workspace: rate.clone(),
            per_token: rate,
            streams_per_token: None,
        },
    };
    let snapshot = Snapshot::default();
    let schedules = Schedules::default();
    let token = schedules.token(&snapshot, &ws, "t", None);
    let workspace = schedules.workspace(&snapshot, &ws);
    assert!(limits::admit_request(token.as_deref(), workspace.as_deref()).is_ok());
    let mut g = c.benchmark_group("limits");
    g.bench_function("admit_token_and_workspace", |b| {
        b.iter(|| limits::admit_request(black_box(token.as_deref()), workspace.as_deref()))
    });
    g.bench_function("no_budget", |b| {
        b.iter(|| limits::admit_request(black_box(None), None))
    });
    g.finish();
}

fn jsonrpc_benches(c: &mut Criterion) {
    let body = json!({
        "jsonrpc": "2.0",
        "id": 42,
        "method": "tools/call",
        "params": {
            "name": "github__create_issue",
            "arguments": {
                "owner": "acme",
                "repo": "gatehouse",
                "title": "tools/list is slow when an upstream times out",
                "body": "Steps: install two servers, stop one, call tools/list. Expected: the other's tools.",
                "labels": ["bug", "proxy"]
            },
            "_meta": {"progressToken": "p-42"}
        }
    })
    .to_string()
    .into_bytes();
    let mut g = c.benchmark_group("jsonrpc");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_route_splice_300b", |b| {
        b.iter(|| {
            let body = black_box(&body[..]);
            let Ok(Parsed::Request(msg)) = jsonrpc::parse(body) else {
                panic!("not a request")
            };
            let found = jsonrpc::tool_name(body, msg.params.expect("params")).expect("name");
            let (_, tool) = found.name.split_once("__").expect("prefixed");
            jsonrpc::splice_name(body, found.span.clone(), tool)
        })
    });
    g.finish();
    eprintln!("jsonrpc body: {} bytes", body.len());
}

fn sse_benches(c: &mut Criterion) {
    let result = json!({"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"x".repeat(600)}],"isError":false}}).to_string();
    let stream = format!(
        "id: 0\nretry: 3000\ndata: \n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":\"p\",\"progress\":50}}}}\n\nevent: message\nid: 2\ndata: {result}\n\n"
    );
    let (first, second) = stream.as_bytes().split_at(stream.len() / 2);
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("split_3_events_2_chunks", |b| {
        b.iter(|| {
            let mut splitter = SseSplitter::default();
            let mut events = 0;
            for chunk in [first, second] {
                splitter.push(black_box(chunk));
                while splitter.next_event().is_some() {
                    events += 1;
                }
            }
            // The priming event (empty data) is an event too.
            assert_eq!(events, 3);
            events
        })
    });
    g.finish();
}

/// The audit's watch over a routed call's JSON reply: 64 KiB of tool text (with the
/// escapes JSON gives quotes, backslashes and newlines), in 16 KiB chunks.
fn audit_benches(c: &mut Criterion) {
    let text = "line of \"quoted\" tool output with a \\ path\n".repeat(1500);
    let reply = json!({"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":text}],"isError":true}}).to_string();
    let mut g = c.benchmark_group("audit");
    g.throughput(Throughput::Bytes(reply.len() as u64));
    g.bench_function("reply_scan_64k", |b| {
        b.iter(|| {
            let mut scan = ReplyScan::default();
            for chunk in black_box(reply.as_bytes()).chunks(16 * 1024) {
                scan.push(chunk);
            }
            assert_eq!(scan.outcome(), Some(CallOutcome::ToolError));
        })
    });
    g.finish();
    eprintln!("audit reply: {} bytes", reply.len());
}

fn catalog_benches(c: &mut Criterion) {
    let servers: Vec<McpServer> = (0..10)
        .map(|i| {
            serde_json::from_value(json!({"slug": format!("s{i}"), "url": format!("http://127.0.0.1:{}/mcp", 9000 + i)}))
                .expect("server config")
        })
        .collect();
    let snapshot = Snapshot {
        session_keys: vec![SessionKey {
            id: "k1".into(),
            key: gatehouse_config::Secret::new(STANDARD.encode([1u8; 32])),
        }],
        workspaces: vec![Workspace {
            slug: "bench".into(),
            name: "Bench".into(),
            owner: None,
            servers,
            tokens: vec![],
            limits: Default::default(),
        }],
        ..Snapshot::default()
    };
    let runtime = Runtime::compile(&snapshot, 1).expect("snapshot compiles");
    let ws = &runtime.workspaces["bench"];
    let lists: Vec<ServerTools<'_>> = ws
        .servers
        .iter()
        .map(|s| {
            let tools: Vec<Value> = (0..50)
                .map(|t| {
                    json!({
                        "name": format!("tool_{t:03}"),
                        "description": format!("Filler tool number {t}: looks up a record by id and returns it."),
                        "inputSchema": {"type": "object", "properties": {
                            "id": {"type": "string", "description": "Record id."},
                            "limit": {"type": "integer", "minimum": 1, "maximum": 100}
                        }},
                        "annotations": {"readOnlyHint": t % 2 == 0}
                    })
                })
                .collect();
            let tools: ToolList = Arc::new(tools);
            ServerTools {
                server: &s.slug,
                bare: false,
                policy: &s.policy,
                overrides: &s.overrides,
                tools: Some(tools),
            }
        })
        .collect();
    let built = ToolCatalog::build(1, &lists);
    assert_eq!(built.len(), 500);
    let mut g = c.benchmark_group("catalog");
    g.throughput(Throughput::Elements(500));
    g.bench_function("build_10x50", |b| {
        b.iter(|| ToolCatalog::build(1, black_box(&lists)))
    });
    // A warm tools/list: the whole rendering, and a token's read-only scope over
    // half the servers copied out of it (125 of 500 tools).
    g.bench_function("list_all_500", |b| b.iter(|| built.rendered_in(None)));
    let scope = CompiledScope::compile(&TokenScope {
        tools: vec!["s[0-4]__*".into()],
        read_only: true,
    })
    .expect("scope compiles");
    g.bench_function("list_scoped_125_of_500", |b| {
        b.iter(|| built.rendered_in(black_box(Some(&scope))))
    });
    g.finish();
}

criterion_group!(
    hot_paths,
    envelope_benches,
    auth_benches,
    limits_benches,
    jsonrpc_benches,
    sse_benches,
    audit_benches,
    catalog_benches
);
criterion_main!(hot_paths);
