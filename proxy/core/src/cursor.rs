//! The cursor of a merged list (`prompts/list`, `resources/list`,
//! `resources/templates/list`). A merged list walks the workspace's servers in slug
//! order and each server's own pages in its order; the cursor records where the walk
//! stopped: which server, and that server's own cursor (none = its first page). It is
//! base64url JSON — opaque to clients, readable in a debugger, and meaningful to every
//! replica, so paging needs no state on the proxy.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Where a merged list continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    /// Slug of the server whose page comes next.
    #[serde(rename = "s")]
    pub server: String,
    /// That server's own cursor; `None` for its first page.
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid params: cursor {0:?} was not issued by this gateway")]
pub struct BadCursor(pub String);

impl ListCursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("cursor serialises"))
    }

    pub fn decode(text: &str) -> Result<ListCursor, BadCursor> {
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| BadCursor(text.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_cursors() {
        for c in [
            ListCursor {
                server: "github".into(),
                upstream: None,
            },
            ListCursor {
                server: "notes".into(),
                upstream: Some("page=2&sig=/+=".into()),
            },
        ] {
            let text = c.encode();
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(ListCursor::decode(&text), Ok(c));
        }
        assert!(ListCursor::decode("2").is_err());
        assert!(ListCursor::decode("!!").is_err());
        assert!(ListCursor::decode(&URL_SAFE_NO_PAD.encode(b"{\"x\":1}")).is_err());
    }
}
