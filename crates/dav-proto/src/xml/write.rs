//! Response bodies: 207 multistatus (written incrementally, so a large REPORT can be streamed
//! response by response) and `DAV:error` precondition bodies.
//!
//! Prefixes are fixed and declared once on the root: `d:` DAV, `cal:` CalDAV, `cs:`
//! CalendarServer, `ical:` Apple iCal. A name in any other namespace gets an `xN:` prefix
//! declared on the element that uses it (N is stable for a namespace within one document).
//! Raw fragments passed in by callers may use the four fixed prefixes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use super::names::{NS_APPLE_ICAL, NS_CALDAV, NS_CALENDARSERVER, NS_DAV, PropName};
use super::value::{PropValue, XmlAttr, XmlElement};

const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";
const ROOT_NAMESPACES: &str = " xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\" \
     xmlns:cs=\"http://calendarserver.org/ns/\" xmlns:ical=\"http://apple.com/ns/ical/\"";

fn fixed_prefix(ns: &str) -> Option<&'static str> {
    match ns {
        NS_DAV => Some("d"),
        NS_CALDAV => Some("cal"),
        NS_CALENDARSERVER => Some("cs"),
        NS_APPLE_ICAL => Some("ical"),
        _ => None,
    }
}

/// An HTTP status as written in `DAV:status` (`HTTP/1.1 404 Not Found`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u16);

impl Status {
    pub const OK: Status = Status(200);
    pub const CREATED: Status = Status(201);
    pub const NO_CONTENT: Status = Status(204);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const CONFLICT: Status = Status(409);
    pub const PRECONDITION_FAILED: Status = Status(412);
    pub const UNPROCESSABLE: Status = Status(422);
    pub const LOCKED: Status = Status(423);
    pub const FAILED_DEPENDENCY: Status = Status(424);
    pub const INTERNAL_ERROR: Status = Status(500);
    pub const INSUFFICIENT_STORAGE: Status = Status(507);

    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            207 => "Multi-Status",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            412 => "Precondition Failed",
            422 => "Unprocessable Entity",
            423 => "Locked",
            424 => "Failed Dependency",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            507 => "Insufficient Storage",
            // Clients read the code; the phrase is informative only (RFC 9110 §15).
            _ => "Unknown",
        }
    }

    /// `HTTP/1.1 200 OK`
    pub fn line(self) -> String {
        format!("HTTP/1.1 {} {}", self.0, self.reason())
    }
}

/// A property's value in a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropContent {
    /// `<d:getetag/>`: for 404/403 propstats and `DAV:propname` answers.
    Empty,
    /// Character data, escaped when written. Carriage returns are written as `&#13;` so
    /// iCalendar's CRLF survives XML line-end normalisation: use this for calendar-data.
    Text(String),
    /// Inner XML built by the caller (`<d:href>/p/</d:href>`, `<d:collection/><cal:calendar/>`),
    /// written as is: it must be well-formed and use only the fixed prefixes.
    Raw(String),
    /// A stored dead property (as received in PROPPATCH/MKCALENDAR), written back with its
    /// attributes, text and child elements.
    Stored(PropValue),
}

impl PropContent {
    pub fn text(text: impl Into<String>) -> Self {
        PropContent::Text(text.into())
    }

    pub fn raw(xml: impl Into<String>) -> Self {
        PropContent::Raw(xml.into())
    }

    /// A list of `<d:href>` elements; hrefs must already be percent-encoded.
    pub fn hrefs<S: AsRef<str>>(hrefs: &[S]) -> Self {
        PropContent::Raw(href_list(hrefs))
    }
}

/// Properties sharing one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propstat {
    pub status: Status,
    pub props: Vec<(PropName, PropContent)>,
    /// Why the properties have this status (`DAV:responsedescription`), for people.
    pub description: Option<String>,
}

/// A `DAV:response` with propstats, grouped by status in order of first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropstatResponse {
    /// Percent-encoded; XML-escaped when written.
    pub href: String,
    pub propstats: Vec<Propstat>,
}

impl PropstatResponse {
    pub fn new(href: impl Into<String>) -> Self {
        PropstatResponse {
            href: href.into(),
            propstats: Vec::new(),
        }
    }

