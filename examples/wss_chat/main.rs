//! A chat relay over `wss://`: every message reaches every participant. TLS is terminated in
//! the process with rustls and each decrypted stream is served by
//! `Server::serve_connection` (see `app.rs`).
//!
//! ```sh
//! cargo run --example wss_chat                     # self-signed certificate, wss://localhost:8443/ws
//! cargo run --example wss_chat -- --cert fullchain.pem --key privkey.pem --addr 0.0.0.0:443
//! websocat --insecure wss://localhost:8443/ws      # join (--insecure: the certificate is self-signed)
//! ```
//!
//! Without `--cert`/`--key` (or with `--self-signed`) it makes a certificate for `localhost`,
//! `127.0.0.1` and `::1` at start and writes it (PEM) to the temporary directory, for clients
//! that want to trust it rather than skip verification.

#[path = "app.rs"]
mod app;
#[path = "../common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;

#[tokio::main]
async fn main() -> Result<(), app::BoxError> {
    common::init_tracing();
    let addr: String = common::flag("--addr", "127.0.0.1:8443".to_string());
    let cert: String = common::flag("--cert", String::new());
    let key: String = common::flag("--key", String::new());
    let self_signed = common::switch("--self-signed");

    let listener = wshub::ws::listen(&addr).await?;
    let local = listener.local_addr()?;
    let identity = match (cert.is_empty(), key.is_empty()) {
        (false, false) if !self_signed => {
            app::Identity::from_pem_files(Path::new(&cert), Path::new(&key))?
        }
        (true, true) => {
            let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            if !local.ip().is_unspecified() && !local.ip().is_loopback() {
                names.push(local.ip().to_string());
            }
            let (identity, pem) = app::Identity::self_signed(&names)?;
            let path = std::env::temp_dir().join("wshub-wss-chat-cert.pem");
            std::fs::write(&path, pem)?;
            println!(
                "self-signed certificate for {} (trusted by no one; PEM in {})",
                names.join(", "),
                path.display()
            );
            identity
        }
        _ => {
            return Err("give both --cert and --key (PEM files), or neither / --self-signed".into())
        }
    };
    let acceptor = app::acceptor(identity)?;

    let shown = common::shown(local, "localhost");
    println!("chat relay on wss://{shown}{}", app::PATH);
    std::io::stdout().flush()?;

    let ws = app::ws_server(app::config());
    let serving = tokio::spawn(app::serve_tls(ws.clone(), listener, acceptor));
    common::serve_until_signal(&ws).await;
    serving.abort();
    Ok(())
}
