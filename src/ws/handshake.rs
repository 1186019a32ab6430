//! The upgrade checks shared by both ways in (a raw stream, or a request from an HTTP server):
//! path, origin, connection limit, shutdown.

use std::borrow::Cow;

use tungstenite::http::{self, header, HeaderMap, HeaderValue, Response, StatusCode, Uri};

use super::config::{Config, OriginPolicy};

/// An upgrade request that will not be served: the status and the text sent back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: Cow<'static, str>,
}

impl Refusal {
    pub(crate) const NOT_FOUND: Refusal = Refusal {
        status: StatusCode::NOT_FOUND,
        reason: Cow::Borrowed("the requested path does not exist"),
    };
    pub(crate) const FORBIDDEN_ORIGIN: Refusal = Refusal {
        status: StatusCode::FORBIDDEN,
        reason: Cow::Borrowed("cross-origin WebSocket request refused"),
    };
    pub(crate) const TOO_MANY: Refusal = Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason: Cow::Borrowed("too many connections"),
    };
    pub(crate) const SHUTTING_DOWN: Refusal = Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason: Cow::Borrowed("server shutting down"),
    };
    pub(crate) const BAD_UPGRADE: Refusal = Refusal {
        status: StatusCode::BAD_REQUEST,
        reason: Cow::Borrowed("not a valid WebSocket upgrade request"),
    };
    /// The request reached an axum route on an HTTP connection hyper cannot upgrade.
    #[cfg(feature = "axum")]
    pub(crate) const NOT_UPGRADABLE: Refusal = Refusal {
        status: StatusCode::UPGRADE_REQUIRED,
        reason: Cow::Borrowed("this HTTP connection cannot be upgraded"),
    };
    /// An axum upgrade answered outside a tokio runtime: nothing could serve it.
    #[cfg(feature = "axum")]
    pub(crate) const NO_RUNTIME: Refusal = Refusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason: Cow::Borrowed("no tokio runtime to serve the connection on"),
    };

    /// The HTTP response carrying this refusal, with a plain-text body.
    /// Called once per refused request (it is also where refusals are counted).
    pub(crate) fn response(&self) -> Response<Option<String>> {
        #[cfg(feature = "metrics")]
        crate::metrics::refused(self.status.as_u16());
        let mut resp = Response::new(Some(format!("{}\n", self.reason)));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

/// Whether an upgrade's path is compared with [`Config::path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathCheck {
    /// A path other than the configured one gets 404.
    Config,
    /// A router already chose this route (axum, which strips the prefix of a nested router
    /// before the handler sees the URI): the path is not looked at.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    Routed,
}

/// Path and origin checks from the configuration.
pub(crate) fn check_request(
    config: &Config,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    check_path(config, uri)?;
    check_origin(config, headers)
}

fn check_path(config: &Config, uri: &Uri) -> Result<(), Refusal> {
    match config.get_path() {
        Some(path) if uri.path() != path => Err(Refusal::NOT_FOUND),
        _ => Ok(()),
    }
}

fn check_origin(config: &Config, headers: &HeaderMap) -> Result<(), Refusal> {
    if !origin_allowed(config.get_origin(), headers) {
        return Err(Refusal::FORBIDDEN_ORIGIN);
    }
    Ok(())
}

fn origin_allowed(policy: &OriginPolicy, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true; // not a browser: no ambient credentials to hijack
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    match policy {
        OriginPolicy::Any => true,
        OriginPolicy::SameOrigin => same_origin(origin, headers),
        OriginPolicy::AllowList(list) => {
            same_origin(origin, headers) || list.iter().any(|o| o.eq_ignore_ascii_case(origin))
        }
    }
}

/// `Origin: scheme://host[:port]` names the same authority as the `Host` header.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((_, authority)) = origin.split_once("://") else {
        return false; // "null" and other opaque origins
    };
    let authority = authority.trim_end_matches('/');
    authority.eq_ignore_ascii_case(host)
}

/// Checks an upgrade request that arrived through an HTTP server (hyper, axum, …) and builds
/// the `101 Switching Protocols` response for it; `path` says whether the path is checked.
pub(crate) fn upgrade_response<B>(
    config: &Config,
    req: &http::Request<B>,
    path: PathCheck,
) -> Result<Response<()>, Refusal> {
    if path == PathCheck::Config {
        check_path(config, req.uri())?;
    }
    check_origin(config, req.headers())?;
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    // Exactly one key (RFC 6455 4.1 sends it once), and a valid one.
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if is_websocket_key(key.as_bytes()) => Some(key),
        _ => None,
    };
    let valid = req.method() == http::Method::GET
        && req.version() >= http::Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            == Some(b"13");
    let (true, Some(key)) = (valid, key) else {
        return Err(Refusal::BAD_UPGRADE);
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(())
        .map_err(|_| Refusal::BAD_UPGRADE)
}

