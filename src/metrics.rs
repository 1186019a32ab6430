//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! With the feature on, wshub records what a WebSocket server is usually asked about into
//! whatever recorder the application installed (`metrics-exporter-prometheus`,
//! `metrics-exporter-statsd`, …); the library brings no exporter of its own. Without a
//! recorder every call is a no-op; without the feature the code is not compiled at all.
//!
//! # Names
//!
//! Every name starts with a prefix, `wshub` unless [`MetricsConfig::prefix`] says otherwise,
//! and follows Prometheus' conventions (as the axum / tower metrics crates do): counters end
//! in `_total`, the unit comes before it.
//!
//! | name | type | unit | labels | what |
//! |------|------|------|--------|------|
//! | `wshub_connections_open` | gauge | connections | | WebSocket connections open right now (handshake done, client registered, not yet ended) |
//! | `wshub_connects_total` | counter | connections | | connections that completed the handshake and were registered in the hub |
//! | `wshub_disconnects_total` | counter | connections | `code` | connections that ended, by close code: the code the server sent, else the code the peer sent, else `1006` (no close frame: reset, write timeout, close timeout) |
//! | `wshub_upgrades_refused_total` | counter | requests | `status` | upgrade requests answered with an HTTP error instead of 101: 404 path, 403 origin, 503 limit or shutdown, 400 invalid, and whatever [`Handler::on_handshake`](crate::ws::Handler::on_handshake) rejected with |
//! | `wshub_written_bytes_total` | counter | bytes | | bytes written to sockets by the connection drivers (data and control frames) |
//! | `wshub_messages_sent_total` | counter | messages | | messages offered to clients ([`Stats::sent`](crate::Stats::sent)) |
//! | `wshub_messages_delivered_total` | counter | messages | | messages taken out of mailboxes to be written ([`Stats::delivered`](crate::Stats::delivered)) |
//! | `wshub_messages_dropped_total` | counter | messages | | messages discarded by the overflow policy, with an evicted client's backlog, or still queued when a client left ([`Stats::dropped`](crate::Stats::dropped)) |
//! | `wshub_evictions_total` | counter | clients | | slow clients evicted by [`OverflowPolicy::Disconnect`](crate::OverflowPolicy::Disconnect) ([`Stats::evicted`](crate::Stats::evicted)) |
//! | `wshub_mailbox_depth` | histogram | messages | | each client's backlog (hub and rooms together), sampled once per interval |
//! | `wshub_backplane_published_total` | counter | envelopes | | room broadcasts handed to the backplane ([`BackplaneStats::published`](crate::backplane::BackplaneStats::published)) |
//! | `wshub_backplane_publish_errors_total` | counter | envelopes | | room broadcasts the backplane refused ([`BackplaneStats::publish_failed`](crate::backplane::BackplaneStats::publish_failed)) |
//! | `wshub_backplane_received_total` | counter | envelopes | | envelopes from other nodes delivered to local rooms ([`BackplaneStats::received`](crate::backplane::BackplaneStats::received)) |
//!
//! # Cost, and when the numbers move
//!
//! Nothing is recorded per message, and nothing shared is touched per write. The hub already
//! counts every message exactly ([`Hub::stats`](crate::Hub::stats)), and the drivers count the
//! bytes they write per thread; a small task per hub (and per backplane
//! [`Node`](crate::backplane::Node)) publishes what those counts gained since its last look
//! once per [interval](MetricsConfig::interval) (default 1 s), and samples the mailbox depths
//! then. So the `messages_*`, `evictions`, `written_bytes`, `mailbox_depth` and `backplane_*`
//! series lag by at most one interval. A [`Server`](crate::ws::Server) starts its hub's task
//! on its first connection; for a hub served some other way, call [`report_hub`].
//!
//! The connection series (`connections_open`, `connects`, `disconnects`,
//! `upgrades_refused`) are recorded where they happen, once per connection or request.
//!
//! Several hubs or servers in one process add up into the same series (each publishes its
//! own increments); tell processes apart with your exporter's global labels.
//!
//! # Setup
//!
//! Install the recorder before serving: handles taken before it exist stay no-ops.
//!
//! ```
//! use std::time::Duration;
//! use wshub::metrics::MetricsConfig;
//!
//! // Optional: another prefix or interval, once, before the first hub is served.
//! MetricsConfig::default()
//!     .prefix("chat")
//!     .interval(Duration::from_millis(500))
//!     .install()?;
//! // Install your recorder here, e.g. `metrics_exporter_prometheus::PrometheusBuilder`,
//! // then serve as usual; `chat_connections_open` and friends follow.
//! # Ok::<(), wshub::Error>(())
//! ```
//!
//! The chat example (`cargo run --example chat --features metrics -- --metrics
//! 127.0.0.1:9090`) serves them as Prometheus text at `http://127.0.0.1:9090/metrics`.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{SharedString, Unit};
use tungstenite::protocol::frame::coding::CloseCode;

