//! Small helpers shared by the examples: command-line flags and logging.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::str::FromStr;

/// The value after `--name` on the command line, parsed; `default` when absent.
/// Exits with a message when the value does not parse.
pub fn flag<T: FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    let Some(pos) = args.iter().position(|a| a == name) else {
        return default;
    };
    let Some(value) = args.get(pos + 1) else {
        eprintln!("{name} needs a value");
        std::process::exit(2);
    };
    value.parse().unwrap_or_else(|_| {
        eprintln!("{name}: cannot parse {value:?}");
        std::process::exit(2);
    })
}

/// True when the switch `name` (a flag without a value, e.g. `--self-signed`) is on the
/// command line.
pub fn switch(name: &str) -> bool {
    std::env::args().skip(1).any(|a| a == name)
}

/// Logs to stderr; `RUST_LOG` overrides the default level (info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Ctrl-C, or SIGTERM on Unix.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `local` as it goes in a URL: a wildcard bind (0.0.0.0, ::) is shown as `host`.
pub fn shown(local: std::net::SocketAddr, host: &str) -> String {
    if local.ip().is_unspecified() {
        format!("{host}:{}", local.port())
    } else {
        local.to_string()
    }
}

/// Waits for Ctrl-C or SIGTERM, then shuts `ws` down gracefully (5 s) and logs the report.
pub async fn serve_until_signal(ws: &wshub::ws::Server) {
    shutdown_signal().await;
    println!("shutting down");
    let report = ws.shutdown(std::time::Duration::from_secs(5)).await;
    tracing::info!(?report, stats = ?ws.hub().stats(), "stopped");
}
