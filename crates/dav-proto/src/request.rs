//! A DAV request as the handlers see it: method, path, the DAV headers parsed
//! once into typed values, and the body bytes.
//!
//! Pure: [`DavRequest::new`] takes the request head and the body the server has
//! already read (or why it could not). Each header is parsed here, when the
//! request is built, but a malformed one is an error only for the handler that
//! uses it ([`DavHeaders`] keeps each header's [`HeaderError`]): a PROPFIND
//! with a garbled If-Match is answered, as a PUT with one is refused.
//!
//! Headers: `Depth` (RFC 4918 §10.2), `If` (§10.4), `If-Match` and
//! `If-None-Match` (RFC 9110 §13.1), `If-Schedule-Tag-Match` (RFC 6638 §8.3),
//! `Prefer: return=minimal` (RFC 7240 §4.2) and its predecessor `Brief: t`,
//! and `Content-Type` (PUT bodies).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header, request::Parts};

/// A malformed DAV header. The messages are the ones the server answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("Depth \"{0}\" must be 0, 1 or infinity")]
    Depth(String),
    /// Not visible ASCII, or not one quoted entity tag (`*` aside).
    #[error("{header} must be a quoted ETag")]
    Etag { header: &'static str, value: String },
    #[error("If-Schedule-Tag-Match must be a quoted Schedule-Tag")]
    ScheduleTag,
    #[error("malformed If header at byte {offset}: {problem}")]
    If {
        offset: usize,
        problem: &'static str,
    },
}

/// Why the server could not read a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request bodies are limited to {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read the request body")]
    Unreadable,
}

/// `Depth` (RFC 4918 §10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Zero,
    One,
    Infinity,
}

impl Depth {
    pub fn parse(value: &str) -> Result<Depth, HeaderError> {
        match value.trim() {
            "0" => Ok(Depth::Zero),
            "1" => Ok(Depth::One),
            v if v.eq_ignore_ascii_case("infinity") => Ok(Depth::Infinity),
            v => Err(HeaderError::Depth(v.to_owned())),
        }
    }
}

/// What an `If-Match` or `If-None-Match` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagMatch {
    /// `*`: any current representation.
    Any,
    /// One quoted entity tag, quotes included. A list (`"a", "b"`) is kept as one
    /// value, which matches no stored tag.
    Tag(String),
}

impl EtagMatch {
    /// `header` names the header in the error.
    pub fn parse(header: &'static str, value: &str) -> Result<EtagMatch, HeaderError> {
        let value = value.trim();
        if value == "*" {
            return Ok(EtagMatch::Any);
        }
        if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            return Ok(EtagMatch::Tag(value.to_owned()));
        }
        Err(HeaderError::Etag {
            header,
            value: value.to_owned(),
        })
    }
}

/// The `If` header (RFC 4918 §10.4): lists of conditions, each list tagged with
/// the resource it applies to or applying to the request's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfHeader {
    pub lists: Vec<IfList>,
}

/// One parenthesised list: it holds when all its conditions do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfList {
    /// The resource tag (`<href>`) before it, if any.
    pub resource: Option<String>,
    pub conditions: Vec<IfCondition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfCondition {
    /// `Not` before it.
    pub not: bool,
    pub test: IfTest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfTest {
    /// `<urn:...>`: a lock token or another state token.
    StateToken(String),
    /// `["etag"]`, quotes included.
    Etag(String),
}

impl IfHeader {
    pub fn parse(value: &str) -> Result<IfHeader, HeaderError> {
        IfParser { s: value, pos: 0 }.header()
    }
}

/// A cursor over an `If` value; positions are byte offsets into it.
struct IfParser<'a> {
    s: &'a str,
    pos: usize,
}

