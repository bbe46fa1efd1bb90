//! `GET /metrics`: the Prometheus text format (0.0.4), encoded by `prometheus-client`.
//!
//! Two kinds of series: request counters and latency histograms kept in memory since
//! the process started ([`HttpMetrics`], fed by `http::middleware::record_metrics`),
//! and gauges read from the database at each scrape ([`Snapshot`],
//! `App::metrics_snapshot`). Nothing secret is ever a label or a value: routes are
//! the router's patterns (`/api/v1/checkouts/{id}`), never the path a client sent.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s: sign-in and releases are tens of ms, a slow disk shows up at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15))
}

/// Counters kept since the process started.
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    wal_truncate_incomplete: Counter,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            wal_truncate_incomplete: Counter::default(),
        }
    }
}

impl HttpMetrics {
    /// One answered request: `route` is the matched pattern (or `unmatched`).
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { route: route.to_owned(), method: method.to_owned(), status })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route: route.to_owned(), method: method.to_owned() })
            .observe(seconds);
    }

    /// A quorum-mode WAL truncation that a reader blocked (app/mod.rs).
    pub fn wal_truncate_incomplete(&self) {
        self.wal_truncate_incomplete.inc();
    }
}

/// Values read from the database (and the process) at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub vault_unsealed: bool,
    pub outbox_undelivered: i64,
    pub outbox_failed: i64,
    /// Seconds since the oldest undelivered announcement was written (0 when none).
    pub outbox_oldest_undelivered_age_seconds: i64,
    /// Checkouts per state (every state, zeros included).
    pub checkouts_by_state: Vec<(String, i64)>,
    pub drills_open: i64,
    pub drills_overdue: i64,
    pub audit_entries: i64,
    pub backup_configured: bool,
    /// Unix time of the newest scheduled backup (0: none).
    pub backup_last_success_timestamp: i64,
    /// Seconds since then, from the service's clock (-1: none).
    pub backup_last_success_age_seconds: i64,
    pub backup_last_failure_timestamp: i64,
    pub litestream: bool,
    /// Unexplained successful root use nobody has acknowledged (the dashboard banner).
    pub root_activity_unexplained_open: i64,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The whole exposition: process counters and the snapshot.
pub fn render(http: &HttpMetrics, s: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("breakglass");
    registry.register(
        "http_requests",
        "HTTP requests answered, by route pattern, method and status",
        http.requests.clone(),
    );
    registry.register(
        "http_request_duration_seconds",
        "Time to answer a request, by route pattern and method",
        http.latency.clone(),
    );
    registry.register(
        "wal_truncate_incomplete",
        "Quorum-mode WAL truncations that a reader blocked (set replication.litestream under Litestream)",
        http.wal_truncate_incomplete.clone(),
    );
    gauge(
        &mut registry,
        "vault_unsealed",
        "1 when this process holds the unsealed vault key",
        i64::from(s.vault_unsealed),
    );
    gauge(&mut registry, "outbox_undelivered", "Announcements not yet delivered to SNS", s.outbox_undelivered);
    gauge(&mut registry, "outbox_failed", "Announcements past sns.max_attempts (still retried)", s.outbox_failed);
    gauge(
        &mut registry,
        "outbox_oldest_undelivered_age_seconds",
        "Age of the oldest undelivered announcement (0 when none)",
        s.outbox_oldest_undelivered_age_seconds,
    );
    let checkouts: Family<StateLabels, Gauge> = Family::default();
    for (state, n) in &s.checkouts_by_state {
        checkouts.get_or_create(&StateLabels { state: state.clone() }).set(*n);
    }
    registry.register("checkouts", "Checkouts by state", checkouts);
    gauge(&mut registry, "drills_open", "Drills due or overdue", s.drills_open);
    gauge(&mut registry, "drills_overdue", "Drills past their grace period", s.drills_overdue);
    gauge(&mut registry, "audit_entries", "Entries in the audit log", s.audit_entries);
    gauge(
        &mut registry,
        "backup_configured",
        "1 when scheduled backups are on (backup.dir)",
        i64::from(s.backup_configured),
    );
    gauge(
        &mut registry,
        "backup_last_success_timestamp_seconds",
        "Unix time of the newest scheduled backup in backup.dir (0: none)",
        s.backup_last_success_timestamp,
    );
    gauge(
        &mut registry,
        "backup_last_success_age_seconds",
        "Seconds since the newest scheduled backup, by the service's clock (-1: none)",
        s.backup_last_success_age_seconds,
    );
    gauge(
        &mut registry,
        "backup_last_failure_timestamp_seconds",
        "Unix time of the last failed scheduled backup since the last success (0: none)",
        s.backup_last_failure_timestamp,
    );
    gauge(
        &mut registry,
        "root_activity_unexplained_open",
        "Unexplained successful root use in AWS that no admin has acknowledged yet",
        s.root_activity_unexplained_open,
    );
    gauge(
        &mut registry,
        "replication_litestream",
        "1 when replication.litestream is set (replication age: Litestream's own metrics)",
        i64::from(s.litestream),
    );
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
