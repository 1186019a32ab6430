//! `wss://` end to end, with the `wss_chat` example's TLS code (`examples/wss_chat/app.rs`): a
//! certificate generated at run time with rcgen, rustls (ring provider) on 127.0.0.1, and
//! real tokio-tungstenite clients over `tokio_rustls::client::TlsStream` whose root store
//! trusts only that certificate. Also: peers that do not speak TLS are dropped without
//! reaching the hub, and the server keeps serving.

#[path = "../examples/wss_chat/app.rs"]
mod app;
mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use wshub::ws::{Config, Server};
use wshub::{CloseCode, Message};

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Runs a whole test body within `secs`.
async fn bounded<T>(secs: u64, body: impl std::future::Future<Output = T>) -> T {
    timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"))
}

/// The names the test certificates are issued for.
fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

/// The relay of the `wss_chat` example with `config`, serving `identity` over TLS on a free
/// loopback port.
async fn start_wss(identity: app::Identity, config: Config) -> (Server, SocketAddr) {
    let listener = wshub::ws::listen("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = app::ws_server(config);
    let acceptor = app::acceptor(identity).expect("TLS config");
    tokio::spawn(app::serve_tls(server.clone(), listener, acceptor));
    (server, addr)
}

/// A TLS client (ring provider) that trusts `cert` and nothing else.
fn trusting(cert: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).expect("a valid certificate");
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Opens `wss://{name}:{port}/ws` on `addr`: TCP, then TLS verified for `name`, then the
/// WebSocket handshake over the TLS stream.
async fn dial(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> Result<Wss, Box<dyn std::error::Error>> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_string())?;
    let tls = connector.connect(server_name, tcp).await?;
    let url = format!("wss://{name}:{}{}", addr.port(), app::PATH);
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await?;
    Ok(ws)
}

async fn wss_connect(connector: &TlsConnector, addr: SocketAddr, name: &str) -> Wss {
    timeout(PATIENCE, dial(connector, addr, name))
        .await
        .expect("timed out connecting over wss")
        .unwrap_or_else(|e| panic!("wss connect to {name}: {e}"))
}

