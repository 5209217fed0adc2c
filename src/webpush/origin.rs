//! Which push-service endpoints the gateway will talk to (SSRF safety).
//!
//! A subscription endpoint is a URL chosen by whoever registered it, so the
//! gateway must not become a proxy into the operator's network. Two gates:
//!
//! 1. [`OriginPolicy::check`], at the API: `https` only, no user info, the
//!    origin on the allow-list (by default the public push services of
//!    Google, Mozilla, Apple and Microsoft), and no IP literal in a refused
//!    range unless an allowed origin names exactly that address.
//! 2. [`FilteringResolver`], at connect time: names resolved by DNS lose every
//!    loopback, private, link-local, metadata and other non-public address,
//!    unless the host is named by an exact (non-wildcard) allowed origin. The
//!    connection uses exactly the filtered addresses, so DNS rebinding between
//!    the check and the connect gains nothing.
//!
//! Redirects are never followed by the client (see `webpush::client`).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The public push services allowed when `allowed_origins = []`.
pub const DEFAULT_ORIGINS: [&str; 4] = [
    "https://fcm.googleapis.com",
    "https://updates.push.services.mozilla.com",
    "https://web.push.apple.com",
    "https://*.notify.windows.com",
];

/// Why an endpoint is refused (the `rejected` reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL.
    #[error("endpoint is not a URL")]
    NotUrl,
    /// Not `https`.
    #[error("endpoint must be https")]
    NotHttps,
    /// User info, a fragment, or no host.
    #[error("endpoint must be https://host[:port]/path without user info")]
    Malformed,
    /// The origin is not on the allow-list.
    #[error("endpoint origin is not allowed (webpush.allowed_origins)")]
    OriginNotAllowed,
    /// An IP literal in a refused range.
    #[error("endpoint names a loopback, private, link-local or metadata address")]
    PrivateAddress,
}

impl EndpointError {
    /// The reason word in the API's `rejected` list.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointError::NotUrl | EndpointError::Malformed => "InvalidEndpoint",
            EndpointError::NotHttps => "EndpointNotHttps",
            EndpointError::OriginNotAllowed => "OriginNotAllowed",
            EndpointError::PrivateAddress => "PrivateAddress",
        }
    }
}

/// A bad `allowed_origins` entry (refused at start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{entry:?} is not an origin like \"https://push.example.com\", \"https://push.example.com:8443\" or \"https://*.example.com\""
)]
pub struct OriginEntryError {
    /// The entry as written.
    pub entry: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// Exactly this host (lower case; IPv6 without brackets).
    Exact(String),
    /// Any host ending in `.suffix` (the `*.` form); never the bare suffix.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    host: HostRule,
    port: u16,
}

/// A checked endpoint: the URL to POST to and its origin (`https://host[:port]`,
/// default port left out), which is the VAPID `aud` and the pooling key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The full URL, as given.
    pub url: String,
    /// `https://host[:port]`.
    pub origin: String,
}

/// The allow-list.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    rules: Vec<Rule>,
    /// Hosts that an exact rule names: only these may resolve to private addresses.
    named: Arc<HashSet<String>>,
}

impl OriginPolicy {
    /// Builds the policy from `allowed_origins`; empty means [`DEFAULT_ORIGINS`].
    pub fn new(allowed: &[String]) -> Result<Self, OriginEntryError> {
        let explicit = !allowed.is_empty();
        let entries: Vec<String> = if explicit {
            allowed.to_vec()
        } else {
            DEFAULT_ORIGINS.iter().map(|s| s.to_string()).collect()
        };
        let mut rules = Vec::with_capacity(entries.len());
        let mut named = HashSet::new();
        for entry in entries {
            let rule = parse_entry(&entry).ok_or_else(|| OriginEntryError {
                entry: entry.clone(),
            })?;
            if explicit && let HostRule::Exact(host) = &rule.host {
                named.insert(host.clone());
            }
            rules.push(rule);
        }
        Ok(Self {
            rules,
            named: Arc::new(named),
        })
    }

