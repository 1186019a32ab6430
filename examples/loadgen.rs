//! End-to-end load generator for a WebSocket broadcast relay (issue 4, "Fan-out performance").
//!
//! ```sh
//! cargo run --release --example loadgen -- --url ws://127.0.0.1:8080/ws \
//!     --clients 1000 --messages 2000 --window 200 --size 64 [--pid SERVER_PID] [--json]
//! cargo run --release --example loadgen -- --url ws://127.0.0.1:8080/ws \
//!     --mode idle --clients 10000 --pid SERVER_PID --hold-secs 2
//! ```
//!
//! The server under test must relay every text message from any client to every client (as
//! `examples/chat` and `examples/baseline_server.rs` do).
//!
//! **fanout** (the default): connects `--clients` receivers and one publisher (to
//! `--publish-url` when given, e.g. another node of a backplane; else to `--url`). The publisher
//! sends `--messages` text messages of exactly `--size` bytes, each starting with
//! `"SEQ,NANOS,"` (its sequence number and send time in ns since the run started) and padded
//! with `x`. It keeps at most `--window` messages ahead of the slowest receiver (its own echo
//! counts as one more receiver, so the server never has to evict it); when the window is
//! full it waits until a quarter of it has drained. Receivers check the order and record
//! each message's latency (receive time minus send time, same clock) in a log-linear
//! histogram (<1.6% error). Reports deliveries, deliveries/s, latency percentiles, lost
//! messages (`clients × messages` minus messages received), gaps (messages skipped inside a
//! stream), out-of-order messages, clients whose stream ended early (with their close code),
//! and with `--pid` the server's resident memory (VmRSS) and CPU time.
//!
//! With `--hold-secs S` (default 0 in this mode) the connections stay open for S seconds
//! after the report is made, before they are closed: time to inspect the server after the
//! burst (their reads stop, so keep it short of the server's ping interval).
//!
//! **idle**: opens `--clients` connections, waits 1 s, measures the server's memory per
//! connection (with `--pid`), keeps reading for `--hold-secs` (default 2; so pings are
//! answered), then closes every connection.
//!
//! **churn**: `--clients` workers, for `--duration-secs` (default 10), each repeat a cycle:
//! connect, send one text message, wait for its echo (so the server relays to the room),
//! then end the connection in one of three ways in turn: a closing handshake, a dropped TCP
//! stream without a close frame, or half a frame followed by a reset (`SO_LINGER` 0). Use a
//! room of its own (`--url ws://HOST/ws?room=churn` with `examples/chat`) when a fan-out runs
//! alongside. Reports completed and failed cycles.
//!
//! Other flags: `--timeout-secs T` bounds the whole run (default 120); `--json` prints one JSON
//! line instead of the human-readable report; `--expect-no-loss` makes any lost message or
//! early-closed client a failure; `--concurrency C` connects at most C clients at once
//! (default 100: tokio's `TcpListener::bind` listens with a backlog of 128, and a connect
//! that overflows it waits a whole second for the SYN to be retransmitted); `--label NAME`
//! is copied into the report (the bench script names the server with it).
//!
//! Exit status: 0 on success, 1 on timeout, 2 on bad arguments, 3 when clients could not
//! connect, the publisher failed or a churn cycle failed, 4 when `--expect-no-loss` finds a
//! loss or an early close.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const EXIT_TIMEOUT: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_FAILED: i32 = 3;
const EXIT_LOSS: i32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fanout,
    Idle,
    Churn,
}

#[derive(Debug, Clone)]
struct Opts {
    url: String,
    /// Where the publisher connects (default: `url`); another node of a backplane measures
    /// cross-node fan-out.
    publish_url: String,
    clients: usize,
    messages: u64,
    window: u64,
    size: usize,
    pid: Option<u32>,
    mode: Mode,
    hold: Duration,
    /// How long churn runs.
    duration: Duration,
    timeout: Duration,
    concurrency: usize,
    json: bool,
    expect_no_loss: bool,
    label: String,
}

fn has_switch(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    std::process::exit(EXIT_USAGE);
}

fn secs(name: &str, default: f64) -> Duration {
    let s: f64 = common::flag(name, default);
    if !(s.is_finite() && s >= 0.0) {
        usage(&format!("{name} must be a non-negative number of seconds"));
    }
    Duration::from_secs_f64(s)
}