/// `Sec-WebSocket-Key` is the base64 of exactly 16 bytes (RFC 6455 4.2.1): 22 characters of
/// the standard alphabet and `==` padding, in canonical form (the 4 bits the last character
/// carries beyond the 16 bytes are zero), as tungstenite checks it on the
/// `Server::serve_connection` path: both ways in accept the same keys.
fn is_websocket_key(key: &[u8]) -> bool {
    let is_base64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    match key.split_at_checked(22) {
        Some((data, padding)) => {
            data.iter().all(is_base64)
                // The last character's value is a multiple of 16: A, Q, g or w.
                && matches!(data.last(), Some(b'A' | b'Q' | b'g' | b'w'))
                && padding == b"=="
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_compares_authority_with_host() {
        let h = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
        ]);
        assert!(origin_allowed(&OriginPolicy::SameOrigin, &h));
        let h = headers(&[
            ("host", "localhost:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!origin_allowed(&OriginPolicy::SameOrigin, &h));
        let h = headers(&[("host", "localhost:8080"), ("origin", "null")]);
        assert!(!origin_allowed(&OriginPolicy::SameOrigin, &h));
        let h = headers(&[("host", "localhost:8080")]);
        assert!(origin_allowed(&OriginPolicy::SameOrigin, &h));
    }

    #[test]
    fn allow_list_and_any() {
        let h = headers(&[("host", "api.example"), ("origin", "https://app.example")]);
        assert!(!origin_allowed(&OriginPolicy::SameOrigin, &h));
        let list = OriginPolicy::AllowList(vec!["https://APP.example".into()]);
        assert!(origin_allowed(&list, &h));
        assert!(origin_allowed(&OriginPolicy::Any, &h));
    }

    #[test]
    fn seed_accept_key() {
        // The example from the seed article / RFC 6455.
        assert_eq!(
            tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            tungstenite::handshake::derive_accept_key(b"duR0pUQxNgBJsRQKj2Jxsw=="),
            "a1y2oy1zvgHsVyHMx+hZ1AYrEHI="
        );
    }

    fn upgrade_with_key(keys: &[&'static str]) -> http::Request<()> {
        let mut req = http::Request::builder()
            .uri("/")
            .header(header::HOST, "localhost")
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13");
        for key in keys {
            req = req.header(header::SEC_WEBSOCKET_KEY, *key);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn a_key_of_16_bytes_is_accepted() {
        let config = Config::default();
        for key in [
            "dGhlIHNhbXBsZSBub25jZQ==",
            "duR0pUQxNgBJsRQKj2Jxsw==",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "/////////////////////w==",
            "+/+/+/+/+/+/+/+/+/+/+w==",
        ] {
            let resp = upgrade_response(&config, &upgrade_with_key(&[key]), PathCheck::Config)
                .unwrap_or_else(|r| panic!("{key} refused: {r:?}"));
            assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            assert_eq!(
                resp.headers()[header::SEC_WEBSOCKET_ACCEPT],
                accept.as_str()
            );
        }
    }

    #[test]
    fn a_key_that_is_not_the_base64_of_16_bytes_gets_400() {
        let config = Config::default();
        for key in [
            "",
            "x",
            "hello",
            "dGhlIHNhbXBsZSBub25jZQ",       // 16 bytes, unpadded
            "dGhlIHNhbXBsZSBub25jZQ=",      // 16 bytes, half the padding
            "dGhlIHNhbXBsZSBub25j",         // 15 bytes
            "dGhlIHNhbXBsZSBub25jZQo=",     // 17 bytes
            "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 16 bytes and more
            "dGhlIHNhbXBsZSBub25jZ===",     // padding too early
            "dGhlIHNhbXBsZSBub25jZ-==",     // URL-safe alphabet
            "dGhlIHNhbXBsZSBub25jZ_==",
            "dGhlIHNhbXBsZSBub25jZR==", // stray bits after the 16 bytes
            "/////////////////////x==",
            "dGhlIHNhbXBsZSBub25j ZQ==",  // whitespace inside
            "dGhlIHNhbXBsZSBub25jZQ==\t", // not base64 after the padding
            "ZGhlIHNhbXBsZSBub25jZQ==ZGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert_eq!(
                upgrade_response(&config, &upgrade_with_key(&[key]), PathCheck::Config).err(),
                Some(Refusal::BAD_UPGRADE),
                "{key:?} accepted"
            );
        }
        // Missing, and sent twice.
        assert_eq!(
            upgrade_response(&config, &upgrade_with_key(&[]), PathCheck::Config).err(),
            Some(Refusal::BAD_UPGRADE)
        );
        assert_eq!(
            upgrade_response(
                &config,
                &upgrade_with_key(&["dGhlIHNhbXBsZSBub25jZQ==", "duR0pUQxNgBJsRQKj2Jxsw=="]),
                PathCheck::Config
            )
            .err(),
            Some(Refusal::BAD_UPGRADE)
        );
    }

    #[test]
    fn a_routed_upgrade_skips_the_path_but_not_the_origin() {
        let config = Config::default().path("/ws");
        let req = upgrade_with_key(&["dGhlIHNhbXBsZSBub25jZQ=="]); // path "/"
        assert_eq!(
            upgrade_response(&config, &req, PathCheck::Config).err(),
            Some(Refusal::NOT_FOUND)
        );
        let resp = upgrade_response(&config, &req, PathCheck::Routed).expect("routed");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);

        let mut foreign = upgrade_with_key(&["dGhlIHNhbXBsZSBub25jZQ=="]);
        foreign.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert_eq!(
            upgrade_response(&config, &foreign, PathCheck::Routed).err(),
            Some(Refusal::FORBIDDEN_ORIGIN)
        );
    }
}