    /// Checks one subscription endpoint.
    pub fn check(&self, endpoint: &str) -> Result<Endpoint, EndpointError> {
        let url = url::Url::parse(endpoint).map_err(|_| EndpointError::NotUrl)?;
        if url.scheme() != "https" {
            return Err(EndpointError::NotHttps);
        }
        if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
            return Err(EndpointError::Malformed);
        }
        let (host, ip) = match url.host() {
            Some(url::Host::Domain(d)) => (d.to_ascii_lowercase(), None),
            Some(url::Host::Ipv4(v4)) => (v4.to_string(), Some(IpAddr::V4(v4))),
            Some(url::Host::Ipv6(v6)) => (v6.to_string(), Some(IpAddr::V6(v6))),
            None => return Err(EndpointError::Malformed),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let rule = self
            .rules
            .iter()
            .find(|r| r.port == port && r.host.matches(&host))
            .ok_or(EndpointError::OriginNotAllowed)?;
        if let Some(ip) = ip
            && is_refused(ip)
            && !(matches!(&rule.host, HostRule::Exact(h) if h == &host)
                && self.named.contains(&host))
        {
            return Err(EndpointError::PrivateAddress);
        }
        Ok(Endpoint {
            url: endpoint.to_owned(),
            origin: url.origin().ascii_serialization(),
        })
    }

    /// The DNS resolver enforcing the same policy at connect time.
    pub fn resolver(&self) -> FilteringResolver {
        FilteringResolver {
            named: self.named.clone(),
        }
    }
}

impl HostRule {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostRule::Exact(h) => h == host,
            HostRule::Suffix(s) => {
                host.len() > s.len() + 1 && host.ends_with(s.as_str()) && {
                    let dot = host.len() - s.len() - 1;
                    host.as_bytes()[dot] == b'.'
                }
            }
        }
    }
}

fn parse_entry(entry: &str) -> Option<Rule> {
    let rest = entry.trim().strip_prefix("https://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (wildcard, rest) = match rest.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    // Let the URL parser handle ports, IPv6 brackets and case.
    let url = url::Url::parse(&format!("https://{rest}/")).ok()?;
    if url.path() != "/" || !url.username().is_empty() || url.query().is_some() {
        return None;
    }
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_ascii_lowercase(),
        url::Host::Ipv4(v4) if !wildcard => v4.to_string(),
        url::Host::Ipv6(v6) if !wildcard => v6.to_string(),
        _ => return None,
    };
    let port = url.port_or_known_default()?;
    Some(Rule {
        host: if wildcard {
            HostRule::Suffix(host)
        } else {
            HostRule::Exact(host)
        },
        port,
    })
}

/// True for every address a public push service never has: unspecified,
/// loopback, private (RFC 1918, ULA), link-local (169.254/16 holds the cloud
/// metadata service), shared CGNAT space (Alibaba's metadata lives there),
/// multicast, broadcast, documentation and reserved ranges; IPv4-mapped and
/// NAT64 IPv6 forms are judged by the IPv4 address inside.
pub fn is_refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
}

fn refused_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let o = ip.octets();
        return refused_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (AWS metadata fd00:ec2::254)
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // old site-local fec0::/10
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d (deprecated)
}

/// A reqwest DNS resolver that drops refused addresses (see [`is_refused`])
/// unless an exact allowed origin names the host. A name left with no
/// address fails the connection with a message that says why.
#[derive(Debug, Clone)]
pub struct FilteringResolver {
    named: Arc<HashSet<String>>,
}

/// The connection error when a name resolves only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves only to loopback/private/link-local addresses; refused (list its origin in webpush.allowed_origins to allow it)"
)]
pub struct RefusedAddress {
    /// The name.
    pub host: String,
}

