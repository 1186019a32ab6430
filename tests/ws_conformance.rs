//! Server-side protocol conformance (RFC 6455): what Autobahn|Testsuite sections 1-7 check
//! (framing, pings and pongs, reserved bits, opcodes, fragmentation, UTF-8, the closing
//! handshake), as Rust tests against an echo server on 127.0.0.1.
//!
//! The cases talk through [`Raw`], a client written here: the upgrade handshake by hand,
//! frames built and parsed byte by byte, so malformed input can be sent and everything the
//! server writes is checked (unmasked, no RSV bits, minimal length encoding). Every read has
//! a timeout, so no case can hang.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wshub::ws::{Client, Config, HandlerError, Server};
use wshub::{HubConfig, Message};

/// How long one read or write may take before the case fails.
const WAIT: Duration = Duration::from_secs(5);

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The sample key of RFC 6455 §1.3 and the accept value it must produce.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Autobahn's UTF-8 sample: "κόσμε", a lone surrogate (U+D800, invalid), "edited".
const KOSME_SURROGATE_EDITED: &[u8] =
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";

/// Echoes every message to its sender.
fn echo(client: &Client, msg: Message) -> Result<(), HandlerError> {
    client.send(msg)?;
    Ok(())
}

async fn echo_server() -> (Server, SocketAddr) {
    common::start(HubConfig::default(), Config::default(), echo).await
}

/// A frame to send.
#[derive(Debug, Clone)]
struct Out {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

/// A final, masked frame with no RSV bits.
fn frame(opcode: u8, payload: impl Into<Vec<u8>>) -> Out {
    Out {
        fin: true,
        rsv: 0,
        opcode,
        masked: true,
        payload: payload.into(),
    }
}

/// A text message sent as one frame per byte: TEXT, then CONTINUATIONs, the last final.
fn byte_fragments(text: &[u8]) -> Vec<Out> {
    let n = text.len();
    text.iter()
        .enumerate()
        .map(|(i, b)| {
            let opcode = if i == 0 { TEXT } else { CONTINUATION };
            let f = frame(opcode, vec![*b]);
            if i + 1 < n {
                f.more()
            } else {
                f
            }
        })
        .collect()
}

impl Out {
    /// FIN = 0: more fragments follow.
    fn more(mut self) -> Self {
        self.fin = false;
        self
    }

    /// Sets the three RSV bits (RSV1 is 4, RSV2 2, RSV3 1).
    fn rsv(mut self, rsv: u8) -> Self {
        self.rsv = rsv;
        self
    }

    fn unmasked(mut self) -> Self {
        self.masked = false;
        self
    }
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A frame the server sent.
#[derive(Debug)]
struct In {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl In {
    fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

fn opcode_name(opcode: u8) -> String {
    match opcode {
        CONTINUATION => "continuation".into(),
        TEXT => "text".into(),
        BINARY => "binary".into(),
        CLOSE => "close".into(),
        PING => "ping".into(),
        PONG => "pong".into(),
        other => format!("opcode {other:#x}"),
    }
}

fn describe(f: &In) -> String {
    let mut s = format!(
        "{} frame (fin={}, {} bytes",
        opcode_name(f.opcode),
        f.fin,
        f.payload.len()
    );
    if f.opcode == CLOSE {
        s += &format!(", code {:?}", f.close_code());
    }
    let shown = &f.payload[..f.payload.len().min(32)];
    s += &format!(", payload starts {shown:?})");
    s
}

/// A hand-driven WebSocket client.
struct Raw {
    stream: TcpStream,
    /// Bytes read and not parsed yet.
    buf: Vec<u8>,
    /// Frames sent, to vary the masking key.
    sent: u32,
    /// Names the case in failure messages.
    case: String,
}

impl Raw {
    /// Connects and completes the opening handshake by hand.
    async fn connect(addr: SocketAddr, case: impl Into<String>) -> Raw {
        let case = case.into();
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
                .await
                .expect("handshake timed out")
                .expect("handshake read");
            assert!(n > 0, "[{case}] connection closed during the handshake");
        };
        let rest = buf.split_off(end);
        let head = String::from_utf8(buf).expect("response head is not UTF-8");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        assert!(status.starts_with("HTTP/1.1 101 "), "[{case}] {head}");
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        assert_eq!(
            header("sec-websocket-accept").as_deref(),
            Some(ACCEPT),
            "{head}"
        );
        assert!(
            header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
            "{head}"
        );
        assert!(
            header("connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
            "{head}"
        );
        Raw {
            stream,
            buf: rest,
            sent: 0,
            case,
        }
    }

