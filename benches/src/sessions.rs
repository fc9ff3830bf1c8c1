//! The `sessions` scenario: what an idle client session with an open server-to-client
//! stream costs the proxy. N sessions are initialized a few at a time, then each opens
//! its Streamable HTTP GET stream and holds it; the proxy's resident memory before the
//! streams and while all N are open gives the memory per session (target: at most
//! 16 KiB). Over the hold, every stream counts the `: keep-alive` comments it gets,
//! with the proxy's interval shortened so several arrive, and any stream that ends
//! early is a broken one.
//!
//! The streams are raw HTTP/1.1 on tokio TCP sockets, all on the harness's one
//! current-thread runtime: a few hundred bytes each, so ten thousand fit beside the
//! proxy on a small machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::client::{McpSession, PROTOCOL_VERSION};
use crate::procstat::CpuClock;
use crate::prometheus;
use crate::report::{Measurement, Report, Target};
use crate::targets::{GatehouseProxy, WORKSPACE};
use crate::upstream::{UpstreamFleet, UpstreamMode};

/// What the issue allows an idle session with an open stream to cost the proxy.
const RSS_PER_SESSION_TARGET_KIB: f64 = 16.0;
/// File descriptors each process keeps for everything but the sessions' sockets.
const FD_RESERVE: u64 = 256;
/// How long opening one stream (connect, response head) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening all of them may take, beyond one open timeout.
const OPEN_ALL_PER_STREAM: Duration = Duration::from_millis(10);
/// The comment the proxy writes between events on an idle stream.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Concurrent client sessions, each holding its GET stream open.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Seconds all streams are held open.
    #[arg(long, default_value_t = 30.0)]
    hold: f64,
    /// The proxy's keep-alive interval for the run, seconds.
    #[arg(long, default_value_t = 5.0)]
    keep_alive: f64,
    /// Sessions initialized at a time.
    #[arg(long, default_value_t = 32)]
    init_concurrency: usize,
    /// Streams being opened at a time.
    #[arg(long, default_value_t = 128)]
    open_concurrency: usize,
    /// Worker threads of the gatehouse-proxy.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// stateless-json: the upstream has no GET stream (405), so a client stream holds
    /// no upstream connection; session-sse: each holds one upstream stream too.
    #[arg(long, value_enum, default_value_t = UpstreamMode::StatelessJson)]
    upstream_mode: UpstreamMode,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
}

