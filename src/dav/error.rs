//! DAV errors: an HTTP status, optionally a precondition (`DAV:error` body), and a
//! sentence for people.
//!
//! Preconditions are [`Condition`] values (`xml::Precondition`, named apart from
//! the store's write `Precondition`); their XML is written only here, at the edge.

use http::{HeaderValue, Response, StatusCode, header};

pub use super::xml::Precondition as Condition;
use super::xml::{error_body, escape_text};
use crate::http::{Body, full};

/// Boxed so `Result<_, DavError>` stays small on the happy path.
#[derive(Debug)]
pub struct DavError(Box<DavErrorData>);

#[derive(Debug)]
pub struct DavErrorData {
    pub status: StatusCode,
    /// The violated precondition, answered as `<d:error><cond/></d:error>`.
    pub condition: Option<Condition>,
    /// Extra XML inside the condition element (e.g. the conflicting `<d:href>`).
    pub inner: Option<String>,
    pub message: String,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl std::fmt::Display for DavError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.status, self.0.message)
    }
}

/// calgate's own namespace for the human-readable message inside `DAV:error`.
const NS_CALGATE: &str = "urn:calgate";

impl DavError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        DavError(Box::new(DavErrorData {
            status,
            condition: None,
            inner: None,
            message: message.into(),
            headers: Vec::new(),
        }))
    }

    /// A failed precondition or postcondition, answered with its `DAV:error` body.
    pub fn condition(status: StatusCode, condition: Condition, message: impl Into<String>) -> Self {
        let mut e = DavError::new(status, message);
        e.0.condition = Some(condition);
        e
    }

    pub fn with_inner(mut self, xml: String) -> Self {
        self.0.inner = Some(xml);
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn not_found() -> Self {
        DavError::new(StatusCode::NOT_FOUND, "no such resource")
    }

    /// 412: an If-Match / If-None-Match precondition did not hold.
    pub fn etag_mismatch() -> Self {
        DavError::new(
            StatusCode::PRECONDITION_FAILED,
            "the resource's ETag does not match",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        DavError::condition(StatusCode::FORBIDDEN, Condition::NeedPrivileges, message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "CalDAV request failed");
        DavError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; it has been logged",
        )
    }

    /// The answer's body and its content type: a `DAV:error` for a condition,
    /// the message as text otherwise.
    fn body(&self) -> (String, &'static str) {
        let e = &self.0;
        match &e.condition {
            Some(condition) => {
                let message = format!(
                    "<x:message xmlns:x=\"{NS_CALGATE}\">{}</x:message>",
                    escape_text(&e.message)
                );
                let inner = format!("{}{message}", e.inner.as_deref().unwrap_or_default());
                (
                    error_body(*condition, Some(&inner)),
                    "application/xml; charset=utf-8",
                )
            }
            None => (format!("{}\n", e.message), "text/plain; charset=utf-8"),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let (body, content_type) = self.body();
        let e = *self.0;
        let mut resp = Response::new(full(body));
        *resp.status_mut() = e.status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        for (name, value) in e.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// A malformed header the handler needs: 400, with the header's message.
impl From<super::request::HeaderError> for DavError {
    fn from(e: super::request::HeaderError) -> Self {
        DavError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

/// A write of a tenant deleted since the request found it.
impl From<crate::tenants::TenantGone> for DavError {
    fn from(e: crate::tenants::TenantGone) -> Self {
        DavError::new(StatusCode::NOT_FOUND, e.to_string())
    }
}

impl From<crate::store::StoreError> for DavError {
    fn from(e: crate::store::StoreError) -> Self {
        DavError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes clients got when conditions were passed as names.
    #[test]
    fn condition_bodies() {
        let e = DavError::condition(
            StatusCode::FORBIDDEN,
            Condition::NoUidConflict,
            "another object in this calendar has the same UID",
        )
        .with_inner("<d:href>/dav/calendars/t/c/a.ics</d:href>".into());
        assert_eq!(
            e.body(),
            (
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"DAV:\" \
                 xmlns:cal=\"urn:ietf:params:xml:ns:caldav\" xmlns:cs=\"http://calendarserver.org/ns/\" \
                 xmlns:ical=\"http://apple.com/ns/ical/\"><cal:no-uid-conflict>\
                 <d:href>/dav/calendars/t/c/a.ics</d:href><x:message xmlns:x=\"urn:calgate\">\
                 another object in this calendar has the same UID</x:message></cal:no-uid-conflict>\
                 </d:error>\n"
                    .to_owned(),
                "application/xml; charset=utf-8"
            )
        );
        let tail = |c: Condition| {
            let (body, _) = DavError::condition(StatusCode::FORBIDDEN, c, "m").body();
            body.split_once("\"http://apple.com/ns/ical/\">")
                .map(|(_, t)| t.to_owned())
                .unwrap_or_default()
        };
        let message = "<x:message xmlns:x=\"urn:calgate\">m</x:message>";
        for (c, name) in [
            (Condition::SupportedReport, "d:supported-report"),
            (Condition::ValidResourcetype, "d:valid-resourcetype"),
            (Condition::NeedPrivileges, "d:need-privileges"),
            (Condition::PropfindFiniteDepth, "d:propfind-finite-depth"),
            (
                Condition::ValidSchedulingMessage,
                "cal:valid-scheduling-message",
            ),
            (Condition::MaxInstances, "cal:max-instances"),
        ] {
            assert_eq!(tail(c), format!("<{name}>{message}</{name}></d:error>\n"));
        }
        assert_eq!(
            DavError::new(StatusCode::BAD_REQUEST, "no").body(),
            ("no\n".to_owned(), "text/plain; charset=utf-8")
        );
    }
}