use crate::backplane::BackplaneStats;
use crate::error::{Error, Result};
use crate::hub::{Hub, Stats};
use crate::ws::Disconnect;

/// The default prefix of every metric name.
pub const DEFAULT_PREFIX: &str = "wshub";

/// The default interval at which hub and backplane counters are published.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The close code reported for a connection that ended without a close frame (RFC 6455
/// 7.1.5: "abnormal closure", never sent on the wire).
const NO_CLOSE_FRAME: &str = "1006";

/// Process-wide metric settings: the name prefix and the publishing interval.
///
/// ```
/// use std::time::Duration;
/// use wshub::metrics::MetricsConfig;
///
/// let config = MetricsConfig::default().prefix("myapp_ws").interval(Duration::from_secs(5));
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    prefix: String,
    interval: Duration,
}

impl Default for MetricsConfig {
    /// Prefix `wshub`, interval 1 s.
    fn default() -> Self {
        MetricsConfig {
            prefix: DEFAULT_PREFIX.to_string(),
            interval: DEFAULT_INTERVAL,
        }
    }
}

impl MetricsConfig {
    /// The prefix of every name (`PREFIX_connections_open`, …). The default is `wshub`.
    ///
    /// # Panics
    ///
    /// Panics unless `prefix` is a valid Prometheus name: ASCII letters, digits and `_`, not
    /// starting with a digit, not empty.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            prefix
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "metrics prefix must be [A-Za-z_][A-Za-z0-9_]*"
        );
        self.prefix = prefix;
        self
    }

    /// How often the hub and backplane counters are published and the mailbox depths
    /// sampled. The default is 1 s: shorter makes the series fresher at the cost of one walk
    /// over the clients per interval.
    ///
    /// # Panics
    ///
    /// Panics if `interval` is zero.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "metrics interval must be non-zero");
        self.interval = interval;
        self
    }

    /// Makes these the settings of the process. Call it once, before the first connection is
    /// served or the first [`Node`](crate::backplane::Node) is created; without it the
    /// defaults apply.
    ///
    /// # Errors
    ///
    /// [`Error::Metrics`] when the settings were already fixed: by an earlier `install`, or
    /// because metrics were already recorded with the defaults.
    pub fn install(self) -> Result<()> {
        SETTINGS
            .set(Settings::new(self))
            .map_err(|_| Error::Metrics("settings already fixed: install them before serving"))
    }
}

/// The full names, built once from the prefix.
struct Names {
    connections_open: SharedString,
    connects: SharedString,
    disconnects: SharedString,
    refused: SharedString,
    written_bytes: SharedString,
    sent: SharedString,
    delivered: SharedString,
    dropped: SharedString,
    evictions: SharedString,
    mailbox_depth: SharedString,
    bp_published: SharedString,
    bp_publish_errors: SharedString,
    bp_received: SharedString,
}

struct Settings {
    interval: Duration,
    names: Names,
}

impl Settings {
    fn new(config: MetricsConfig) -> Self {
        let name = |suffix: &str| SharedString::from_owned(format!("{}_{suffix}", config.prefix));
        Settings {
            interval: config.interval,
            names: Names {
                connections_open: name("connections_open"),
                connects: name("connects_total"),
                disconnects: name("disconnects_total"),
                refused: name("upgrades_refused_total"),
                written_bytes: name("written_bytes_total"),
                sent: name("messages_sent_total"),
                delivered: name("messages_delivered_total"),
                dropped: name("messages_dropped_total"),
                evictions: name("evictions_total"),
                mailbox_depth: name("mailbox_depth"),
                bp_published: name("backplane_published_total"),
                bp_publish_errors: name("backplane_publish_errors_total"),
                bp_received: name("backplane_received_total"),
            },
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings::new(MetricsConfig::default()))
}

fn names() -> &'static Names {
    &settings().names
}

