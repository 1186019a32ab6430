//! A client for the sum service, as the seed's `ws_client.go`.
//!
//! ```sh
//! cargo run --example sum_client                     # ten requests, one second apart
//! cargo run --example sum_client -- --count 3 --interval-ms 100 --url ws://127.0.0.1:5657/add
//! ```

#[path = "sum/client.rs"]
mod client;
#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let opts = client::Options {
        url: common::flag("--url", "ws://localhost:5657/add".to_string()),
        cookie_name: common::flag("--name", "zcy".to_string()),
        count: common::flag("--count", 10),
        interval: Duration::from_millis(common::flag("--interval-ms", 1000)),
    };
    if let Err(e) = client::run(&opts, &mut std::io::stdout()).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
