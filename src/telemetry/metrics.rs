//! Prometheus metrics: what the [`super::Telemetry`] layer counts for every call, what the
//! engine counts (store commits, cache evictions), and gauges read from the engine when
//! `/metrics` is scraped, served in the Prometheus text format on a listener of their own.
//!
//! The hot path touches only pre-resolved handles: each method's counters are looked up in
//! their `Family` once, on the method's first call with that status code, then kept.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::error::code_name;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::domain::access::ReasonCode;
use crate::engine::{Engine, Watcher};

/// Latency buckets, in seconds: 25 µs to about 3.3 s, doubling.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(25e-6, 2.0, 18)
}

/// What the engine measures itself: its durable commits and its cache's evictions.
#[derive(Clone)]
pub struct StoreMetrics {
    pub commit_seconds: Histogram,
    pub cache_evictions: Counter,
    /// Change-log revisions compaction deleted.
    pub log_compacted: Counter,
    /// The oldest revision the change log keeps, as of the last compaction.
    pub log_oldest: Gauge,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            commit_seconds: Histogram::new(latency_buckets()),
            cache_evictions: Counter::default(),
            log_compacted: Counter::default(),
            log_oldest: Gauge::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    outcome: &'static str,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric, registered once per server.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: HistogramFamily<MethodLabel>,
    decisions: Family<DecisionLabels, Counter>,
    reasons: Family<ReasonLabels, Counter>,
    /// `reasons`' handles by (outcome, reason code), resolved on first use.
    reason_handles: [OnceLock<Counter>; 2 * ReasonCode::ALL.len()],
    cache_hits: Counter,
    cache_misses: Counter,
    shed: Counter,
    revision: Gauge,
    replica_lag: Gauge<f64, AtomicU64>,
    watch_streams: Gauge,
    cached_decisions: Gauge,
    tasks: Gauge,
}

/// One method's handles, resolved on first use.
#[derive(Default)]
pub(super) struct MethodHandles {
    calls: [OnceLock<Counter>; 17],
    latency: OnceLock<Histogram>,
    decisions: [OnceLock<Counter>; 2],
}

fn outcome(allow: bool) -> &'static str {
    if allow { "allow" } else { "deny" }
}

