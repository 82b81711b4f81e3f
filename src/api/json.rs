//! Booking write requests: the JSON a client sends, read into a [`BookingPatch`]
//! (answers are typed in [`super::answers`]).
//!
//! Request bodies are read field by field (not through derived deserialisers) so
//! every problem is reported against the field it concerns, all at once.

use serde_json::{Map, Value};

use crate::bookings::BookingPatch;
use crate::model::{BookingStatus, Customer, FieldError};

/// Fields the server owns: refused in writes, so a client that means to change
/// one (e.g. `sequence`) learns it cannot, instead of seeing its write ignored.
const READ_ONLY: &[&str] = &[
    "id", "uid", "tenant", "created", "updated", "sequence", "etag", "exports",
];

/// A booking write request: the changes, and whether to book over busy time.
#[derive(Debug, Default)]
pub struct WriteRequest {
    pub patch: BookingPatch,
    pub allow_conflict: bool,
}

/// Parses a create/replace/merge body, or lists everything wrong with it.
pub fn parse_write(body: &[u8]) -> Result<WriteRequest, ParseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::Syntax(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(ParseError::Syntax("the body must be a JSON object".into()));
    };
    let mut errors = Vec::new();
    let mut patch = BookingPatch::default();
    let mut allow_conflict = false;
    for (name, value) in &fields {
        let mut fail = |reason: &str| errors.push(FieldError::new(name.as_str(), reason));
        match name.as_str() {
            "start" => patch.start = string(value, &mut fail),
            "end" => patch.end = string(value, &mut fail),
            "title" => patch.title = string(value, &mut fail),
            "service" => patch.service = nullable_string(value, &mut fail),
            "location" => patch.location = nullable_string(value, &mut fail),
            "notes" => patch.notes = nullable_string(value, &mut fail),
            "all_day" => match value {
                Value::Bool(b) => patch.all_day = Some(*b),
                _ => fail("must be true or false"),
            },
            "time_zone" => {
                if let Some(name) = string(value, &mut fail) {
                    match name.parse() {
                        Ok(tz) => patch.time_zone = Some(tz),
                        Err(_) => fail(&format!(
                            "\"{name}\" is not an IANA time zone such as \"Europe/Paris\""
                        )),
                    }
                }
            }
            "status" => {
                if let Some(s) = string(value, &mut fail) {
                    match BookingStatus::parse(&s) {
                        Some(status) => patch.status = Some(status),
                        None => fail("must be one of confirmed, tentative, cancelled"),
                    }
                }
            }
            "metadata" => match value {
                Value::Object(map) => patch.metadata = Some(map.clone()),
                Value::Null => patch.metadata = Some(Map::new()),
                _ => fail("must be a JSON object"),
            },
            "customer" => match value {
                Value::Null => patch.customer = Some(None),
                Value::Object(map) => patch.customer = Some(Some(customer(map, &mut errors))),
                _ => fail("must be an object with name, email and phone"),
            },
            // Checked against the tenant's resources by the booking engine.
            "resources" => match value {
                Value::Array(items) => {
                    let ids: Vec<String> = items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    if ids.len() == items.len() {
                        patch.resources = Some(ids);
                    } else {
                        fail("must be a list of resource ids, e.g. [\"anna\", \"chair-1\"]");
                    }
                }
                _ => fail("must be a list of resource ids, e.g. [\"anna\", \"chair-1\"]"),
            },
            "allow_conflict" => match value {
                Value::Bool(b) => allow_conflict = *b,
                _ => fail("must be true or false"),
            },
            ro if READ_ONLY.contains(&ro) => {
                fail("is read-only: the server sets it; leave it out of the request")
            }
            _ => fail("is not a booking field"),
        }
    }
    if errors.is_empty() {
        Ok(WriteRequest {
            patch,
            allow_conflict,
        })
    } else {
        Err(ParseError::Fields(errors))
    }
}

#[derive(Debug)]
pub enum ParseError {
    /// Not JSON, or not an object.
    Syntax(String),
    Fields(Vec<FieldError>),
}

fn string(value: &Value, fail: &mut impl FnMut(&str)) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        _ => {
            fail("must be a string");
            None
        }
    }
}

fn nullable_string(value: &Value, fail: &mut impl FnMut(&str)) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        other => string(other, fail).map(Some),
    }
}

fn customer(map: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Customer {
    let mut c = Customer::default();
    for (name, value) in map {
        let field = format!("customer.{name}");
        let mut fail = |reason: &str| errors.push(FieldError::new(field.as_str(), reason));
        let parsed = nullable_string(value, &mut fail).flatten();
        match name.as_str() {
            "name" => c.name = parsed,
            "email" => c.email = parsed,
            "phone" => c.phone = parsed,
            _ => fail("is not a customer field (name, email, phone)"),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_field() {
        let err = parse_write(
            br#"{"start": 5, "time_zone": "Mars/Olympus", "customer": {"mail": "x"}, "colour": "red", "id": "mine"}"#,
        )
        .unwrap_err();
        let ParseError::Fields(fields) = err else {
            panic!("expected field errors")
        };
        let mut names: Vec<_> = fields.iter().map(|f| f.field.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["colour", "customer.mail", "id", "start", "time_zone"]
        );
    }

    #[test]
    fn null_clears_optional_fields() {
        let p = parse_write(br#"{"location": null, "customer": null}"#)
            .unwrap()
            .patch;
        assert_eq!(p.location, Some(None));
        assert_eq!(p.customer, Some(None));
        assert_eq!(p.notes, None);
    }

    #[test]
    fn syntax_errors_are_not_field_errors() {
        assert!(matches!(parse_write(b"{nope"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse_write(b"[]"), Err(ParseError::Syntax(_))));
    }
}
