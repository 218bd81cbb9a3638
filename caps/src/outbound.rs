//! Outbound HTTP: the allow-list, and the client that sends what it allows.
//!
//! A pattern is `scheme://host[:port]`:
//! - scheme `http`, `https` or `*` (either);
//! - host an exact name or IP literal (`example.com`, `127.0.0.1`, `[::1]`), `*.example.com`
//!   (any name below `example.com`, not `example.com` itself), or `*` (any host: too broad for
//!   most policies, see [`HostPattern::is_broad`]);
//! - port a number, `*` (any), or absent (the scheme's default: 80 for http, 443 for https).
//!
//! A URL is allowed when its origin (scheme, host, port) matches one pattern. Names are compared
//! as written, case-insensitively and without a trailing dot: no DNS lookup decides, so
//! `http://localhost` does not match a pattern for `127.0.0.1`. URLs with user information
//! (`http://user@host`) are refused. Redirects are not followed (the guest gets the 3xx), and
//! proxies from the environment are ignored, so a request only ever goes to the origin that was
//! checked.

use crate::error::CapsError;
use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use ureq::http;

/// The manifest key of the allow-list, named in denials.
pub const ALLOW_LIST_RULE: &str = "allowed_outbound_hosts";
/// Outbound requests in flight at once in one process, at most.
pub const MAX_IN_FLIGHT: usize = 256;
/// How often a waiting host function checks whether its guest call was stopped.
const CANCEL_POLL: Duration = Duration::from_millis(10);
/// Request headers a guest may not set: the client owns framing and routing.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

/// A URL scheme outbound HTTP knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http`.
    Http,
    /// `https` (sent only when the crate is built with the `tls` feature).
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The origin of a URL: what the allow-list judges, and all that errors and logs show of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The scheme.
    pub scheme: Scheme,
    /// The host, lowercase, without a trailing dot; IPv6 literals in brackets.
    pub host: String,
    /// The port (the scheme's default when the URL has none).
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

fn normalise_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

impl Origin {
    /// The origin of an absolute `http://` or `https://` URL, and the parsed URL.
    ///
    /// # Errors
    /// Not an absolute http(s) URL, or one with user information.
    pub fn of(url: &str) -> Result<(Origin, http::Uri), CapsError> {
        let uri: http::Uri = url.parse().map_err(|_| CapsError::invalid("url", "not a valid absolute URL"))?;
        let scheme = uri
            .scheme_str()
            .and_then(Scheme::parse)
            .ok_or_else(|| CapsError::invalid("url", "the scheme must be http or https"))?;
        let authority = uri.authority().ok_or_else(|| CapsError::invalid("url", "the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(CapsError::invalid("url", "URLs with user information are refused"));
        }
        let host = normalise_host(authority.host());
        if host.is_empty() {
            return Err(CapsError::invalid("url", "the URL has no host"));
        }
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        Ok((Origin { scheme, host, port }, uri))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `.example.com` for `*.example.com`.
    Below(String),
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortMatch {
    Default,
    Exact(u16),
    Any,
}

/// One allow-list pattern (see the module documentation for the grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    scheme: Option<Scheme>,
    host: HostMatch,
    port: PortMatch,
}

impl HostPattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// Not `scheme://host[:port]`: another scheme, a path, user information, a bad port, a `*`
    /// anywhere but alone or as the first label.
    pub fn parse(text: &str) -> Result<HostPattern, CapsError> {
        let bad = |detail: &str| CapsError::grant(ALLOW_LIST_RULE, format!("pattern {text:?}: {detail}"));
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("expected scheme://host[:port]"))?;
        let scheme = match scheme {
            "*" => None,
            s => Some(Scheme::parse(s).ok_or_else(|| bad("the scheme must be http, https or *"))?),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("a pattern has no path, query or user information"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in an IPv6 host"))?;
            if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err(bad("not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("expected :port after ]"))?),
            };
            (HostMatch::Exact(format!("[{}]", addr.to_ascii_lowercase())), port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let valid_name =
                |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            let host = if host == "*" {
                HostMatch::Any
            } else if let Some(below) = host.strip_prefix("*.") {
                if !valid_name(below) {
                    return Err(bad("expected *.domain"));
                }
                HostMatch::Below(format!(".{}", normalise_host(below)))
            } else if valid_name(host) {
                HostMatch::Exact(normalise_host(host))
            } else {
                return Err(bad("the host must be a name, an IP address, *.domain or *"));
            };
            (host, port)
        };
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && !p.starts_with('+') => PortMatch::Exact(n),
                _ => return Err(bad("the port must be 1 to 65535 or *")),
            },
        };
        Ok(HostPattern { text: text.to_owned(), scheme, host, port })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern allows hosts in bulk: any host (`*`), or every name below a top-level
    /// domain (`*.com`). Policy checks refuse such patterns unless told otherwise.
    pub fn is_broad(&self) -> bool {
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Below(suffix) => suffix.trim_start_matches('.').split('.').count() < 2,
            HostMatch::Exact(_) => false,
        }
    }

