//! Connection settings: heartbeat, limits, buffers, the upgrade checks.

use std::time::Duration;

use tungstenite::protocol::WebSocketConfig;

/// When a connection is considered dead, and how the server finds out.
///
/// The read deadline is pushed forward by every inbound frame (data, ping, pong or close); when
/// it passes, the connection is closed with 1000 and reason `"read timeout"`. With pings on,
/// the server pings every `ping_interval` and a live browser answers with a pong, which
/// pushes the deadline; a dead peer does not, and is dropped within the read timeout. The
/// write timeout bounds how long writing may make no progress at all (a peer that stopped
/// reading its socket); when it passes the connection is dropped without a close frame, since
/// nothing can be written to it any more. Any byte written restarts it, so a peer that reads
/// slowly but steadily is not dropped by it. (Over TCP the OS reports a full socket writable
/// again only once a good part of its send buffer has drained, so "steadily" means at least
/// that much per timeout.)
///
/// ```
/// use std::time::Duration;
/// use wshub::ws::Heartbeat;
///
/// // gorilla's chat defaults: ping every 54 s, pong within 60 s, writes within 10 s.
/// let chat = Heartbeat::default();
/// assert_eq!(chat.get_ping_interval(), Some(Duration::from_secs(54)));
///
/// // The seed's sum server: no pings, close after 20 s without a message.
/// let sum = Heartbeat::idle_timeout(Duration::from_secs(20));
/// assert_eq!(sum.get_read_timeout(), Some(Duration::from_secs(20)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    ping_interval: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl Default for Heartbeat {
    /// Ping every 54 s, pong timeout 60 s, write timeout 10 s (gorilla's chat example).
    fn default() -> Self {
        Heartbeat::ping(Duration::from_secs(54), Duration::from_secs(60))
    }
}

impl Heartbeat {
    /// Default write timeout: 10 s.
    pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Ping every `interval`; drop the connection when nothing (pong or otherwise) arrives
    /// within `pong_timeout`. Write timeout 10 s.
    ///
    /// # Panics
    ///
    /// Panics if `interval` is zero or not shorter than `pong_timeout`: the pong to one ping
    /// must be able to arrive before the deadline.
    pub fn ping(interval: Duration, pong_timeout: Duration) -> Self {
        assert!(
            !interval.is_zero() && interval < pong_timeout,
            "ping interval must be non-zero and shorter than the pong timeout"
        );
        Heartbeat {
            ping_interval: Some(interval),
            read_timeout: Some(pong_timeout),
            write_timeout: Some(Self::DEFAULT_WRITE_TIMEOUT),
        }
    }

    /// No pings; close a connection after `timeout` without any inbound frame. Write timeout
    /// 10 s.
    ///
    /// # Panics
    ///
    /// Panics if `timeout` is zero.
    pub fn idle_timeout(timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "idle timeout must be non-zero");
        Heartbeat {
            ping_interval: None,
            read_timeout: Some(timeout),
            write_timeout: Some(Self::DEFAULT_WRITE_TIMEOUT),
        }
    }

    /// No pings and no deadlines at all: a dead peer is noticed only when TCP reports it.
    pub fn off() -> Self {
        Heartbeat {
            ping_interval: None,
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// Sets the write timeout (`None` for none).
    ///
    /// # Panics
    ///
    /// Panics if the timeout is zero.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        assert!(
            timeout != Some(Duration::ZERO),
            "write timeout must be non-zero"
        );
        self.write_timeout = timeout;
        self
    }

    /// The ping interval, if pings are on.
    pub fn get_ping_interval(&self) -> Option<Duration> {
        self.ping_interval
    }

    /// The read deadline (pong timeout or idle timeout), if any.
    pub fn get_read_timeout(&self) -> Option<Duration> {
        self.read_timeout
    }

    /// The write timeout, if any.
    pub fn get_write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }
}

/// Which `Origin` headers an upgrade request may carry.
///
/// Browsers attach cookies to a WebSocket upgrade whatever page started it, and the
/// same-origin policy does not apply to WebSocket. A server that accepts every origin (as the
/// seed's `CheckOrigin` returning `true` does) lets any web page the user visits open a
/// connection *as that user* and read the replies: cross-site WebSocket hijacking. So the
/// default accepts only requests whose `Origin` matches their `Host`, and requests without
/// `Origin` (non-browser clients, which carry no ambient browser credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// `Origin` absent, or its host and port equal to the `Host` header. The default.
    #[default]
    SameOrigin,
    /// `Origin` absent, same-origin, or exactly one of these (e.g. `"https://example.com"`,
    /// compared without regard to ASCII case).
    AllowList(Vec<String>),
    /// Every origin. Only for servers that authenticate without cookies (e.g. a token in the
    /// first message) or serve public data.
    Any,
}