    pub fn add(&mut self, status: Status, name: PropName, content: PropContent) -> &mut Self {
        self.add_described(status, name, content, None)
    }

    /// [`add`](Self::add) with a sentence saying why; properties share a propstat
    /// only when they share status and sentence.
    pub fn add_described(
        &mut self,
        status: Status,
        name: PropName,
        content: PropContent,
        description: Option<String>,
    ) -> &mut Self {
        match self
            .propstats
            .iter_mut()
            .find(|p| p.status == status && p.description == description)
        {
            Some(group) => group.props.push((name, content)),
            None => self.propstats.push(Propstat {
                status,
                props: vec![(name, content)],
                description,
            }),
        }
        self
    }

    pub fn ok(&mut self, name: PropName, content: PropContent) -> &mut Self {
        self.add(Status::OK, name, content)
    }

    pub fn not_found(&mut self, name: PropName) -> &mut Self {
        self.add(Status::NOT_FOUND, name, PropContent::Empty)
    }
}

/// A `DAV:response` with only a status: a member removed since the sync-token (404), or the
/// 507 that marks a truncated sync-collection (with `number-of-matches-within-limits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    pub href: String,
    pub status: Status,
    /// A `DAV:error` condition inside the response, with optional inner XML.
    pub error: Option<(PropName, Option<String>)>,
}

impl StatusResponse {
    pub fn new(href: impl Into<String>, status: Status) -> Self {
        StatusResponse {
            href: href.into(),
            status,
            error: None,
        }
    }

    pub fn with_error(mut self, condition: impl Into<PropName>, inner: Option<&str>) -> Self {
        self.error = Some((condition.into(), inner.map(str::to_string)));
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Props(PropstatResponse),
    Status(StatusResponse),
}

impl From<PropstatResponse> for Response {
    fn from(r: PropstatResponse) -> Self {
        Response::Props(r)
    }
}

impl From<StatusResponse> for Response {
    fn from(r: StatusResponse) -> Self {
        Response::Status(r)
    }
}

/// Writes a multistatus in pieces: [`begin`](Self::begin), any number of
/// [`write_response`](Self::write_response) into whatever buffer is being flushed, then
/// [`end`](Self::end). Keeps the `xN:` prefix numbering consistent across the document.
#[derive(Debug, Default)]
pub struct MultistatusWriter {
    prefixes: Prefixes,
}

impl MultistatusWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The XML declaration and the opening `<d:multistatus>` with the fixed namespaces.
    pub fn begin(&self) -> String {
        format!("{XML_DECL}<d:multistatus{ROOT_NAMESPACES}>\n")
    }

    /// Appends one `<d:response>` (and a newline) to `out`.
    pub fn write_response(&mut self, out: &mut String, response: &Response) {
        match response {
            Response::Props(r) => self.write_propstat_response(out, r),
            Response::Status(r) => {
                out.push_str("<d:response><d:href>");
                out.push_str(&escape_text(&r.href));
                out.push_str("</d:href><d:status>");
                out.push_str(&r.status.line());
                out.push_str("</d:status>");
                if let Some((condition, inner)) = &r.error {
                    out.push_str("<d:error>");
                    self.write_condition(out, condition, inner.as_deref());
                    out.push_str("</d:error>");
                }
                out.push_str("</d:response>\n");
            }
        }
    }

    fn write_propstat_response(&mut self, out: &mut String, r: &PropstatResponse) {
        out.push_str("<d:response><d:href>");
        out.push_str(&escape_text(&r.href));
        out.push_str("</d:href>");
        for propstat in &r.propstats {
            out.push_str("<d:propstat><d:prop>");
            for (name, content) in &propstat.props {
                self.write_prop(out, name, content);
            }
            out.push_str("</d:prop><d:status>");
            out.push_str(&propstat.status.line());
            out.push_str("</d:status>");
            if let Some(description) = &propstat.description {
                out.push_str("<d:responsedescription>");
                out.push_str(&escape_text(description));
                out.push_str("</d:responsedescription>");
            }
            out.push_str("</d:propstat>");
        }
        out.push_str("</d:response>\n");
    }