    /// Whether `origin` matches.
    pub fn matches(&self, origin: &Origin) -> bool {
        let scheme = self.scheme.is_none_or(|s| s == origin.scheme);
        let host = match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => *h == origin.host,
            HostMatch::Below(suffix) => origin.host.len() > suffix.len() && origin.host.ends_with(suffix.as_str()),
        };
        let port = match self.port {
            PortMatch::Any => true,
            PortMatch::Exact(p) => p == origin.port,
            PortMatch::Default => origin.port == origin.scheme.default_port(),
        };
        scheme && host && port
    }
}

/// A function's allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    patterns: Vec<HostPattern>,
}

impl AllowList {
    /// Parses every pattern.
    ///
    /// # Errors
    /// The first pattern that does not parse.
    pub fn parse(patterns: &[String]) -> Result<AllowList, CapsError> {
        Ok(AllowList { patterns: patterns.iter().map(|p| HostPattern::parse(p)).collect::<Result<_, _>>()? })
    }

    /// The patterns.
    pub fn patterns(&self) -> &[HostPattern] {
        &self.patterns
    }

    /// Allows `origin`, or denies it naming the rule.
    ///
    /// # Errors
    /// [`CapsError::HostDenied`] when no pattern matches.
    pub fn check(&self, origin: &Origin) -> Result<(), CapsError> {
        if self.patterns.iter().any(|p| p.matches(origin)) {
            return Ok(());
        }
        Err(CapsError::HostDenied {
            origin: origin.to_string(),
            rule: ALLOW_LIST_RULE,
            allowed: self.patterns.iter().map(|p| p.text.clone()).collect(),
        })
    }
}

/// A request that passed the checks, ready to go.
pub(crate) struct Checked {
    pub(crate) origin: Origin,
    request: http::Request<Vec<u8>>,
}

/// Validates a decoded outbound request and builds it.
pub(crate) fn check(req: &glint_abi::http::RequestRef<'_>, allow: &AllowList) -> Result<Checked, CapsError> {
    let (origin, uri) = Origin::of(req.target)?;
    allow.check(&origin)?;
    if origin.scheme == Scheme::Https && !cfg!(feature = "tls") {
        return Err(CapsError::invalid("url", "https needs glint-caps built with the `tls` feature"));
    }
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| CapsError::invalid("method", "not a valid method"))?;
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (index, h) in req.headers.clone().enumerate() {
        if FORBIDDEN_HEADERS.iter().any(|f| f.eq_ignore_ascii_case(h.name)) {
            return Err(CapsError::invalid("header", format!("header {index} ({:?}) is set by the host", h.name)));
        }
        let value = http::HeaderValue::from_bytes(h.value)
            .map_err(|_| CapsError::invalid("header", format!("header {index} has an invalid value")))?;
        builder = builder.header(h.name, value);
    }
    let request =
        builder.body(req.body.to_vec()).map_err(|_| CapsError::invalid("request", "the request cannot be built"))?;
    Ok(Checked { origin, request })
}

