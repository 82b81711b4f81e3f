//! Safe outbound HTTP for URLs that users type in (iCal feed subscriptions).
//!
//! A feed URL is attacker-controlled input: without care, "subscribe to
//! `http://169.254.169.254/latest/meta-data/`" turns the gateway into a proxy into
//! its own network (SSRF). So, in the spirit of vaultwarden's icon fetcher:
//!
//! - only `http` and `https` (`webcal://` and `webcals://` mean `https://`);
//! - every host is resolved by our own resolver, and the request is refused when
//!   *any* resolved address is loopback, private, link-local (cloud metadata),
//!   CGNAT, documentation, multicast, broadcast, unspecified or otherwise special
//!   (also in IPv4-mapped, NAT64 and 6to4 forms), unless the operator's
//!   [`AllowList`] names it. The connection then goes to exactly the addresses
//!   that were checked (the resolver hands them to the connector), so a DNS
//!   answer that changes between check and connect (rebinding) gains nothing.
//!   Literal IP hosts never reach a resolver and are checked before sending;
//! - redirects are followed by hand, each hop checked again, at most
//!   [`FetchLimits::max_redirects`], loops detected, https→http refused;
//! - the whole exchange is bounded in time, and the (gzip-decoded) body in size
//!   while it streams in;
//! - no proxy from the environment is used.
//!
//! Feed URLs carry secrets in their paths (Google `private-…`, iCloud tokens), so
//! errors name only scheme, host and port ([`redact_url`]). A refusal
//! ([`ProviderError::Refused`]) names the rule and the kind of address, never
//! what a name resolved to. [`SafeClient::check_url`] and [`check_url_offline`]
//! apply the same rules before a source is accepted.

use std::collections::HashSet;
use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::LOCATION;

use super::ProviderError;

const MIB: usize = 1024 * 1024;
const USER_AGENT: &str = concat!("calgate/", env!("CARGO_PKG_VERSION"), " (calendar import)");

/// Limits of one [`SafeClient::get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Largest body accepted, after gzip decoding.
    pub max_bytes: usize,
    /// Time for the whole exchange: every hop, headers and body.
    pub timeout: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_bytes: 20 * MIB,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

/// One network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cidr {
    V4 { net: u32, prefix: u8 },
    V6 { net: u128, prefix: u8 },
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Cidr::V4 { net, prefix }, IpAddr::V4(ip)) => u32::from(ip) & mask4(prefix) == net,
            (Cidr::V6 { net, prefix }, IpAddr::V6(ip)) => u128::from(ip) & mask6(prefix) == net,
            _ => false,
        }
    }
}

fn mask4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cidr::V4 { net, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(net)),
            Cidr::V6 { net, prefix } => write!(f, "{}/{prefix}", Ipv6Addr::from(net)),
        }
    }
}

/// Networks the operator allows although they are normally refused (e.g. an
/// intranet calendar server, or the loopback mocks of the test suite).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<Cidr>,
}

