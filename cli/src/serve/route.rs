//! Routes: patterns from the manifest (exact segments, `:param` segments, a trailing `/...`
//! wildcard), request paths decoded and checked once, and the table that picks the longest match.
//!
//! Request paths are split on `/` first and each segment is percent-decoded afterwards, so an
//! encoded slash can never create a segment boundary; it is refused instead, as are `.` and `..`
//! segments, invalid escapes, invalid UTF-8 and control characters. Route parameters are plain
//! strings handed to the guest: nothing here touches the file system.

use percent_encoding::percent_decode_str;
use std::fmt;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must equal the decoded request segment.
    Literal(String),
    /// Matches any one non-empty segment, captured under this name.
    Param(String),
}

/// A route from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    segments: Vec<Segment>,
    wildcard: bool,
}

/// Why a route pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// It does not start with `/`.
    #[error("a route starts with `/`")]
    NoLeadingSlash,
    /// It ends with `/` (other than the root `/`).
    #[error("a route does not end with `/` (write `/a`, or `/a/...` for everything below it)")]
    TrailingSlash,
    /// Two slashes in a row.
    #[error("a route has no empty segments (`//`)")]
    EmptySegment,
    /// `...` anywhere but at the end.
    #[error("`...` may only be the last segment")]
    WildcardNotLast,
    /// `.` or `..`.
    #[error("a route has no `.` or `..` segments")]
    DotSegment,
    /// A parameter name that is not an identifier.
    #[error("parameter `{0}` is not a name (letters, digits and `_`, not starting with a digit)")]
    BadParam(String),
    /// The same parameter twice.
    #[error("parameter `{0}` appears twice")]
    DuplicateParam(String),
    /// A character routes may not hold.
    #[error("segment `{0}` holds a character routes may not use (allowed: letters, digits and -._~!$&'()*+,;=@)")]
    BadChar(String),
}

fn is_route_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=@".contains(&b)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

impl RoutePattern {
    /// Parses a manifest route.
    ///
    /// # Errors
    /// A [`RouteError`] naming what is wrong.
    pub fn parse(s: &str) -> Result<RoutePattern, RouteError> {
        let rest = s.strip_prefix('/').ok_or(RouteError::NoLeadingSlash)?;
        if rest.is_empty() {
            return Ok(RoutePattern { segments: Vec::new(), wildcard: false });
        }
        if rest.ends_with('/') {
            return Err(RouteError::TrailingSlash);
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::new();
        let mut wildcard = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "" => return Err(RouteError::EmptySegment),
                "..." if i + 1 == parts.len() => wildcard = true,
                "..." => return Err(RouteError::WildcardNotLast),
                "." | ".." => return Err(RouteError::DotSegment),
                p => {
                    if let Some(name) = p.strip_prefix(':') {
                        if !is_ident(name) {
                            return Err(RouteError::BadParam(name.to_owned()));
                        }
                        if segments.iter().any(|s| matches!(s, Segment::Param(n) if n == name)) {
                            return Err(RouteError::DuplicateParam(name.to_owned()));
                        }
                        segments.push(Segment::Param(name.to_owned()));
                    } else if p.bytes().all(is_route_char) {
                        segments.push(Segment::Literal(p.to_owned()));
                    } else {
                        return Err(RouteError::BadChar(p.to_owned()));
                    }
                }
            }
        }
        Ok(RoutePattern { segments, wildcard })
    }

    /// The root route `/`.
    pub fn root() -> RoutePattern {
        RoutePattern { segments: Vec::new(), wildcard: false }
    }

    /// Whether the route has neither parameters nor a wildcard.
    pub fn is_literal(&self) -> bool {
        !self.wildcard && self.segments.iter().all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The pattern typed calls of a function at this (literal) route answer: `<route>/call/:export`.
    pub fn typed_calls(&self) -> RoutePattern {
        let mut segments = self.segments.clone();
        segments.push(Segment::Literal("call".into()));
        segments.push(Segment::Param("export".into()));
        RoutePattern { segments, wildcard: false }
    }

    /// Whether two patterns match exactly the same paths (parameter names aside): a conflict.
    pub fn same_shape(&self, other: &RoutePattern) -> bool {
        self.wildcard == other.wildcard
            && self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|(a, b)| match (a, b) {
                (Segment::Literal(x), Segment::Literal(y)) => x == y,
                (Segment::Param(_), Segment::Param(_)) => true,
                _ => false,
            })
    }

    /// Matches decoded path segments; `None` when the route does not apply.
    pub fn matches(&self, path: &[String]) -> Option<RouteMatch> {
        if path.len() < self.segments.len() || (!self.wildcard && path.len() != self.segments.len()) {
            return None;
        }
        let mut params = Vec::new();
        for (seg, value) in self.segments.iter().zip(path) {
            match seg {
                Segment::Literal(l) if l == value => {}
                Segment::Param(name) if !value.is_empty() => params.push((name.clone(), value.clone())),
                _ => return None,
            }
        }
        let rest = self.wildcard.then(|| path.get(self.segments.len()..).unwrap_or_default().join("/"));
        Some(RouteMatch { params, rest })
    }

    /// How specific the route is, to pick among several matches: more segments first, then
    /// literals before parameters position by position, then exact before wildcard.
    fn rank(&self) -> (usize, Vec<u8>, bool) {
        let kinds = self.segments.iter().map(|s| if matches!(s, Segment::Literal(_)) { 2 } else { 1 }).collect();
        (self.segments.len(), kinds, !self.wildcard)
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() && !self.wildcard {
            return f.write_str("/");
        }
        for s in &self.segments {
            match s {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Param(p) => write!(f, "/:{p}")?,
            }
        }
        if self.wildcard {
            f.write_str("/...")?;
        }
        Ok(())
    }
}