/// The client: one agent (connection pool) per context, and the in-flight bound.
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
    in_flight: Arc<AtomicUsize>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("in_flight", &self.in_flight.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// A response as the guest gets it.
pub(crate) struct Received {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Client {
    pub(crate) fn new() -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(None)
            .user_agent("glint")
            .build();
        Client { agent: ureq::Agent::new_with_config(config), in_flight: Arc::new(AtomicUsize::new(0)) }
    }

    /// Sends on a helper thread and waits, checking every few milliseconds whether the guest
    /// call this thread serves was stopped, so a kill or a call deadline is not held up by the
    /// network (the helper finishes on its own within `timeout`).
    pub(crate) fn send(&self, checked: Checked, timeout: Duration, max_body: u64) -> Result<Received, CapsError> {
        let origin = checked.origin.to_string();
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(CapsError::Busy { limit: MAX_IN_FLIGHT });
        }
        let guard = InFlight(Arc::clone(&self.in_flight));
        let (tx, rx) = mpsc::sync_channel(1);
        let agent = self.agent.clone();
        let thread_origin = origin.clone();
        let spawned =
            std::thread::Builder::new().name("glint-outbound".into()).stack_size(256 << 10).spawn(move || {
                let _guard = guard;
                let result = exchange(&agent, checked.request, &thread_origin, timeout, max_body);
                // The waiter may have gone (its call was stopped); the result is then dropped.
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            return Err(CapsError::Thread { what: "cannot start an outbound HTTP thread", source: Some(e) });
        }
        loop {
            match rx.recv_timeout(CANCEL_POLL) {
                Ok(result) => return result,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if glint::call_cancelled() {
                        return Err(CapsError::Cancelled { origin });
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(CapsError::Thread { what: "the outbound HTTP thread died", source: None })
                }
            }
        }
    }
}

fn exchange(
    agent: &ureq::Agent,
    request: http::Request<Vec<u8>>,
    origin: &str,
    timeout: Duration,
    max_body: u64,
) -> Result<Received, CapsError> {
    let map = |e: ureq::Error| map_error(e, origin, timeout, max_body);
    let (parts, body) = request.into_parts();
    let response = if body.is_empty() {
        let request =
            agent.configure_request(http::Request::from_parts(parts, ())).timeout_global(Some(timeout)).build();
        agent.run(request)
    } else {
        let request =
            agent.configure_request(http::Request::from_parts(parts, body)).timeout_global(Some(timeout)).build();
        agent.run(request)
    }
    .map_err(map)?;
    let too_large = || CapsError::ResponseTooLarge { origin: origin.to_owned(), limit: max_body };
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(too_large());
    }
    let status = response.status().as_u16();
    let headers =
        response.headers().iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect::<Vec<_>>();
    let mut body = Vec::new();
    // One byte past the cap tells "exactly at the cap" from "above it" without buffering more.
    let mut reader = response.into_body().into_with_config().limit(u64::MAX).reader().take(max_body.saturating_add(1));
    reader.read_to_end(&mut body).map_err(|e| match e.downcast::<ureq::Error>() {
        Ok(inner) => map(inner),
        Err(io) => map(ureq::Error::Io(io)),
    })?;
    if body.len() as u64 > max_body {
        return Err(too_large());
    }
    Ok(Received { status, headers, body })
}

