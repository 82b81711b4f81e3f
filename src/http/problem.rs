//! RFC 9457 problem details: every error the gateway answers with over the JSON API
//! and the feeds. CalDAV errors (DAV:error bodies) are built by the DAV layer.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Serialize, Serializer};

use super::{Body, full};
use crate::api::answers::ConflictList;
use crate::model::FieldError;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error response; boxed so `Result<_, Problem>` stays small on the happy path.
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemData>);

#[derive(Debug, Clone)]
pub struct ProblemData {
    pub body: ProblemBody,
    /// Extra headers (WWW-Authenticate, Allow, ...).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The problem+json document. Members are declared in alphabetical order, the
/// order the `json!` body it replaced had (see [`crate::api::answers`]).
#[derive(Debug, Clone, Serialize)]
pub struct ProblemBody {
    /// Extension members (RFC 9457 §3.2) of a booking conflict: the busy
    /// entries in the way (`conflicts`, `conflicts_total`, `conflicts_truncated`).
    #[serde(flatten)]
    pub conflicts: Option<ConflictList>,
    pub detail: String,
    /// Each bad field or query parameter, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_params: Vec<InvalidParam>,
    #[serde(serialize_with = "status_number")]
    pub status: StatusCode,
    pub title: &'static str,
    #[serde(rename = "type")]
    pub kind: ProblemType,
}

/// A problem type: a short slug; on the wire `urn:calgate:problem:{slug}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemType(pub &'static str);

impl Serialize for ProblemType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("urn:calgate:problem:{}", self.0))
    }
}

fn status_number<S: Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

/// One entry of `invalid_params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

impl From<FieldError> for InvalidParam {
    fn from(f: FieldError) -> Self {
        InvalidParam {
            name: f.field,
            reason: f.reason,
        }
    }
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem(Box::new(ProblemData {
            body: ProblemBody {
                conflicts: None,
                detail: detail.into(),
                invalid_params: Vec::new(),
                status,
                title,
                kind: ProblemType(slug),
            },
            headers: Vec::new(),
        }))
    }

    /// Adds the busy entries a booking would overlap.
    pub fn with_conflicts(mut self, conflicts: ConflictList) -> Self {
        self.0.body.conflicts = Some(conflicts);
        self
    }

    pub fn with_params(mut self, params: Vec<FieldError>) -> Self {
        self.0.body.invalid_params = params.into_iter().map(InvalidParam::from).collect();
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

    /// A body that is not JSON at all (400), saying where the parser stopped.
    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            detail,
        )
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
        self.0.body.status
    }

    /// The document this problem answers with.
    pub fn body(&self) -> &ProblemBody {
        &self.0.body
    }

    pub fn into_response(self) -> Response<Body> {
        let p = *self.0;
        // Plain strings, numbers and lists: serialising cannot fail.
        let json = serde_json::to_vec(&p.body).unwrap_or_default();
        let mut resp = Response::new(full(Bytes::from(json)));
        *resp.status_mut() = p.body.status;
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

/// A write of a tenant deleted since the request found it: as if it had never
/// been found.
impl From<crate::tenants::TenantGone> for Problem {
    fn from(e: crate::tenants::TenantGone) -> Problem {
        Problem::not_found(e.to_string())
    }
}

impl From<crate::calendars::CalendarError> for Problem {
    fn from(e: crate::calendars::CalendarError) -> Problem {
        tracing::error!(error = %e, "calendar operation failed");
        Problem::internal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BusyEntry;

    fn text(p: &Problem) -> String {
        serde_json::to_string(p.body()).expect("problems serialise")
    }

    #[test]
    fn plain_problem_as_documented() {
        let p = Problem::not_found("booking \"x\" does not exist");
        assert_eq!(
            text(&p),
            concat!(
                r#"{"detail":"booking \"x\" does not exist","status":404,"#,
                r#""title":"Not found","type":"urn:calgate:problem:not-found"}"#
            )
        );
    }

    #[test]
    fn invalid_params_name_each_field() {
        let p = Problem::invalid(vec![
            FieldError::new("start", "must be a string"),
            FieldError::new("customer.email", "is not an address"),
        ]);
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            text(&p),
            concat!(
                r#"{"detail":"start: must be a string; customer.email: is not an address","#,
                r#""invalid_params":[{"name":"start","reason":"must be a string"},"#,
                r#"{"name":"customer.email","reason":"is not an address"}],"status":422,"#,
                r#""title":"The request has invalid fields","type":"urn:calgate:problem:invalid-params"}"#
            )
        );
    }

    #[test]
    fn conflicts_are_members_of_the_problem() {
        let found = [BusyEntry {
            span: crate::model::Span::new(0, 60_000),
            kind: crate::model::BusyKind::Busy,
            source: "bookings".into(),
            object: "b1".into(),
            resource: None,
        }];
        let p = Problem::new(
            StatusCode::CONFLICT,
            "booking-conflict",
            "The time is already taken",
            "taken",
        )
        .with_conflicts(ConflictList::new(&found));
        let direct = text(&p);
        assert_eq!(
            direct,
            concat!(
                r#"{"conflicts":[{"end":"1970-01-01T00:01:00Z","id":"b1","kind":"busy","#,
                r#""source":"bookings","start":"1970-01-01T00:00:00Z"}],"conflicts_total":1,"#,
                r#""conflicts_truncated":false,"detail":"taken","status":409,"#,
                r#""title":"The time is already taken","type":"urn:calgate:problem:booking-conflict"}"#
            )
        );
        // Declared in the sorted order serde_json's Value writes.
        let sorted = serde_json::to_value(p.body())
            .expect("serialises")
            .to_string();
        assert_eq!(direct, sorted);
    }

    #[test]
    fn response_carries_status_type_and_headers() {
        let resp = Problem::bad_request("no")
            .with_header(header::ALLOW, "GET")
            .into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(resp.headers()[header::ALLOW], "GET");
    }
}