    /// `<d:sync-token>` (for sync-collection) and the closing tag.
    pub fn end(&self, sync_token: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(token) = sync_token {
            out.push_str("<d:sync-token>");
            out.push_str(&escape_text(token));
            out.push_str("</d:sync-token>\n");
        }
        out.push_str("</d:multistatus>\n");
        out
    }

    fn write_prop(&mut self, out: &mut String, name: &PropName, content: &PropContent) {
        let (qname, decl) = self.prefixes.element_name(name);
        out.push('<');
        out.push_str(&qname);
        out.push_str(&decl);
        match content {
            PropContent::Empty => out.push_str("/>"),
            PropContent::Text(text) if text.is_empty() => out.push_str("/>"),
            PropContent::Raw(xml) if xml.is_empty() => out.push_str("/>"),
            PropContent::Text(text) => {
                out.push('>');
                escape_into(out, text, false);
                close(out, &qname);
            }
            PropContent::Raw(xml) => {
                out.push('>');
                out.push_str(xml);
                close(out, &qname);
            }
            PropContent::Stored(value) => {
                let mut scope = vec![name.ns.clone()];
                self.write_attrs(out, &value.attrs, &mut scope);
                if value.children.is_empty() && value.text.is_empty() {
                    out.push_str("/>");
                } else {
                    out.push('>');
                    out.push_str(&escape_text(&value.text));
                    for child in &value.children {
                        self.write_element(out, child, &mut scope);
                    }
                    close(out, &qname);
                }
            }
        }
    }

    /// A stored element; `scope` holds the unknown namespaces already declared by ancestors
    /// inside this property, so each is declared once per subtree.
    fn write_element(&mut self, out: &mut String, el: &XmlElement, scope: &mut Vec<String>) {
        let depth = scope.len();
        let (qname, decl) = self.prefixes.element_name_in(&el.name, scope);
        out.push('<');
        out.push_str(&qname);
        out.push_str(&decl);
        self.write_attrs(out, &el.attrs, scope);
        if el.children.is_empty() && el.text.is_empty() {
            out.push_str("/>");
        } else {
            out.push('>');
            out.push_str(&escape_text(&el.text));
            for child in &el.children {
                self.write_element(out, child, scope);
            }
            close(out, &qname);
        }
        scope.truncate(depth);
    }

    fn write_attrs(&mut self, out: &mut String, attrs: &[XmlAttr], scope: &mut Vec<String>) {
        for attr in attrs {
            let qname = if attr.name.ns.is_empty() {
                attr.name.name.clone()
            } else {
                let (qname, decl) = self.prefixes.element_name_in(&attr.name, scope);
                out.push_str(&decl);
                qname
            };
            let _ = write!(out, " {qname}=\"{}\"", escape_attr(&attr.value));
        }
    }

    fn write_condition(&mut self, out: &mut String, condition: &PropName, inner: Option<&str>) {
        let (qname, decl) = self.prefixes.element_name(condition);
        out.push('<');
        out.push_str(&qname);
        out.push_str(&decl);
        match inner {
            Some(xml) if !xml.is_empty() => {
                out.push('>');
                out.push_str(xml);
                close(out, &qname);
            }
            _ => out.push_str("/>"),
        }
    }
}

fn close(out: &mut String, qname: &str) {
    out.push_str("</");
    out.push_str(qname);
    out.push('>');
}

/// `xN` prefixes for namespaces other than the four fixed ones.
#[derive(Debug, Default)]
struct Prefixes {
    numbers: HashMap<String, usize>,
}

impl Prefixes {
    fn number(&mut self, ns: &str) -> usize {
        let next = self.numbers.len();
        *self.numbers.entry(ns.to_string()).or_insert(next)
    }

    /// The qualified name and, for an unknown namespace, the declaration to put on the element.
    fn element_name(&mut self, name: &PropName) -> (String, String) {
        self.element_name_in(name, &mut Vec::new())
    }

