//! The control plane's own Prometheus metrics, served unauthenticated at `/metrics`.
//! Labels are bounded and reveal little about tenants: route templates (never raw
//! paths, which hold workspace slugs), methods, status codes, outcome words, proxy
//! names (chosen by the operator), and, on the runner's counters, server slugs. No
//! workspace or token appears here.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// How a `POST /v1/proxy/audit` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Stored (new events, duplicates or both).
    Ok,
    /// Refused as malformed or too big; nothing stored.
    Rejected,
    /// The store failed; the proxy will resend.
    Error,
}

impl BatchOutcome {
    fn label(self) -> &'static str {
        match self {
            BatchOutcome::Ok => "ok",
            BatchOutcome::Rejected => "rejected",
            BatchOutcome::Error => "error",
        }
    }
}

/// What `/metrics` shows of one proxy, read from the proxy registry at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyGauge {
    pub name: String,
    /// Config versions behind the current one.
    pub lag: i64,
    /// Unix seconds.
    pub last_seen: i64,
    pub connected: bool,
}

pub struct ControlPlaneMetrics {
    registry: Registry,
    config_version: IntGauge,
    proxies_connected: IntGauge,
    proxy_config_lag: IntGaugeVec,
    proxy_last_seen: IntGaugeVec,
    audit_events: IntCounterVec,
    audit_batches: IntCounterVec,
    call_events_pruned: IntCounter,
    api_requests: IntCounterVec,
    api_duration: HistogramVec,
    /// The runner's: hosted processes, restarts, crashes.
    pub hosted: crate::runner::HostedMetrics,
    /// Held while a scrape rebuilds the per-proxy series and encodes: two scrapes at
    /// once must not see each other's half-rebuilt series. Never held across an
    /// await (rendering is synchronous).
    scrape: Mutex<()>,
}

