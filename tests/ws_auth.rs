//! The handshake hook (`Handler::on_handshake`): a request is rejected with the status and
//! body the application chose, before any 101 and without keeping a slot; an accepted one
//! carries its data for the connection's lifetime. Over real sockets, on both ways in (the
//! server's own accept loop, and an HTTP server handing over the upgrade).

mod common;

use std::net::SocketAddr;

use common::{next_text, refused_request, send_text, wait_for, PATIENCE};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use wshub::ws::{Accept, Client, Config, Handler, HandlerError, HandshakeRequest, Reject, Server};
use wshub::{HubConfig, Message};

/// The user a handshake authenticated.
struct User(String);

/// Accepts `name=...` cookies (but not the banned one) and greets by name.
struct Auth;

impl Handler for Auth {
    fn on_handshake(&self, req: &HandshakeRequest<'_>) -> Result<Accept, Reject> {
        assert!(req.peer.is_some(), "the server knows the peer");
        match req.cookie("name") {
            Some("mallory") => Err(Reject::forbidden("mallory is banned")),
            Some(name) => Ok(Accept::with_data(User(name.to_string()))),
            None => Err(Reject::unauthorized("log in first")),
        }
    }

    fn on_message(&self, client: &Client, msg: Message) -> Result<(), HandlerError> {
        let name = client.data::<User>().map_or("?", |u| u.0.as_str());
        client.send(Message::text(format!("{name}: {}", msg.to_text()?)))?;
        Ok(())
    }
}

fn request(
    addr: SocketAddr,
    cookie: Option<&'static str>,
) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", HeaderValue::from_static(c));
    }
    req
}

async fn check(server: &Server, addr: SocketAddr) {
    assert_eq!(
        refused_request(request(addr, None)).await,
        (401, "log in first\n".to_string())
    );
    assert_eq!(
        refused_request(request(addr, Some("theme=dark; name=mallory"))).await,
        (403, "mallory is banned\n".to_string())
    );
    // Nothing registered, no slot kept.
    wait_for(|| server.connection_count() == 0).await;
    assert_eq!(server.hub().client_count(), 0);

    let (mut ws, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(request(addr, Some("theme=dark; name=ada"))),
    )
    .await
    .unwrap()
    .expect("accepted");
    send_text(&mut ws, "hello").await;
    assert_eq!(next_text(&mut ws).await, "ada: hello");
    send_text(&mut ws, "again").await;
    assert_eq!(next_text(&mut ws).await, "ada: again", "the data lasts");
}

#[tokio::test]
async fn the_server_rejects_or_accepts_with_data() {
    let (server, addr) = common::start(HubConfig::default(), Config::default(), Auth).await;
    check(&server, addr).await;
}

/// The HTTP-server path (`upgrade_response_from` + `serve_upgraded`), with hyper.
#[tokio::test]
async fn an_http_server_gets_the_same_answers() {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let server = Server::new(wshub::Hub::new(), Config::default(), Auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let resp = match s.upgrade_response_from(&req, Some(peer)) {
                            Ok((switching, admission)) => {
                                let info = wshub::ws::ConnInfo::new(
                                    Some(peer),
                                    req.uri().clone(),
                                    req.headers().clone(),
                                );
                                let upgrade = hyper::upgrade::on(req);
                                tokio::spawn(async move {
                                    if let Ok(upgraded) = upgrade.await {
                                        let _ = s
                                            .serve_upgraded(admission, TokioIo::new(upgraded), info)
                                            .await;
                                    }
                                });
                                switching.map(|()| String::new())
                            }
                            Err(refusal) => refusal,
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    check(&server, addr).await;
}