impl IfParser<'_> {
    fn error(&self, problem: &'static str) -> HeaderError {
        HeaderError::If {
            offset: self.pos,
            problem,
        }
    }

    fn skip_space(&mut self) {
        let rest = &self.s[self.pos..];
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t']).len();
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    /// Text up to the closing `close`, the delimiters consumed.
    fn delimited(&mut self, close: char, problem: &'static str) -> Result<String, HeaderError> {
        self.pos += 1;
        let rest = &self.s[self.pos..];
        let end = rest.find(close).ok_or_else(|| self.error(problem))?;
        self.pos += end + close.len_utf8();
        Ok(rest[..end].to_owned())
    }

    fn header(mut self) -> Result<IfHeader, HeaderError> {
        let mut lists = Vec::new();
        let mut tagged = None;
        loop {
            self.skip_space();
            let start = self.pos;
            let resource = match self.peek() {
                None if lists.is_empty() => return Err(self.error("no condition list")),
                None => return Ok(IfHeader { lists }),
                Some('<') => Some(self.delimited('>', "resource tag without '>'")?),
                Some('(') => None,
                Some(_) => return Err(self.error("expected '(' or '<'")),
            };
            // All lists are tagged, or none is (No-tag-list vs Tagged-list); the
            // lists after a tag are consumed with it below.
            if tagged.is_some_and(|t| t != resource.is_some()) {
                return Err(HeaderError::If {
                    offset: start,
                    problem: "tagged and untagged lists mixed",
                });
            }
            tagged = Some(resource.is_some());
            let mut any = false;
            loop {
                self.skip_space();
                if self.peek() != Some('(') {
                    break;
                }
                any = true;
                self.pos += 1;
                let conditions = self.conditions()?;
                lists.push(IfList {
                    resource: resource.clone(),
                    conditions,
                });
            }
            if !any {
                return Err(self.error("a resource tag must be followed by a list"));
            }
        }
    }

    /// The conditions of a list, after its `(`, through its `)`.
    fn conditions(&mut self) -> Result<Vec<IfCondition>, HeaderError> {
        let mut conditions = Vec::new();
        loop {
            self.skip_space();
            let mut not = false;
            if self.s[self.pos..]
                .get(..3)
                .is_some_and(|w| w.eq_ignore_ascii_case("not"))
            {
                not = true;
                self.pos += 3;
                self.skip_space();
            }
            let test = match self.peek() {
                Some(')') if !not && !conditions.is_empty() => {
                    self.pos += 1;
                    return Ok(conditions);
                }
                Some('<') => IfTest::StateToken(self.delimited('>', "state token without '>'")?),
                Some('[') => {
                    let tag = self.delimited(']', "entity tag without ']'")?;
                    let quoted = tag.trim_start_matches("W/");
                    if !(quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"')) {
                        return Err(self.error("entity tags are quoted"));
                    }
                    IfTest::Etag(tag)
                }
                None => return Err(self.error("list without ')'")),
                Some(_) => return Err(self.error("expected a state token or [entity tag]")),
            };
            conditions.push(IfCondition { not, test });
        }
    }
}

/// The DAV headers of a request, each parsed once; a malformed header keeps its
/// error for the handler that reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DavHeaders {
    depth: Result<Option<Depth>, HeaderError>,
    if_header: Result<Option<IfHeader>, HeaderError>,
    if_match: Result<Option<EtagMatch>, HeaderError>,
    if_none_match: Result<Option<EtagMatch>, HeaderError>,
    if_schedule_tag_match: Result<Option<String>, HeaderError>,
    return_minimal: bool,
    content_type: Option<String>,
}

impl Default for DavHeaders {
    /// A request without any of the headers.
    fn default() -> Self {
        DavHeaders::parse(&HeaderMap::new())
    }
}

/// A header's value as text; `Err` when it is not visible ASCII.
fn text(value: &HeaderValue) -> Result<&str, ()> {
    value.to_str().map_err(|_| ())
}