impl AllowList {
    /// Parses `"127.0.0.1/32"`, `"::1/128"`, `"10.0.0.0/8"` or a bare address
    /// (a single host). Host bits below the prefix are ignored.
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let text = entry.trim();
            let (addr, prefix) = match text.split_once('/') {
                Some((a, p)) => (a.trim(), Some(p.trim())),
                None => (text, None),
            };
            let ip: IpAddr = addr
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("allow-list entry {text:?} is not an IP network"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    format!("allow-list entry {text:?}: prefix length must be 0..={max}")
                })?,
            };
            nets.push(match ip {
                IpAddr::V4(v4) => Cidr::V4 {
                    net: u32::from(v4) & mask4(prefix),
                    prefix,
                },
                IpAddr::V6(v6) => Cidr::V6 {
                    net: u128::from(v6) & mask6(prefix),
                    prefix,
                },
            });
        }
        Ok(AllowList { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` (or the IPv4 address an IPv4-mapped `ip` stands for) is allowed.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets
            .iter()
            .any(|n| n.contains(ip) || mapped.is_some_and(|m| n.contains(m)))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.nets.iter().map(Cidr::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

fn in4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    u32::from(ip) & mask4(prefix) == u32::from(Ipv4Addr::from(net))
}

fn in6(ip: Ipv6Addr, net: [u16; 8], prefix: u8) -> bool {
    let [a, b, c, d, e, f, g, h] = net;
    u128::from(ip) & mask6(prefix) == u128::from(Ipv6Addr::new(a, b, c, d, e, f, g, h))
}

/// Why an address is not a public unicast address, or `None` when it is.
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (carrier-grade NAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 169, 254], 32, "link-local (cloud metadata)"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that carry an IPv4 address: judge that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let bits = u128::from(ip);
    if in6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        // NAT64 well-known prefix: reaches the embedded IPv4 address.
        return special_v4(Ipv4Addr::from(bits as u32));
    }
    if in6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // 6to4: the IPv4 address sits in bits 16..48.
        return special_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    const RANGES: &[([u16; 8], u8, &str)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)"),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "NAT64 local use"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
        (
            [0x2001, 0, 0, 0, 0, 0, 0, 0],
            23,
            "IETF protocol assignment (Teredo, benchmarking, ORCHID)",
        ),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "private (unique local)"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (deprecated)"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in6(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

/// The address is refused: special purpose and not on the allow-list. Says
/// which rule refused it; for a name, never what it resolved to (that would
/// map the gateway's network for whoever typed the URL).
#[derive(Debug, Clone)]
struct Refused {
    host: String,
    /// The host was written as an address (shown, since the user typed it).
    literal: bool,
    why: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.literal {
            write!(f, "address {} is {}", self.host, self.why)
        } else {
            let article = if self.why.starts_with(['a', 'e', 'i', 'o', 'u', 'I']) {
                "an"
            } else {
                "a"
            };
            write!(
                f,
                "{} resolves to {article} {} address",
                self.host, self.why
            )
        }
    }
}

impl StdError for Refused {}

fn check_ip(host: &str, ip: IpAddr, allow: &AllowList) -> Result<(), Refused> {
    match special_purpose(ip) {
        Some(why) if !allow.contains(ip) => Err(Refused {
            literal: host == ip.to_string(),
            host: host.to_owned(),
            why,
        }),
        _ => Ok(()),
    }
}

/// Names that always mean this machine (RFC 6761), without asking DNS.
fn is_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// What can be said about `url`'s host without DNS: a literal address, or a
/// `localhost` name (judged as 127.0.0.1), against the allow-list.
fn check_host_offline(url: &Url, allow: &AllowList) -> Result<(), Refused> {
    let Some(host) = url.host_str() else {
        return Ok(());
    };
    // The URL parser has already turned every IPv4 spelling (decimal, hex,
    // short forms) into dotted quads; IPv6 literals come bracketed.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return check_ip(&ip.to_string(), ip, allow);
    }
    if is_localhost(host) {
        return check_ip(host, IpAddr::V4(Ipv4Addr::LOCALHOST), allow);
    }
    Ok(())
}

/// Whether a feed URL can ever be fetched under the allow-list, judged without
/// the network (literal addresses and `localhost`): for configuration files.
/// [`ProviderError::Refused`] names the rule; other errors are bad URLs.
pub fn check_url_offline(url: &str, allow: &AllowList) -> Result<(), ProviderError> {
    let parsed = normalize_url(url)?;
    check_host_offline(&parsed, allow).map_err(|r| refused(&parsed, &r))
}

/// Resolves with tokio (the system resolver) and lets the connector have the
/// addresses only when every one of them passes the check.
struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = Arc::clone(&self.allow);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            for a in &addrs {
                check_ip(&host, a.ip(), &allow)?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// A response as [`SafeClient::get`] hands it back.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, gzip-decoded.
    pub body: Bytes,
    /// The URL that answered (after redirects).
    pub final_url: String,
    /// Where the resource now lives when the chain started with permanent
    /// redirects (301/308): the URL after the last of them, to be used from now on.
    pub permanent_redirect: Option<String>,
}

/// An HTTP client for user-supplied URLs; see the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SafeClient {
    http: reqwest::Client,
    allow: Arc<AllowList>,
    limits: FetchLimits,
}

impl SafeClient {
    pub fn new(allow: AllowList, limits: FetchLimits) -> Result<Self, ProviderError> {
        crate::install_crypto_provider();
        let allow = Arc::new(allow);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: Arc::clone(&allow),
            }))
            // The whole exchange is bounded in `get`; this bounds each connect.
            .connect_timeout(limits.timeout)
            .user_agent(USER_AGENT)
            .gzip(true)
            .build()
            .map_err(|e| {
                ProviderError::Permanent(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        Ok(SafeClient {
            http,
            allow,
            limits,
        })
    }

    pub fn limits(&self) -> FetchLimits {
        self.limits
    }

    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// GETs `url` under the rules in the module docs. Any status comes back as a
    /// response (304, 404, 429, …) except redirects, which are followed.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(HeaderName, String)],
    ) -> Result<FetchResponse, ProviderError> {
        let start = normalize_url(url)?;
        let shown = redact_url(start.as_str());
        let mut extra = HeaderMap::new();
        for (name, value) in headers {
            let value = HeaderValue::from_str(value).map_err(|_| {
                ProviderError::Permanent(format!("invalid value for request header {name}"))
            })?;
            extra.append(name.clone(), value);
        }
        match tokio::time::timeout(self.limits.timeout, self.follow(start, extra)).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Retryable {
                message: format!(
                    "{shown}: no complete answer within {}",
                    describe_duration(self.limits.timeout)
                ),
                retry_after: None,
            }),
        }
    }

    async fn follow(
        &self,
        mut url: Url,
        mut headers: HeaderMap,
    ) -> Result<FetchResponse, ProviderError> {
        let mut visited: HashSet<String> = HashSet::new();
        visited.insert(url.as_str().to_owned());
        let mut permanent: Option<String> = None;
        let mut only_permanent = true;
        let mut hops = 0;
        loop {
            self.check_literal_host(&url)?;
            let resp = self
                .http
                .get(url.clone())
                .headers(headers.clone())
                .send()
                .await
                .map_err(|e| transport_error(&url, e))?;
            let status = resp.status();
            if !matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                let body = self.read_body(&url, resp, status).await?;
                return Ok(body_response(body, url, permanent));
            }
            let shown = redact_url(url.as_str());
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ProviderError::Permanent(format!("{shown}: HTTP {status} without a Location"))
                })?;
            let next = next_hop(&url, location)?;
            if !visited.insert(next.as_str().to_owned()) {
                return Err(ProviderError::Permanent(format!(
                    "{shown}: redirect loop (back to {})",
                    redact_url(next.as_str())
                )));
            }
            hops += 1;
            if hops > self.limits.max_redirects {
                return Err(ProviderError::Permanent(format!(
                    "{shown}: more than {} redirects",
                    self.limits.max_redirects
                )));
            }
            if matches!(status.as_u16(), 301 | 308) && only_permanent {
                permanent = Some(next.as_str().to_owned());
            } else {
                only_permanent = false;
            }
            if next.origin() != url.origin() {
                // Credentials the caller meant for one origin stay there.
                for name in [
                    http::header::AUTHORIZATION,
                    http::header::COOKIE,
                    http::header::PROXY_AUTHORIZATION,
                ] {
                    headers.remove(name);
                }
            }
            url = next;
        }
    }

    /// Literal addresses never reach the resolver: check them here.
    fn check_literal_host(&self, url: &Url) -> Result<(), ProviderError> {
        if url.host_str().is_none() {
            return Err(ProviderError::Permanent(format!(
                "{}: the URL has no host",
                redact_url(url.as_str())
            )));
        }
        check_host_offline(url, &self.allow).map_err(|r| refused(url, &r))
    }

    /// Whether `url` could be fetched at all: its host (resolved, when it is a
    /// name) must be public or allowed. For accepting a new source; a name
    /// that does not resolve (yet) passes, and the sync will tell.
    pub async fn check_url(&self, url: &str) -> Result<(), ProviderError> {
        let parsed = normalize_url(url)?;
        self.check_literal_host(&parsed)?;
        let Some(host) = parsed.host_str() else {
            return Ok(());
        };
        if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
            return Ok(()); // a literal, checked above
        }
        let lookup = tokio::net::lookup_host((host, parsed.port_or_known_default().unwrap_or(0)));
        let Ok(Ok(addrs)) = tokio::time::timeout(Duration::from_secs(5), lookup).await else {
            return Ok(());
        };
        for a in addrs {
            check_ip(host, a.ip(), &self.allow).map_err(|r| refused(&parsed, &r))?;
        }
        Ok(())
    }

    async fn read_body(
        &self,
        url: &Url,
        mut resp: reqwest::Response,
        status: StatusCode,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ProviderError> {
        let max = self.limits.max_bytes;
        let too_large = || {
            ProviderError::Permanent(format!(
                "{}: feed larger than {}",
                redact_url(url.as_str()),
                describe_size(max)
            ))
        };
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let headers = resp.headers().clone();
        // The announced length is only a hint (and the server's word).
        let mut body = BytesMut::with_capacity(
            resp.content_length()
                .map_or(64 * 1024, |n| n as usize)
                .min(max)
                .min(MIB),
        );
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport_error(url, e))? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body.freeze()))
    }
}

fn body_response(
    (status, headers, body): (StatusCode, HeaderMap, Bytes),
    url: Url,
    permanent_redirect: Option<String>,
) -> FetchResponse {
    FetchResponse {
        status,
        headers,
        body,
        final_url: url.into(),
        permanent_redirect,
    }
}

/// The next hop of a redirect, with `webcal` schemes rewritten; only http(s).
fn next_hop(from: &Url, location: &str) -> Result<Url, ProviderError> {
    let location = location.trim();
    let rewritten = rewrite_webcal(location);
    let next = from.join(&rewritten).map_err(|_| {
        ProviderError::Permanent(format!(
            "{}: redirect to an invalid URL",
            redact_url(from.as_str())
        ))
    })?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(ProviderError::Permanent(format!(
            "{}: redirect to a {}: URL refused",
            redact_url(from.as_str()),
            next.scheme()
        )));
    }
    if from.scheme() == "https" && next.scheme() == "http" {
        return Err(ProviderError::Permanent(format!(
            "{}: refused to follow a redirect from https to http ({})",
            redact_url(from.as_str()),
            redact_url(next.as_str())
        )));
    }
    Ok(next)
}

fn rewrite_webcal(url: &str) -> String {
    let lower = url.get(..10).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("webcals://") {
        format!("https://{}", &url[10..])
    } else if lower.starts_with("webcal://") {
        format!("https://{}", &url[9..])
    } else {
        url.to_owned()
    }
}

/// Parses a feed URL: `webcal://` and `webcals://` become `https://`; only http and
/// https with a host are accepted.
pub fn normalize_url(input: &str) -> Result<Url, ProviderError> {
    let rewritten = rewrite_webcal(input.trim());
    let url = Url::parse(&rewritten).map_err(|e| {
        ProviderError::Permanent(format!("invalid URL {}: {e}", redact_url(&rewritten)))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ProviderError::Permanent(format!(
            "only http, https and webcal URLs can be fetched, not {}:",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(ProviderError::Permanent(format!(
            "{}: the URL has no host",
            redact_url(url.as_str())
        )));
    }
    Ok(url)
}

/// A URL fit for logs and error messages: scheme, host and port; the path (which
/// may hold a secret token) and any query or credentials become `/…`.
pub fn redact_url(url: &str) -> String {
    let Ok(u) = Url::parse(&rewrite_webcal(url.trim())) else {
        return "<invalid URL>".to_owned();
    };
    let host = u.host_str().unwrap_or("");
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if u.path() == "/" && u.query().is_none() && u.fragment().is_none() {
        "/"
    } else {
        "/…"
    };
    format!("{}://{host}{port}{rest}", u.scheme())
}

fn refused(url: &Url, r: &Refused) -> ProviderError {
    ProviderError::Refused(format!(
        "refused to fetch {}: {r}; only public addresses are fetched unless server.fetch_allow lists the network",
        redact_url(url.as_str())
    ))
}

/// The [`Refused`] our resolver put somewhere in an error's source chain.
fn find_refused<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a Refused> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// An error and its causes, without the URL reqwest would print.
pub(crate) fn chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    if parts.is_empty() {
        if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "connection failed".to_owned()
        } else if e.is_decode() || e.is_body() {
            "the response body could not be read".to_owned()
        } else {
            "request failed".to_owned()
        }
    } else {
        parts.join(": ")
    }
}

fn transport_error(url: &Url, e: reqwest::Error) -> ProviderError {
    if let Some(r) = find_refused(&e) {
        return refused(url, r);
    }
    let shown = redact_url(url.as_str());
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_decode() || e.is_body() {
        "the response broke off"
    } else {
        "request failed"
    };
    ProviderError::Retryable {
        message: format!("{shown}: {what} ({})", chain(&e)),
        retry_after: None,
    }
}

fn describe_size(bytes: usize) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

fn describe_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_addresses_are_recognised() {
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001::1",
            "fec0::1",
        ] {
            assert!(
                special_purpose(ip(refused)).is_some(),
                "{refused} must be refused"
            );
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(special_purpose(ip(public)), None, "{public} is public");
        }
        assert_eq!(
            special_purpose(ip("169.254.169.254")),
            Some("link-local (cloud metadata)")
        );
    }

    #[test]
    fn allow_list_parses_and_matches() {
        let allow = AllowList::parse(&[
            "127.0.0.1/32".into(),
            "::1/128".into(),
            "10.0.0.0/8".into(),
            "192.168.1.10/24".into(),
            "fd00::5".into(),
        ])
        .unwrap();
        assert!(allow.contains(ip("127.0.0.1")));
        assert!(!allow.contains(ip("127.0.0.2")));
        assert!(allow.contains(ip("::1")));
        assert!(allow.contains(ip("10.200.1.1")));
        assert!(allow.contains(ip("192.168.1.99")));
        assert!(!allow.contains(ip("192.168.2.1")));
        assert!(allow.contains(ip("fd00::5")));
        assert!(!allow.contains(ip("fd00::6")));
        assert!(
            allow.contains(ip("::ffff:127.0.0.1")),
            "mapped form of an allowed v4"
        );
        assert_eq!(
            allow.to_string(),
            "127.0.0.1/32, ::1/128, 10.0.0.0/8, 192.168.1.0/24, fd00::5/128"
        );
        assert!(AllowList::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(AllowList::parse(&["example.com".into()]).is_err());
        assert!(AllowList::parse(&["::1/129".into()]).is_err());
        assert!(AllowList::parse(&[]).unwrap().is_empty());
        let all = AllowList::parse(&["0.0.0.0/0".into()]).unwrap();
        assert!(all.contains(ip("10.1.1.1")));
    }

    #[test]
    fn unfetchable_urls_are_known_without_the_network() {
        let none = AllowList::default();
        let refused = |url: &str, allow: &AllowList| match check_url_offline(url, allow) {
            Err(ProviderError::Refused(m)) => Some(m),
            _ => None,
        };
        let m = refused("http://LOCALHOST.:8/private-SECRET/x.ics", &none).unwrap_or_default();
        assert!(m.contains("resolves to a loopback address"), "{m}");
        assert!(!m.contains("127.0.0.1") && !m.contains("SECRET"), "{m}");
        let m = refused("webcal://0.0.0.0/x.ics", &none).unwrap_or_default();
        assert!(m.contains("address 0.0.0.0 is unspecified"), "{m}");
        assert!(refused("http://api.localhost/x.ics", &none).is_some());
        assert!(refused("http://[fd00::1]/x.ics", &none).is_some());
        let loopback = AllowList::parse(&["127.0.0.0/8".into()]).unwrap();
        assert!(check_url_offline("http://localhost/x.ics", &loopback).is_ok());
        // Names are for the resolver to judge.
        assert!(check_url_offline("https://calendar.example.com/x.ics", &none).is_ok());
        assert!(matches!(
            check_url_offline("ftp://example.com/x.ics", &none),
            Err(ProviderError::Permanent(_))
        ));
        let name = Refused {
            host: "intranet.example".into(),
            literal: false,
            why: "IETF protocol assignment",
        };
        assert_eq!(
            name.to_string(),
            "intranet.example resolves to an IETF protocol assignment address"
        );
    }

    #[test]
    fn urls_are_normalised_and_redacted() {
        assert_eq!(
            normalize_url("webcal://p99-caldav.icloud.com/published/2/TOKEN")
                .unwrap()
                .as_str(),
            "https://p99-caldav.icloud.com/published/2/TOKEN"
        );
        assert_eq!(
            normalize_url("WEBCALS://example.com/x.ics")
                .unwrap()
                .as_str(),
            "https://example.com/x.ics"
        );
        assert!(normalize_url("ftp://example.com/x.ics").is_err());
        assert!(normalize_url("file:///etc/passwd").is_err());
        assert!(normalize_url("not a url").is_err());
        assert_eq!(
            redact_url("https://calendar.google.com/calendar/ical/a%40b/private-SECRET/basic.ics"),
            "https://calendar.google.com/…"
        );
        assert_eq!(
            redact_url("http://user:pw@[::1]:8080/x?token=1"),
            "http://[::1]:8080/…"
        );
        assert_eq!(redact_url("https://example.com"), "https://example.com/");
        let from = Url::parse("https://a.example/feed.ics").unwrap();
        assert!(matches!(
            next_hop(&from, "http://b.example/feed.ics"),
            Err(ProviderError::Permanent(m)) if m.contains("https to http")
        ));
        assert_eq!(
            next_hop(&from, "/other.ics").unwrap().as_str(),
            "https://a.example/other.ics"
        );
        assert_eq!(
            next_hop(&from, "webcal://c.example/x.ics")
                .unwrap()
                .as_str(),
            "https://c.example/x.ics"
        );
        let plain = Url::parse("http://a.example/feed.ics").unwrap();
        assert!(next_hop(&plain, "https://a.example/feed.ics").is_ok());
        assert_eq!(redact_url("::"), "<invalid URL>");
        assert_eq!(describe_size(20 * MIB), "20 MiB");
        assert_eq!(describe_size(64 * 1024), "64 KiB");
        assert_eq!(describe_size(1000), "1000 bytes");
    }
}
