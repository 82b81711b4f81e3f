//! DAV errors: an HTTP status, optionally a precondition (`DAV:error` body), and a
//! sentence for people.

use http::{HeaderValue, Response, StatusCode, header};

use super::xml::{NS_CALDAV, NS_DAV, PropName, error_body, escape_text};
use crate::http::{Body, full};

/// Boxed so `Result<_, DavError>` stays small on the happy path.
#[derive(Debug)]
pub struct DavError(Box<DavErrorData>);

#[derive(Debug)]
pub struct DavErrorData {
    pub status: StatusCode,
    /// The violated precondition, answered as `<d:error><cond/></d:error>`.
    pub condition: Option<PropName>,
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

    /// A failed precondition in the DAV: namespace.
    pub fn dav(status: StatusCode, condition: &str, message: impl Into<String>) -> Self {
        let mut e = DavError::new(status, message);
        e.0.condition = Some(PropName::new(NS_DAV, condition));
        e
    }

    /// A failed precondition in the CalDAV namespace.
    pub fn caldav(status: StatusCode, condition: &str, message: impl Into<String>) -> Self {
        let mut e = DavError::new(status, message);
        e.0.condition = Some(PropName::new(NS_CALDAV, condition));
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
        DavError::dav(StatusCode::FORBIDDEN, "need-privileges", message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "CalDAV request failed");
        DavError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; it has been logged",
        )
    }

    pub fn into_response(self) -> Response<Body> {
        let e = *self.0;
        let (body, content_type) = match &e.condition {
            Some(condition) => {
                let message = format!(
                    "<x:message xmlns:x=\"{NS_CALGATE}\">{}</x:message>",
                    escape_text(&e.message)
                );
                let inner = format!("{}{message}", e.inner.clone().unwrap_or_default());
                (
                    error_body(condition.clone(), Some(&inner)),
                    "application/xml; charset=utf-8",
                )
            }
            None => (format!("{}\n", e.message), "text/plain; charset=utf-8"),
        };
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

impl From<crate::store::StoreError> for DavError {
    fn from(e: crate::store::StoreError) -> Self {
        DavError::internal(e)
    }
}