impl DavHeaders {
    /// Reads the first value of each header.
    pub fn parse(headers: &HeaderMap) -> DavHeaders {
        let get = |name: &str| headers.get(name);
        let etag = |name: header::HeaderName, label: &'static str| {
            get(name.as_str())
                .map(|v| {
                    let value = text(v).map_err(|()| HeaderError::Etag {
                        header: label,
                        value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    })?;
                    EtagMatch::parse(label, value)
                })
                .transpose()
        };
        DavHeaders {
            // A Depth that is not text reads as absent, as clients omitting it mean.
            depth: get("depth")
                .and_then(|v| text(v).ok())
                .map(Depth::parse)
                .transpose(),
            if_header: get("if")
                .map(|v| {
                    text(v)
                        .map_err(|()| HeaderError::If {
                            offset: 0,
                            problem: "not visible ASCII",
                        })
                        .and_then(IfHeader::parse)
                })
                .transpose(),
            if_match: etag(header::IF_MATCH, "If-Match"),
            if_none_match: etag(header::IF_NONE_MATCH, "If-None-Match"),
            if_schedule_tag_match: get("if-schedule-tag-match")
                .map(|v| {
                    text(v)
                        .map(|s| s.trim().to_owned())
                        .map_err(|()| HeaderError::ScheduleTag)
                })
                .transpose(),
            return_minimal: headers
                .get_all("prefer")
                .iter()
                .filter_map(|v| text(v).ok())
                .flat_map(|v| v.split(','))
                .any(|p| {
                    let token = p.split(';').next().unwrap_or_default();
                    token.split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("return")
                            && v.trim().trim_matches('"').eq_ignore_ascii_case("minimal")
                    })
                })
                || get("brief")
                    .and_then(|v| text(v).ok())
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("t")),
            // Not text: read as absent (the default type applies).
            content_type: get(header::CONTENT_TYPE.as_str())
                .and_then(|v| text(v).ok())
                .map(str::to_ascii_lowercase),
        }
    }

    /// `Depth`, None when absent.
    pub fn depth(&self) -> Result<Option<Depth>, HeaderError> {
        self.depth.clone()
    }

    /// The `If` header, None when absent.
    pub fn if_header(&self) -> Result<Option<&IfHeader>, HeaderError> {
        self.if_header
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone)
    }

    pub fn if_match(&self) -> Result<Option<&EtagMatch>, HeaderError> {
        self.if_match
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone)
    }

    pub fn if_none_match(&self) -> Result<Option<&EtagMatch>, HeaderError> {
        self.if_none_match
            .as_ref()
            .map(Option::as_ref)
            .map_err(Clone::clone)
    }

    /// The entity tag `If-Match` requires: None when absent or `*`.
    pub fn if_match_tag(&self) -> Result<Option<&str>, HeaderError> {
        Ok(match self.if_match()? {
            Some(EtagMatch::Tag(tag)) => Some(tag),
            Some(EtagMatch::Any) | None => None,
        })
    }

    /// `If-Schedule-Tag-Match`, trimmed, None when absent.
    pub fn if_schedule_tag_match(&self) -> Result<Option<&str>, HeaderError> {
        self.if_schedule_tag_match
            .as_ref()
            .map(Option::as_deref)
            .map_err(Clone::clone)
    }

    /// `Prefer: return=minimal` or `Brief: t`: leave out what was not found.
    pub fn return_minimal(&self) -> bool {
        self.return_minimal
    }

    /// `Content-Type`, lower-cased; None when absent or not text.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }
}

/// A request with its DAV headers parsed and its body read.
#[derive(Debug, Clone)]
pub struct DavRequest {
    pub method: Method,
    /// The request target's path, still percent-encoded.
    pub path: String,
    pub headers: DavHeaders,
    body: Result<Bytes, BodyError>,
}

impl DavRequest {
    /// `body` is what the server read, or why it could not: that is an error
    /// only for handlers that read the body ([`DavRequest::body`]).
    pub fn new(parts: &Parts, body: Result<Bytes, BodyError>) -> DavRequest {
        DavRequest {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            headers: DavHeaders::parse(&parts.headers),
            body,
        }
    }