fn parse_opts() -> Opts {
    let mode = match common::flag("--mode", "fanout".to_string()).as_str() {
        "fanout" => Mode::Fanout,
        "idle" => Mode::Idle,
        "churn" => Mode::Churn,
        other => usage(&format!(
            "--mode must be fanout, idle or churn, not {other:?}"
        )),
    };
    let url = common::flag("--url", "ws://127.0.0.1:8080/ws".to_string());
    let opts = Opts {
        publish_url: common::flag("--publish-url", url.clone()),
        url,
        clients: common::flag("--clients", 100usize),
        messages: common::flag("--messages", 1000u64),
        window: common::flag("--window", 200u64),
        size: common::flag("--size", 64usize),
        pid: Some(common::flag("--pid", 0u32)).filter(|&p| p != 0),
        mode,
        hold: secs("--hold-secs", if mode == Mode::Idle { 2.0 } else { 0.0 }),
        duration: secs("--duration-secs", 10.0),
        timeout: secs("--timeout-secs", 120.0),
        concurrency: common::flag("--concurrency", 100usize),
        json: has_switch("--json"),
        expect_no_loss: has_switch("--expect-no-loss"),
        label: common::flag("--label", String::new()),
    };
    if opts.clients == 0 || opts.concurrency == 0 {
        usage("--clients and --concurrency must be at least 1");
    }
    if opts.mode == Mode::Fanout {
        if opts.messages == 0 || opts.window == 0 {
            usage("--messages and --window must be at least 1");
        }
        // The largest header this run can produce must fit in --size.
        let worst = header(
            opts.messages,
            (opts.timeout + Duration::from_secs(60)).as_nanos(),
        );
        if opts.size < worst.len() {
            usage(&format!(
                "--size must be at least {} bytes for the header \"SEQ,NANOS,\"",
                worst.len()
            ));
        }
    }
    opts
}

// ---------------------------------------------------------------------------------------------
// Connecting

fn ws_config() -> WebSocketConfig {
    // Small read buffers: 10 000 clients with tungstenite's default 128 KiB each would cost the
    // load generator over a gigabyte.
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Connects with a bounded number of retries on errors that mean "try again shortly"
/// (refused, no free local address, reset, a connect that hangs).
async fn connect(url: &str) -> Result<Ws, String> {
    const ATTEMPTS: u32 = 8;
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 1;
    loop {
        let tried = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true),
        )
        .await;
        let err = match tried {
            Ok(Ok((ws, _response))) => return Ok(ws),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_string())
                    .unwrap_or_default();
                return Err(format!("HTTP {} {body}", resp.status()));
            }
            Ok(Err(tungstenite::Error::Io(e)))
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::AddrNotAvailable
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::TimedOut
                ) =>
            {
                e.to_string()
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => "connect timed out after 10 s".to_string(),
        };
        if attempt >= ATTEMPTS {
            return Err(format!("{err} (after {ATTEMPTS} attempts)"));
        }
        tracing::debug!(attempt, error = %err, "connect failed, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
        attempt += 1;
    }
}

/// Connection progress shared by the per-client tasks.
#[derive(Default)]
struct ConnectState {
    connected: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    changed: Notify,
}

