//! Hostile input and faults over real sockets on 127.0.0.1: slow-loris handshakes, a message
//! split into endless continuation frames, absurd frame lengths, a ping flood from a peer that
//! never reads, a client whose socket is full (still heard), a slow reader that keeps making
//! progress (not cut off by the write timeout), connection churn with resets mid-frame,
//! non-reading clients among the readers of a broadcast stream, and shutdown in the middle of
//! a stream.
//!
//! Every wait is bounded (each test runs inside `bounded`), and the counts stay far below the
//! process's open-file limit (20 000): at most about 1 100 sockets per test.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};
use wshub::ws::{Client, Config, Disconnect, End, Handler, HandlerError, Heartbeat, Server};
use wshub::{CloseCode, Hub, HubConfig, Message};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs a whole test body within `secs`.
async fn bounded<T>(secs: u64, body: impl std::future::Future<Output = T>) -> T {
    timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"))
}

/// This process's resident memory in KiB (server and clients share the process).
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// A masked client frame, encoded by hand.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// One unmasked server frame at the start of `buf`: (opcode, payload, bytes used).
fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "a server frame must not be masked");
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let len = u64::from_be_bytes(buf[2..10].try_into().unwrap());
            (usize::try_from(len).expect("frame length"), 10)
        }
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < at + len {
        return None;
    }
    Some((buf[0] & 0x0f, buf[at..at + len].to_vec(), at + len))
}

/// The read side of a hand-written WebSocket client.
struct RawReader {
    rd: OwnedReadHalf,
    buf: Vec<u8>,
    pos: usize,
}

