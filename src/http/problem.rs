//! RFC 9457 problem details: every error the gateway answers with over the JSON API
//! and the feeds. CalDAV errors (DAV:error bodies) are built by the DAV layer.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use super::{Body, full};
use crate::model::FieldError;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error response; boxed so `Result<_, Problem>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemData>);

#[derive(Debug, Clone)]
pub struct ProblemData {
    pub status: StatusCode,
    /// Short slug; the `type` URI is `urn:calgate:problem:{slug}`.
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub invalid_params: Vec<FieldError>,
    /// Extra headers (WWW-Authenticate, Allow, ...).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Extension members (RFC 9457 §3.2), e.g. the conflicting busy blocks.
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem(Box::new(ProblemData {
            status,
            slug,
            title,
            detail: detail.into(),
            invalid_params: Vec::new(),
            headers: Vec::new(),
            extensions: serde_json::Map::new(),
        }))
    }

    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.0.extensions.insert(key.to_owned(), value);
        self
    }

    pub fn with_params(mut self, params: Vec<FieldError>) -> Self {
        self.0.invalid_params = params;
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.headers.push((name, v));
        }
        self
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    pub fn invalid(params: Vec<FieldError>) -> Self {
        let detail = params
            .iter()
            .map(|p| format!("{}: {}", p.field, p.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-params",
            "The request has invalid fields",
            detail,
        )
        .with_params(params)
    }

    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed to complete the request; it has been logged",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn into_response(self) -> Response<Body> {
        let p = *self.0;
        let mut body = json!({
            "type": format!("urn:calgate:problem:{}", p.slug),
            "title": p.title,
            "status": p.status.as_u16(),
            "detail": p.detail,
        });
        if !p.invalid_params.is_empty() {
            body["invalid_params"] = p
                .invalid_params
                .iter()
                .map(|f| json!({"name": f.field, "reason": f.reason}))
                .collect();
        }
        for (key, value) in p.extensions {
            body[key] = value;
        }
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = p.status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in p.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// Storage failures are never the client's fault: logged, answered 500.
impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Problem {
        tracing::error!(error = %e, "storage failed");
        Problem::internal()
    }
}

impl From<crate::calendars::CalendarError> for Problem {
    fn from(e: crate::calendars::CalendarError) -> Problem {
        tracing::error!(error = %e, "calendar operation failed");
        Problem::internal()
    }
}