impl Args {
    /// The options of a run whose binaries are in `build` and files go under `out`.
    pub fn options(self, build: &std::path::Path, out: &std::path::Path) -> Options {
        Options {
            sessions: self.sessions.max(1),
            hold: Duration::from_secs_f64(self.hold.max(1.0)),
            keep_alive: Duration::from_secs_f64(self.keep_alive.max(0.1)),
            init_concurrency: self.init_concurrency.max(1),
            open_concurrency: self.open_concurrency.max(1),
            proxy_threads: self.proxy_threads.max(1),
            upstream_mode: self.upstream_mode,
            out: out.join("sessions"),
            proxy_bin: self
                .proxy_bin
                .unwrap_or_else(|| build.join("gatehouse-proxy")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub sessions: usize,
    /// How long all streams are held open once they are.
    pub hold: Duration,
    /// The proxy's keep-alive interval for the run (`GATEHOUSE_SSE_KEEPALIVE_MS`).
    pub keep_alive: Duration,
    /// Sessions initialized at a time.
    pub init_concurrency: usize,
    /// Streams being opened at a time.
    pub open_concurrency: usize,
    pub proxy_threads: usize,
    pub upstream_mode: UpstreamMode,
    /// Where this scenario's files go (`<out>/sessions`).
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    proxy_binary: String,
    upstream_mode: UpstreamMode,
    sessions: usize,
    hold_s: f64,
    keep_alive_s: f64,
    proxy_threads: usize,
    /// RLIMIT_NOFILE (soft, hard) of the harness, which the proxy inherits.
    nofile_limit: (u64, u64),
    /// Seconds to initialize every session, and to open every stream.
    initialize_s: f64,
    open_streams_s: f64,
    /// The proxy's RSS, KiB, once a second over the hold.
    rss_samples_kib: Vec<u64>,
}

/// How one stream went.
struct StreamOutcome {
    opened_at: Option<Instant>,
    keep_alives: u64,
    /// It ended (or failed) before the hold was over: how.
    broke: Option<String>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let n = opts.sessions.max(1);
    let nofile = raise_nofile()?;
    // With a stateful upstream, each client stream makes the proxy open one upstream
    // stream: the proxy holds two sockets per session, and so does this process,
    // which hosts the upstream.
    let per_session = match opts.upstream_mode {
        UpstreamMode::StatelessJson => 1,
        UpstreamMode::SessionSse => 2,
    };
    let largest = (nofile.0.saturating_sub(FD_RESERVE) / per_session) as usize;
    if n > largest {
        bail!(
            "{n} sessions need about {} file descriptors in the proxy and in this process, over RLIMIT_NOFILE {} (hard limit {}): the largest N that fits is {largest} (--sessions {largest}), or raise the hard limit",
            n as u64 * per_session + FD_RESERVE,
            nofile.0,
            nofile.1
        );
    }
    // The proxy reads its keep-alive interval from the environment it inherits. Set
    // here, before the upstream's runtime starts: no other thread reads it yet.
    std::env::set_var(
        "GATEHOUSE_SSE_KEEPALIVE_MS",
        opts.keep_alive.as_millis().to_string(),
    );
    let clock = CpuClock::detect();
    let fleet = UpstreamFleet::start(1, 1, opts.upstream_mode).await?;
    let proxy = GatehouseProxy::start(
        &opts.proxy_bin,
        &opts.out,
        "gatehouse",
        &[fleet.url(0)],
        opts.proxy_threads,
    )
    .await?;
    eprintln!(
        "gatehouse-proxy {} (pid {}), keep-alive every {:?}, RLIMIT_NOFILE {:?}",
        proxy.url(),
        proxy.pid,
        opts.keep_alive,
        nofile
    );

    let started = Instant::now();
    let session_ids = initialize(&proxy, n, opts.init_concurrency.max(1)).await?;
    let initialize_s = started.elapsed().as_secs_f64();
    eprintln!("  {n} sessions initialized in {initialize_s:.1} s");
    // Let the connections the initializations used close before the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(proxy.pid)?;

    let cancel = CancellationToken::new();
    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel::<bool>();
    let gate = Arc::new(Semaphore::new(opts.open_concurrency.max(1)));
    let mut streams = tokio::task::JoinSet::new();
    let started = Instant::now();
    for sid in session_ids {
        let request = stream_request(&proxy, &sid);
        streams.spawn(hold_stream(
            proxy.listen,
            request,
            gate.clone(),
            opened_tx.clone(),
            cancel.clone(),
        ));
    }
    drop(opened_tx);
    let (mut opened, mut failed) = (0usize, 0usize);
    let open_deadline = Instant::now() + OPEN_TIMEOUT + OPEN_ALL_PER_STREAM * n as u32;
    while opened + failed < n {
        match tokio::time::timeout_at(open_deadline.into(), opened_rx.recv()).await {
            Ok(Some(true)) => opened += 1,
            Ok(Some(false)) => failed += 1,
            Ok(None) => break,
            Err(_) => bail!(
                "only {opened} of {n} streams open ({failed} failed) after {:?}",
                started.elapsed()
            ),
        }
    }
    let open_streams_s = started.elapsed().as_secs_f64();
    eprintln!("  {opened} streams open, {failed} failed, in {open_streams_s:.1} s");

    let hold_start = Instant::now();
    let cpu_before = clock.used(&[proxy.pid])?;
    let mut rss_samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while hold_start.elapsed() < opts.hold {
        tick.tick().await;
        rss_samples.push(rss_kib(proxy.pid)?);
    }
    let rss_open = rss_kib(proxy.pid)?;
    rss_samples.push(rss_open);
    let hold_cores =
        (clock.used(&[proxy.pid])? - cpu_before).as_secs_f64() / hold_start.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let gauge = proxy.metrics(&http).await.ok().and_then(|text| {
        prometheus::sum(
            &text,
            "gatehouse_open_streams",
            &[("transport", "streamable_http")],
        )
    });
    cancel.cancel();
    let hold_end = Instant::now();
    let mut outcomes = Vec::with_capacity(n);
    while let Some(done) = streams.join_next().await {
        outcomes.push(done?);
    }

    let every = opts.keep_alive.as_secs_f64();
    let expected: u64 = outcomes
        .iter()
        .filter_map(|o| o.opened_at)
        .map(|at| ((hold_end - at).as_secs_f64() / every).floor() as u64)
        .sum();
    let delivered: u64 = outcomes.iter().map(|o| o.keep_alives).sum();
    let broken: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.opened_at.is_some())
        .filter_map(|o| o.broke.as_deref())
        .collect();
    let open_errors: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.opened_at.is_none())
        .filter_map(|o| o.broke.as_deref())
        .collect();
    let per_session_kib = rss_open.saturating_sub(rss_before) as f64 / opened.max(1) as f64;
    eprintln!(
        "  proxy RSS {rss_before} KiB before, {rss_open} KiB with {opened} streams: {per_session_kib:.1} KiB per session; keep-alives {delivered}/{expected}; {} broken",
        broken.len()
    );

    let asked = Measurement::new("sessions asked for", n as f64, "sessions");
    let mut measurements = vec![
        Measurement::new("streams open at once", opened as f64, "sessions")
            .vs(&asked)
            .target(Target::EqualToBaseline),
        Measurement::new("proxy RSS before the streams", rss_before as f64, "KiB")
            .note(format!("{n} sessions initialized, no stream open")),
        Measurement::new("proxy RSS with the streams open", rss_open as f64, "KiB").note(format!(
            "end of the {:.0} s hold; peak {} KiB",
            opts.hold.as_secs_f64(),
            rss_samples.iter().max().copied().unwrap_or(rss_open)
        )),
        Measurement::new("proxy RSS per session", per_session_kib, "KiB")
            .target(Target::Ceiling(RSS_PER_SESSION_TARGET_KIB))
            .note("(RSS with streams - RSS before) / streams open"),
        Measurement::new("proxy CPU while holding", hold_cores, "cores")
            .note("idle streams: keep-alives and the 200 ms watch tick"),
    ];
    let expected_m = Measurement::new("keep-alives expected", expected as f64, "keep-alives").note(
        format!("per stream: floor(time open / {every:.0} s), summed"),
    );
    measurements.push(
        Measurement::new("keep-alives delivered", delivered as f64, "keep-alives").vs(&expected_m),
    );
    measurements.push(expected_m);
    measurements.push(Measurement::new(
        "streams broken during the hold",
        broken.len() as f64,
        "sessions",
    ));

    let mut problems = Vec::new();
    if let Some(first) = open_errors.first() {
        problems.push(format!(
            "{} stream(s) could not be opened; first: {first}",
            open_errors.len()
        ));
    }
    if let Some(first) = broken.first() {
        problems.push(format!(
            "{} stream(s) ended before the hold was over; first: {first}",
            broken.len()
        ));
    }
    if let Some(g) = gauge.filter(|&g| g as usize != opened) {
        problems.push(format!(
            "the proxy counted {g} open streamable_http streams (gatehouse_open_streams); the client held {opened}"
        ));
    }
    problems.extend(
        proxy
            .warnings()
            .into_iter()
            .map(|w| format!("gatehouse-proxy log: {w}")),
    );
    let notes = vec![
        format!(
            "RSS from /proc/<pid>/status VmRSS; before = {:.0} s after the last initialize, when its connections have closed",
            2.0
        ),
        format!(
            "proxy gauge gatehouse_open_streams{{transport=\"streamable_http\"}} during the hold: {}",
            gauge.map_or("unread".to_string(), |g| format!("{g:.0}"))
        ),
    ];
    let environment = Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        proxy_binary: opts.proxy_bin.display().to_string(),
        upstream_mode: opts.upstream_mode,
        sessions: n,
        hold_s: opts.hold.as_secs_f64(),
        keep_alive_s: every,
        proxy_threads: opts.proxy_threads,
        nofile_limit: nofile,
        initialize_s,
        open_streams_s,
        rss_samples_kib: rss_samples,
    };
    let report = Report {
        scenario: "sessions",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment,
        measurements,
        runs: Vec::new(),
        problems,
        notes,
    };
    let log = proxy.log.clone();
    proxy.stop().await;
    drop(fleet);
    report.publish_saying(&opts.out, &format!("proxy log: {}", log.display()))
}