impl ConnectState {
    fn settled(&self) -> usize {
        self.connected.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire)
    }

    async fn connect(&self, url: &str, limit: &Semaphore) -> Option<Ws> {
        let result = {
            let _permit = limit.acquire().await.ok()?;
            connect(url).await
        };
        match result {
            Ok(ws) => {
                self.connected.fetch_add(1, Ordering::AcqRel);
                self.changed.notify_one();
                Some(ws)
            }
            Err(e) => {
                self.first_error.lock().unwrap().get_or_insert(e);
                self.failed.fetch_add(1, Ordering::AcqRel);
                self.changed.notify_one();
                None
            }
        }
    }

    /// Waits for `n` connection attempts to settle, then returns how many connected, the error
    /// to report (timed out, or some failed) and whether it timed out.
    async fn settle(&self, n: usize, deadline: Instant) -> (usize, Option<String>, bool) {
        let all_settled = self.wait_settled(n, deadline).await;
        let connected = self.connected.load(Ordering::Acquire);
        if !all_settled {
            let error = format!("timed out connecting: {connected} of {n} connected");
            return (connected, Some(error), true);
        }
        if connected < n {
            let first = self.first_error.lock().unwrap().clone().unwrap_or_default();
            let error = format!(
                "{} of {n} clients failed to connect; first error: {first}",
                n - connected
            );
            return (connected, Some(error), false);
        }
        (connected, None, false)
    }

    /// Waits until `n` connection attempts have succeeded or failed, or `deadline`.
    async fn wait_settled(&self, n: usize, deadline: Instant) -> bool {
        while self.settled() < n {
            let notified = self.changed.notified();
            if self.settled() >= n {
                break;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
        true
    }
}

/// Closes connections politely (close frame, then wait for the server's), at most
/// `concurrency` at once, within `limit`.
async fn close_all(conns: Vec<Ws>, concurrency: usize, limit: Duration) {
    let closing =
        futures_util::stream::iter(conns).for_each_concurrent(concurrency, |mut ws| async move {
            let _ = ws.close(None).await;
            while let Some(Ok(_)) = ws.next().await {}
        });
    let _ = tokio::time::timeout(limit, closing).await;
}

// ---------------------------------------------------------------------------------------------
// Server measurements

/// The process's resident memory in KiB (VmRSS in /proc/PID/status).
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of a process in seconds (/proc/PID/stat; clock ticks of 1/100 s,
/// the value on every mainstream Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn server_cpu(opts: &Opts) -> Option<f64> {
    opts.pid.and_then(|p| cpu_secs(&p.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Latency histogram

/// Sub-buckets per power of two: values are kept within 1/64 (1.6%).
const SUB: u64 = 64;

/// A log-linear histogram of microsecond values.
#[derive(Default, Clone)]
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Hist {
    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            v as usize
        } else {
            let shift = u64::from(63 - v.leading_zeros()) - SUB.trailing_zeros() as u64;
            (shift * SUB + (v >> shift)) as usize
        }
    }

    /// The middle of bucket `i`'s range.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            i
        } else {
            let shift = i / SUB - 1;
            ((i - shift * SUB) << shift) + (1 << shift) / 2
        }
    }

    fn record(&mut self, v: u64) {
        let i = Self::index(v);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, other: &Hist) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    fn percentile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::value(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

// ---------------------------------------------------------------------------------------------
// Fan-out

fn header(seq: u64, nanos: u128) -> String {
    format!("{seq},{nanos},")
}

fn payload(seq: u64, nanos: u128, size: usize) -> String {
    let mut s = header(seq, nanos);
    s.reserve(size.saturating_sub(s.len()));
    while s.len() < size {
        s.push('x');
    }
    s
}

fn parse_header(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.splitn(3, ',');
    let seq = parts.next()?.parse().ok()?;
    let nanos = parts.next()?.parse().ok()?;
    Some((seq, nanos))
}

/// What one receiver saw; updated as messages arrive so a timed-out run still reports.
#[derive(Default)]
struct RecvStats {
    received: u64,
    gaps: u64,
    out_of_order: u64,
    malformed: u64,
    hist: Hist,
    /// Why the stream ended before the last message, if it did.
    ended_early: Option<String>,
    /// When the last message arrived (ns since start).
    finished_at: Option<u64>,
}

/// One receiver's slot, on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Slot {
    /// Next sequence number expected (highest seen + 1); `u64::MAX` once the stream ended, so
    /// a dead receiver does not hold the window.
    progress: AtomicU64,
    stats: Mutex<RecvStats>,
}

struct Shared {
    start: Instant,
    messages: u64,
    /// Receivers, then the publisher's own echo in the last slot.
    slots: Vec<Slot>,
    /// The progress the publisher waits for (0 when not waiting).
    need: AtomicU64,
    progressed: Notify,
    /// Messages the publisher has sent.
    sent: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn advance(&self, slot: &Slot, to: u64) {
        let prev = slot.progress.swap(to, Ordering::SeqCst);
        let need = self.need.load(Ordering::SeqCst);
        if prev < need && to >= need {
            self.progressed.notify_one();
        }
    }

    /// Reads one connection until the last message, the end of the stream, or `stop`.
    async fn receive<S>(&self, idx: usize, ws: &mut S, record: bool)
    where
        S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    {
        let slot = &self.slots[idx];
        let mut next = 0u64;
        let end = loop {
            let Some(item) = ws.next().await else {
                break Some("eof without close frame".to_string());
            };
            match item {
                Ok(Message::Text(text)) => {
                    let now = self.now_ns();
                    let mut st = slot.stats.lock().unwrap();
                    let Some((seq, sent)) = parse_header(text.as_str()) else {
                        st.malformed += 1;
                        continue;
                    };
                    if seq < next {
                        st.out_of_order += 1;
                        continue;
                    }
                    st.gaps += seq - next;
                    st.received += 1;
                    if record {
                        st.hist.record(now.saturating_sub(sent) / 1000);
                    }
                    next = seq + 1;
                    let last = next >= self.messages;
                    if last {
                        st.finished_at = Some(now);
                    }
                    drop(st);
                    self.advance(slot, next);
                    if last {
                        break None;
                    }
                }
                Ok(Message::Close(frame)) => {
                    break Some(match frame {
                        Some(f) if f.reason.is_empty() => format!("close {}", u16::from(f.code)),
                        Some(f) => format!("close {} ({})", u16::from(f.code), f.reason),
                        None => "close (no code)".to_string(),
                    })
                }
                Ok(_) => {} // binary, ping (answered by tungstenite), pong
                Err(e) => break Some(format!("error: {e}")),
            }
        };
        if end.is_some() {
            slot.stats.lock().unwrap().ended_early = end;
        }
        self.advance(slot, u64::MAX);
    }

    /// Waits until every slot's progress is at least `target`; returns the smallest progress
    /// seen, or `None` at `deadline`.
    async fn wait_progress(&self, target: u64, deadline: Instant) -> Option<u64> {
        let mut min = u64::MAX;
        for slot in &self.slots {
            loop {
                let p = slot.progress.load(Ordering::SeqCst);
                if p >= target {
                    min = min.min(p);
                    break;
                }
                let notified = self.progressed.notified();
                self.need.store(target, Ordering::SeqCst);
                if slot.progress.load(Ordering::SeqCst) >= target {
                    continue;
                }
                if Instant::now() >= deadline {
                    return None;
                }
                // The timeout only guards against a missed wake-up.
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        }
        self.need.store(0, Ordering::SeqCst);
        Some(min)
    }
}

/// Sends the messages within the window. Returns an error if the connection failed or the
/// deadline passed.
async fn publish(
    shared: &Shared,
    sink: &mut futures_util::stream::SplitSink<Ws, Message>,
    opts: &Opts,
    deadline: Instant,
) -> Result<(), String> {
    let hysteresis = opts.window / 4;
    let mut min_progress = 0u64;
    for seq in 0..opts.messages {
        let target = (seq + 1).saturating_sub(opts.window);
        if min_progress < target {
            // Wait for a quarter of the window to drain, not for one message: far fewer scans
            // of the receivers, and the window still never exceeds W.
            let want = (target + hysteresis).min(seq);
            min_progress = shared
                .wait_progress(want.max(target), deadline)
                .await
                .ok_or_else(|| format!("timed out waiting for receivers before message {seq}"))?;
        }
        let text = payload(seq, u128::from(shared.now_ns()), opts.size);
        sink.send(Message::text(text))
            .await
            .map_err(|e| format!("publisher send failed at message {seq}: {e}"))?;
        shared.sent.store(seq + 1, Ordering::Relaxed);
    }
    Ok(())
}

struct Report {
    out: Value,
    exit: i32,
    /// Connections still open, to close after the report.
    conns: Vec<Ws>,
}

async fn run_fanout(opts: &Opts) -> Report {
    let run_start = Instant::now();
    let deadline = run_start + opts.timeout;
    let n = opts.clients;
    let rss_before = opts.pid.and_then(rss_kb);
    let shared = Arc::new(Shared {
        start: run_start,
        messages: opts.messages,
        slots: (0..=n).map(|_| Slot::default()).collect(),
        need: AtomicU64::new(0),
        progressed: Notify::new(),
        sent: AtomicU64::new(0),
    });
    let conn = Arc::new(ConnectState::default());
    let limit = Arc::new(Semaphore::new(opts.concurrency));
    let mut tasks = JoinSet::new();
    for idx in 0..n {
        let (shared, conn, limit, url) = (
            shared.clone(),
            conn.clone(),
            limit.clone(),
            opts.url.clone(),
        );
        tasks.spawn(async move {
            let Some(mut ws) = conn.connect(&url, &limit).await else {
                let slot = &shared.slots[idx];
                slot.stats.lock().unwrap().ended_early = Some("connect failed".into());
                shared.advance(slot, u64::MAX);
                return None;
            };
            shared.receive(idx, &mut ws, true).await;
            Some(ws)
        });
    }
    let (_, mut error, mut timed_out) = conn.settle(n, deadline).await;
    let connect_s = run_start.elapsed().as_secs_f64();

    let mut pub_result: Option<Result<(), String>> = None;
    let mut publish_start_ns = shared.now_ns();
    let mut rss_connected = None;
    let mut cpu_before = None;
    let mut publisher_ws: Option<Ws> = None;
    if error.is_none() {
        match connect(&opts.publish_url).await {
            Err(e) => error = Some(format!("publisher failed to connect: {e}")),
            Ok(ws) => {
                // Let the server settle (registrations, allocator) before measuring.
                tokio::time::sleep(Duration::from_millis(200)).await;
                rss_connected = opts.pid.and_then(rss_kb);
                cpu_before = server_cpu(opts);
                let (mut sink, mut stream) = ws.split();
                let echo = {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        shared.receive(n, &mut stream, false).await;
                        stream
                    })
                };
                publish_start_ns = shared.now_ns();
                let result = publish(&shared, &mut sink, opts, deadline).await;
                if let Err(e) = &result {
                    if Instant::now() >= deadline {
                        timed_out = true;
                    }
                    error.get_or_insert_with(|| e.clone());
                }
                // Wait for the echo so the publisher can be closed cleanly.
                let mut left = deadline.saturating_duration_since(Instant::now());
                if result.is_err() {
                    left = left.min(Duration::from_secs(2));
                }
                if let Ok(Ok(stream)) = tokio::time::timeout(left, echo).await {
                    publisher_ws = sink.reunite(stream).ok();
                }
                pub_result = Some(result);
            }
        }
    }

    // Wait for every receiver, within the deadline (or briefly, when the run already failed:
    // the receivers then wait for messages that will never come).
    let join_until = if error.is_some() {
        deadline.min(Instant::now() + Duration::from_secs(2))
    } else {
        deadline
    };
    let mut conns = Vec::with_capacity(n + 1);
    loop {
        let left = join_until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tasks.join_next()).await {
            Ok(Some(Ok(Some(ws)))) => conns.push(ws),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                }
                error.get_or_insert_with(|| "timed out waiting for receivers".to_string());
                tasks.abort_all();
                break;
            }
        }
    }
    let end_ns = shared.now_ns();
    let cpu_after = server_cpu(opts);
    let rss_after = opts.pid.and_then(rss_kb);
    let loadgen_cpu = cpu_secs("self");
    conns.extend(publisher_ws);

    // Totals.
    let mut hist = Hist::default();
    let (mut received, mut gaps, mut ooo, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut last_ns = publish_start_ns;
    let mut ended: BTreeMap<String, u64> = BTreeMap::new();
    for slot in &shared.slots[..n] {
        let st = slot.stats.lock().unwrap();
        received += st.received;
        gaps += st.gaps;
        ooo += st.out_of_order;
        malformed += st.malformed;
        hist.merge(&st.hist);
        if let Some(t) = st.finished_at {
            last_ns = last_ns.max(t);
        }
        if let Some(why) = &st.ended_early {
            *ended.entry(why.clone()).or_default() += 1;
        }
    }
    let publisher_end = shared.slots[n].stats.lock().unwrap().ended_early.clone();
    if let (Some(why), Some(Ok(()))) = (&publisher_end, &pub_result) {
        error.get_or_insert_with(|| format!("publisher connection ended early: {why}"));
    }
    let expected = n as u64 * opts.messages;
    let lost = expected.saturating_sub(received);
    let early: u64 = ended.values().sum();
    let elapsed_ns = if timed_out { end_ns } else { last_ns }.saturating_sub(publish_start_ns);
    let elapsed = elapsed_ns as f64 / 1e9;
    let rate = if elapsed > 0.0 {
        received as f64 / elapsed
    } else {
        0.0
    };
    let ms = |q: f64| hist.percentile(q).map(|us| us as f64 / 1000.0);
    let kb_per_conn = rss_before
        .zip(rss_connected)
        .map(|(b, a)| (a as f64 - b as f64) / (n + 1) as f64);
    let kb_per_conn_after = rss_before
        .zip(rss_after)
        .map(|(b, a)| (a as f64 - b as f64) / (n + 1) as f64);
    let server_cpu_s = cpu_before.zip(cpu_after).map(|(b, a)| a - b);

    let exit = if timed_out {
        EXIT_TIMEOUT
    } else if error.is_some() {
        EXIT_FAILED
    } else if opts.expect_no_loss && (lost > 0 || early > 0 || ooo > 0 || malformed > 0) {
        EXIT_LOSS
    } else {
        0
    };
    let out = json!({
        "label": opts.label,
        "mode": "fanout",
        "url": opts.url,
        "clients": n,
        "messages": opts.messages,
        "window": opts.window,
        "size": opts.size,
        "ok": exit == 0,
        "exit": exit,
        "timed_out": timed_out,
        "error": error,
        "connect_s": connect_s,
        "elapsed_s": elapsed,
        "sent": shared.sent.load(Ordering::Relaxed),
        "expected": expected,
        "deliveries": received,
        "deliveries_per_s": rate,
        "messages_per_s": rate / n as f64,
        "lat_p50_ms": ms(0.50),
        "lat_p90_ms": ms(0.90),
        "lat_p99_ms": ms(0.99),
        "lat_p999_ms": ms(0.999),
        "lat_max_ms": (hist.total > 0).then(|| hist.max as f64 / 1000.0),
        "lost": lost,
        "gaps": gaps,
        "out_of_order": ooo,
        "malformed": malformed,
        "evicted": early,
        "ended_early": ended,
        "publisher_ended_early": publisher_end,
        "server_pid": opts.pid,
        "rss_before_kb": rss_before,
        "rss_connected_kb": rss_connected,
        "rss_after_kb": rss_after,
        "kb_per_conn": kb_per_conn,
        "kb_per_conn_after": kb_per_conn_after,
        "server_cpu_s": server_cpu_s,
        "server_ns_per_delivery": server_cpu_s
            .filter(|_| received > 0)
            .map(|s| s * 1e9 / received as f64),
        "loadgen_cpu_s": loadgen_cpu,
    });

    Report { out, exit, conns }
}