/// The next data message, skipping control frames.
async fn next_data(ws: &mut Wss) -> Message {
    loop {
        let msg = timeout(PATIENCE, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("read error");
        if msg.is_text() || msg.is_binary() {
            return msg;
        }
    }
}

/// Reads until the server's close frame, then on until the stream ends, so that the client's
/// reply goes out (the server waits for it); returns the server's close code.
async fn close_handshake(ws: &mut Wss) -> Option<CloseCode> {
    let code = close_code(ws).await;
    while let Some(Ok(_)) = timeout(PATIENCE, ws.next())
        .await
        .expect("the stream did not end after the close")
    {}
    code
}

/// Reads what the server sends a raw TCP peer until it closes the connection (EOF or reset).
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("the server did not close the connection");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// The TLS record content type of an alert.
const TLS_ALERT: u8 = 21;

/// Bytes in a message larger than a TLS record.
const BIG: usize = 40 * 1024;

#[tokio::test]
async fn two_wss_clients_exchange_messages_through_the_hub() {
    bounded(30, async {
        // The example's default: a self-signed certificate made at start.
        let (identity, pem) = app::Identity::self_signed(&names()).expect("rcgen");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let connector = trusting(&identity.chain[0]);
        let config = app::config().max_message_size(2 * BIG);
        let (server, addr) = start_wss(identity, config).await;

        // One client verifies the DNS name, the other the IP address.
        let mut a = wss_connect(&connector, addr, "localhost").await;
        let mut b = wss_connect(&connector, addr, "127.0.0.1").await;
        wait_for(|| server.hub().client_count() == 2).await;

        // Client to everyone, through the hub.
        send_text(&mut a, "hello from a").await;
        assert_eq!(next_text(&mut a).await, "hello from a");
        assert_eq!(next_text(&mut b).await, "hello from a");
        b.send(Message::binary(vec![1u8, 2, 3]))
            .await
            .expect("send binary");
        for ws in [&mut a, &mut b] {
            assert_eq!(next_data(ws).await, Message::binary(vec![1u8, 2, 3]));
        }

        // Server to everyone.
        let accepted = server.hub().broadcast(Message::text("from the hub"));
        assert_eq!(accepted, 2);
        assert_eq!(next_text(&mut a).await, "from the hub");
        assert_eq!(next_text(&mut b).await, "from the hub");

        // A message spanning several TLS records (16 KiB each) both ways.
        let big = "x".repeat(BIG);
        send_text(&mut b, &big).await;
        assert_eq!(next_text(&mut a).await.len(), big.len());
        assert_eq!(next_text(&mut b).await.len(), big.len());

        // A graceful shutdown closes each wss client with 1001 and ends cleanly.
        let (report, code_a, code_b) = tokio::join!(
            server.shutdown(PATIENCE),
            close_handshake(&mut a),
            close_handshake(&mut b)
        );
        assert_eq!(report.remaining, 0);
        assert_eq!(code_a, Some(CloseCode::Away));
        assert_eq!(code_b, Some(CloseCode::Away));
        let stats = server.hub().stats();
        assert_eq!(stats.dropped, 0, "{stats:?}");
    })
    .await;
}

#[tokio::test]
async fn peers_without_tls_are_dropped_and_the_server_keeps_serving() {
    bounded(30, async {
        // The example's --cert/--key path: PEM files on disk.
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names()).expect("rcgen");
        let dir = std::env::temp_dir();
        let cert_path = dir.join(format!("wshub-ws-tls-{}-cert.pem", std::process::id()));
        let key_path = dir.join(format!("wshub-ws-tls-{}-key.pem", std::process::id()));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, signing_key.serialize_pem()).expect("write key");
        let identity = app::Identity::from_pem_files(&cert_path, &key_path);
        let _ = std::fs::remove_file(&cert_path);
        let _ = std::fs::remove_file(&key_path);
        let identity = identity.expect("PEM files");
        let connector = trusting(cert.der());
        let (server, addr) = start_wss(identity, app::config()).await;

        let mut a = wss_connect(&connector, addr, "localhost").await;
        wait_for(|| server.hub().client_count() == 1).await;

        // A ws:// client: its upgrade request is not a TLS ClientHello.
        let plain = timeout(
            PATIENCE,
            tokio_tungstenite::connect_async(format!("ws://{addr}{}", app::PATH)),
        )
        .await
        .expect("the plain ws:// client was left hanging");
        assert!(plain.is_err(), "a plain ws:// client was served");

        // The same by hand: the server answers no HTTP and closes the connection.
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            app::PATH
        );
        tcp.write_all(request.as_bytes()).await.expect("write");
        let answer = read_until_closed(&mut tcp).await;
        // At most a TLS alert record (content type 21: rustls says `decode_error`).
        assert!(
            answer.is_empty() || answer[0] == TLS_ALERT,
            "answered over plain TCP: {:?}",
            String::from_utf8_lossy(&answer)
        );

        // A TLS client that does not trust this certificate refuses the server.
        let (stranger, _) = app::Identity::self_signed(&names()).expect("rcgen");
        let wary = trusting(&stranger.chain[0]);
        let refused = timeout(PATIENCE, dial(&wary, addr, "localhost"))
            .await
            .expect("the untrusting client was left hanging");
        assert!(refused.is_err(), "connected to a server it does not trust");

        // None of them reached the hub, and the server still serves.
        assert_eq!(server.hub().client_count(), 1);
        let mut b = wss_connect(&connector, addr, "localhost").await;
        wait_for(|| server.hub().client_count() == 2).await;
        send_text(&mut a, "still here").await;
        assert_eq!(next_text(&mut a).await, "still here");
        assert_eq!(next_text(&mut b).await, "still here");
        wait_for(|| server.connection_count() == 2).await;
    })
    .await;
}

#[tokio::test]
async fn a_peer_silent_before_tls_is_dropped_after_the_handshake_timeout() {
    bounded(30, async {
        let (identity, _) = app::Identity::self_signed(&names()).expect("rcgen");
        let connector = trusting(&identity.chain[0]);
        let limit = Duration::from_millis(300);
        let (server, addr) = start_wss(identity, app::config().handshake_timeout(limit)).await;

        let started = Instant::now();
        let mut silent = TcpStream::connect((Ipv4Addr::LOCALHOST, addr.port()))
            .await
            .expect("connect");
        let answer = read_until_closed(&mut silent).await;
        assert!(answer.is_empty(), "sent {answer:?} to a silent peer");
        assert!(
            started.elapsed() >= limit,
            "closed after {:?}",
            started.elapsed()
        );

        // A real client within the limit is served.
        let mut ws = wss_connect(&connector, addr, "localhost").await;
        send_text(&mut ws, "hi").await;
        assert_eq!(next_text(&mut ws).await, "hi");
        assert_eq!(server.hub().client_count(), 1);
    })
    .await;
}