impl FilteringResolver {
    /// Keeps the addresses of `host` that may be connected to.
    pub fn filter(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, RefusedAddress> {
        if self.named.contains(&host.to_ascii_lowercase()) {
            return Ok(addrs);
        }
        let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| !is_refused(a.ip())).collect();
        if kept.is_empty() {
            Err(RefusedAddress {
                host: host.to_owned(),
            })
        } else {
            Ok(kept)
        }
    }
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = this.filter(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> OriginPolicy {
        OriginPolicy::new(&[]).expect("defaults parse")
    }

    fn listed(entries: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("entries parse")
    }

    #[test]
    fn the_default_list_is_the_four_public_push_services() {
        let p = default();
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
            "https://web.push.apple.com/QGuQyavXutnMH",
            "https://wns2-par02p.notify.windows.com/w/?token=BQYAAA",
            "https://FCM.googleapis.com:443/x",
        ] {
            assert!(p.check(ok).is_ok(), "{ok} refused");
        }
        assert_eq!(
            p.check("https://fcm.googleapis.com/x").expect("ok").origin,
            "https://fcm.googleapis.com"
        );
        for (bad, why) in [
            (
                "https://notify.windows.com/x",
                EndpointError::OriginNotAllowed,
            ),
            (
                "https://evilnotify.windows.com/x",
                EndpointError::OriginNotAllowed,
            ),
            (
                "https://fcm.googleapis.com.evil.com/x",
                EndpointError::OriginNotAllowed,
            ),
            (
                "https://fcm.googleapis.com:8443/x",
                EndpointError::OriginNotAllowed,
            ),
            ("http://fcm.googleapis.com/x", EndpointError::NotHttps),
            (
                "https://user@fcm.googleapis.com/x",
                EndpointError::Malformed,
            ),
            ("https://127.0.0.1/x", EndpointError::OriginNotAllowed),
            (
                "https://169.254.169.254/latest/meta-data",
                EndpointError::OriginNotAllowed,
            ),
            ("not a url", EndpointError::NotUrl),
            ("file:///etc/passwd", EndpointError::NotHttps),
        ] {
            assert_eq!(p.check(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn a_listed_list_replaces_the_defaults() {
        let p = listed(&[
            "https://push.example.com:8443",
            "https://*.push.example.net",
        ]);
        assert!(p.check("https://push.example.com:8443/s/1").is_ok());
        assert!(p.check("https://a.push.example.net/s/1").is_ok());
        assert_eq!(
            p.check("https://push.example.com/s/1"),
            Err(EndpointError::OriginNotAllowed),
            "port must match"
        );
        assert_eq!(
            p.check("https://fcm.googleapis.com/x"),
            Err(EndpointError::OriginNotAllowed)
        );
        assert_eq!(
            p.check("https://push.example.com:8443/x")
                .expect("ok")
                .origin,
            "https://push.example.com:8443"
        );
    }

    #[test]
    fn private_ip_literals_pass_only_when_an_origin_names_them() {
        let p = listed(&["https://127.0.0.1:9443", "https://[::1]:9443"]);
        assert!(p.check("https://127.0.0.1:9443/s").is_ok());
        assert!(p.check("https://[::1]:9443/s").is_ok());
        assert_eq!(
            p.check("https://127.0.0.2:9443/s"),
            Err(EndpointError::OriginNotAllowed)
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in [
            "http://a.example",
            "a.example",
            "https://*.10.0.0.1",
            "https://a.example/path",
            "",
        ] {
            assert!(
                OriginPolicy::new(&[bad.to_string()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn refused_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(is_refused(ip.parse().expect("ip")), "{ip} allowed");
        }
        for ip in [
            "142.250.74.10",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450:4007:80e::200a",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_refused(ip.parse().expect("ip")), "{ip} refused");
        }
    }

    #[test]
    fn the_resolver_drops_private_addresses_unless_the_host_is_named() {
        let unnamed = default().resolver();
        let addrs = vec![
            "10.0.0.1:443".parse().expect("addr"),
            "142.250.74.10:443".parse().expect("addr"),
        ];
        assert_eq!(
            unnamed
                .filter("fcm.googleapis.com", addrs.clone())
                .expect("one public left"),
            vec!["142.250.74.10:443".parse::<SocketAddr>().expect("addr")]
        );
        assert!(
            unnamed
                .filter(
                    "x.notify.windows.com",
                    vec!["127.0.0.1:443".parse().expect("addr")]
                )
                .is_err()
        );
        let named = listed(&["https://push.internal:8443"]).resolver();
        assert_eq!(
            named.filter("push.internal", addrs.clone()).expect("named"),
            addrs
        );
        // A wildcard never grants private addresses.
        let wild = listed(&["https://*.internal"]).resolver();
        assert!(
            wild.filter("push.internal", vec!["10.0.0.1:443".parse().expect("a")])
                .is_err()
        );
    }

    /// Over DNS: `localhost` is a name (not a literal), so the API check
    /// cannot see where it points; the resolver refuses it at connect time.
    #[tokio::test]
    async fn localhost_by_name_is_refused_after_resolution() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let refused = default().resolver().resolve(name).await;
        let err = refused.err().expect("refused");
        assert!(
            err.to_string().contains("localhost resolves only to"),
            "{err}"
        );
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let allowed = listed(&["https://localhost:9443"])
            .resolver()
            .resolve(name)
            .await
            .expect("named host resolves");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }
}