/// Raises this process's RLIMIT_NOFILE to its hard limit (children inherit it);
/// returns (soft, hard) after.
fn raise_nofile() -> anyhow::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok((soft, hard))
}

/// Initializes `n` sessions, `concurrency` at a time; returns their session ids.
async fn initialize(
    proxy: &GatehouseProxy,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = proxy.url();
    let mut ids = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    while ids.len() < n {
        while next < n && tasks.len() < concurrency {
            let (http, url, token) = (http.clone(), url.clone(), proxy.token.clone());
            tasks.spawn(async move {
                let session = McpSession::open(&http, &url, Some(&token)).await?;
                session
                    .session_id()
                    .map(str::to_owned)
                    .context("initialize answered without an Mcp-Session-Id")
            });
            next += 1;
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        ids.push(done?.with_context(|| format!("initializing session {}", ids.len()))?);
    }
    Ok(ids)
}

/// The GET that opens session `sid`'s stream.
fn stream_request(proxy: &GatehouseProxy, sid: &str) -> String {
    format!(
        "GET /ws/{WORKSPACE} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: {PROTOCOL_VERSION}\r\n\r\n",
        proxy.listen, proxy.token
    )
}

/// Opens one stream (at most `gate`'s permits at a time), says whether it opened,
/// and reads it until `cancel`, counting keep-alive comments.
async fn hold_stream(
    addr: SocketAddr,
    request: String,
    gate: Arc<Semaphore>,
    opened: mpsc::UnboundedSender<bool>,
    cancel: CancellationToken,
) -> StreamOutcome {
    let mut outcome = StreamOutcome {
        opened_at: None,
        keep_alives: 0,
        broke: None,
    };
    let permit = gate.acquire_owned().await;
    let open = tokio::time::timeout(OPEN_TIMEOUT, open_stream(addr, &request)).await;
    drop(permit);
    let (mut socket, rest) = match open {
        Ok(Ok(open)) => open,
        Ok(Err(e)) => {
            outcome.broke = Some(format!("{e:#}"));
            let _ = opened.send(false);
            return outcome;
        }
        Err(_) => {
            outcome.broke = Some(format!("no response head in {OPEN_TIMEOUT:?}"));
            let _ = opened.send(false);
            return outcome;
        }
    };
    outcome.opened_at = Some(Instant::now());
    let _ = opened.send(true);
    let mut counter = KeepAliveCounter::default();
    counter.feed(&rest);
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            read = socket.read(&mut buf) => match read {
                Ok(0) => {
                    outcome.broke = Some("the proxy closed the stream".into());
                    break;
                }
                Ok(n) => counter.feed(&buf[..n]),
                Err(e) => {
                    outcome.broke = Some(format!("reading the stream: {e}"));
                    break;
                }
            },
        }
    }
    outcome.keep_alives = counter.count;
    outcome
}

