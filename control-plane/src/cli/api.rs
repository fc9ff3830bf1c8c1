//! The admin API client: JSON over HTTP, bearer-authenticated, with failures sorted
//! into the CLI's exit codes (API error vs control plane unreachable).

use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::CliError;

/// Where the CLI talks to when nothing says otherwise (`gatehouse up`'s default).
pub const DEFAULT_API: &str = "http://127.0.0.1:7070";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts `http://host:port[/prefix]`, or `host:port` meaning plain http; drops a
/// trailing slash so the stored form is stable.
pub fn normalize_api_url(text: &str) -> Result<String, CliError> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|err| CliError::usage(format!("invalid API URL {text:?}: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(CliError::usage(format!(
            "invalid API URL {text:?}: expected http://HOST:PORT or https://HOST"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::usage(format!(
            "invalid API URL {text:?}: no query or fragment allowed"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A client for one control plane, optionally carrying the user's session token.
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    base_text: String,
    token: Option<String>,
}

impl ApiClient {
    /// `base` must already be normalised by [`normalize_api_url`].
    pub fn new(base: &str, token: Option<String>) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("gatehouse-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| CliError::Local(anyhow::anyhow!("cannot build HTTP client: {err}")))?;
        let base = Url::parse(base)
            .map_err(|err| CliError::usage(format!("invalid API URL {base:?}: {err}")))?;
        Ok(Self {
            http,
            base_text: base.as_str().trim_end_matches('/').to_owned(),
            base,
            token,
        })
    }

    pub async fn get(&self, path: &[&str]) -> Result<Value, CliError> {
        self.send(Method::GET, path, &[], None).await
    }

    pub async fn get_query(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.send(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub async fn put(&self, path: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::PUT, path, &[], Some(body)).await
    }

    pub async fn patch(&self, path: &[&str], body: &Value) -> Result<Value, CliError> {
        self.send(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &[&str]) -> Result<Value, CliError> {
        self.send(Method::DELETE, path, &[], None).await
    }

    pub async fn delete_query(
        &self,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        self.send(Method::DELETE, path, query, None).await
    }

    /// `path` are raw segments (`["v1", "workspaces", slug]`); each is
    /// percent-encoded, so a name with `/` or spaces cannot escape its segment.
    fn url(&self, path: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let mut request = self.http.request(method, self.url(path, query));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(&err))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|err| {
            CliError::Local(anyhow::anyhow!(
                "the control plane at {} sent a response that is not JSON: {err}",
                self.base_text
            ))
        })
    }

    fn unreachable(&self, err: &reqwest::Error) -> CliError {
        let reason = if err.is_timeout() {
            "timed out".to_owned()
        } else {
            root_cause(err)
        };
        CliError::Unreachable {
            url: self.base_text.clone(),
            reason,
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)") says more than
/// reqwest's outer "error sending request for url (...)".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// Turns an error status and its `{"error": {code, message}}` body into a
/// [`CliError::Api`]; a body in another shape still yields a readable message.
pub fn api_error(status: reqwest::StatusCode, body: &[u8]) -> CliError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let reason = status.canonical_reason().unwrap_or("error");
            if text.is_empty() || text.len() > 200 || parsed.is_some() {
                format!("the control plane answered {} {reason}", status.as_u16())
            } else {
                format!(
                    "the control plane answered {} {reason}: {text}",
                    status.as_u16()
                )
            }
        });
    let problems = error
        .and_then(|e| e.get("problems"))
        .and_then(Value::as_array)
        .map(|list| list.iter().map(problem_text).collect())
        .unwrap_or_default();
    CliError::Api {
        status: status.as_u16(),
        code,
        message,
        problems,
    }
}

/// One validation problem, `{"path": "version", "message": "..."}` -> `version: ...`.
fn problem_text(problem: &Value) -> String {
    let text = |key| problem.get(key).and_then(Value::as_str).unwrap_or("");
    match (text("path"), text("message")) {
        (_, "") if !problem.is_object() => problem
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| problem.to_string()),
        ("", message) => message.to_owned(),
        (path, message) => format!("{path}: {message}"),
    }
}

/// Reads a typed view of an answer; `what` names the request in the error.
pub fn decode<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, CliError> {
    T::deserialize(value).map_err(|err| {
        CliError::Local(anyhow::anyhow!(
            "unexpected answer from the control plane to {what}: {err}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn api_urls_are_normalised() {
        assert_eq!(
            normalize_api_url("http://127.0.0.1:7070/").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            normalize_api_url("localhost:7070").unwrap(),
            "http://localhost:7070"
        );
        assert_eq!(
            normalize_api_url("https://cp.example.com/gatehouse/").unwrap(),
            "https://cp.example.com/gatehouse"
        );
        assert!(normalize_api_url("ftp://x").is_err());
        assert!(normalize_api_url("http://").is_err());
        assert!(normalize_api_url("http://h?x=1").is_err());
    }

    #[test]
    fn paths_are_encoded_segment_by_segment() {
        let client = ApiClient::new("http://h:1/prefix", None).unwrap();
        let url = client.url(
            &["v1", "workspaces", "a b/c", "secrets"],
            &[("since", "5".into()), ("user", "alice@acme".into())],
        );
        assert_eq!(
            url.as_str(),
            "http://h:1/prefix/v1/workspaces/a%20b%2Fc/secrets?since=5&user=alice%40acme"
        );
        let root = ApiClient::new("http://h:1", None).unwrap();
        assert_eq!(
            root.url(&["v1", "whoami"], &[]).as_str(),
            "http://h:1/v1/whoami"
        );
    }

    #[test]
    fn error_bodies_yield_the_servers_message() {
        let body = br#"{"error": {"code": "conflict", "message": "workspace slug \"engineering\" is taken"}}"#;
        match api_error(StatusCode::CONFLICT, body) {
            CliError::Api {
                status,
                code,
                message,
                problems,
            } => {
                assert_eq!(status, 409);
                assert_eq!(code, "conflict");
                assert_eq!(message, "workspace slug \"engineering\" is taken");
                assert!(problems.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn validation_problems_are_collected() {
        let body = br#"{"error": {"code": "invalid_request", "message": "invalid manifest",
            "problems": [{"path": "version", "message": "\"1.0\" is not semver (e.g. 1.0.0)"},
                         {"path": "", "message": "unknown field x"}, "plain"]}}"#;
        match api_error(StatusCode::BAD_REQUEST, body) {
            CliError::Api {
                message, problems, ..
            } => {
                assert_eq!(message, "invalid manifest");
                assert_eq!(
                    problems,
                    [
                        "version: \"1.0\" is not semver (e.g. 1.0.0)",
                        "unknown field x",
                        "plain"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unexpected_error_bodies_still_read_well() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(
            err.to_string(),
            "the control plane answered 502 Bad Gateway: upstream down"
        );
        let err = api_error(StatusCode::NOT_FOUND, b"");
        assert_eq!(err.to_string(), "the control plane answered 404 Not Found");
        assert_eq!(err.exit_code(), 2);
    }

    #[tokio::test]
    async fn refused_connection_is_unreachable_with_the_url() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let client = ApiClient::new(&base, None).unwrap();
        let err = client.get(&["v1", "whoami"]).await.unwrap_err();
        assert_eq!(err.exit_code(), 3, "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the control plane at {base}: ")),
            "{text}"
        );
    }
}