/// Registers the description and unit of every metric with the installed recorder, and
/// creates the series without labels at zero (so a scrape shows them before any traffic).
///
/// Each hub's publishing task does this when it starts; call it yourself right after
/// installing your recorder to see every series from the start.
pub fn describe() {
    let n = names();
    metrics::gauge!(n.connections_open.clone()).increment(0.0);
    for counter in [
        &n.connects,
        &n.written_bytes,
        &n.sent,
        &n.delivered,
        &n.dropped,
        &n.evictions,
    ] {
        metrics::counter!(counter.clone()).increment(0);
    }
    let c = Unit::Count;
    metrics::describe_gauge!(
        n.connections_open.clone(),
        c,
        "WebSocket connections open right now"
    );
    metrics::describe_histogram!(
        n.mailbox_depth.clone(),
        c,
        "Messages queued per client, sampled once per interval"
    );
    let counters = [
        (
            &n.connects,
            c,
            "WebSocket connections registered in the hub",
        ),
        (
            &n.disconnects,
            c,
            "WebSocket connections ended, by close code (1006: no close frame)",
        ),
        (
            &n.refused,
            c,
            "Upgrade requests answered with an HTTP error instead of 101, by status",
        ),
        (
            &n.written_bytes,
            Unit::Bytes,
            "Bytes written to WebSocket connections",
        ),
        (&n.sent, c, "Messages offered to clients"),
        (
            &n.delivered,
            c,
            "Messages taken out of mailboxes to be written",
        ),
        (
            &n.dropped,
            c,
            "Messages discarded by the overflow policy or with a client that left",
        ),
        (&n.evictions, c, "Slow clients evicted"),
        (
            &n.bp_published,
            c,
            "Room broadcasts handed to the backplane",
        ),
        (
            &n.bp_publish_errors,
            c,
            "Room broadcasts the backplane refused",
        ),
        (
            &n.bp_received,
            c,
            "Envelopes from other nodes delivered to local rooms",
        ),
    ];
    for (name, unit, help) in counters {
        metrics::describe_counter!(name.clone(), unit, help);
    }
}

/// Starts, once per hub, the task that publishes `hub`'s counters and samples its mailbox
/// depths every interval (see the [module docs](self)). A [`Server`](crate::ws::Server)
/// calls it for its hub on its first connection; call it yourself for a hub you drive some
/// other way. The task ends when the hub is dropped. Must be called inside a tokio runtime.
pub fn report_hub<M: Clone + Send + Sync + 'static>(hub: &Hub<M>) {
    if hub.metrics_reporter_started() {
        return;
    }
    let weak = hub.downgrade();
    let mut last = Stats::default();
    spawn_periodic(move || {
        let Some(hub) = weak.upgrade() else {
            return false;
        };
        let now = hub.stats();
        let n = names();
        metrics::counter!(n.sent.clone()).increment(now.sent.saturating_sub(last.sent));
        metrics::counter!(n.delivered.clone())
            .increment(now.delivered.saturating_sub(last.delivered));
        metrics::counter!(n.dropped.clone()).increment(now.dropped.saturating_sub(last.dropped));
        metrics::counter!(n.evictions.clone()).increment(now.evicted.saturating_sub(last.evicted));
        last = now;
        written::publish(&n.written_bytes);
        let depth = metrics::histogram!(n.mailbox_depth.clone());
        for backlog in hub.backlogs() {
            depth.record(backlog as f64);
        }
        true
    });
}

/// Publishes a backplane node's counters every interval while `stats` returns them.
pub(crate) fn report_backplane(mut stats: impl FnMut() -> Option<BackplaneStats> + Send + 'static) {
    let mut last = BackplaneStats::default();
    spawn_periodic(move || {
        let Some(now) = stats() else {
            return false;
        };
        let n = names();
        metrics::counter!(n.bp_published.clone())
            .increment(now.published.saturating_sub(last.published));
        metrics::counter!(n.bp_publish_errors.clone())
            .increment(now.publish_failed.saturating_sub(last.publish_failed));
        metrics::counter!(n.bp_received.clone())
            .increment(now.received.saturating_sub(last.received));
        last = now;
        true
    });
}

/// Runs `tick` now and then every interval until it returns false.
fn spawn_periodic(mut tick: impl FnMut() -> bool + Send + 'static) {
    let period = settings().interval;
    tokio::spawn(async move {
        describe();
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if !tick() {
                return;
            }
        }
    });
}

/// One connection's metrics: counted open on creation, closed on [`ConnMetrics::closed`] or,
/// failing that (the connection's future was dropped), on drop with code 1006.
pub(crate) struct ConnMetrics {
    closed: bool,
}