    pub fn body(&self) -> Result<&Bytes, BodyError> {
        self.body.as_ref().map_err(|e| *e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> DavHeaders {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value).expect("value"),
            );
        }
        DavHeaders::parse(&map)
    }

    #[test]
    fn depth() {
        assert_eq!(headers(&[]).depth(), Ok(None));
        assert_eq!(headers(&[("depth", b"0")]).depth(), Ok(Some(Depth::Zero)));
        assert_eq!(headers(&[("depth", b" 1 ")]).depth(), Ok(Some(Depth::One)));
        assert_eq!(
            headers(&[("Depth", b"Infinity")]).depth(),
            Ok(Some(Depth::Infinity))
        );
        let e = headers(&[("depth", b"2")]).depth().unwrap_err();
        assert_eq!(e, HeaderError::Depth("2".into()));
        assert_eq!(e.to_string(), "Depth \"2\" must be 0, 1 or infinity");
        // Not text: as if absent.
        assert_eq!(headers(&[("depth", b"\xff")]).depth(), Ok(None));
    }

    #[test]
    fn if_match_and_if_none_match() {
        let h = headers(&[("if-match", b"\"abc\""), ("if-none-match", b"*")]);
        assert_eq!(h.if_match(), Ok(Some(&EtagMatch::Tag("\"abc\"".into()))));
        assert_eq!(h.if_match_tag(), Ok(Some("\"abc\"")));
        assert_eq!(h.if_none_match(), Ok(Some(&EtagMatch::Any)));
        let h = headers(&[("if-match", b"*")]);
        assert_eq!(h.if_match(), Ok(Some(&EtagMatch::Any)));
        assert_eq!(h.if_match_tag(), Ok(None));
        assert_eq!(headers(&[]).if_match(), Ok(None));
        for bad in [&b"abc"[..], b"\"", b"W/\"abc\"", b"\xffx"] {
            let e = headers(&[("if-match", bad)]).if_match_tag().unwrap_err();
            assert!(matches!(
                e,
                HeaderError::Etag {
                    header: "If-Match",
                    ..
                }
            ));
            assert_eq!(e.to_string(), "If-Match must be a quoted ETag");
        }
        // A list is one value that matches nothing.
        assert_eq!(
            headers(&[("if-match", b"\"a\", \"b\"")]).if_match_tag(),
            Ok(Some("\"a\", \"b\""))
        );
    }

    #[test]
    fn schedule_tag_match() {
        assert_eq!(
            headers(&[("if-schedule-tag-match", b" \"t1\" ")]).if_schedule_tag_match(),
            Ok(Some("\"t1\""))
        );
        assert_eq!(headers(&[]).if_schedule_tag_match(), Ok(None));
        assert_eq!(
            headers(&[("if-schedule-tag-match", b"\xff")]).if_schedule_tag_match(),
            Err(HeaderError::ScheduleTag)
        );
    }

    #[test]
    fn prefer_and_brief() {
        assert!(!headers(&[]).return_minimal());
        assert!(headers(&[("prefer", b"return=minimal")]).return_minimal());
        assert!(
            headers(&[("prefer", b"respond-async, Return = \"minimal\"; x=1")]).return_minimal()
        );
        assert!(!headers(&[("prefer", b"return=representation")]).return_minimal());
        assert!(headers(&[("brief", b"t")]).return_minimal());
        assert!(!headers(&[("brief", b"f")]).return_minimal());
    }

    #[test]
    fn content_type() {
        assert_eq!(
            headers(&[("content-type", b"Text/Calendar; charset=UTF-8")]).content_type(),
            Some("text/calendar; charset=utf-8")
        );
        assert_eq!(headers(&[("content-type", b"\xff")]).content_type(), None);
    }

    #[test]
    fn if_header() {
        let h = IfHeader::parse(
            "(<urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2> [\"I am an ETag\"]) ([\"I am another ETag\"])",
        )
        .expect("parses");
        assert_eq!(h.lists.len(), 2);
        assert_eq!(h.lists[0].resource, None);
        assert_eq!(
            h.lists[0].conditions,
            vec![
                IfCondition {
                    not: false,
                    test: IfTest::StateToken(
                        "urn:uuid:181d4fae-7d8c-11d0-a765-00a0c91e6bf2".into()
                    )
                },
                IfCondition {
                    not: false,
                    test: IfTest::Etag("\"I am an ETag\"".into())
                },
            ]
        );
        let h =
            IfHeader::parse("</cal/a.ics> (Not <DAV:no-lock> [W/\"x\"]) </cal/b.ics> ([\"y\"])")
                .expect("parses");
        assert_eq!(h.lists[0].resource.as_deref(), Some("/cal/a.ics"));
        assert!(h.lists[0].conditions[0].not);
        assert_eq!(h.lists[1].resource.as_deref(), Some("/cal/b.ics"));
        for (bad, offset) in [
            ("", 0),
            ("<x>", 3),
            ("(", 1),
            ("()", 1),
            ("([abc])", 6),
            ("(<urn:x> ", 9),
            ("(Not)", 4),
            ("x", 0),
            ("(<a>) </b> (<c>)", 6),
        ] {
            match IfHeader::parse(bad) {
                Err(HeaderError::If { offset: at, .. }) => assert_eq!(at, offset, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let h = headers(&[("if", b"(<urn:x>)")]);
        assert_eq!(h.if_header().expect("ok").map(|h| h.lists.len()), Some(1));
        assert!(headers(&[("if", b"nope")]).if_header().is_err());
    }

    #[test]
    fn request() {
        let (parts, ()) = http::Request::builder()
            .method("PROPFIND")
            .uri("/dav/calendars/t/my%20cal/?x=1")
            .header("depth", "1")
            .body(())
            .expect("request")
            .into_parts();
        let req = DavRequest::new(&parts, Ok(Bytes::from_static(b"<x/>")));
        assert_eq!(req.method.as_str(), "PROPFIND");
        assert_eq!(req.path, "/dav/calendars/t/my%20cal/");
        assert_eq!(req.headers.depth(), Ok(Some(Depth::One)));
        assert_eq!(req.body().map(|b| b.as_ref()), Ok(&b"<x/>"[..]));
        let req = DavRequest::new(&parts, Err(BodyError::TooLarge { limit: 10 }));
        assert_eq!(req.body(), Err(BodyError::TooLarge { limit: 10 }));
    }
}
