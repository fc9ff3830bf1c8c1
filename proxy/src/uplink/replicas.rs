//! The control plane's replicas as a proxy knows them: the URLs it was given, in
//! order, and which one its links use now. Every link (the config watch, audit
//! shipping, the token-use report) asks the same list, so when one link finds the
//! replica in use dead the others move on with it instead of each finding out alone.
//! A replica is left only when it fails; there is no going back to the first one
//! while the one in use answers.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A list of control-plane base URLs that was not usable.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaListError {
    #[error("no control-plane URL given")]
    Empty,
    #[error("control-plane URL {url:?} is not an http:// or https:// URL")]
    NotHttp { url: String },
    #[error("control-plane URL {url:?} is given twice")]
    Repeated { url: String },
}

/// The replicas and the one in use. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Replicas {
    urls: Vec<String>,
    in_use: AtomicUsize,
}

/// One replica, as a link picked it: its place in the list and its base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica<'a> {
    pub index: usize,
    pub url: &'a str,
}

impl Replicas {
    /// The replicas `urls` (trailing `/` dropped), the first in use.
    pub fn new(urls: impl IntoIterator<Item = String>) -> Result<Replicas, ReplicaListError> {
        let mut list: Vec<String> = Vec::new();
        for url in urls {
            let url = url.trim().trim_end_matches('/').to_string();
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            if host.is_none_or(str::is_empty) {
                return Err(ReplicaListError::NotHttp { url });
            }
            if list.contains(&url) {
                return Err(ReplicaListError::Repeated { url });
            }
            list.push(url);
        }
        if list.is_empty() {
            return Err(ReplicaListError::Empty);
        }
        Ok(Replicas {
            urls: list,
            in_use: AtomicUsize::new(0),
        })
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Never: a list is refused empty. Here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The replica links should use now.
    pub fn in_use(&self) -> Replica<'_> {
        self.at(self.in_use.load(Ordering::Acquire))
    }

    /// Replica `index` (modulo the list's length).
    pub fn at(&self, index: usize) -> Replica<'_> {
        let index = index % self.urls.len();
        Replica {
            index,
            url: &self.urls[index],
        }
    }

    /// `failed` did not answer: moves every link to the replica after it, unless
    /// another link already moved on (then the replica in use is left alone).
    /// Returns the replica to use now.
    pub fn failed(&self, failed: Replica<'_>, why: &dyn std::fmt::Display) -> Replica<'_> {
        let next = (failed.index + 1) % self.urls.len();
        if next != failed.index
            && self
                .in_use
                .compare_exchange(failed.index, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                from = failed.url,
                to = self.urls[next],
                "control plane replica failed ({why}); moving to the next one"
            );
        }
        self.in_use()
    }

    /// Makes `replica` the one in use (it answered when another did not).
    pub fn answered(&self, replica: Replica<'_>) {
        self.in_use.store(replica.index, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(urls: &[&str]) -> Result<Replicas, ReplicaListError> {
        Replicas::new(urls.iter().map(|u| u.to_string()))
    }

    #[test]
    fn the_first_is_used_until_it_fails_then_the_next_in_a_ring() {
        let replicas = list(&["http://a:7070/", "http://b:7070", "http://c:7070"]).unwrap();
        let a = replicas.in_use();
        assert_eq!(a.url, "http://a:7070");
        let b = replicas.failed(a, &"refused");
        assert_eq!(b.url, "http://b:7070");
        let c = replicas.failed(b, &"refused");
        assert_eq!(replicas.failed(c, &"refused").url, "http://a:7070");
    }

    #[test]
    fn a_failure_already_acted_on_by_another_link_moves_nothing() {
        let replicas = list(&["http://a", "http://b", "http://c"]).unwrap();
        let a = replicas.in_use();
        // The watch and the audit shipper both saw `a` die.
        replicas.failed(a, &"watch broke");
        assert_eq!(replicas.failed(a, &"refused").url, "http://b");
    }

    #[test]
    fn one_replica_stays_in_use_whatever_fails() {
        let replicas = list(&["http://only"]).unwrap();
        let only = replicas.in_use();
        assert_eq!(replicas.failed(only, &"refused"), only);
    }

    #[test]
    fn bad_lists_say_what_is_wrong() {
        assert!(matches!(list(&[]), Err(ReplicaListError::Empty)));
        let err = list(&["http://a", "cp-b:7070"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "control-plane URL \"cp-b:7070\" is not an http:// or https:// URL"
        );
        let err = list(&["http://a/", "http://a"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "control-plane URL \"http://a\" is given twice"
        );
    }
}
