//! The chat relay over `wss://`: TLS terminated in the process with rustls (ring provider),
//! each decrypted stream handed to [`Server::serve_connection`], which takes any
//! `AsyncRead + AsyncWrite` — here a `tokio_rustls::server::TlsStream<TcpStream>`.
//!
//! Shared by `examples/wss_chat/main.rs` and `tests/ws_tls.rs`.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use wshub::ws::{Client, Config, HandlerError, Server};
use wshub::{Hub, Message};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The path WebSocket clients connect to.
pub const PATH: &str = "/ws";

/// Messages larger than this close the sender's connection with 1009.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1), as issued by Let's Encrypt (`fullchain.pem`, `privkey.pem`) or `openssl`.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, BoxError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate in the file", cert.display()).into());
        }
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
        Ok(Identity { chain, key })
    }

    /// A fresh key and a self-signed certificate for `names` (DNS names, or IP addresses such
    /// as `127.0.0.1`), made with rcgen. Returns the certificate as PEM too, for clients to
    /// trust.
    pub fn self_signed(names: &[String]) -> Result<(Identity, String), BoxError> {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(names.to_vec())?;
        let key = PrivatePkcs8KeyDer::from(signing_key.serialize_der());
        let identity = Identity {
            chain: vec![cert.der().clone()],
            key: key.into(),
        };
        Ok((identity, cert.pem()))
    }
}

/// A TLS acceptor for `identity`: TLS 1.2 and 1.3 on rustls's ring provider, passed in
/// explicitly so that no process-wide default provider has to be installed. ALPN offers
/// `http/1.1`, the protocol a WebSocket upgrade speaks.
pub fn acceptor(identity: Identity) -> Result<TlsAcceptor, BoxError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The relay's settings: upgrades on [`PATH`] only, messages up to [`MAX_MESSAGE_BYTES`],
/// the default heartbeat (ping 54 s, pong 60 s) and handshake timeout (5 s, which
/// [`serve_tls`] applies to the TLS handshake as well).
pub fn config() -> Config {
    Config::default()
        .path(PATH)
        .max_message_size(MAX_MESSAGE_BYTES)
}

/// A relay: every text or binary message goes to every client, the sender included.
pub fn ws_server(config: Config) -> Server {
    Server::new(Hub::new(), config, relay)
}

fn relay(client: &Client, msg: Message) -> Result<(), HandlerError> {
    client.hub().broadcast(msg);
    Ok(())
}

/// Accepts TCP connections on `listener` until `server` shuts down. Each connection gets the
/// server's handshake timeout ([`Config::handshake_timeout`]) for its TLS handshake, then
/// [`Server::serve_connection`] runs the WebSocket handshake (path, origin, connection limit,
/// the same timeout again) and the connection, on its own task. A peer that does not speak
/// TLS (a plain `ws://` client, an HTTP request) fails the TLS handshake and is dropped; it
/// never reaches the hub.
pub async fn serve_tls(server: Server, listener: TcpListener, acceptor: TlsAcceptor) {
    let stopping = server.stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = &mut stopping => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let server = server.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let limit = server.config().get_handshake_timeout();
                        let tls = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        match server.serve_connection(tls, Some(peer)).await {
                            Ok(end) => tracing::debug!(%peer, ?end, "connection ended"),
                            Err(e) => tracing::debug!(%peer, error = %e, "connection not served"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