    fn element_name_in(&mut self, name: &PropName, scope: &mut Vec<String>) -> (String, String) {
        if name.ns.is_empty() {
            // No default namespace is ever declared, so an unprefixed name is in none.
            return (name.name.clone(), String::new());
        }
        if let Some(prefix) = fixed_prefix(&name.ns) {
            return (format!("{prefix}:{}", name.name), String::new());
        }
        let n = self.number(&name.ns);
        let qname = format!("x{n}:{}", name.name);
        if scope.contains(&name.ns) {
            return (qname, String::new());
        }
        scope.push(name.ns.clone());
        let decl = format!(" xmlns:x{n}=\"{}\"", escape_attr(&name.ns));
        (qname, decl)
    }
}

/// A whole multistatus in one string, for small answers.
pub fn multistatus(responses: &[Response], sync_token: Option<&str>) -> String {
    let mut writer = MultistatusWriter::new();
    let mut out = writer.begin();
    for r in responses {
        writer.write_response(&mut out, r);
    }
    out.push_str(&writer.end(sync_token));
    out
}

/// A `DAV:error` body for a failed precondition (RFC 4918 §16), e.g.
/// `error_body(Precondition::NoUidConflict, Some("<d:href>/dav/c/1.ics</d:href>"))`.
/// `inner` is raw XML using the fixed prefixes; hrefs in it must be escaped by the caller
/// (see [`href_list`]).
pub fn error_body(condition: impl Into<PropName>, inner: Option<&str>) -> String {
    let mut writer = MultistatusWriter::new();
    let mut out = format!("{XML_DECL}<d:error{ROOT_NAMESPACES}>");
    writer.write_condition(&mut out, &condition.into(), inner);
    out.push_str("</d:error>\n");
    out
}

/// Preconditions and postconditions servers report in `DAV:error` bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// RFC 4918 §9.1: a `Depth: infinity` PROPFIND refused.
    PropfindFiniteDepth,
    /// RFC 4918 §9.3.1: MKCOL/MKCALENDAR target already exists.
    ResourceMustBeNull,
    /// RFC 3744 §7.1.1: with `<d:resource><d:href/><d:privilege/></d:resource>` inside.
    NeedPrivileges,
    /// RFC 3253 §3.6: a REPORT the resource does not answer.
    SupportedReport,
    /// RFC 5689 §3.3: an extended MKCOL of a resource type that cannot be made here.
    ValidResourcetype,
    /// RFC 6578 §3.2: unknown or expired sync-token (403).
    ValidSyncToken,
    /// RFC 6578 §3.6 / RFC 4918: the result was truncated (507).
    NumberOfMatchesWithinLimits,
    /// RFC 4791 §5.3.2.1: with the `<d:href>` of the resource already holding the UID.
    NoUidConflict,
    ValidCalendarData,
    ValidCalendarObjectResource,
    SupportedCalendarData,
    SupportedCalendarComponent,
    CalendarCollectionLocationOk,
    MaxResourceSize,
    MinDateTime,
    MaxDateTime,
    MaxInstances,
    MaxAttendeesPerInstance,
    /// RFC 4791 §7.7: a filter the server cannot evaluate.
    ValidFilter,
    SupportedFilter,
    SupportedCollation,
    ValidCalendarTimezone,
    /// RFC 6638 §6.1.2: a POST to the scheduling outbox that is no usable iTIP message.
    ValidSchedulingMessage,
}