impl RawReader {
    /// The next server frame; `None` when the stream ended (EOF, reset, or a frame cut off).
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((op, payload, used)) = parse_server_frame(&self.buf[self.pos..]) {
                self.pos += used;
                return Some((op, payload));
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match self.rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads like a slow peer: at most `chunk` bytes every `pause`, until `count` data frames,
    /// a close frame (its code) or the end of the stream (`None`).
    async fn read_paced(
        &mut self,
        count: usize,
        chunk: usize,
        pause: Duration,
    ) -> (Vec<Vec<u8>>, Option<Option<u16>>) {
        let mut data = Vec::new();
        let mut bytes = vec![0u8; chunk];
        loop {
            while let Some((op, payload, used)) = parse_server_frame(&self.buf[self.pos..]) {
                self.pos += used;
                match op {
                    OP_CLOSE => {
                        let code = (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                        return (data, Some(code));
                    }
                    OP_TEXT | 0x2 => data.push(payload),
                    _ => {}
                }
                if data.len() == count {
                    return (data, None);
                }
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            tokio::time::sleep(pause).await;
            match self.rd.read(&mut bytes).await {
                Ok(0) | Err(_) => return (data, Some(None)),
                Ok(n) => self.buf.extend_from_slice(&bytes[..n]),
            }
        }
    }

    /// Reads up to the server's close frame and returns its code, with the data frames before
    /// it; `None` for the code when the stream ended without one.
    async fn read_to_close(&mut self) -> (Option<u16>, Vec<Vec<u8>>) {
        let mut data = Vec::new();
        while let Some((op, payload)) = self.next_frame().await {
            match op {
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (code, data);
                }
                OP_TEXT | 0x2 => data.push(payload),
                _ => {}
            }
        }
        (None, data)
    }
}

/// A hand-written WebSocket client: completes the opening handshake on `stream`, then splits.
async fn raw_handshake(mut stream: TcpStream, addr: SocketAddr) -> (RawReader, OwnedWriteHalf) {
    stream
        .write_all(upgrade_request(addr, "/").as_bytes())
        .await
        .expect("send upgrade");
    let mut buf = Vec::new();
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("handshake timed out")
            .expect("handshake read");
        assert!(n > 0, "connection closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    buf.drain(..end);
    let (rd, wr) = stream.into_split();
    (RawReader { rd, buf, pos: 0 }, wr)
}

async fn raw_connect(addr: SocketAddr) -> (RawReader, OwnedWriteHalf) {
    raw_handshake(TcpStream::connect(addr).await.expect("connect"), addr).await
}

/// One chat round trip through the relay; panics if it takes longer than `within`.
async fn round_trip(ws: &mut Ws, text: &str, within: Duration) -> Duration {
    let started = Instant::now();
    timeout(within, async {
        send_text(ws, text).await;
        loop {
            if next_text(ws).await == text {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("round trip {text:?} took longer than {within:?}"));
    started.elapsed()
}

/// A relay that also records how each connection ended.
#[derive(Clone, Default)]
struct Recorder {
    ended: Arc<Mutex<Vec<Disconnect>>>,
}

impl Handler for Recorder {
    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
        relay(client, msg)
    }

    fn on_disconnect(&self, disconnect: &Disconnect) {
        self.ended.lock().unwrap().push(disconnect.clone());
    }
}

/// A server whose accepted sockets have a small send buffer (inherited from the listener):
/// on loopback Linux autotunes an accepted socket's send buffer to about 4 MB, which would
/// make a non-reading client absorb megabytes before any write blocks.
async fn start_small_sndbuf(
    hub_config: HubConfig,
    config: Config,
    handler: impl Handler,
) -> (Server, SocketAddr) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(8 * 1024).expect("SO_SNDBUF");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let listener: TcpListener = socket.listen(1024).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let server = Server::new(Hub::with_config(hub_config), config, handler);
    let s = server.clone();
    tokio::spawn(async move { s.serve(listener).await });
    (server, addr)
}

/// `"SEQ,"` padded with `x` to `size` bytes.
fn numbered(seq: u64, size: usize) -> String {
    let mut s = format!("{seq},");
    while s.len() < size {
        s.push('x');
    }
    s
}

fn seq_of(text: &[u8]) -> u64 {
    let text = std::str::from_utf8(text).expect("utf-8");
    text.split(',')
        .next()
        .unwrap()
        .parse()
        .expect("sequence number")
}

/// Readers of a numbered broadcast stream: each reports its progress (next sequence number
/// expected) so a publisher can stay within a window of the slowest.
struct Readers {
    progress: Vec<Arc<AtomicU64>>,
    tasks: JoinSet<ReaderEnd>,
}

#[derive(Debug)]
struct ReaderEnd {
    received: u64,
    /// The first out-of-order sequence number: (expected, got).
    disorder: Option<(u64, u64)>,
    close: Option<CloseCode>,
    /// Kept open until the test drops it.
    _ws: Ws,
}

impl Readers {
    /// Connects `n` readers; each reads until `until` messages or the server's close.
    async fn connect(addr: SocketAddr, n: usize, until: u64) -> Readers {
        let mut readers = Readers {
            progress: Vec::new(),
            tasks: JoinSet::new(),
        };
        for _ in 0..n {
            let mut ws = connect(addr, "/").await;
            let progress = Arc::new(AtomicU64::new(0));
            readers.progress.push(progress.clone());
            readers.tasks.spawn(async move {
                let (mut received, mut disorder, mut close) = (0u64, None, None);
                while received < until {
                    let Some(item) = ws.next().await else { break };
                    match item {
                        Ok(Message::Text(t)) => {
                            let seq = seq_of(t.as_bytes());
                            if seq != received && disorder.is_none() {
                                disorder = Some((received, seq));
                            }
                            received += 1;
                            progress.store(received, Ordering::Release);
                        }
                        Ok(Message::Close(f)) => {
                            close = f.map(|f| f.code);
                            // tungstenite sends its reply on the next poll: read on to the
                            // end so the closing handshake completes.
                            let _ = timeout(PATIENCE, async {
                                while let Some(Ok(_)) = ws.next().await {}
                            })
                            .await;
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                // A reader that stopped must not hold the publisher's window.
                progress.store(u64::MAX, Ordering::Release);
                ReaderEnd {
                    received,
                    disorder,
                    close,
                    _ws: ws,
                }
            });
        }
        readers
    }
}

impl Readers {
    fn min_progress(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Waits for every reader to finish.
    async fn finish(mut self) -> Vec<ReaderEnd> {
        let mut ends = Vec::new();
        while let Some(end) = timeout(PATIENCE, self.tasks.join_next())
            .await
            .expect("readers did not finish in time")
        {
            ends.push(end.expect("reader panicked"));
        }
        ends
    }
}

/// Broadcasts numbered messages `0..count` of `size` bytes, never more than `window` ahead of
/// the slowest reader, and stops early when the hub refuses a message (returns 0). Returns, per
/// message broadcast, how many clients accepted it.
async fn publish(
    hub: &Hub<Message>,
    readers: &Readers,
    count: u64,
    window: u64,
    size: usize,
) -> Vec<usize> {
    let mut accepted = Vec::new();
    for seq in 0..count {
        let deadline = Instant::now() + PATIENCE;
        while readers.min_progress().saturating_add(window) <= seq {
            assert!(
                Instant::now() < deadline,
                "readers stalled at message {seq}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let n = hub.broadcast(Message::text(numbered(seq, size)));
        if n == 0 {
            break;
        }
        accepted.push(n);
        if seq % 16 == 15 {
            tokio::task::yield_now().await;
        }
    }
    accepted
}

// ---------------------------------------------------------------------------------------------
// Slow loris

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_half_handshakes_time_out_and_do_not_delay_a_chat() {
    const STALLED: usize = 1000;
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
    // How long after the handshake timeout a stalled socket may still be open.
    const SLACK: Duration = Duration::from_millis(1500);
    bounded(30, async {
        let config = Config::default().handshake_timeout(HANDSHAKE_TIMEOUT);
        let (server, addr) = start(HubConfig::default(), config, relay).await;
        let request = upgrade_request(addr, "/");
        let half = &request.as_bytes()[..request.len() / 2];

        let opening = Instant::now();
        let stalled: Vec<(TcpStream, Instant)> = futures_util::stream::iter(0..STALLED)
            .map(|_| async move {
                // Taken before connecting: the server's handshake timer starts later.
                let at = Instant::now();
                let mut s = TcpStream::connect(addr).await.expect("connect");
                s.write_all(half).await.expect("half a request");
                (s, at)
            })
            .buffer_unordered(50)
            .collect()
            .await;
        let opened_in = opening.elapsed();
        assert!(
            opened_in < HANDSHAKE_TIMEOUT / 2,
            "opening {STALLED} connections took {opened_in:?}: too slow to test the timeout"
        );
        wait_for(|| server.connection_count() >= STALLED).await;

        // A normal client is served at once, while every stalled handshake is pending.
        let served = Instant::now();
        let mut chat = timeout(Duration::from_secs(1), async {
            let mut ws = connect(addr, "/").await;
            send_text(&mut ws, "hello").await;
            assert_eq!(next_text(&mut ws).await, "hello");
            ws
        })
        .await
        .expect("a normal client was not served within 1 s among 1000 stalled handshakes");
        let served_in = served.elapsed();
        assert!(
            server.connection_count() > STALLED,
            "the stalled handshakes ended before the chat was served ({} open)",
            server.connection_count()
        );

        // Every stalled socket reads EOF (or a reset) shortly after the handshake timeout,
        // not before it.
        let mut reads = JoinSet::new();
        for (mut s, at) in stalled {
            reads.spawn(async move {
                let mut b = [0u8; 256];
                let mut answered = 0;
                let outcome = loop {
                    match timeout_at(at + HANDSHAKE_TIMEOUT + SLACK, s.read(&mut b)).await {
                        Err(_) => break Err("still open"),
                        Ok(Ok(0)) => break Ok("eof"),
                        Ok(Err(_)) => break Ok("reset"),
                        Ok(Ok(n)) => answered += n,
                    }
                };
                (outcome, at.elapsed(), answered)
            });
        }
        let (mut open, mut early, mut answered) = (0, 0, 0);
        let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
        while let Some(r) = reads.join_next().await {
            let (outcome, after, bytes) = r.unwrap();
            match outcome {
                Err(_) => open += 1,
                Ok(_) => {
                    first = first.min(after);
                    last = last.max(after);
                    if after < HANDSHAKE_TIMEOUT * 9 / 10 {
                        early += 1;
                    }
                }
            }
            if bytes > 0 {
                answered += 1;
            }
        }
        assert_eq!(
            open, 0,
            "{open} of {STALLED} stalled sockets still open {:?} after the handshake timeout",
            SLACK
        );
        assert_eq!(
            early, 0,
            "{early} stalled sockets closed before the handshake timeout (first after {first:?})"
        );
        eprintln!(
            "slow loris: opened {STALLED} in {opened_in:?}; chat served in {served_in:?}; \
             stalled sockets closed {first:?}..{last:?} after connecting; {answered} got bytes"
        );
        wait_for(|| server.connection_count() == 1).await;
        round_trip(&mut chat, "still here", Duration::from_secs(1)).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Oversize input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_continuation_frames_close_with_1009_within_twice_the_limit() {
    const LIMIT: usize = 16 * 1024;
    const PIECE: usize = 1024;
    bounded(20, async {
        let config = Config::default().max_message_size(LIMIT);
        let (server, addr) = start(HubConfig::default(), config, relay).await;
        let mut other = connect(addr, "/").await;
        let (mut rd, mut wr) = raw_connect(addr).await;
        wait_for(|| server.hub().client_count() == 2).await;

        let closed = Arc::new(AtomicBool::new(false));
        let reader = {
            let closed = closed.clone();
            tokio::spawn(async move {
                let code = rd.read_to_close().await.0;
                closed.store(true, Ordering::Release);
                code
            })
        };
        // One message, never finished: a text frame without FIN, then continuations. Stop at
        // the close, or at twice the limit: a server that waits for more is buffering.
        let piece = vec![b'a'; PIECE];
        let mut sent = 0;
        while !closed.load(Ordering::Acquire) && sent < 2 * LIMIT {
            let opcode = if sent == 0 { OP_TEXT } else { OP_CONT };
            if wr.write_all(&frame(opcode, false, &piece)).await.is_err() {
                break;
            }
            sent += PIECE;
            // Let the server read this piece before the next one.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let sent_at_close = if closed.load(Ordering::Acquire) { Some(sent) } else { None };
        let code = timeout(Duration::from_secs(5), reader)
            .await
            .unwrap_or_else(|_| {
                panic!("no close within 5 s after {sent} bytes of a {LIMIT}-byte limit")
            })
            .unwrap();
        assert_eq!(code, Some(1009), "close code after {sent} bytes");
        eprintln!(
            "continuations: 1009 after {sent} bytes sent (close seen while sending: {sent_at_close:?})"
        );
        wait_for(|| server.hub().client_count() == 1).await;
        wait_for(|| server.connection_count() == 1).await;
        round_trip(&mut other, "unaffected", Duration::from_secs(1)).await;
        drop(wr);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_frame_lengths_close_with_1009_or_1002_and_others_are_served() {
    bounded(20, async {
        let config = Config::default().max_message_size(16 * 1024);
        let (server, addr) = start(HubConfig::default(), config, relay).await;
        let mut other = connect(addr, "/").await;
        wait_for(|| server.hub().client_count() == 1).await;
        let rss_before = rss_kb();
        for declared in [i64::MAX as u64, u64::MAX, 1 << 63, 1 << 30] {
            let (mut rd, mut wr) = raw_connect(addr).await;
            wait_for(|| server.hub().client_count() == 2).await;
            // Binary, FIN, masked, 64-bit length; then the mask and a few payload bytes.
            let mut header = vec![0x82, 0x80 | 127];
            header.extend_from_slice(&declared.to_be_bytes());
            header.extend_from_slice(&MASK);
            header.extend_from_slice(b"abcd");
            wr.write_all(&header).await.expect("send header");
            let (code, _) = timeout(Duration::from_secs(5), rd.read_to_close())
                .await
                .unwrap_or_else(|_| panic!("no close for a frame declaring {declared:#x} bytes"));
            assert!(
                matches!(code, Some(1009 | 1002)),
                "a frame declaring {declared:#x} bytes: close code {code:?}, want 1009 or 1002"
            );
            wait_for(|| server.connection_count() == 1).await;
            round_trip(
                &mut other,
                &format!("after {declared:#x}"),
                Duration::from_secs(1),
            )
            .await;
        }
        let grown = rss_kb().saturating_sub(rss_before);
        assert!(grown < 50 * 1024, "RSS grew by {grown} KiB");
        // New clients are still welcome.
        let mut late = connect(addr, "/").await;
        wait_for(|| server.hub().client_count() == 2).await;
        round_trip(&mut late, "late", Duration::from_secs(1)).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Ping flood

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_from_a_non_reader_is_cut_off_and_others_stay_served() {
    const FLOOD: Duration = Duration::from_secs(2);
    bounded(30, async {
        let heartbeat = Heartbeat::off().write_timeout(Some(Duration::from_millis(500)));
        let config = Config::default().heartbeat(heartbeat);
        let (server, addr) = start(HubConfig::default(), config, relay).await;
        let mut other = connect(addr, "/").await;
        let (mut rd, mut wr) = raw_connect(addr).await;
        wait_for(|| server.hub().client_count() == 2).await;
        let rss_before = rss_kb();

        let flood = tokio::spawn(async move {
            let ping = frame(OP_PING, true, &[b'p'; 125]);
            let burst = ping.repeat(64 * 1024 / ping.len());
            let until = Instant::now() + FLOOD;
            let mut bytes = 0u64;
            let mut cut_off = None;
            while Instant::now() < until {
                match timeout_at(until, wr.write_all(&burst)).await {
                    Ok(Ok(())) => bytes += burst.len() as u64,
                    Ok(Err(e)) => {
                        cut_off = Some(e.kind());
                        break;
                    }
                    Err(_) => break, // still blocked when the flood ends
                }
            }
            (bytes, cut_off, wr)
        });

        // The other client keeps chatting through the flood.
        let mut worst = Duration::ZERO;
        let mut trips = 0;
        while !flood.is_finished() {
            let rt = round_trip(&mut other, &format!("rt {trips}"), Duration::from_secs(1)).await;
            worst = worst.max(rt);
            trips += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (bytes, cut_off, wr) = flood.await.unwrap();

        // The flooder is gone on the server's side, and its socket ends.
        timeout(Duration::from_secs(2), async {
            while server.connection_count() != 1 || server.hub().client_count() != 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the flooding connection is still open 2 s after the flood ({} connections)",
                server.connection_count()
            )
        });
        let (code, _) = timeout(Duration::from_secs(2), rd.read_to_close())
            .await
            .expect("the flooder's socket did not end");
        drop(wr);
        let grown = rss_kb().saturating_sub(rss_before);
        eprintln!(
            "ping flood: {} KiB of pings sent, cut off: {cut_off:?}, close code {code:?}; \
             {trips} round trips, worst {worst:?}; RSS grew {grown} KiB",
            bytes / 1024
        );
        assert!(
            grown < 50 * 1024,
            "RSS grew by {grown} KiB during the ping flood"
        );
        round_trip(&mut other, "after the flood", Duration::from_secs(1)).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Blocked writes

/// A client that connects through a socket with a small receive buffer.
async fn small_rcvbuf_client(addr: SocketAddr) -> (RawReader, OwnedWriteHalf) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    raw_handshake(stream, addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_socket_is_full_is_still_heard() {
    const BURST: u64 = 200;
    bounded(20, async {
        // A long write timeout: this is about reading while a write is blocked, not the drop.
        let heartbeat = Heartbeat::off().write_timeout(Some(Duration::from_secs(5)));
        let (server, addr) = start_small_sndbuf(
            HubConfig::default().mailbox_capacity(4096),
            Config::default().heartbeat(heartbeat),
            relay,
        )
        .await;
        let mut listener = connect(addr, "/").await;
        let (_stuck_rd, mut stuck_wr) = small_rcvbuf_client(addr).await;
        wait_for(|| server.hub().client_count() == 2).await;
        // 200 KiB to a client that does not read: its socket fills and the server's write to
        // it blocks with data still to send.
        for seq in 0..BURST {
            server.hub().broadcast(Message::text(numbered(seq, 1024)));
        }
        for seq in 0..BURST {
            assert_eq!(seq_of(next_text(&mut listener).await.as_bytes()), seq);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            server.connection_count(),
            2,
            "the stuck client was dropped early"
        );

        // What the stuck client says is still read and relayed.
        stuck_wr
            .write_all(&frame(OP_TEXT, true, b"from the stuck client"))
            .await
            .expect("send");
        let heard = timeout(Duration::from_secs(1), next_text(&mut listener)).await;
        assert_eq!(
            heard.ok().as_deref(),
            Some("from the stuck client"),
            "a message from a client whose socket is full was not read within 1 s"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_making_progress_outlives_the_write_timeout() {
    const MESSAGES: usize = 600;
    const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
    bounded(20, async {
        let heartbeat = Heartbeat::off().write_timeout(Some(WRITE_TIMEOUT));
        let (server, addr) = start_small_sndbuf(
            HubConfig::default().mailbox_capacity(4096),
            Config::default().heartbeat(heartbeat),
            relay,
        )
        .await;
        let (mut slow, _slow_wr) = small_rcvbuf_client(addr).await;
        wait_for(|| server.hub().client_count() == 1).await;
        // 600 KiB at once; the client takes at most 8 KiB every 20 ms (1.5 s at least), so the
        // server's write stays blocked well past the write timeout, progressing every 20 ms.
        for seq in 0..MESSAGES as u64 {
            server.hub().broadcast(Message::text(numbered(seq, 1024)));
        }
        let started = Instant::now();
        let (data, ended) = slow
            .read_paced(MESSAGES, 8 * 1024, Duration::from_millis(20))
            .await;
        let took = started.elapsed();
        let in_order = data.iter().enumerate().all(|(i, d)| seq_of(d) == i as u64);
        eprintln!(
            "slow reader: {} of {MESSAGES} messages in {took:?}, ended {ended:?}",
            data.len()
        );
        assert!(
            took > WRITE_TIMEOUT * 2,
            "drained in {took:?}: too fast to test the write timeout"
        );
        assert_eq!(
            (data.len(), ended),
            (MESSAGES, None),
            "a reader making progress every 20 ms was cut off after {took:?} \
             (write timeout {WRITE_TIMEOUT:?})"
        );
        assert!(in_order, "messages out of order");
        assert_eq!(server.connection_count(), 1);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Churn

/// One connect/send/close cycle, in one of three ways.
async fn churn_cycle(addr: SocketAddr, i: usize) -> Result<(), String> {
    match i % 3 {
        // Polite: a real client sends, closes and waits for the server's close.
        0 => {
            let mut ws = connect(addr, "/").await;
            ws.send(Message::text(format!("polite {i}")))
                .await
                .map_err(|e| e.to_string())?;
            ws.close(None).await.map_err(|e| e.to_string())?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok(())
        }
        // Reset mid-frame: a whole message, then half a frame, then RST (every other one) or
        // FIN.
        1 => {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let (rd, mut wr) = raw_handshake(stream, addr).await;
            wr.write_all(&frame(OP_TEXT, true, format!("reset {i}").as_bytes()))
                .await
                .map_err(|e| e.to_string())?;
            let next = frame(OP_TEXT, true, &[b'h'; 200]);
            wr.write_all(&next[..next.len() / 2])
                .await
                .map_err(|e| e.to_string())?;
            let stream = rd.rd.reunite(wr).map_err(|e| e.to_string())?;
            if i % 2 == 0 {
                stream.set_zero_linger().map_err(|e| e.to_string())?;
            }
            drop(stream);
            Ok(())
        }
        // Abrupt: a whole message, then the TCP stream is dropped without a close frame.
        _ => {
            let (rd, mut wr) = raw_connect(addr).await;
            wr.write_all(&frame(OP_TEXT, true, format!("abrupt {i}").as_bytes()))
                .await
                .map_err(|e| e.to_string())?;
            drop((rd, wr));
            Ok(())
        }
    }
}

async fn churn(addr: SocketAddr, cycles: std::ops::Range<usize>, concurrency: usize) {
    let failures: Vec<String> = futures_util::stream::iter(cycles)
        .map(|i| async move {
            match timeout(Duration::from_secs(5), churn_cycle(addr, i)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("cycle {i}: {e}")),
                Err(_) => Some(format!("cycle {i}: timed out")),
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(
        failures.is_empty(),
        "{} cycles failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_resets_mid_frame_leaves_no_clients_and_no_growth() {
    const CYCLES: usize = 3000;
    const WARMUP: usize = 600;
    const CONCURRENCY: usize = 16;
    bounded(45, async {
        let (server, addr) = start(HubConfig::default(), Config::default(), relay).await;
        let started = Instant::now();
        churn(addr, 0..WARMUP, CONCURRENCY).await;
        wait_for(|| server.connection_count() == 0).await;
        let rss_warm = rss_kb();
        churn(addr, WARMUP..CYCLES, CONCURRENCY).await;
        wait_for(|| server.hub().client_count() == 0).await;
        wait_for(|| server.connection_count() == 0).await;
        let rss_end = rss_kb();
        let stats = server.hub().stats();
        eprintln!(
            "churn: {CYCLES} cycles in {:?}; RSS after warm-up {rss_warm} KiB, at the end \
             {rss_end} KiB; {stats:?}",
            started.elapsed()
        );
        assert_eq!(stats.connected, 0);
        assert_eq!(stats.sent, stats.delivered + stats.dropped, "{stats:?}");
        let grown = rss_end.saturating_sub(rss_warm);
        assert!(grown < 10 * 1024, "RSS grew {grown} KiB after the warm-up");
        // Still serving.
        let mut ws = connect(addr, "/").await;
        wait_for(|| server.hub().client_count() == 1).await;
        round_trip(&mut ws, "after churn", Duration::from_secs(1)).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Non-readers among readers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_readers_are_evicted_while_readers_get_every_message_in_order() {
    const NON_READERS: usize = 500;
    const READERS: usize = 20;
    const MESSAGES: u64 = 1000;
    const SIZE: usize = 512;
    const CAPACITY: usize = 64;
    bounded(40, async {
        let recorder = Recorder::default();
        let heartbeat = Heartbeat::off().write_timeout(Some(Duration::from_secs(2)));
        let (server, addr) = start_small_sndbuf(
            HubConfig::default().mailbox_capacity(CAPACITY),
            Config::default().heartbeat(heartbeat),
            recorder.clone(),
        )
        .await;
        // Non-readers with a small receive buffer: their sockets fill after a few KiB.
        let non_readers: Vec<(RawReader, OwnedWriteHalf)> =
            futures_util::stream::iter(0..NON_READERS)
                .map(|_| async move {
                    let socket = TcpSocket::new_v4().expect("socket");
                    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
                    let stream = socket.connect(addr).await.expect("connect");
                    raw_handshake(stream, addr).await
                })
                .buffer_unordered(50)
                .collect()
                .await;
        let readers = Readers::connect(addr, READERS, MESSAGES).await;
        wait_for(|| server.hub().client_count() == NON_READERS + READERS).await;

        let started = Instant::now();
        let accepted = publish(server.hub(), &readers, MESSAGES, CAPACITY as u64 / 2, SIZE).await;
        assert_eq!(accepted.len() as u64, MESSAGES, "the hub refused a message");
        let ends = readers.finish().await;
        let published_in = started.elapsed();
        for (i, end) in ends.iter().enumerate() {
            assert_eq!(
                (end.received, end.disorder, end.close),
                (MESSAGES, None, None),
                "reader {i}: (received, first out of order, close)"
            );
        }
        // Every non-reader is gone from the hub and from the server.
        wait_for(|| server.hub().client_count() == READERS).await;
        wait_for(|| server.connection_count() == READERS).await;
        let stats = server.hub().stats();
        assert_eq!(stats.sent, stats.delivered + stats.dropped, "{stats:?}");

        // Each non-reader, when it finally reads, finds an in-order prefix of the stream, then
        // 1008 or the end of the stream (dropped by the write timeout).
        let mut reads = JoinSet::new();
        for (mut rd, wr) in non_readers {
            reads.spawn(async move {
                let (code, data) = timeout(PATIENCE, rd.read_to_close())
                    .await
                    .expect("a non-reader's socket did not end");
                drop(wr);
                let in_order = data.iter().enumerate().all(|(i, d)| seq_of(d) == i as u64);
                (code, data.len(), in_order)
            });
        }
        let (mut with_1008, mut dropped, mut max_seen) = (0, 0, 0);
        while let Some(r) = reads.join_next().await {
            let (code, seen, in_order) = r.unwrap();
            assert!(in_order, "a non-reader got messages out of order");
            assert!(
                matches!(code, None | Some(1008)),
                "a non-reader got close code {code:?}"
            );
            if code.is_some() {
                with_1008 += 1;
            } else {
                dropped += 1;
            }
            max_seen = max_seen.max(seen);
        }
        let ended = recorder.ended.lock().unwrap().clone();
        assert_eq!(
            ended.len(),
            NON_READERS,
            "disconnects before the readers closed"
        );
        let evicted_first = ended
            .iter()
            .filter(|d| d.close_reason == Some(wshub::CloseReason::Evicted))
            .count();
        let write_timeouts = ended.iter().filter(|d| d.end == End::WriteTimeout).count();
        let other: Vec<&Disconnect> = ended
            .iter()
            .filter(|d| d.close_reason != Some(wshub::CloseReason::Evicted))
            .filter(|d| d.end != End::WriteTimeout)
            .collect();
        eprintln!(
            "non-readers: {MESSAGES} messages to {READERS} readers in {published_in:?}; \
             {with_1008} non-readers saw 1008, {dropped} saw the stream end; server side: \
             {evicted_first} closed as evicted, {write_timeouts} write timeouts; \
             at most {max_seen} messages reached a non-reader; {stats:?}"
        );
        assert!(other.is_empty(), "non-readers ended otherwise: {other:?}");
        assert_eq!(
            stats.evicted, NON_READERS as u64,
            "every non-reader (and no reader) is evicted by the hub"
        );

        drop(ends);
        wait_for(|| server.hub().client_count() == 0).await;
        let stats = server.hub().stats();
        assert_eq!(stats.sent, stats.delivered + stats.dropped, "{stats:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown under a stream

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_a_broadcast_stream_delivers_every_message_up_to_1001() {
    const READERS: usize = 20;
    bounded(30, async {
        let recorder = Recorder::default();
        let (server, addr) = start(HubConfig::default(), Config::default(), recorder.clone()).await;
        let readers = Readers::connect(addr, READERS, u64::MAX).await;
        wait_for(|| server.hub().client_count() == READERS).await;

        let stop = {
            let server = server.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                server.shutdown(Duration::from_secs(5)).await
            })
        };
        let accepted = publish(server.hub(), &readers, u64::MAX, 128, 64).await;
        let report = stop.await.unwrap();
        let sent = accepted.len() as u64;
        assert!(
            accepted.iter().all(|&n| n == READERS),
            "a broadcast reached fewer than {READERS} clients"
        );
        let ends = readers.finish().await;
        for (i, end) in ends.iter().enumerate() {
            assert_eq!(
                (end.received, end.disorder, end.close),
                (sent, None, Some(CloseCode::Away)),
                "reader {i}: (received, first out of order, close) of {sent} broadcast"
            );
        }
        assert_eq!((report.remaining, report.discarded), (0, 0), "{report:?}");
        wait_for(|| server.connection_count() == 0).await;
        let stats = server.hub().stats();
        eprintln!("shutdown: {sent} messages broadcast before the shutdown; {report:?}; {stats:?}");
        assert_eq!(stats.sent, READERS as u64 * sent, "{stats:?}");
        assert_eq!(stats.sent, stats.delivered + stats.dropped, "{stats:?}");
        assert_eq!(stats.dropped, 0, "{stats:?}");
        let ended = recorder.ended.lock().unwrap();
        assert_eq!(ended.len(), READERS);
        // Each closing handshake completed: the server sent 1001 and the client answered.
        assert!(
            ended
                .iter()
                .all(|d| d.sent_code == Some(CloseCode::Away) && d.end == End::Closed),
            "{ended:?}"
        );
    })
    .await;
}
