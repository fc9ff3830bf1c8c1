//! Skills: declarative HTTP tools the gateway executes itself. A call's arguments are
//! checked against the tool's input schema before anything is sent; then one HTTP
//! request is built from the tool's templates (`{{args.*}}`, `{{secrets.*}}`) and its
//! answer becomes the tool result — `isError: true` for a failed request or a non-2xx
//! status. Requests never reach link-local or cloud-metadata addresses unless the
//! operator allows it, and never follow redirects.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_config::template::HeaderTemplate;
use gatehouse_config::{Secret, SkillTool};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{json, Value};

/// Largest answer body turned into a result.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A skill's tools, compiled once per config.
pub struct SkillRt {
    tools: Vec<ToolRt>,
    secrets: BTreeMap<String, Secret>,
}

struct ToolRt {
    def: SkillTool,
    schema: jsonschema::Validator,
    method: reqwest::Method,
    url: HeaderTemplate,
    headers: Vec<(http::HeaderName, HeaderTemplate)>,
}

impl SkillRt {
    pub fn compile(
        tools: &[SkillTool],
        secrets: &BTreeMap<String, Secret>,
    ) -> anyhow::Result<SkillRt> {
        let tools = tools
            .iter()
            .map(|def| {
                let schema = jsonschema::validator_for(&def.input_schema)
                    .map_err(|e| anyhow::anyhow!("tool {}: input_schema: {e}", def.name))?;
                let headers = def
                    .request
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        Ok((
                            http::HeaderName::from_bytes(name.as_bytes())?,
                            HeaderTemplate::parse_skill(value)?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?;
                Ok(ToolRt {
                    schema,
                    method: def.request.method.parse()?,
                    url: HeaderTemplate::parse_skill(&def.request.url)?,
                    headers,
                    def: def.clone(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(SkillRt {
            tools,
            secrets: secrets.clone(),
        })
    }

    /// The tools as an MCP `tools/list` would describe them.
    pub fn tool_list(&self) -> Vec<Value> {
        self.tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.def.name,
                    "description": t.def.description,
                    "inputSchema": t.def.input_schema,
                    "annotations": {"readOnlyHint": t.def.read_only},
                })
            })
            .collect()
    }

    /// Runs tool `name` and returns its `CallToolResult`. Every failure is a tool
    /// error the model can read; none is a protocol error.
    pub async fn call(&self, client: &SkillClient, name: &str, arguments: Option<&Value>) -> Value {
        let Some(tool) = self.tools.iter().find(|t| t.def.name == name) else {
            return tool_error(format!("this skill has no tool {name:?}"));
        };
        let empty = Value::Object(Default::default());
        let args = arguments.unwrap_or(&empty);
        let problems: Vec<String> = tool
            .schema
            .iter_errors(args)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if !problems.is_empty() {
            return tool_error(format!("invalid arguments: {}", problems.join("; ")));
        }
        match self.send(client, tool, args).await {
            Ok(result) => result,
            Err(message) => tool_error(message),
        }
    }

    async fn send(
        &self,
        client: &SkillClient,
        tool: &ToolRt,
        args: &Value,
    ) -> Result<Value, String> {
        let missing = |e: gatehouse_config::template::MissingSecret| {
            format!("the skill is not configured: {e} (gatehouse secrets set)")
        };
        let url = tool
            .url
            .render_with(&self.secrets, |name| {
                encode_component(&arg_text(args, name))
            })
            .map_err(missing)?;
        let parsed =
            url::Url::parse(&url).map_err(|e| format!("the request URL is invalid: {e}"))?;
        // URL parsing resolves `.` and `..` segments (also percent-encoded ones): an
        // argument that is one would move the request elsewhere on the host, secrets
        // attached. The path must keep the template's shape.
        let shape = tool
            .url
            .render_with(&self.secrets, |_| "x".to_string())
            .ok()
            .and_then(|u| url::Url::parse(&u).ok());
        let segments = |u: &url::Url| u.path_segments().map_or(0, Iterator::count);
        if shape.as_ref().map(segments) != Some(segments(&parsed)) {
            return Err(
                "an argument would change the request path (a `.` or `..` segment): refused".into(),
            );
        }
        client.check_literal_host(&parsed)?;
        let mut req = client
            .http
            .request(tool.method.clone(), parsed)
            .timeout(Duration::from_millis(tool.def.request.timeout_ms));
        for (name, template) in &tool.headers {
            let value = template
                .render_with(&self.secrets, |n| arg_text(args, n))
                .map_err(missing)?;
            let value = http::HeaderValue::from_str(&value)
                .map_err(|_| format!("header {name} is not a valid header value once filled in"))?;
            req = req.header(name.clone(), value);
        }
        if let Some(body) = &tool.def.request.body {
            req = req.json(&render_body(body, args, &self.secrets).map_err(missing)?);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!(
                    "the request timed out after {} ms",
                    tool.def.request.timeout_ms
                )
            } else {
                format!("the request failed: {}", describe(e))
            }
        })?;
        let status = resp.status();
        let is_json = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let body = read_capped(resp).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                text.chars().take(2000).collect::<String>()
            ));
        }
        let (text, structured) = match (is_json, serde_json::from_slice::<Value>(&body)) {
            (true, Ok(value)) => {
                let selected = match &tool.def.response.pointer {
                    Some(p) if !p.is_empty() => value
                        .pointer(p)
                        .cloned()
                        .ok_or_else(|| format!("the answer has nothing at {p}"))?,
                    _ => value,
                };
                let text = match &selected {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (text, selected.is_object().then_some(selected))
            }
            _ => (String::from_utf8_lossy(&body).into_owned(), None),
        };
        let mut result = json!({"content": [{"type": "text", "text": text}], "isError": false});
        if let Some(structured) = structured {
            result["structuredContent"] = structured;
        }
        Ok(result)
    }
}