/// Connects, sends the GET and reads the response head; fails unless it is a 200.
/// Returns the socket and what was read past the head.
async fn open_stream(addr: SocketAddr, request: &str) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut socket = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    socket.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            bail!(
                "connection closed before the response head: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&head[..head.len().min(12)]).into_owned();
            if status != "HTTP/1.1 200" {
                bail!(
                    "GET answered {:?}",
                    String::from_utf8_lossy(&head).lines().next().unwrap_or("")
                );
            }
            let rest = head.split_off(end + 4);
            return Ok((socket, rest));
        }
        if head.len() > 16 * 1024 {
            bail!("response head larger than 16 KiB");
        }
    }
}

/// Counts keep-alive comments in a byte stream read in pieces of any size. Chunked
/// framing does not split them: each comment is one write, so one chunk.
#[derive(Default)]
struct KeepAliveCounter {
    /// How much of [`KEEP_ALIVE`] the last bytes matched.
    matched: usize,
    count: u64,
}

impl KeepAliveCounter {
    fn feed(&mut self, bytes: &[u8]) {
        // `:` occurs once in the pattern, at its start, so on a mismatch the only
        // partial match left is a new `:`.
        for &b in bytes {
            if b == KEEP_ALIVE[self.matched] {
                self.matched += 1;
                if self.matched == KEEP_ALIVE.len() {
                    self.count += 1;
                    self.matched = 0;
                }
            } else {
                self.matched = usize::from(b == KEEP_ALIVE[0]);
            }
        }
    }
}

/// Resident set size of `pid`, KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{path}: no VmRSS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_keep_alives_split_across_reads() {
        let stream = b"e\r\n: keep-alive\n\n\r\nf\r\n: keep-alive\n\n\r\n::: keep-alive\n\n";
        for split in 0..stream.len() {
            let mut c = KeepAliveCounter::default();
            c.feed(&stream[..split]);
            c.feed(&stream[split..]);
            assert_eq!(c.count, 3, "split at {split}");
        }
    }

    #[test]
    fn reads_its_own_rss() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
