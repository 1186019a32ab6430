//! The chat room on axum: the page at `/`, the relay at `/ws?room=NAME` through wshub's
//! axum extractor. The relay itself (rooms, message size limit, slow-client eviction) is the
//! hyper chat's, reused from `examples/chat/app.rs`.
//!
//! Shared by `examples/axum_chat/main.rs` and the end-to-end tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

#[path = "../chat/app.rs"]
pub mod chat;

use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use wshub::ws::axum::WsUpgrade;
use wshub::ws::Server;

/// The chat's routes, with `server` as the router's state (the extractor takes it from there).
pub fn router(server: Server) -> Router {
    Router::new()
        .route("/", get(|| async { Html(chat::PAGE) }))
        .route("/ws", get(join))
        .with_state(server)
}

/// Upgrades a request whose room name is valid; the room is joined in the relay's
/// `on_connect`.
async fn join(uri: Uri, upgrade: WsUpgrade) -> Response {
    if chat::room_from_query(uri.query()).is_none() {
        // Dropping the upgrade releases its connection slot.
        return (
            StatusCode::BAD_REQUEST,
            "invalid room name: use 1-64 of A-Z a-z 0-9 _ -\n",
        )
            .into_response();
    }
    upgrade.into_response()
}
