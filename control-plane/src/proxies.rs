//! The proxies this control plane has heard from since it started: the name each
//! reports, the config version it last applied, whether its snapshot watch stream is
//! open and when it was last seen. Held in memory only; the proxy API (`api::proxies`)
//! updates it, and `gatehouse proxies` and `/metrics` read it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::metrics::ProxyGauge;
use crate::store::now;

/// Every proxy seen since start, by the id it reports.
#[derive(Default)]
pub struct ProxyRegistry {
    proxies: Mutex<HashMap<String, ProxyInfo>>,
}

/// What the control plane knows of one proxy.
#[derive(Debug, Clone)]
pub struct ProxyInfo {
    pub name: String,
    /// Version the proxy last reported as applied.
    pub version: i64,
    /// Open watch streams (a reconnect may briefly overlap the old one).
    pub streams: u32,
    /// Unix seconds.
    pub last_seen: i64,
}

impl ProxyRegistry {
    /// Records contact from proxy `id` (renaming it when `name` is given), then applies
    /// `f` to what is known of it.
    pub fn update(&self, id: &str, name: Option<&str>, f: impl FnOnce(&mut ProxyInfo)) {
        let mut proxies = self.proxies.lock().expect("registry lock");
        let info = proxies.entry(id.to_string()).or_insert_with(|| ProxyInfo {
            name: name.unwrap_or(id).to_string(),
            version: 0,
            streams: 0,
            last_seen: now(),
        });
        if let Some(name) = name {
            info.name = name.to_string();
        }
        info.last_seen = now();
        f(info);
    }

    /// Every proxy seen since start, as `/metrics` shows it against `current`, the
    /// published config version.
    pub fn gauges(&self, current: i64) -> Vec<ProxyGauge> {
        let proxies = self.proxies.lock().expect("registry lock");
        proxies
            .values()
            .map(|p| ProxyGauge {
                name: p.name.clone(),
                lag: (current - p.version).max(0),
                last_seen: p.last_seen,
                connected: p.streams > 0,
            })
            .collect()
    }

    /// Every proxy seen since start with its id, as `gatehouse proxies` lists them:
    /// by name, then id.
    pub fn list(&self) -> Vec<(String, ProxyInfo)> {
        let proxies = self.proxies.lock().expect("registry lock").clone();
        let mut list: Vec<(String, ProxyInfo)> = proxies.into_iter().collect();
        list.sort_by(|a, b| a.1.name.cmp(&b.1.name).then(a.0.cmp(&b.0)));
        list
    }
}