    /// The bytes of `out` on the wire, masked with a key that differs per frame.
    fn encode(&mut self, out: &Out) -> Vec<u8> {
        self.sent += 1;
        let key = self
            .sent
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(0x1234_5678)
            .to_be_bytes();
        let mut bytes = vec![(u8::from(out.fin) << 7) | ((out.rsv & 7) << 4) | (out.opcode & 0xF)];
        let mask_bit = if out.masked { 0x80 } else { 0 };
        let len = out.payload.len();
        if len < 126 {
            bytes.push(mask_bit | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&len.to_be_bytes());
        } else {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if out.masked {
            bytes.extend_from_slice(&key);
            bytes.extend(out.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            bytes.extend_from_slice(&out.payload);
        }
        bytes
    }

    async fn write(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .unwrap_or_else(|_| panic!("[{}] write timed out", self.case))
            .unwrap_or_else(|e| panic!("[{}] write failed: {e}", self.case));
    }

    async fn send(&mut self, out: Out) {
        let bytes = self.encode(&out);
        self.write(&bytes).await;
    }

    /// Sends `frames` in one write.
    async fn send_all(&mut self, frames: impl IntoIterator<Item = Out>) {
        let mut bytes = Vec::new();
        for out in frames {
            bytes.extend(self.encode(&out));
        }
        self.write(&bytes).await;
    }

    /// Reads until `n` bytes are buffered; false at EOF.
    async fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            self.buf.reserve((n - self.buf.len()).max(4096));
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn need(&mut self, n: usize) -> io::Result<()> {
        if self.fill(n).await? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }

    /// Parses the next server frame; None at EOF between frames.
    async fn read_frame(&mut self) -> io::Result<Option<In>> {
        if !self.fill(2).await? {
            return if self.buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let case = &self.case;
        assert_eq!(
            b0 & 0x70,
            0,
            "[{case}] server frame with RSV bits: {b0:#04x}"
        );
        assert_eq!(b1 & 0x80, 0, "[{case}] server frames must not be masked");
        let (header, len) = match b1 & 0x7F {
            126 => {
                self.need(4).await?;
                let len = u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                assert!(
                    len >= 126,
                    "[{}] non-minimal 16-bit length {len}",
                    self.case
                );
                (4, len)
            }
            127 => {
                self.need(10).await?;
                let len = u64::from_be_bytes(self.buf[2..10].try_into().unwrap());
                assert!(
                    len > 0xFFFF,
                    "[{}] non-minimal 64-bit length {len}",
                    self.case
                );
                assert_eq!(len >> 63, 0, "[{}] 64-bit length with MSB set", self.case);
                (10, len)
            }
            n => (2, u64::from(n)),
        };
        let total = header + usize::try_from(len).unwrap();
        self.need(total).await?;
        let payload = self.buf[header..total].to_vec();
        self.buf.drain(..total);
        Ok(Some(In {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            payload,
        }))
    }

    /// The next frame (None at EOF); the case fails if nothing comes within [`WAIT`].
    async fn next_frame(&mut self) -> io::Result<Option<In>> {
        match tokio::time::timeout(WAIT, self.read_frame()).await {
            Ok(read) => read,
            Err(_) => panic!("[{}] nothing from the server within {WAIT:?}", self.case),
        }
    }

    async fn expect_frame(&mut self) -> In {
        match self.next_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => panic!("[{}] connection closed; a frame was expected", self.case),
            Err(e) => panic!("[{}] read failed; a frame was expected: {e}", self.case),
        }
    }

    /// The next message is `opcode` with `want` (reassembled if the server fragments it).
    async fn expect_message(&mut self, opcode: u8, want: &[u8]) {
        let first = self.expect_frame().await;
        assert_eq!(
            first.opcode,
            opcode,
            "[{}] expected a {} message, got a {}",
            self.case,
            opcode_name(opcode),
            describe(&first)
        );
        let (mut got, mut fin) = (first.payload, first.fin);
        while !fin {
            let f = self.expect_frame().await;
            assert_eq!(
                f.opcode,
                CONTINUATION,
                "[{}] got {}",
                self.case,
                describe(&f)
            );
            got.extend(f.payload);
            fin = f.fin;
        }
        assert_payload(&self.case, &got, want);
    }

    async fn expect_pong(&mut self, want: &[u8]) {
        let f = self.expect_frame().await;
        assert!(
            f.opcode == PONG && f.fin,
            "[{}] expected a pong, got a {}",
            self.case,
            describe(&f)
        );
        assert_payload(&self.case, &f.payload, want);
    }

    /// `f` is a close frame with `code` (None: no payload) and a UTF-8 reason.
    fn check_close(&self, f: &In, code: Option<u16>) {
        let case = &self.case;
        assert!(
            f.opcode == CLOSE && f.fin,
            "[{case}] expected a close frame with {code:?}, got a {}",
            describe(f)
        );
        assert_eq!(f.close_code(), code, "[{case}] close code");
        assert_ne!(f.payload.len(), 1, "[{case}] close payload of 1 byte");
        if f.payload.len() > 2 {
            assert!(
                std::str::from_utf8(&f.payload[2..]).is_ok(),
                "[{case}] close reason is not UTF-8"
            );
        }
    }

    /// The next frame is a close with `code`, and the server then closes the TCP connection.
    async fn expect_close(&mut self, code: Option<u16>) {
        let f = self.expect_frame().await;
        self.check_close(&f, code);
        self.expect_eof().await;
    }

    /// The server closes the TCP connection (a clean EOF, not a reset) within [`WAIT`].
    async fn expect_eof(&mut self) {
        match self.next_frame().await {
            Ok(None) => {}
            Ok(Some(f)) => panic!(
                "[{}] expected the server to close the TCP connection, got a {}",
                self.case,
                describe(&f)
            ),
            Err(e) => panic!("[{}] expected EOF, got: {e}", self.case),
        }
    }

    /// A normal closing handshake: close 1000, echoed, then EOF.
    async fn close_normally(&mut self) {
        self.send(frame(CLOSE, close_payload(1000, b""))).await;
        self.expect_close(Some(1000)).await;
    }
}

fn assert_payload(case: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        let at = at.unwrap_or(got.len().min(want.len()));
        let near = |p: &[u8]| p[at.min(p.len())..(at + 16).min(p.len())].to_vec();
        panic!(
            "[{case}] payload differs: got {} bytes, want {}; first difference at byte {at} \
             (got {:?}, want {:?})",
            got.len(),
            want.len(),
            near(got),
            near(want)
        );
    }
}

/// Binary test data covering every byte value.
fn bytes_of(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ 0xA5).collect()
}

/// Lengths around every payload-length form: 7-bit, 16-bit (126..=65535), 64-bit (65536).
/// 65536 is also the default `max_message_size`.
const LENGTHS: [usize; 8] = [0, 1, 125, 126, 127, 128, 65_535, 65_536];

// ---------------------------------------------------------------------------------------
// 1. Framing: text and binary echo at every length form.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn text_messages_of_every_length_form_are_echoed() {
    let (_server, addr) = echo_server().await;
    for len in LENGTHS {
        let mut ws = Raw::connect(addr, format!("text {len} bytes")).await;
        let payload = vec![b'*'; len];
        ws.send(frame(TEXT, payload.clone())).await;
        ws.expect_message(TEXT, &payload).await;
        ws.close_normally().await;
    }
}

#[tokio::test]
async fn binary_messages_of_every_length_form_are_echoed() {
    let (_server, addr) = echo_server().await;
    for len in LENGTHS {
        let mut ws = Raw::connect(addr, format!("binary {len} bytes")).await;
        let payload = bytes_of(len);
        ws.send(frame(BINARY, payload.clone())).await;
        ws.expect_message(BINARY, &payload).await;
        ws.close_normally().await;
    }
}

#[tokio::test]
async fn messages_written_in_small_tcp_chunks_are_echoed() {
    // Autobahn 1.1.8 / 1.2.8: a 65536-byte message written 997 bytes at a time.
    let (_server, addr) = echo_server().await;
    for opcode in [TEXT, BINARY] {
        let mut ws = Raw::connect(addr, format!("{} in chunks", opcode_name(opcode))).await;
        let payload = if opcode == TEXT {
            vec![b'*'; 65_536]
        } else {
            bytes_of(65_536)
        };
        let bytes = ws.encode(&frame(opcode, payload.clone()));
        for chunk in bytes.chunks(997) {
            ws.write(chunk).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ws.expect_message(opcode, &payload).await;
        ws.close_normally().await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. Pings and pongs.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn ping_is_answered_with_a_pong_of_the_same_payload() {
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "ping").await;
    let all_bytes: Vec<u8> = (0..125u8).map(|i| 0xFF - i).collect();
    for payload in [Vec::new(), b"Hello, world!".to_vec(), all_bytes] {
        ws.send(frame(PING, payload.clone())).await;
        ws.expect_pong(&payload).await;
    }
    ws.close_normally().await;
}

#[tokio::test]
async fn ping_written_one_byte_at_a_time_is_answered() {
    // Autobahn 2.6: a 125-byte ping, one byte per write.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "ping in 1-byte chunks").await;
    let payload = vec![0xFE; 125];
    let bytes = ws.encode(&frame(PING, payload.clone()));
    for b in bytes {
        ws.write(&[b]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    ws.expect_pong(&payload).await;
    ws.close_normally().await;
}

#[tokio::test]
async fn pings_sent_one_at_a_time_are_each_answered() {
    // Autobahn 2.11.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "10 pings in turn").await;
    for i in 0..10 {
        let payload = format!("payload-{i}").into_bytes();
        ws.send(frame(PING, payload.clone())).await;
        ws.expect_pong(&payload).await;
    }
    ws.close_normally().await;
}

#[tokio::test]
async fn burst_of_pings_is_answered_in_order_up_to_the_last() {
    // Autobahn 2.10: ten pings in one write. RFC 6455 §5.5.3 lets an endpoint answer only
    // the most recent of several pings it has not answered yet; every pong must match a ping,
    // in order, and the last ping must be answered.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "burst of 10 pings").await;
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("ping-{i}").into_bytes()).collect();
    ws.send_all(payloads.iter().map(|p| frame(PING, p.clone())))
        .await;
    let mut last = None;
    while last != Some(payloads.len() - 1) {
        let f = ws.expect_frame().await;
        assert_eq!(f.opcode, PONG, "expected a pong, got a {}", describe(&f));
        let i = payloads
            .iter()
            .position(|p| *p == f.payload)
            .unwrap_or_else(|| panic!("pong answers no ping: {}", describe(&f)));
        assert!(last.is_none_or(|l| i > l), "pong {i} after pong {last:?}");
        last = Some(i);
    }
    // Nothing more for the pings: the next frame answers the next message.
    ws.send(frame(TEXT, "after the pings")).await;
    ws.expect_message(TEXT, b"after the pings").await;
    ws.close_normally().await;
}

#[tokio::test]
async fn unsolicited_pong_is_ignored() {
    // Autobahn 2.8 / 2.9.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "unsolicited pong").await;
    ws.send(frame(PONG, "unsolicited pong payload")).await;
    ws.send(frame(PONG, Vec::new())).await;
    ws.send(frame(TEXT, "still here")).await;
    // The very next frame is the echo: no answer to the pongs, connection usable.
    ws.expect_message(TEXT, b"still here").await;
    ws.close_normally().await;
}

#[tokio::test]
async fn ping_with_126_byte_payload_closes_with_1002() {
    // Autobahn 2.5: control frames carry at most 125 bytes.
    let (_server, addr) = echo_server().await;
    for opcode in [PING, PONG] {
        let mut ws = Raw::connect(addr, format!("{} of 126 bytes", opcode_name(opcode))).await;
        ws.send(frame(opcode, vec![0xFE; 126])).await;
        ws.expect_close(Some(1002)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 3. Masking and reserved bits.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let (_server, addr) = echo_server().await;
    for (opcode, payload) in [(TEXT, &b"unmasked"[..]), (PING, &b""[..])] {
        let case = format!("unmasked {}", opcode_name(opcode));
        let mut ws = Raw::connect(addr, case).await;
        ws.send(frame(opcode, payload).unmasked()).await;
        ws.expect_close(Some(1002)).await;
    }
}

#[tokio::test]
async fn rsv_bits_without_an_extension_close_with_1002() {
    // Autobahn 3.1-3.7: each combination of RSV bits, on data and control frames.
    let (_server, addr) = echo_server().await;
    for rsv in 1..=7 {
        for (opcode, payload) in [(TEXT, &b"Hello, world!"[..]), (BINARY, &[0xFF; 8][..])] {
            let case = format!("rsv {rsv:03b} on {}", opcode_name(opcode));
            let mut ws = Raw::connect(addr, case).await;
            ws.send(frame(opcode, payload).rsv(rsv)).await;
            ws.expect_close(Some(1002)).await;
        }
        for opcode in [PING, CLOSE] {
            let case = format!("rsv {rsv:03b} on {}", opcode_name(opcode));
            let mut ws = Raw::connect(addr, case).await;
            let payload = if opcode == CLOSE {
                close_payload(1000, b"")
            } else {
                Vec::new()
            };
            ws.send(frame(opcode, payload).rsv(rsv)).await;
            ws.expect_close(Some(1002)).await;
        }
    }
}

#[tokio::test]
async fn rsv_violation_after_a_valid_message_fails_without_answering_the_ping() {
    // Autobahn 3.2: text, text with RSV2, ping, in one write. The echo of the first message
    // may come first (Autobahn: OK; without it NON-STRICT); then close 1002 and no pong.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "rsv after a valid message").await;
    ws.send_all([
        frame(TEXT, "Hello, world!"),
        frame(TEXT, "Hello, world!").rsv(2),
        frame(PING, Vec::new()),
    ])
    .await;
    let mut f = ws.expect_frame().await;
    if f.opcode == TEXT {
        assert_payload(&ws.case, &f.payload, b"Hello, world!");
        f = ws.expect_frame().await;
    }
    ws.check_close(&f, Some(1002));
    ws.expect_eof().await;
}

// ---------------------------------------------------------------------------------------
// 4. Opcodes.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn reserved_data_opcodes_close_with_1002() {
    // Autobahn 4.1.x.
    let (_server, addr) = echo_server().await;
    for opcode in 3..=7 {
        for payload in [&b""[..], &b"reserved opcode"[..]] {
            let case = format!("opcode {opcode}, {} bytes", payload.len());
            let mut ws = Raw::connect(addr, case).await;
            ws.send(frame(opcode, payload)).await;
            ws.expect_close(Some(1002)).await;
        }
    }
}

#[tokio::test]
async fn reserved_control_opcodes_close_with_1002() {
    // Autobahn 4.2.x.
    let (_server, addr) = echo_server().await;
    for opcode in 0xB..=0xF {
        for payload in [&b""[..], &b"reserved opcode"[..]] {
            let case = format!("opcode {opcode:#x}, {} bytes", payload.len());
            let mut ws = Raw::connect(addr, case).await;
            ws.send(frame(opcode, payload)).await;
            ws.expect_close(Some(1002)).await;
        }
    }
}

#[tokio::test]
async fn reserved_opcode_after_a_valid_message_closes_with_1002() {
    // Autobahn 4.1.3 / 4.2.3, with the echo awaited so it is not optional.
    let (_server, addr) = echo_server().await;
    for opcode in [5, 0xB] {
        let mut ws = Raw::connect(addr, format!("opcode {opcode:#x} after a message")).await;
        ws.send(frame(TEXT, "Hello, world!")).await;
        ws.expect_message(TEXT, b"Hello, world!").await;
        ws.send(frame(opcode, Vec::new())).await;
        ws.expect_close(Some(1002)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 5. Fragmentation.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn fragmented_text_message_is_reassembled() {
    // Autobahn 5.3-5.5: in one write, and one frame per write.
    let (_server, addr) = echo_server().await;
    let fragments = || {
        [
            frame(TEXT, "fragment1").more(),
            frame(CONTINUATION, "fragment2").more(),
            frame(CONTINUATION, "fragment3"),
        ]
    };
    let mut ws = Raw::connect(addr, "fragmented text, one write").await;
    ws.send_all(fragments()).await;
    ws.expect_message(TEXT, b"fragment1fragment2fragment3")
        .await;
    ws.close_normally().await;

    let mut ws = Raw::connect(addr, "fragmented text, frame by frame").await;
    for f in fragments() {
        ws.send(f).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ws.expect_message(TEXT, b"fragment1fragment2fragment3")
        .await;
    ws.close_normally().await;
}

#[tokio::test]
async fn fragmented_binary_message_is_reassembled() {
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "fragmented binary").await;
    let payload = bytes_of(3000);
    ws.send_all([
        frame(BINARY, &payload[..1]).more(),
        frame(CONTINUATION, &payload[1..200]).more(),
        frame(CONTINUATION, Vec::new()).more(),
        frame(CONTINUATION, &payload[200..]),
    ])
    .await;
    ws.expect_message(BINARY, &payload).await;
    ws.close_normally().await;
}

#[tokio::test]
async fn message_in_one_byte_fragments_is_reassembled() {
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "1-byte fragments").await;
    let text = "Hello-µ@ßöäüàá-UTF-8!!".as_bytes();
    ws.send_all(byte_fragments(text)).await;
    ws.expect_message(TEXT, text).await;
    ws.close_normally().await;
}

#[tokio::test]
async fn fragmented_message_with_empty_fragments_is_reassembled() {
    // Autobahn 6.1.2 / 6.1.3.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "empty fragments").await;
    ws.send_all([
        frame(TEXT, Vec::new()).more(),
        frame(CONTINUATION, Vec::new()).more(),
        frame(CONTINUATION, Vec::new()),
    ])
    .await;
    ws.expect_message(TEXT, b"").await;
    ws.send_all([
        frame(TEXT, Vec::new()).more(),
        frame(CONTINUATION, "middle").more(),
        frame(CONTINUATION, Vec::new()),
    ])
    .await;
    ws.expect_message(TEXT, b"middle").await;
    ws.close_normally().await;
}

#[tokio::test]
async fn ping_between_fragments_is_answered_and_the_message_reassembled() {
    // Autobahn 5.6-5.8: the pong comes back while the message is still open.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "ping between fragments").await;
    ws.send_all([frame(TEXT, "fragment1").more(), frame(PING, "ping payload")])
        .await;
    ws.expect_pong(b"ping payload").await;
    ws.send_all([
        frame(CONTINUATION, "fragment2").more(),
        frame(PONG, "unsolicited"),
        frame(PING, Vec::new()),
        frame(CONTINUATION, "fragment3"),
    ])
    .await;
    ws.expect_pong(b"").await;
    ws.expect_message(TEXT, b"fragment1fragment2fragment3")
        .await;
    ws.close_normally().await;
}

#[tokio::test]
async fn fragmented_ping_closes_with_1002() {
    // Autobahn 5.1 / 5.2: control frames must not be fragmented.
    let (_server, addr) = echo_server().await;
    for opcode in [PING, PONG] {
        let mut ws = Raw::connect(addr, format!("fragmented {}", opcode_name(opcode))).await;
        ws.send_all([
            frame(opcode, "fragment1").more(),
            frame(CONTINUATION, "fragment2"),
        ])
        .await;
        ws.expect_close(Some(1002)).await;
    }
}

#[tokio::test]
async fn continuation_without_a_started_message_closes_with_1002() {
    // Autobahn 5.9-5.12.
    let (_server, addr) = echo_server().await;
    for fin in [true, false] {
        let mut ws = Raw::connect(addr, format!("stray continuation, fin={fin}")).await;
        let f = frame(CONTINUATION, "non-continuation payload");
        ws.send(if fin { f } else { f.more() }).await;
        ws.expect_close(Some(1002)).await;
    }
}

#[tokio::test]
async fn continuation_after_a_complete_message_closes_with_1002() {
    // Autobahn 5.13-5.15, with the echo awaited so it is not optional.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "continuation after a complete message").await;
    ws.send_all([
        frame(TEXT, "fragment1").more(),
        frame(CONTINUATION, "fragment2"),
    ])
    .await;
    ws.expect_message(TEXT, b"fragment1fragment2").await;
    ws.send(frame(CONTINUATION, "fragment3").more()).await;
    ws.expect_close(Some(1002)).await;
}

#[tokio::test]
async fn new_data_frame_during_a_fragmented_message_closes_with_1002() {
    // Autobahn 5.18-5.20.
    let (_server, addr) = echo_server().await;
    for (first, second, fin) in [
        (TEXT, TEXT, true),
        (TEXT, TEXT, false),
        (TEXT, BINARY, true),
        (BINARY, TEXT, true),
    ] {
        let case = format!(
            "{} while a {} message is open (fin={fin})",
            opcode_name(second),
            opcode_name(first)
        );
        let mut ws = Raw::connect(addr, case).await;
        let f = frame(second, "fragment2");
        ws.send_all([
            frame(first, "fragment1").more(),
            if fin { f } else { f.more() },
        ])
        .await;
        ws.expect_close(Some(1002)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 6. UTF-8.
// ---------------------------------------------------------------------------------------

/// Invalid UTF-8 (Autobahn 6.3-6.21 samples).
const INVALID_UTF8: [&[u8]; 13] = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xbf",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"abc\xe2\x82",
    KOSME_SURROGATE_EDITED,
];

#[tokio::test]
async fn invalid_utf8_text_message_closes_with_1007() {
    let (_server, addr) = echo_server().await;
    for sample in INVALID_UTF8 {
        let mut ws = Raw::connect(addr, format!("invalid UTF-8 {sample:x?}")).await;
        ws.send(frame(TEXT, sample)).await;
        ws.expect_close(Some(1007)).await;
    }
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007() {
    let (_server, addr) = echo_server().await;
    // Invalid sequence straddling two fragments ("κόσμε\xed" | "\xa0\x80edited").
    let mut ws = Raw::connect(addr, "surrogate split across fragments").await;
    let (a, b) = KOSME_SURROGATE_EDITED.split_at(11);
    ws.send_all([frame(TEXT, a).more(), frame(CONTINUATION, b)])
        .await;
    ws.expect_close(Some(1007)).await;

    // A multi-byte character cut short by the end of the message.
    let mut ws = Raw::connect(addr, "truncated at the last fragment").await;
    ws.send_all([
        frame(TEXT, "abc").more(),
        frame(CONTINUATION, b"\xe2\x82".to_vec()),
    ])
    .await;
    ws.expect_close(Some(1007)).await;

    // Every byte its own frame (Autobahn 6.3.2).
    let mut ws = Raw::connect(addr, "invalid, 1-byte fragments").await;
    ws.send_all(byte_fragments(KOSME_SURROGATE_EDITED)).await;
    ws.expect_close(Some(1007)).await;
}

#[tokio::test]
async fn invalid_utf8_fails_fast_before_the_message_ends() {
    // Autobahn 6.4.1-6.4.4: the server must fail on the fragment with the invalid bytes, not
    // wait for the message's last fragment (which is never sent here).
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "fail fast, second fragment").await;
    ws.send_all([
        frame(TEXT, "κόσμε").more(),
        frame(CONTINUATION, b"\xf4\x90\x80\x80".to_vec()).more(),
    ])
    .await;
    ws.expect_close(Some(1007)).await;

    let mut ws = Raw::connect(addr, "fail fast, first fragment").await;
    ws.send(frame(TEXT, KOSME_SURROGATE_EDITED).more()).await;
    ws.expect_close(Some(1007)).await;
}

#[tokio::test]
async fn valid_multibyte_char_split_across_fragments_is_accepted() {
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "valid split").await;
    for text in ["€", "x€y", "κόσμε", "𝄞", "a𝄞b"] {
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            ws.send_all([frame(TEXT, a).more(), frame(CONTINUATION, b)])
                .await;
            ws.expect_message(TEXT, bytes).await;
        }
        // Every byte its own frame.
        ws.send_all(byte_fragments(bytes)).await;
        ws.expect_message(TEXT, bytes).await;
    }
    ws.close_normally().await;
}

#[tokio::test]
async fn valid_utf8_boundary_code_points_are_echoed() {
    // Autobahn 6.2, 6.5-6.7, 6.22-6.23: first and last code points of each length,
    // noncharacters and the BOM are valid UTF-8.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "valid UTF-8").await;
    for text in [
        "\u{0}",
        "\u{7f}",
        "\u{80}",
        "\u{7ff}",
        "\u{800}",
        "\u{d7ff}",
        "\u{e000}",
        "\u{fffd}",
        "\u{fffe}",
        "\u{ffff}",
        "\u{feff}",
        "\u{10000}",
        "\u{10ffff}",
        "κόσμε",
        "Hello-µ@ßöäüàá-UTF-8!!",
    ] {
        ws.send(frame(TEXT, text)).await;
        ws.expect_message(TEXT, text.as_bytes()).await;
    }
    ws.close_normally().await;
}

// ---------------------------------------------------------------------------------------
// 7. Closing handshake.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn close_with_a_valid_code_is_echoed() {
    // Autobahn 7.7.x.
    let (_server, addr) = echo_server().await;
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let mut ws = Raw::connect(addr, format!("close {code}")).await;
        ws.send(frame(CLOSE, close_payload(code, b""))).await;
        ws.expect_close(Some(code)).await;
    }
}

#[tokio::test]
async fn close_with_a_reason_is_echoed() {
    // Autobahn 7.3.3-7.3.5: a code alone, a short reason, the longest reason (123 bytes).
    let (_server, addr) = echo_server().await;
    for reason in [&b""[..], b"Hello World!", &[b'*'; 123][..]] {
        let mut ws = Raw::connect(addr, format!("close reason of {} bytes", reason.len())).await;
        ws.send(frame(CLOSE, close_payload(1000, reason))).await;
        ws.expect_close(Some(1000)).await;
    }
}

#[tokio::test]
async fn close_without_payload_is_answered_with_an_empty_close() {
    // Autobahn 7.3.1: an empty close is answered (without a code: 1005 means "no code").
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "empty close").await;
    ws.send(frame(CLOSE, Vec::new())).await;
    let f = ws.expect_frame().await;
    assert!(
        f.opcode == CLOSE && matches!(f.close_code(), None | Some(1000)),
        "expected an empty close (or 1000), got a {}",
        describe(&f)
    );
    ws.expect_eof().await;
}

#[tokio::test]
async fn close_with_an_invalid_code_closes_with_1002() {
    // Autobahn 7.9.x, 7.13.x.
    let (_server, addr) = echo_server().await;
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut ws = Raw::connect(addr, format!("close {code}")).await;
        ws.send(frame(CLOSE, close_payload(code, b""))).await;
        ws.expect_close(Some(1002)).await;
    }
}

#[tokio::test]
async fn close_with_a_one_byte_payload_closes_with_1002() {
    // Autobahn 7.3.2.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "close with 1 byte").await;
    ws.send(frame(CLOSE, vec![0x03])).await;
    ws.expect_close(Some(1002)).await;
}

#[tokio::test]
async fn close_with_a_124_byte_reason_closes_with_1002() {
    // Autobahn 7.3.6: 2 + 124 = 126 bytes, too big for a control frame.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "close with 126-byte payload").await;
    ws.send(frame(CLOSE, close_payload(1000, &[b'*'; 124])))
        .await;
    ws.expect_close(Some(1002)).await;
}

#[tokio::test]
async fn close_reason_with_invalid_utf8_closes_with_1007() {
    // Autobahn 7.5.1; RFC 6455 §8.1 and §7.4.1 (1007: data inconsistent with its type).
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "close reason not UTF-8").await;
    ws.send(frame(CLOSE, close_payload(1000, KOSME_SURROGATE_EDITED)))
        .await;
    ws.expect_close(Some(1007)).await;
}

#[tokio::test]
async fn message_then_close_is_answered_with_the_echo_then_the_close() {
    // Autobahn 7.1.1: a message and a close in one write; the echo of the message, then the
    // close echoed, then the server closes the connection.
    let (_server, addr) = echo_server().await;
    let mut ws = Raw::connect(addr, "message then close").await;
    ws.send_all([
        frame(TEXT, "Hello World!"),
        frame(CLOSE, close_payload(1000, b"")),
    ])
    .await;
    ws.expect_message(TEXT, b"Hello World!").await;
    ws.expect_close(Some(1000)).await;
}

#[tokio::test]
async fn frames_after_close_are_ignored() {
    // Autobahn 7.1.2-7.1.5: after the client's close, the server answers only that close:
    // no second close, no pong, no echo, and a fragmented message is abandoned.
    let (_server, addr) = echo_server().await;
    let close = || frame(CLOSE, close_payload(1000, b""));
    let cases: [(&str, Vec<Out>); 4] = [
        ("close, close", vec![close(), close()]),
        (
            "close, ping",
            vec![close(), frame(PING, "out of band ping")],
        ),
        (
            "close, text",
            vec![close(), frame(TEXT, "out of band text")],
        ),
        (
            "fragment, close, fragment",
            vec![
                frame(TEXT, "fragment1").more(),
                close(),
                frame(CONTINUATION, "fragment2"),
            ],
        ),
    ];
    for (case, frames) in cases {
        let mut ws = Raw::connect(addr, case).await;
        ws.send_all(frames).await;
        ws.expect_close(Some(1000)).await;
    }
}

#[tokio::test]
async fn server_closes_tcp_after_its_close_frame() {
    let (server, addr) = echo_server().await;

    // Answering the client's close.
    let mut ws = Raw::connect(addr, "after echoing a close").await;
    ws.send(frame(TEXT, "hi")).await;
    ws.expect_message(TEXT, b"hi").await;
    ws.send(frame(CLOSE, close_payload(1000, b"bye"))).await;
    ws.expect_close(Some(1000)).await;

    // Failing the connection: the client never answers the server's close.
    let mut ws = Raw::connect(addr, "after failing the connection").await;
    ws.send(frame(TEXT, "unmasked").unmasked()).await;
    ws.expect_close(Some(1002)).await;

    // The server starts the close (shutdown, 1001) and the client answers it.
    let mut ws = Raw::connect(addr, "after a close the server started").await;
    common::wait_for(|| server.hub().client_count() == 1).await;
    let shutdown = tokio::spawn(async move { server.shutdown(WAIT).await });
    let f = ws.expect_frame().await;
    ws.check_close(&f, Some(1001));
    ws.send(frame(CLOSE, close_payload(1001, b""))).await;
    ws.expect_eof().await;
    shutdown.await.unwrap();
}