fn tool_error(message: String) -> Value {
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

/// An argument as text: strings as they are, anything else as JSON; absent is empty.
fn arg_text(args: &Value, name: &str) -> String {
    match args.get(name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so an argument
/// can fill a path segment or a query value and never add `/`, `?`, `#` or `@`.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Fills a JSON body template: a string that is exactly `{{args.X}}` becomes the
/// argument's JSON value; placeholders inside other strings are interpolated.
fn render_body(
    template: &Value,
    args: &Value,
    secrets: &BTreeMap<String, Secret>,
) -> Result<Value, gatehouse_config::template::MissingSecret> {
    Ok(match template {
        Value::String(s) => match HeaderTemplate::parse_skill(s) {
            Ok(t) => match t.sole_arg() {
                Some(name) => args.get(name).cloned().unwrap_or(Value::Null),
                None => Value::String(t.render_with(secrets, |n| arg_text(args, n))?),
            },
            Err(_) => Value::String(s.clone()),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_body(v, args, secrets))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_body(v, args, secrets)?)))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

async fn read_capped(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the answer broke off: {}", describe(e)))?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes, without the URL (which may carry a secret).
fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// Addresses a skill request must never reach: link-local (which includes the
/// 169.254.169.254 metadata service), other cloud metadata endpoints, and addresses
/// that are not a host at all.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets() == [100, 100, 100, 200]
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            (seg[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6.is_multicast()
                || seg == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_forbidden(IpAddr::V4(v4)))
        }
    }
}

/// The HTTP client skills use: pooled, no redirects, no proxies from the
/// environment, and a resolver that drops forbidden addresses.
pub struct SkillClient {
    http: reqwest::Client,
    allow_link_local: bool,
}

impl SkillClient {
    pub fn new(allow_link_local: bool) -> SkillClient {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(Arc::new(GuardedResolver { allow_link_local }))
            .build()
            .expect("reqwest client builds");
        SkillClient {
            http,
            allow_link_local,
        }
    }

    /// IP literals skip DNS, so they are checked here.
    fn check_literal_host(&self, url: &url::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{} URLs are not allowed", url.scheme()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if !self.allow_link_local && is_forbidden(ip) {
            return Err(format!(
                "requests to {ip} are not allowed (link-local or metadata address)"
            ));
        }
        Ok(())
    }
}

struct GuardedResolver {
    allow_link_local: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_link_local;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow || !is_forbidden(a.ip()))
                .collect();
            if allowed.is_empty() {
                let why: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to addresses skills may not reach (link-local or metadata)"
                )
                .into();
                return Err(why);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_forbidden(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "93.184.216.34",
            "::1",
            "2606:4700::1",
        ] {
            assert!(!is_forbidden(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn arguments_cannot_escape_their_url_component() {
        assert_eq!(
            encode_component("a b/../c?d#e@f"),
            "a%20b%2F..%2Fc%3Fd%23e%40f"
        );
    }

    #[tokio::test]
    async fn dot_segment_arguments_are_refused_before_any_request() {
        let tool: SkillTool = serde_json::from_value(json!({
            "name": "get", "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
            "request": {"url": "http://127.0.0.1:9/api/files/{{args.id}}/content"}
        }))
        .unwrap();
        let skill = SkillRt::compile(&[tool], &BTreeMap::new()).unwrap();
        let client = SkillClient::new(false);
        for id in ["..", "."] {
            let result = skill.call(&client, "get", Some(&json!({"id": id}))).await;
            assert_eq!(result["isError"], json!(true), "{id}: {result}");
            let text = result["content"][0]["text"].as_str().unwrap();
            assert!(text.contains("change the request path"), "{id}: {text}");
        }
        // Percent signs are encoded too, so `%2e%2e` stays a literal segment.
        let result = skill
            .call(&client, "get", Some(&json!({"id": "%2e%2e"})))
            .await;
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(!text.contains("change the request path"), "{text}");
    }

    #[test]
    fn body_templates_keep_types() {
        let template = json!({"id": "{{args.id}}", "note": "for {{args.who}}", "n": 3, "list": ["{{args.tags}}"]});
        let args = json!({"id": 42, "who": "ann", "tags": ["a", "b"]});
        let out = render_body(&template, &args, &BTreeMap::new()).unwrap();
        assert_eq!(
            out,
            json!({"id": 42, "note": "for ann", "n": 3, "list": [["a", "b"]]})
        );
    }
}