impl Metrics {
    pub fn new(store: &StoreMetrics) -> Self {
        let mut registry = Registry::with_prefix("posture");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Calls answered, by method and gRPC status code", calls.clone());
        let latency: HistogramFamily<MethodLabel> = Family::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "call_duration_seconds",
            "Time from a call's arrival to its response headers, by method",
            latency.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Access decisions, by method and outcome", decisions.clone());
        let reasons = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "decision_reasons",
            "Reason codes of the access decisions, by outcome (a decision may give several)",
            reasons.clone(),
        );
        let (cache_hits, cache_misses, shed) = (Counter::default(), Counter::default(), Counter::default());
        registry.register("decision_cache_hits", "Decisions answered from the cache", cache_hits.clone());
        registry.register("decision_cache_misses", "Decisions evaluated (not in the cache)", cache_misses.clone());
        registry.register(
            "decision_cache_evictions",
            "Cached decisions evicted by the capacity bound",
            store.cache_evictions.clone(),
        );
        registry.register(
            "store_commit_duration_seconds",
            "Time to commit a write durably to the store",
            store.commit_seconds.clone(),
        );
        registry.register(
            "change_log_compacted_revisions",
            "Change-log revisions deleted by compaction (replicas behind them reload the state)",
            store.log_compacted.clone(),
        );
        registry.register(
            "change_log_oldest_revision",
            "The oldest revision the change log keeps, as of the last compaction",
            store.log_oldest.clone(),
        );
        registry.register(
            "shed_calls",
            "Calls refused at once (RESOURCE_EXHAUSTED) because the server was serving its limit of calls",
            shed.clone(),
        );
        let revision = Gauge::default();
        registry.register("revision", "The revision this replica has applied", revision.clone());
        let replica_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "replica_lag_seconds",
            "Time since this replica last confirmed it holds the store's latest revision",
            replica_lag.clone(),
        );
        let watch_streams = Gauge::default();
        registry.register("watch_streams", "WatchCompliance streams open", watch_streams.clone());
        let cached_decisions = Gauge::default();
        registry.register("decision_cache_entries", "Decisions in the cache", cached_decisions.clone());
        let tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tasks alive in the server's runtime (a steady load keeps it flat)",
            tasks.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            decisions,
            reasons,
            reason_handles: std::array::from_fn(|_| OnceLock::new()),
            cache_hits,
            cache_misses,
            shed,
            revision,
            replica_lag,
            watch_streams,
            cached_decisions,
            tasks,
        }
    }

    /// The counter [`crate::layers::Bounds`] moves for each call it sheds.
    pub fn shed_counter(&self) -> Counter {
        self.shed.clone()
    }

    pub(super) fn call(&self, method: &'static str, handles: &MethodHandles, code: tonic::Code, took: Duration) {
        let i = (code as usize).min(16);
        let labels = || CallLabels { method, code: code_name(code) };
        handles.calls[i].get_or_init(|| self.calls.get_or_create(&labels()).clone()).inc();
        let latency = handles.latency.get_or_init(|| self.latency.get_or_create(&MethodLabel { method }).clone());
        latency.observe(took.as_secs_f64());
    }

    pub(super) fn decision(
        &self,
        method: &'static str,
        handles: &MethodHandles,
        allow: bool,
        reasons: impl Iterator<Item = ReasonCode>,
        cache_hit: Option<bool>,
    ) {
        let labels = || DecisionLabels { method, outcome: outcome(allow) };
        handles.decisions[usize::from(allow)].get_or_init(|| self.decisions.get_or_create(&labels()).clone()).inc();
        for code in reasons {
            let i = usize::from(allow) * ReasonCode::ALL.len() + code as usize;
            let labels = || ReasonLabels { outcome: outcome(allow), reason: code.as_str() };
            self.reason_handles[i].get_or_init(|| self.reasons.get_or_create(&labels()).clone()).inc();
        }
        match cache_hit {
            Some(true) => self.cache_hits.inc(),
            Some(false) => self.cache_misses.inc(),
            None => 0,
        };
    }

    /// The text exposition, with the gauges read from `engine` and `watcher` now.
    fn render(&self, engine: &Engine, watcher: &Watcher) -> String {
        self.revision.set(i64::try_from(engine.revision()).unwrap_or(i64::MAX));
        self.replica_lag.set(engine.unconfirmed_for().as_secs_f64());
        self.watch_streams.set(i64::try_from(watcher.open_streams()).unwrap_or(i64::MAX));
        self.cached_decisions.set(i64::try_from(engine.cached_decisions()).unwrap_or(i64::MAX));
        let tasks = tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks());
        self.tasks.set(i64::try_from(tasks).unwrap_or(i64::MAX));
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => out,
            Err(e) => format!("# the metrics could not be encoded: {e}\n"),
        }
    }
}

/// The largest request head the metrics listener reads.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves `GET /metrics` on `listener` until `stop` turns true: a minimal HTTP/1.1 responder,
/// one request per connection, as Prometheus scrapes (no HTTP stack is needed for that).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    watcher: Arc<Watcher>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (metrics, engine, watcher) = (metrics.clone(), engine.clone(), watcher.clone());
        tokio::spawn(async move {
            let answer = tokio::time::timeout(Duration::from_secs(10), async {
                let head = read_head(&mut stream).await?;
                let response = respond(&head, || metrics.render(&engine, &watcher));
                stream.write_all(response.as_bytes()).await?;
                stream.shutdown().await
            });
            if let Ok(Err(e)) = answer.await {
                tracing::debug!(error = %e, "metrics listener: a scrape failed");
            }
        });
    }
}

async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn respond(head: &str, render: impl FnOnce() -> String) -> String {
    let mut request_line = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render()),
        (_, "/metrics") => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
        _ => ("404 Not Found", "text/plain", "metrics are at /metrics\n".to_string()),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Binds the metrics listener (`--metrics-listen`).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_is_answered() {
        let ok = respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || "posture_x 1\n".into());
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nposture_x 1\n"), "{ok}");
        assert!(ok.contains("Content-Length: 12\r\n"), "{ok}");
        assert!(respond("POST /metrics HTTP/1.1\r\n\r\n", String::new).starts_with("HTTP/1.1 405"));
        assert!(respond("GET / HTTP/1.1\r\n\r\n", String::new).starts_with("HTTP/1.1 404"));
    }
}