impl Default for ControlPlaneMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlPlaneMetrics {
    pub fn new() -> ControlPlaneMetrics {
        let registry = Registry::new();
        let register = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("unique metric names");
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(g.clone()));
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(Box::new(g.clone()));
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(Box::new(c.clone()));
            c
        };
        let api_duration = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_control_plane_api_request_duration_seconds",
                "Time from receiving an API request until its response headers were ready, by route template",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        register(Box::new(api_duration.clone()));
        let metrics = ControlPlaneMetrics {
            config_version: gauge(
                "gatehouse_control_plane_config_version",
                "Version of the config snapshot the control plane publishes",
            ),
            proxies_connected: gauge(
                "gatehouse_control_plane_proxies_connected",
                "Proxies holding a config watch stream open",
            ),
            proxy_config_lag: gauge_vec(
                "gatehouse_control_plane_proxy_config_lag",
                "Config versions a proxy is behind the published one, by proxy name (proxies seen since the control plane started)",
                &["proxy"],
            ),
            proxy_last_seen: gauge_vec(
                "gatehouse_control_plane_proxy_last_seen_timestamp_seconds",
                "Unix time the control plane last heard from a proxy, by proxy name",
                &["proxy"],
            ),
            audit_events: counter_vec(
                "gatehouse_control_plane_audit_events_received_total",
                "Call events received from proxies: stored (new) or duplicate (already stored, from a resent batch)",
                &["result"],
            ),
            audit_batches: counter_vec(
                "gatehouse_control_plane_audit_batches_total",
                "Audit batches posted by proxies, by outcome: ok, rejected (malformed or too big, nothing stored) or error (store failure)",
                &["outcome"],
            ),
            call_events_pruned: {
                let c = IntCounter::new(
                    "gatehouse_control_plane_call_events_pruned_total",
                    "Stored call events deleted for being older than --call-retention-days",
                )
                .expect("valid metric");
                register(Box::new(c.clone()));
                c
            },
            api_requests: counter_vec(
                "gatehouse_control_plane_api_requests_total",
                "API requests by method, route template (`unmatched` for unknown paths) and status code",
                &["method", "route", "status"],
            ),
            api_duration,
            hosted: crate::runner::HostedMetrics::register(&registry),
            registry,
            scrape: Mutex::new(()),
        };
        // Both results exist from the start, so a rate() over them never begins at
        // a missing series.
        for result in ["stored", "duplicate"] {
            metrics.audit_events.with_label_values(&[result]);
        }
        for outcome in [
            BatchOutcome::Ok,
            BatchOutcome::Rejected,
            BatchOutcome::Error,
        ] {
            metrics.audit_batches.with_label_values(&[outcome.label()]);
        }
        metrics
    }

    pub fn audit_batch(&self, outcome: BatchOutcome) {
        self.audit_batches
            .with_label_values(&[outcome.label()])
            .inc();
    }

    pub fn audit_events(&self, stored: u64, duplicates: u64) {
        self.audit_events
            .with_label_values(&["stored"])
            .inc_by(stored);
        self.audit_events
            .with_label_values(&["duplicate"])
            .inc_by(duplicates);
    }

    pub fn call_events_pruned(&self, deleted: u64) {
        self.call_events_pruned.inc_by(deleted);
    }

    /// Records one answered request. `route` must be a route template or
    /// `unmatched`; methods outside the standard set count as `OTHER`, so a caller
    /// cannot mint label values.
    pub fn api_request(&self, method: &http::Method, route: &str, status: u16, took: Duration) {
        let method = match *method {
            http::Method::GET
            | http::Method::POST
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::PATCH
            | http::Method::HEAD
            | http::Method::OPTIONS => method.as_str(),
            _ => "OTHER",
        };
        self.api_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.api_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with the gauges that mirror state set from `config_version`
    /// and `proxies` first. Proxies sharing a name are one series: the largest lag
    /// and the latest contact.
    pub fn render(&self, config_version: i64, proxies: &[ProxyGauge]) -> Vec<u8> {
        let mut by_name: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for p in proxies {
            let entry = by_name.entry(&p.name).or_insert((p.lag, p.last_seen));
            entry.0 = entry.0.max(p.lag);
            entry.1 = entry.1.max(p.last_seen);
        }
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.config_version.set(config_version);
        self.proxies_connected
            .set(proxies.iter().filter(|p| p.connected).count() as i64);
        self.proxy_config_lag.reset();
        self.proxy_last_seen.reset();
        for (name, (lag, last_seen)) in by_name {
            self.proxy_config_lag.with_label_values(&[name]).set(lag);
            self.proxy_last_seen
                .with_label_values(&[name])
                .set(last_seen);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &ControlPlaneMetrics, proxies: &[ProxyGauge]) -> String {
        String::from_utf8(m.render(7, proxies)).unwrap()
    }

    #[test]
    fn every_family_has_help_and_the_prefix() {
        let m = ControlPlaneMetrics::new();
        m.api_request(
            &http::Method::GET,
            "/v1/workspaces/{ws}",
            200,
            Duration::from_millis(3),
        );
        let out = text(
            &m,
            &[ProxyGauge {
                name: "edge-1".into(),
                lag: 2,
                last_seen: 1_700_000_000,
                connected: true,
            }],
        );
        let families: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        // The runner's two counter families appear with their first crash.
        assert_eq!(families.len(), 10, "{out}");
        for family in families {
            assert!(family.starts_with("gatehouse_control_plane_"), "{family}");
            assert!(
                out.contains(&format!("# HELP {family} ")),
                "{family} has no HELP"
            );
        }
        assert!(
            out.contains("gatehouse_control_plane_config_version 7\n"),
            "{out}"
        );
        assert!(
            out.contains("gatehouse_control_plane_proxies_connected 1\n"),
            "{out}"
        );
        assert!(out.contains("gatehouse_control_plane_proxy_config_lag{proxy=\"edge-1\"} 2\n"));
        assert!(out.contains(
            "gatehouse_control_plane_api_requests_total{method=\"GET\",route=\"/v1/workspaces/{ws}\",status=\"200\"} 1\n"
        ));
        assert!(
            out.contains("gatehouse_control_plane_audit_batches_total{outcome=\"rejected\"} 0\n")
        );
    }

    #[test]
    fn proxies_sharing_a_name_are_one_series_and_gone_ones_disappear() {
        let m = ControlPlaneMetrics::new();
        let proxy = |lag, last_seen| ProxyGauge {
            name: "edge".into(),
            lag,
            last_seen,
            connected: false,
        };
        let out = text(&m, &[proxy(1, 50), proxy(3, 40)]);
        assert!(out.contains("gatehouse_control_plane_proxy_config_lag{proxy=\"edge\"} 3\n"));
        assert!(out.contains(
            "gatehouse_control_plane_proxy_last_seen_timestamp_seconds{proxy=\"edge\"} 50\n"
        ));
        assert!(!text(&m, &[]).contains("proxy=\"edge\""));
    }

    #[test]
    fn unknown_methods_do_not_become_labels() {
        let m = ControlPlaneMetrics::new();
        let odd = http::Method::from_bytes(b"BREW").unwrap();
        m.api_request(&odd, "unmatched", 405, Duration::ZERO);
        let out = text(&m, &[]);
        assert!(out.contains("method=\"OTHER\",route=\"unmatched\",status=\"405\""));
        assert!(!out.contains("BREW"));
    }
}