fn map_error(e: ureq::Error, origin: &str, timeout: Duration, max_body: u64) -> CapsError {
    let outbound = |detail: &str, source: Option<std::io::Error>| CapsError::Outbound {
        origin: origin.to_owned(),
        detail: detail.to_owned(),
        source,
    };
    match e {
        ureq::Error::Timeout(_) => CapsError::Timeout { origin: origin.to_owned(), timeout },
        ureq::Error::BodyExceedsLimit(_) => CapsError::ResponseTooLarge { origin: origin.to_owned(), limit: max_body },
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            CapsError::Timeout { origin: origin.to_owned(), timeout }
        }
        ureq::Error::Io(io) => outbound("connection failed", Some(io)),
        ureq::Error::HostNotFound => outbound("host not found", None),
        ureq::Error::ConnectionFailed => outbound("connection failed", None),
        ureq::Error::Protocol(p) => outbound(&format!("protocol error: {p}"), None),
        ureq::Error::LargeResponseHeader(_, limit) => outbound(&format!("response headers exceed {limit} bytes"), None),
        ureq::Error::BadUri(_) => CapsError::invalid("url", "not a valid absolute URL"),
        ureq::Error::Http(_) => CapsError::invalid("request", "the request is not valid HTTP"),
        // Other variants may quote the URL; say only that the request failed.
        _ => outbound("request failed", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of(url).unwrap().0
    }

    fn allows(pattern: &str, url: &str) -> bool {
        HostPattern::parse(pattern).unwrap().matches(&origin(url))
    }

    #[test]
    fn patterns_match_scheme_host_and_port() {
        assert!(allows("http://127.0.0.1:8080", "http://127.0.0.1:8080/x?y"));
        assert!(!allows("http://127.0.0.1:8080", "http://127.0.0.1:8081/"));
        assert!(!allows("http://127.0.0.1:8080", "https://127.0.0.1:8080/"));
        assert!(allows("http://127.0.0.1:*", "http://127.0.0.1:1/"));
        assert!(allows("http://example.com", "http://EXAMPLE.com./"));
        assert!(!allows("http://example.com", "http://example.com:8080/"));
        assert!(allows("*://example.com", "https://example.com/"));
        assert!(allows("https://*.example.com", "https://a.b.example.com/"));
        assert!(!allows("https://*.example.com", "https://example.com/"));
        assert!(!allows("https://*.example.com", "https://badexample.com/"));
        assert!(allows("http://[::1]:*", "http://[::1]:9/"));
        assert!(allows("*://*:*", "http://anything:1/"));
        assert!(!allows("http://localhost:*", "http://127.0.0.1:80/"), "no DNS decides");
    }

    #[test]
    fn bad_patterns_are_refused_naming_the_key() {
        for p in [
            "example.com",
            "ftp://example.com",
            "http://example.com/path",
            "http://user@example.com",
            "http://exa*mple.com",
            "http://*.",
            "http://example.com:0",
            "http://example.com:99999",
            "http://[::1",
            "http://[zz]",
        ] {
            let e = HostPattern::parse(p).unwrap_err();
            assert!(e.to_string().starts_with("invalid `allowed_outbound_hosts`"), "{p}: {e}");
        }
    }

    #[test]
    fn broad_patterns_are_flagged() {
        assert!(HostPattern::parse("http://*").unwrap().is_broad());
        assert!(HostPattern::parse("https://*.com").unwrap().is_broad());
        assert!(!HostPattern::parse("https://*.example.com").unwrap().is_broad());
        assert!(!HostPattern::parse("http://127.0.0.1:*").unwrap().is_broad());
    }

    #[test]
    fn urls_with_user_information_or_other_schemes_are_refused() {
        assert!(Origin::of("http://allowed.com@evil.com/").is_err());
        assert!(Origin::of("file:///etc/passwd").is_err());
        assert!(Origin::of("/relative").is_err());
        assert_eq!(origin("http://a.b").to_string(), "http://a.b:80");
    }

    #[test]
    fn denials_name_the_rule_and_the_origin_only() {
        let list = AllowList::parse(&["http://127.0.0.1:8080".into()]).unwrap();
        let e = list.check(&origin("http://10.0.0.1:80/path?token=abc")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("allowed_outbound_hosts") && text.contains("http://10.0.0.1:80"), "{text}");
        assert!(!text.contains("token") && !text.contains("path"), "{text}");
    }
}
