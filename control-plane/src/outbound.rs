//! Which MCP servers the control plane may connect to itself. Two things make it a
//! client of a URL a user typed: the install probe (`mcp install URL` without
//! `--transport`) and the dashboard's Tools page, which asks every enabled server of
//! a workspace for its tools. Whoever may install a server in a workspace can so make
//! the control plane send requests from inside the network it runs in (server-side
//! request forgery): to a loopback admin port, a private service, a cloud metadata
//! endpoint. The operator chooses with `--ask-servers` (`GATEHOUSE_ASK_SERVERS`):
//!
//! - `any` (the default): any address, as before; right when the people who install
//!   servers are trusted, and for servers on the control plane's own machine;
//! - `public`: only globally routable addresses: loopback, private (RFC 1918, IPv6
//!   unique local), link-local, shared (100.64.0.0/10, which holds 100.100.100.200),
//!   unspecified, multicast and documentation addresses are refused, checked on the
//!   addresses a name resolves to when connecting, so a name that resolves to one of
//!   them (or is rebound to one) is refused too;
//! - `never`: the control plane connects to no MCP server; installs by URL need
//!   `--transport`, and the Tools page lists only skills.
//!
//! The proxies are not concerned: they connect to every configured server by design.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The operator's choice (`--ask-servers`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AskServers {
    /// Any address.
    #[default]
    Any,
    /// Only globally routable addresses.
    Public,
    /// None: no install probe, no tool listing.
    Never,
}

/// Why the control plane will not ask the server at a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this control plane does not connect to MCP servers itself (--ask-servers never)")]
    Off,
    #[error("{url} is a non-public address ({ip}), which this control plane does not connect to (--ask-servers public)")]
    Address { url: String, ip: IpAddr },
}

impl AskServers {
    /// An HTTP client for asking the server at `url`, or why it may not be asked.
    /// Under `public` an IP-literal URL is checked here, and names at connection time.
    pub fn client(self, url: &str) -> Result<reqwest::Client, Refused> {
        match self {
            AskServers::Any => Ok(reqwest::Client::new()),
            AskServers::Never => Err(Refused::Off),
            AskServers::Public => {
                let literal = reqwest::Url::parse(url).ok().and_then(|u| match u.host() {
                    Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                    Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                    _ => None,
                });
                if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
                    return Err(Refused::Address {
                        url: url.to_owned(),
                        ip,
                    });
                }
                Ok(reqwest::Client::builder()
                    .dns_resolver(Arc::new(PublicOnly))
                    .build()
                    .unwrap_or_default())
            }
        }
    }
}

/// Resolves names with the system resolver and keeps only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let ips: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves to non-public addresses only ({}), which this control plane \
                     does not connect to (--ask-servers public)",
                    ips.join(", ")
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is globally routable (none of the special-purpose ranges servers of
/// a private network or a cloud's metadata service live in).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        // 0.0.0.0/8 ("this network"), 100.64.0.0/10 (shared; Alibaba's metadata
        // service is 100.100.100.200), 192.0.0.0/24 (protocol assignments),
        // 198.18.0.0/15 (benchmarking), 240.0.0.0/4 (reserved).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local (AWS's metadata service is fd00:ec2::254),
        // fe80::/10 link-local, 2001:db8::/32 documentation.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} counted as public");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "100.128.0.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} counted as non-public");
        }
    }

    #[test]
    fn the_choice_decides_which_urls_get_a_client() {
        assert!(AskServers::Any.client("http://127.0.0.1:9/mcp").is_ok());
        assert_eq!(
            AskServers::Never
                .client("https://example.com/mcp")
                .unwrap_err(),
            Refused::Off
        );
        let refused = AskServers::Public
            .client("http://169.254.169.254/latest")
            .unwrap_err();
        assert!(refused.to_string().contains("169.254.169.254"), "{refused}");
        assert!(AskServers::Public.client("http://[::1]:8080/mcp").is_err());
        assert!(AskServers::Public.client("https://example.com/mcp").is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_when_connecting() {
        let client = AskServers::Public.client("http://localhost:9/mcp").unwrap();
        let error = client
            .get("http://localhost:9/mcp")
            .send()
            .await
            .unwrap_err();
        let mut words = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            words += &format!(": {cause}");
            source = cause.source();
        }
        assert!(words.contains("non-public addresses only"), "{words}");
    }
}