/// Settings for accepting and driving WebSocket connections.
///
/// ```
/// use std::time::Duration;
/// use wshub::ws::{Config, Heartbeat, OriginPolicy};
///
/// let config = Config::default()
///     .path("/add")
///     .heartbeat(Heartbeat::idle_timeout(Duration::from_secs(20)))
///     .max_message_size(4096)
///     .origin(OriginPolicy::Any);
/// assert_eq!(config.get_path(), Some("/add"));
/// ```
///
/// Setters take the plain names and getters are `get_*`, as on `std::process::Command` (see
/// [`HubConfig`](crate::HubConfig)).
#[derive(Debug, Clone)]
pub struct Config {
    path: Option<String>,
    origin: OriginPolicy,
    handshake_timeout: Duration,
    max_connections: usize,
    max_message_size: usize,
    read_buffer_size: usize,
    write_buffer_size: usize,
    heartbeat: Heartbeat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: None,
            origin: OriginPolicy::SameOrigin,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            max_message_size: 64 * 1024,
            read_buffer_size: 1024,
            write_buffer_size: 16 * 1024,
            heartbeat: Heartbeat::default(),
        }
    }
}

impl Config {
    /// Accept upgrades only on this path (the query string is ignored); any other path gets
    /// HTTP 404 with a readable body. The default accepts every path.
    ///
    /// Upgrades through `ws::axum` (feature `axum`) skip this check: the router already
    /// chose the route, and a nested router sees the path without its prefix.
    ///
    /// # Panics
    ///
    /// Panics if `path` does not start with `/`.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        assert!(path.starts_with('/'), "path must start with '/'");
        self.path = Some(path);
        self
    }

    /// Which origins may connect. The default is [`OriginPolicy::SameOrigin`]; a refused
    /// origin gets HTTP 403.
    #[must_use]
    pub fn origin(mut self, policy: OriginPolicy) -> Self {
        self.origin = policy;
        self
    }

    /// How long a peer has to complete the opening handshake. The default is 5 s (the seed's).
    ///
    /// # Panics
    ///
    /// Panics if the timeout is zero.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        assert!(!timeout.is_zero(), "handshake timeout must be non-zero");
        self.handshake_timeout = timeout;
        self
    }

    /// The most connections served at once (handshaking or open); one more is refused with
    /// HTTP 503. The default is 10 000. Each connection holds one file descriptor, so keep this
    /// under the process's open-file limit.
    ///
    /// # Panics
    ///
    /// Panics if `max` is 0.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        assert!(max > 0, "max_connections must be at least 1");
        self.max_connections = max;
        self
    }

    /// The largest inbound message (and frame) in bytes; a larger one closes the connection
    /// with 1009. The default is 64 KiB (tungstenite's is 64 MiB, which lets one client make
    /// the server allocate that much).
    ///
    /// # Panics
    ///
    /// Panics if `bytes` is 0.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        assert!(bytes > 0, "max_message_size must be at least 1");
        self.max_message_size = bytes;
        self
    }

    /// Bytes read from the socket per read call, and the size of each connection's read buffer
    /// when idle. The default is 1 KiB (tungstenite's is 128 KiB, allocated and touched per
    /// connection). Larger messages still arrive whole: the buffer grows to fit one message
    /// and is released after it.
    ///
    /// # Panics
    ///
    /// Panics if `bytes` is less than 64.
    #[must_use]
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        assert!(bytes >= 64, "read_buffer_size must be at least 64");
        self.read_buffer_size = bytes;
        self
    }

    /// The write buffer a connection keeps between batches. Each drained batch (up to 256
    /// messages) is encoded into one buffer and written with one syscall; a burst that needs
    /// more allocates temporarily, and the buffer is released once written. The default is
    /// 16 KiB: a backlog of small messages goes out in one write, and an idle connection
    /// holds no write buffer at all.
    #[must_use]
    pub fn write_buffer_size(mut self, bytes: usize) -> Self {
        self.write_buffer_size = bytes;
        self
    }

    /// Heartbeat and timeouts. The default is [`Heartbeat::default`].
    #[must_use]
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The accepted path, if restricted.
    pub fn get_path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The origin policy.
    pub fn get_origin(&self) -> &OriginPolicy {
        &self.origin
    }

    /// The handshake timeout.
    pub fn get_handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The connection limit.
    pub fn get_max_connections(&self) -> usize {
        self.max_connections
    }

    /// The inbound message size limit.
    pub fn get_max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The write buffer kept between batches.
    pub fn get_write_buffer_size(&self) -> usize {
        self.write_buffer_size
    }

    /// The heartbeat.
    pub fn get_heartbeat(&self) -> Heartbeat {
        self.heartbeat
    }

    /// The tungstenite configuration these settings translate to.
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.read_buffer_size)
            // tungstenite writes only control frames here (data frames are encoded by the
            // driver): write them at once, and never hold more than a few of them.
            .write_buffer_size(0)
            .max_write_buffer_size(4 * 1024)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size))
    }
}