impl Precondition {
    pub fn name(self) -> PropName {
        use Precondition::*;
        let (ns, name) = match self {
            PropfindFiniteDepth => (NS_DAV, "propfind-finite-depth"),
            ResourceMustBeNull => (NS_DAV, "resource-must-be-null"),
            NeedPrivileges => (NS_DAV, "need-privileges"),
            SupportedReport => (NS_DAV, "supported-report"),
            ValidResourcetype => (NS_DAV, "valid-resourcetype"),
            ValidSyncToken => (NS_DAV, "valid-sync-token"),
            NumberOfMatchesWithinLimits => (NS_DAV, "number-of-matches-within-limits"),
            NoUidConflict => (NS_CALDAV, "no-uid-conflict"),
            ValidCalendarData => (NS_CALDAV, "valid-calendar-data"),
            ValidCalendarObjectResource => (NS_CALDAV, "valid-calendar-object-resource"),
            SupportedCalendarData => (NS_CALDAV, "supported-calendar-data"),
            SupportedCalendarComponent => (NS_CALDAV, "supported-calendar-component"),
            CalendarCollectionLocationOk => (NS_CALDAV, "calendar-collection-location-ok"),
            MaxResourceSize => (NS_CALDAV, "max-resource-size"),
            MinDateTime => (NS_CALDAV, "min-date-time"),
            MaxDateTime => (NS_CALDAV, "max-date-time"),
            MaxInstances => (NS_CALDAV, "max-instances"),
            MaxAttendeesPerInstance => (NS_CALDAV, "max-attendees-per-instance"),
            ValidFilter => (NS_CALDAV, "valid-filter"),
            SupportedFilter => (NS_CALDAV, "supported-filter"),
            SupportedCollation => (NS_CALDAV, "supported-collation"),
            ValidCalendarTimezone => (NS_CALDAV, "valid-calendar-timezone"),
            ValidSchedulingMessage => (NS_CALDAV, "valid-scheduling-message"),
        };
        PropName::new(ns, name)
    }
}

impl From<Precondition> for PropName {
    fn from(p: Precondition) -> Self {
        p.name()
    }
}

/// `<d:href>..</d:href>` for each (already percent-encoded) href.
pub fn href_list<S: AsRef<str>>(hrefs: &[S]) -> String {
    let mut out = String::new();
    for href in hrefs {
        out.push_str("<d:href>");
        out.push_str(&escape_text(href.as_ref()));
        out.push_str("</d:href>");
    }
    out
}

/// Escapes character data: `&`, `<`, `>`, and CR as `&#13;`. Characters XML 1.0 cannot
/// carry at all (most C0 controls, U+FFFE/U+FFFF) become U+FFFD so the document stays
/// well-formed whatever a stored calendar contains.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// [`escape_text`] appended to `out`, without an intermediate string.
pub fn escape_text_into(out: &mut String, s: &str) {
    escape_into(out, s, false);
}

/// Escapes an attribute value: as [`escape_text`], plus `"` and tab/LF as references (they
/// would otherwise be normalised to spaces by the reader).
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, attr: bool) -> Cow<'_, str> {
    let special = if attr {
        &SPECIAL_IN_ATTR
    } else {
        &SPECIAL_IN_TEXT
    };
    if !s.bytes().any(|b| special[b as usize]) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + s.len() / 16 + 16);
    escape_into(&mut out, s, attr);
    Cow::Owned(out)
}

/// Bytes that may need a replacement: every such byte is ASCII, except the lead
/// byte 0xEF of U+FFFE/U+FFFF. A table, because calendar-data is escaped byte by
/// byte on every REPORT.
const fn special_bytes(attr: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'\t' as usize] = attr;
    table[b'\n' as usize] = attr;
    table[b'"' as usize] = attr;
    table[b'&' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[0xEF] = true;
    table
}

static SPECIAL_IN_TEXT: [bool; 256] = special_bytes(false);
static SPECIAL_IN_ATTR: [bool; 256] = special_bytes(true);

/// [`escape`] appended to `out`; runs between special bytes are copied whole.
fn escape_into(out: &mut String, s: &str, attr: bool) {
    let special = if attr {
        &SPECIAL_IN_ATTR
    } else {
        &SPECIAL_IN_TEXT
    };
    out.reserve(s.len() + s.len() / 16);
    let mut copied = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if !special[b as usize] || i < copied {
            continue;
        }
        let replacement = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#13;",
            b'"' => "&quot;",
            b'\n' => "&#10;",
            b'\t' => "&#9;",
            0xEF => {
                // A three-byte character U+F000..U+FFFF: only U+FFFE/U+FFFF are not XML.
                match s[i..].chars().next() {
                    Some(c) if !is_xml_char(c) => {
                        out.push_str(&s[copied..i]);
                        out.push('\u{FFFD}');
                        copied = i + c.len_utf8();
                    }
                    _ => {}
                }
                continue;
            }
            _ => "\u{FFFD}",
        };
        out.push_str(&s[copied..i]);
        out.push_str(replacement);
        copied = i + 1;
    }
    out.push_str(&s[copied..]);
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}