impl ConnMetrics {
    /// A connection of `hub` is open.
    pub(crate) fn open<M: Clone + Send + Sync + 'static>(hub: &Hub<M>) -> Self {
        report_hub(hub);
        let n = names();
        metrics::gauge!(n.connections_open.clone()).increment(1.0);
        metrics::counter!(n.connects.clone()).increment(1);
        ConnMetrics { closed: false }
    }

    /// `bytes` more were written to the socket.
    pub(crate) fn written(&self, bytes: usize) {
        written::add(bytes);
    }

    /// The connection ended as `d` tells.
    pub(crate) fn closed(&mut self, d: &Disconnect) {
        let code = d
            .sent_code
            .or(d.peer_code)
            .map_or(SharedString::const_str(NO_CLOSE_FRAME), code_label);
        self.count_disconnect(code);
    }

    fn count_disconnect(&mut self, code: SharedString) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        metrics::counter!(names().disconnects.clone(), "code" => code).increment(1);
    }
}

impl Drop for ConnMetrics {
    fn drop(&mut self) {
        self.count_disconnect(SharedString::const_str(NO_CLOSE_FRAME));
        metrics::gauge!(names().connections_open.clone()).decrement(1.0);
    }
}

/// An upgrade request was answered with `status` instead of 101.
pub(crate) fn refused(status: u16) {
    metrics::counter!(names().refused.clone(), "status" => status.to_string()).increment(1);
}

/// The close code as a label value, without allocating for the common ones.
fn code_label(code: CloseCode) -> SharedString {
    let n = u16::from(code);
    let common = match n {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1011 => "1011",
        1013 => "1013",
        _ => return SharedString::from_owned(n.to_string()),
    };
    SharedString::const_str(common)
}

/// Bytes written to sockets, counted per thread.
///
/// A facade counter is one atomic shared by every connection (two with the Prometheus
/// exporter): adding to it after each write made the drivers contend on one cache line, and
/// the server spent 18 % more CPU per delivery (115 ns against 97) in `scripts/bench_e2e.sh`
/// at 1 000 clients. Each thread adds to its own atomic instead (a plain load and store: it
/// is the only writer), and the hub tasks publish the growth of the sum once per interval.
mod written {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use metrics::SharedString;

    /// Every thread's count. A thread that ends leaves its count here, so the sum never goes
    /// down; the list grows by one small entry per thread that ever wrote.
    static THREADS: Mutex<Vec<Arc<AtomicU64>>> = Mutex::new(Vec::new());
    /// The sum up to which the counter has been published, by any hub's task.
    static PUBLISHED: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        static MINE: Arc<AtomicU64> = {
            let mine = Arc::new(AtomicU64::new(0));
            THREADS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(mine.clone());
            mine
        };
    }

    pub(super) fn add(bytes: usize) {
        let _ = MINE.try_with(|mine| {
            // Only this thread writes it.
            mine.store(
                mine.load(Ordering::Relaxed) + bytes as u64,
                Ordering::Relaxed,
            );
        });
    }

    /// Adds what was written since the last publication (by this or another hub's task) to
    /// the counter `name`.
    pub(super) fn publish(name: &SharedString) {
        let total: u64 = THREADS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .sum();
        // The sum only grows, so `fetch_max` hands each task a share no other task counts.
        let before = PUBLISHED.fetch_max(total, Ordering::AcqRel);
        metrics::counter!(name.clone()).increment(total.saturating_sub(before));
    }
}

/// Each member's backlog, summed over the logs it reads (the hub's and its rooms').
pub(crate) fn sum_by_client(
    backlogs: impl IntoIterator<Item = (crate::ClientId, usize)>,
) -> Vec<usize> {
    let mut by_client: HashMap<crate::ClientId, usize> = HashMap::new();
    for (id, n) in backlogs {
        *by_client.entry(id).or_default() += n;
    }
    by_client.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientId;

    #[test]
    fn close_codes_become_labels() {
        assert_eq!(&*code_label(CloseCode::Size), "1009");
        assert_eq!(&*code_label(CloseCode::Away), "1001");
        assert_eq!(&*code_label(CloseCode::from(4000)), "4000");
    }

    #[test]
    fn depths_are_summed_per_client_over_the_logs_it_reads() {
        let mut depths = sum_by_client([
            (ClientId(1), 0),
            (ClientId(2), 3),
            (ClientId(1), 5), // client 1 in a room
            (ClientId(2), 1),
            (ClientId(3), 0),
        ]);
        depths.sort_unstable();
        assert_eq!(depths, [0, 4, 5]);
    }

    #[test]
    #[should_panic(expected = "metrics prefix")]
    fn a_prefix_that_is_not_a_prometheus_name_panics() {
        let _ = MetricsConfig::default().prefix("my-app");
    }
}