/// What a match captured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteMatch {
    /// Parameter names and their decoded values, in route order.
    pub params: Vec<(String, String)>,
    /// For a wildcard route, the decoded segments below its prefix joined with `/`.
    pub rest: Option<String>,
}

impl RouteMatch {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request path was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not origin-form (e.g. `*`).
    #[error("the request path does not start with `/`")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the request path has an invalid percent escape")]
    BadEscape,
    /// A segment decodes to bytes that are not UTF-8.
    #[error("the request path is not valid UTF-8 once decoded")]
    NotUtf8,
    /// `%2F` or `%5C` inside a segment.
    #[error("the request path holds an encoded slash")]
    EncodedSlash,
    /// `.` or `..`, raw or encoded.
    #[error("the request path holds a `.` or `..` segment")]
    DotSegment,
    /// A control character (NUL included).
    #[error("the request path holds a control character")]
    ControlChar,
}

/// Splits a raw request path (no query) into decoded segments; `/` is no segment at all.
///
/// # Errors
/// A [`PathError`].
pub fn decode_path(raw: &str) -> Result<Vec<String>, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split('/').map(decode_segment).collect()
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(PathError::BadEscape);
            }
        }
    }
    let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| PathError::NotUtf8)?;
    if decoded.contains(['/', '\\']) {
        return Err(PathError::EncodedSlash);
    }
    if decoded.chars().any(char::is_control) {
        return Err(PathError::ControlChar);
    }
    if decoded == "." || decoded == ".." {
        return Err(PathError::DotSegment);
    }
    Ok(decoded.into_owned())
}

/// Routes to targets of type `T`, longest match first.
#[derive(Debug)]
pub struct Router<T> {
    routes: Vec<(RoutePattern, T)>,
}