// ---------------------------------------------------------------------------------------------
// Idle

async fn run_idle(opts: &Opts) -> Report {
    let run_start = Instant::now();
    let deadline = run_start + opts.timeout;
    let n = opts.clients;
    let rss_before = opts.pid.and_then(rss_kb);
    let conn = Arc::new(ConnectState::default());
    let limit = Arc::new(Semaphore::new(opts.concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let ended: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (conn, limit, url, mut stop, ended) = (
            conn.clone(),
            limit.clone(),
            opts.url.clone(),
            stop_rx.clone(),
            ended.clone(),
        );
        tasks.spawn(async move {
            let mut ws = conn.connect(&url, &limit).await?;
            // Read (answering pings) until told to stop or the server ends the stream.
            let why = loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Some(ws),
                    item = ws.next() => match item {
                        Some(Ok(Message::Close(f))) => {
                            break format!("close {}", f.map_or(0, |f| u16::from(f.code)));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break format!("error: {e}"),
                        None => break "eof without close frame".to_string(),
                    }
                }
            };
            *ended.lock().unwrap().entry(why).or_default() += 1;
            None
        });
    }
    let (connected, mut error, mut timed_out) = conn.settle(n, deadline).await;
    let connect_s = run_start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = opts.pid.and_then(rss_kb);
    let cpu_before = server_cpu(opts);
    let hold_until = Instant::now() + opts.hold;
    tokio::time::sleep_until(hold_until.min(deadline).into()).await;
    let rss_held = opts.pid.and_then(rss_kb);
    let cpu_after = server_cpu(opts);
    stop_tx.send_replace(true);
    let mut conns = Vec::with_capacity(n);
    let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
    let _ = tokio::time::timeout(left, async {
        while let Some(res) = tasks.join_next().await {
            if let Ok(Some(ws)) = res {
                conns.push(ws);
            }
        }
    })
    .await;
    tasks.abort_all();
    let still_open = conns.len();
    let close_start = Instant::now();
    close_all(conns, opts.concurrency, Duration::from_secs(10)).await;
    let close_s = close_start.elapsed().as_secs_f64();
    if Instant::now() > deadline + Duration::from_secs(1) {
        timed_out = true;
        error.get_or_insert_with(|| "timed out".to_string());
    }
    let ended = ended.lock().unwrap().clone();
    let early: u64 = ended.values().sum();
    let kb_per_conn = rss_before
        .zip(rss_connected)
        .map(|(b, a)| (a as f64 - b as f64) / n as f64);
    let exit = if timed_out {
        EXIT_TIMEOUT
    } else if error.is_some() {
        EXIT_FAILED
    } else if opts.expect_no_loss && early > 0 {
        EXIT_LOSS
    } else {
        0
    };
    let out = json!({
        "label": opts.label,
        "mode": "idle",
        "url": opts.url,
        "clients": n,
        "ok": exit == 0,
        "exit": exit,
        "timed_out": timed_out,
        "error": error,
        "connect_s": connect_s,
        "connected": connected,
        "still_open_at_end": still_open,
        "evicted": early,
        "ended_early": ended,
        "hold_s": opts.hold.as_secs_f64(),
        "close_s": close_s,
        "server_pid": opts.pid,
        "rss_before_kb": rss_before,
        "rss_connected_kb": rss_connected,
        "rss_after_kb": rss_held,
        "kb_per_conn": kb_per_conn,
        "server_cpu_s": cpu_before.zip(cpu_after).map(|(b, a)| a - b),
        "loadgen_cpu_s": cpu_secs("self"),
    });
    Report {
        out,
        exit,
        conns: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Churn

/// One cycle: connect, send, wait for the echo, end the connection the `i % 3`rd way.
async fn churn_cycle(url: &str, i: u64) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut ws = connect(url).await?;
    let text = format!("churn {i} {}", std::process::id());
    ws.send(Message::text(text.clone()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let echo = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == text => return Ok(()),
                Some(Ok(Message::Close(f))) => {
                    let code = f.map_or(0, |f| u16::from(f.code));
                    return Err(format!("closed by the server ({code}) before the echo"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("eof before the echo".to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), echo)
        .await
        .map_err(|_| "no echo within 5 s".to_string())??;
    match i % 3 {
        0 => {
            ws.close(None).await.map_err(|e| format!("close: {e}"))?;
            while let Some(Ok(_)) = ws.next().await {}
        }
        1 => drop(ws),
        _ => {
            if let MaybeTlsStream::Plain(tcp) = ws.get_mut() {
                // A masked text frame header announcing 100 bytes, and 10 of them.
                let mut half = vec![0x81, 0x80 | 100, 1, 2, 3, 4];
                half.extend_from_slice(&[b'x'; 10]);
                let _ = tcp.write_all(&half).await;
                let _ = tcp.set_zero_linger();
            }
            drop(ws);
        }
    }
    Ok(())
}

async fn run_churn(opts: &Opts) -> Report {
    let start = Instant::now();
    let stop_at = start + opts.duration;
    let rss_before = opts.pid.and_then(rss_kb);
    let cpu_before = server_cpu(opts);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let mut tasks = JoinSet::new();
    for _ in 0..opts.clients {
        let (url, next, failed, first_error) = (
            opts.url.clone(),
            next.clone(),
            failed.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            while Instant::now() < stop_at {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let outcome = tokio::time::timeout(Duration::from_secs(15), churn_cycle(&url, i))
                    .await
                    .unwrap_or_else(|_| Err("cycle timed out after 15 s".to_string()));
                if let Err(e) = outcome {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                }
            }
        });
    }
    let deadline = start + opts.timeout.max(opts.duration + Duration::from_secs(20));
    let timed_out = tokio::time::timeout_at(deadline.into(), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err();
    let elapsed = start.elapsed().as_secs_f64();
    let cycles = next.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let error = first_error.lock().unwrap().clone();
    let exit = if timed_out {
        EXIT_TIMEOUT
    } else if failed > 0 {
        EXIT_FAILED
    } else {
        0
    };
    let out = json!({
        "label": opts.label,
        "mode": "churn",
        "url": opts.url,
        "clients": opts.clients,
        "ok": exit == 0,
        "exit": exit,
        "timed_out": timed_out,
        "error": error,
        "elapsed_s": elapsed,
        "cycles": cycles,
        "failed": failed,
        "cycles_per_s": cycles as f64 / elapsed,
        "server_pid": opts.pid,
        "rss_before_kb": rss_before,
        "rss_after_kb": opts.pid.and_then(rss_kb),
        "server_cpu_s": cpu_before.zip(server_cpu(opts)).map(|(b, a)| a - b),
        "loadgen_cpu_s": cpu_secs("self"),
    });
    Report {
        out,
        exit,
        conns: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Output

fn f(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Number(x) => {
            let x = x.as_f64().unwrap_or(0.0);
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{x:.0}")
            } else {
                format!("{x:.3}")
            }
        }
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// `key` rounded to a whole number, with thousands separators.
fn int(v: &Value, key: &str) -> String {
    let Some(x) = v[key].as_f64() else {
        return "-".to_string();
    };
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn mb(v: &Value, key: &str) -> String {
    v[key]
        .as_f64()
        .map_or("-".to_string(), |kb| format!("{:.1} MB", kb / 1024.0))
}

fn print_human(v: &Value) {
    let label = v["label"].as_str().filter(|s| !s.is_empty());
    let label = label.map(|l| format!(" [{l}]")).unwrap_or_default();
    if v["mode"] == "fanout" {
        println!(
            "fanout{label}: {} clients x {} messages of {} B, window {} -> {}",
            f(v, "clients"),
            f(v, "messages"),
            f(v, "size"),
            f(v, "window"),
            v["url"].as_str().unwrap_or("")
        );
        println!("connected in {} s", f(v, "connect_s"));
        println!("published {} messages", int(v, "sent"));
        println!(
            "deliveries {} of {} in {} s = {}/s ({} messages/s)",
            int(v, "deliveries"),
            int(v, "expected"),
            f(v, "elapsed_s"),
            int(v, "deliveries_per_s"),
            int(v, "messages_per_s")
        );
        println!(
            "latency ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            f(v, "lat_p50_ms"),
            f(v, "lat_p90_ms"),
            f(v, "lat_p99_ms"),
            f(v, "lat_p999_ms"),
            f(v, "lat_max_ms")
        );
        println!(
            "lost {} (gaps {}), out of order {}, malformed {}, clients ended early {} {}",
            f(v, "lost"),
            f(v, "gaps"),
            f(v, "out_of_order"),
            f(v, "malformed"),
            f(v, "evicted"),
            v["ended_early"]
        );
        if let Some(why) = v["publisher_ended_early"].as_str() {
            println!("publisher's connection ended early: {why}");
        }
    } else if v["mode"] == "churn" {
        println!(
            "churn{label}: {} workers -> {}",
            f(v, "clients"),
            v["url"].as_str().unwrap_or("")
        );
        println!(
            "{} cycles in {} s = {}/s, {} failed",
            int(v, "cycles"),
            f(v, "elapsed_s"),
            int(v, "cycles_per_s"),
            f(v, "failed")
        );
    } else {
        println!(
            "idle{label}: {} clients -> {}",
            f(v, "clients"),
            v["url"].as_str().unwrap_or("")
        );
        println!(
            "connected {} in {} s; held {} s; {} still open at the end; closed in {} s",
            f(v, "connected"),
            f(v, "connect_s"),
            f(v, "hold_s"),
            f(v, "still_open_at_end"),
            f(v, "close_s")
        );
        println!(
            "clients ended early {} {}",
            f(v, "evicted"),
            v["ended_early"]
        );
    }
    if !v["server_pid"].is_null() {
        println!(
            "server RSS: before {}, connected {} ({} KB per connection), after {}",
            mb(v, "rss_before_kb"),
            mb(v, "rss_connected_kb"),
            f(v, "kb_per_conn"),
            mb(v, "rss_after_kb")
        );
        let per_delivery = if v["mode"] == "fanout" {
            format!(" ({} ns per delivery)", int(v, "server_ns_per_delivery"))
        } else {
            String::new()
        };
        println!(
            "CPU s: server {}{per_delivery}, loadgen {} (whole process)",
            f(v, "server_cpu_s"),
            f(v, "loadgen_cpu_s")
        );
    }
    if let Some(e) = v["error"].as_str() {
        println!("ERROR: {e}");
    }
    println!("result: {}", if v["ok"] == true { "ok" } else { "FAILED" });
}

#[tokio::main]
async fn main() {
    common::init_tracing();
    let opts = parse_opts();
    let report = match opts.mode {
        Mode::Fanout => run_fanout(&opts).await,
        Mode::Idle => run_idle(&opts).await,
        Mode::Churn => run_churn(&opts).await,
    };
    if opts.json {
        println!("{}", report.out);
    } else {
        print_human(&report.out);
    }
    let conns = report.conns;
    if opts.mode == Mode::Fanout && !opts.hold.is_zero() && !conns.is_empty() {
        // Keep the connections open, e.g. to inspect the server after the burst.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        eprintln!(
            "loadgen: holding {} connections for {:?}",
            conns.len(),
            opts.hold
        );
        tokio::time::sleep(opts.hold).await;
    }
    close_all(conns, opts.concurrency, Duration::from_secs(3)).await;
    std::process::exit(report.exit);
}
