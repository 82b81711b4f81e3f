//! The WebDAV/CalDAV XML layer: request bodies in, response bodies out, nothing else.
//!
//! What lives here:
//! - [`names`]: namespaces and [`PropName`] (namespace URI + local name).
//! - `dom`: the hostile-input-safe reader every parser goes through (UTF-8 only, no
//!   DOCTYPE or entity declarations, depth and element-count limits, strict well-formedness).
//! - [`request`]: PROPFIND, PROPPATCH, MKCALENDAR and extended MKCOL bodies.
//! - [`report`]: REPORT bodies (calendar-query with its filters, calendar-multiget,
//!   sync-collection, free-busy-query, and the principal reports clients probe with).
//! - [`time`]: CalDAV's `YYYYMMDDTHHMMSSZ` instants and ranges.
//! - [`value`]: owned property values, so dead properties round-trip unchanged.
//! - [`write`](mod@write): 207 multistatus (streamable) and `DAV:error` bodies.
//!
//! What does not: HTTP (methods, `Depth`, `Prefer`, status codes of whole requests), hrefs'
//! percent-decoding and mapping to resources, storage, iCalendar parsing, and deciding
//! which properties exist. Parsers take the body bytes and return typed requests or an
//! [`XmlError`] that says what is wrong and at which byte; writers take typed values.
//!
//! Fixtures: `fixtures/dav/requests/NN-method-client-what.xml` are request bodies as real
//! clients send them (sources in that folder's README), each with the expected parse in
//! `NN-*.expected.json`, checked by this module's tests.

mod dom;
pub mod error;
pub mod names;
pub mod report;
pub mod request;
pub mod time;
pub mod value;
pub mod write;

#[cfg(test)]
mod tests;

pub use dom::{MAX_DEPTH, MAX_ELEMENTS};
pub use error::XmlError;
pub use names::{
    NS_APPLE_ICAL, NS_CALDAV, NS_CALENDARSERVER, NS_CARDDAV, NS_DAV, NS_ME_COM, PropName,
};
pub use report::{
    CalPropRequest, CalendarDataRequest, CalendarMultiget, CalendarQuery, CompFilter, CompRequest,
    ExpandProperty, ParamFilter, PrincipalPropertySearch, PropFilter, PropertySearch,
    ReportRequest, Selection, SyncCollection, SyncLevel, TextMatch, parse_report,
};
pub use request::{
    MkcalendarRequest, MkcolRequest, PropPatchOp, PropRequest, PropfindRequest, ProppatchRequest,
    parse_mkcalendar, parse_mkcol, parse_propfind, parse_proppatch,
};
pub use time::{Period, TimeRange, UtcDateTime};
pub use value::{PropValue, XmlAttr, XmlElement};
pub use write::{
    MultistatusWriter, Precondition, PropContent, Propstat, PropstatResponse, Response, Status,
    StatusResponse, error_body, escape_attr, escape_text, escape_text_into, href_list, multistatus,
};