impl<T> Router<T> {
    /// A table of `routes`; ties are impossible when no two patterns have the same shape (the
    /// manifest check refuses those).
    pub fn new(mut routes: Vec<(RoutePattern, T)>) -> Router<T> {
        // Most specific first, so the first match is the best one.
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.rank()));
        Router { routes }
    }

    /// The best route for `path`, with what it captured.
    pub fn route(&self, path: &[String]) -> Option<(&RoutePattern, &T, RouteMatch)> {
        self.routes.iter().find_map(|(p, t)| p.matches(path).map(|m| (p, t, m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        decode_path(p).unwrap()
    }

    #[test]
    fn patterns_parse_and_print_back() {
        for p in ["/", "/...", "/a", "/a/b", "/u/:id", "/files/...", "/u/:id/posts/:post_id/...", "/v1.0/x~y"] {
            assert_eq!(RoutePattern::parse(p).unwrap().to_string(), p);
        }
        assert_eq!(RoutePattern::parse("a"), Err(RouteError::NoLeadingSlash));
        assert_eq!(RoutePattern::parse("/a/"), Err(RouteError::TrailingSlash));
        assert_eq!(RoutePattern::parse("/a//b"), Err(RouteError::EmptySegment));
        assert_eq!(RoutePattern::parse("/.../a"), Err(RouteError::WildcardNotLast));
        assert_eq!(RoutePattern::parse("/a/.."), Err(RouteError::DotSegment));
        assert_eq!(RoutePattern::parse("/:1x"), Err(RouteError::BadParam("1x".into())));
        assert_eq!(RoutePattern::parse("/:a/:a"), Err(RouteError::DuplicateParam("a".into())));
        assert_eq!(RoutePattern::parse("/a%2Fb"), Err(RouteError::BadChar("a%2Fb".into())));
        assert_eq!(RoutePattern::parse("/a b"), Err(RouteError::BadChar("a b".into())));
    }

    #[test]
    fn matching_captures_params_and_the_rest() {
        let r = RoutePattern::parse("/u/:id/files/...").unwrap();
        let m = r.matches(&segs("/u/42/files/a/b")).unwrap();
        assert_eq!(m.param("id"), Some("42"));
        assert_eq!(m.rest.as_deref(), Some("a/b"));
        assert_eq!(r.matches(&segs("/u/42/files")).unwrap().rest.as_deref(), Some(""));
        assert!(r.matches(&segs("/u/42")).is_none());
        assert!(r.matches(&segs("/u//files")).is_none(), "a parameter never matches an empty segment");
        let exact = RoutePattern::parse("/a").unwrap();
        assert!(exact.matches(&segs("/a")).is_some());
        assert!(exact.matches(&segs("/a/")).is_none());
        assert!(exact.matches(&segs("/a/b")).is_none());
        assert!(RoutePattern::parse("/").unwrap().matches(&segs("/")).is_some());
        assert!(RoutePattern::parse("/").unwrap().matches(&segs("/a")).is_none());
    }

    #[test]
    fn the_longest_most_literal_match_wins() {
        let router = Router::new(
            ["/...", "/a/...", "/a/:x", "/a/b", "/:y/b", "/a/b/..."]
                .iter()
                .map(|p| (RoutePattern::parse(p).unwrap(), *p))
                .collect(),
        );
        let best = |p: &str| *router.route(&segs(p)).unwrap().1;
        assert_eq!(best("/a/b"), "/a/b");
        assert_eq!(best("/a/c"), "/a/:x");
        assert_eq!(best("/z/b"), "/:y/b");
        assert_eq!(best("/a/b/c"), "/a/b/...");
        assert_eq!(best("/a"), "/a/...");
        assert_eq!(best("/a/c/d"), "/a/...");
        assert_eq!(best("/"), "/...");
        assert_eq!(best("/q/r/s"), "/...");
    }

    #[test]
    fn shapes_conflict_regardless_of_parameter_names() {
        let p = |s| RoutePattern::parse(s).unwrap();
        assert!(p("/u/:id").same_shape(&p("/u/:name")));
        assert!(!p("/u/:id").same_shape(&p("/u/me")));
        assert!(!p("/u/...").same_shape(&p("/u")));
        assert!(p("/math").typed_calls().same_shape(&p("/math/call/:f")));
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(decode_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(decode_path("/a/%2e%2E/etc"), Err(PathError::DotSegment));
        assert_eq!(decode_path("/a/../etc"), Err(PathError::DotSegment));
        assert_eq!(decode_path("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(decode_path("/a%2Fb"), Err(PathError::EncodedSlash));
        assert_eq!(decode_path("/a%5cb"), Err(PathError::EncodedSlash));
        assert_eq!(decode_path("/%ff%fe"), Err(PathError::NotUtf8));
        assert_eq!(decode_path("/a%00"), Err(PathError::ControlChar));
        assert_eq!(decode_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(decode_path("/a%4"), Err(PathError::BadEscape));
        assert_eq!(decode_path("/caf%C3%A9/x%20y"), Ok(vec!["café".into(), "x y".into()]));
        assert_eq!(decode_path("/"), Ok(vec![]));
        assert_eq!(decode_path("/a/"), Ok(vec!["a".into(), String::new()]));
    }
}
