//! PROPFIND, PROPPATCH, MKCALENDAR and extended MKCOL bodies.
//!
//! Unknown elements are skipped wherever they appear, as RFC 4918 §17 requires of a
//! recipient; only a wrong root, a missing required element or a bad value is an error.

use super::dom::{Node, parse_document};
use super::error::XmlError;
use super::names::{NS_CALDAV, NS_DAV, PropName};
use super::report::{CalendarDataRequest, parse_calendar_data};
use super::value::PropValue;

/// What a PROPFIND (or a REPORT's `DAV:prop`/`allprop`/`propname`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropRequest {
    /// `DAV:allprop`, plus any properties named in `DAV:include` (RFC 4918 §14.8).
    AllProp { include: Vec<PropName> },
    /// `DAV:propname`: names only, no values.
    PropName,
    /// `DAV:prop`: these properties, in request order (duplicates kept as sent).
    Prop(Vec<PropName>),
}

/// A PROPFIND body is exactly a [`PropRequest`].
pub type PropfindRequest = PropRequest;

/// One PROPPATCH instruction, in document order (RFC 4918 §9.2 processes them in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropPatchOp {
    Set(PropName, PropValue),
    Remove(PropName),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProppatchRequest {
    pub ops: Vec<PropPatchOp>,
}

/// Properties to set when creating a collection: MKCALENDAR (RFC 4791 §5.3.1) or extended
/// MKCOL (RFC 5689). Empty for a body-less request. For MKCOL, `DAV:resourcetype` is among
/// them and says what kind of collection to make.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MkcolRequest {
    pub set: Vec<(PropName, PropValue)>,
}

/// MKCALENDAR carries the same list of properties as extended MKCOL.
pub type MkcalendarRequest = MkcolRequest;

/// Parses a PROPFIND body. An empty body, or a `DAV:propfind` naming none of
/// `prop`/`allprop`/`propname`, means allprop (RFC 4918 §9.1).
pub fn parse_propfind(body: &[u8]) -> Result<PropfindRequest, XmlError> {
    let Some(root) = parse_document(body)? else {
        return Ok(PropRequest::AllProp { include: vec![] });
    };
    expect_root(&root, NS_DAV, "propfind", "<D:propfind>")?;
    Ok(prop_request(&root).unwrap_or(PropRequest::AllProp { include: vec![] }))
}

/// Parses a PROPPATCH body (`DAV:propertyupdate`, required).
pub fn parse_proppatch(body: &[u8]) -> Result<ProppatchRequest, XmlError> {
    const EXPECTED: &str = "<D:propertyupdate>";
    let root = parse_document(body)?.ok_or(XmlError::EmptyBody { expected: EXPECTED })?;
    expect_root(&root, NS_DAV, "propertyupdate", EXPECTED)?;
    let mut ops = Vec::new();
    for instruction in &root.children {
        let set = instruction.is(NS_DAV, "set");
        if !set && !instruction.is(NS_DAV, "remove") {
            continue;
        }
        let prop = instruction.require(NS_DAV, "prop")?;
        for p in &prop.children {
            ops.push(if set {
                PropPatchOp::Set(p.name.clone(), p.to_value())
            } else {
                PropPatchOp::Remove(p.name.clone())
            });
        }
    }
    Ok(ProppatchRequest { ops })
}

/// Parses a MKCALENDAR body (`CALDAV:mkcalendar`); the body is optional.
pub fn parse_mkcalendar(body: &[u8]) -> Result<MkcalendarRequest, XmlError> {
    parse_collection_body(body, NS_CALDAV, "mkcalendar", "<C:mkcalendar>")
}

/// Parses an extended MKCOL body (`DAV:mkcol`, RFC 5689); a plain MKCOL has none.
pub fn parse_mkcol(body: &[u8]) -> Result<MkcolRequest, XmlError> {
    parse_collection_body(body, NS_DAV, "mkcol", "<D:mkcol>")
}

fn parse_collection_body(
    body: &[u8],
    ns: &str,
    name: &str,
    expected: &'static str,
) -> Result<MkcolRequest, XmlError> {
    let Some(root) = parse_document(body)? else {
        return Ok(MkcolRequest::default());
    };
    expect_root(&root, ns, name, expected)?;
    let mut set = Vec::new();
    for s in root.children_named(NS_DAV, "set") {
        let prop = s.require(NS_DAV, "prop")?;
        set.extend(prop.children.iter().map(|p| (p.name.clone(), p.to_value())));
    }
    Ok(MkcolRequest { set })
}

pub(crate) fn expect_root(
    root: &Node,
    ns: &str,
    name: &str,
    expected: &'static str,
) -> Result<(), XmlError> {
    if root.is(ns, name) {
        Ok(())
    } else {
        Err(XmlError::WrongRoot {
            expected,
            found: root.name.clone(),
        })
    }
}

/// The `DAV:prop` / `DAV:allprop` (+ `DAV:include`) / `DAV:propname` child of `parent`,
/// whichever comes first; `None` when there is none.
pub(crate) fn prop_request(parent: &Node) -> Option<PropRequest> {
    let names = |n: &Node| {
        n.children
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    parent.children.iter().find_map(|c| {
        if c.is(NS_DAV, "prop") {
            Some(PropRequest::Prop(names(c)))
        } else if c.is(NS_DAV, "allprop") {
            let include = parent
                .child(NS_DAV, "include")
                .map(names)
                .unwrap_or_default();
            Some(PropRequest::AllProp { include })
        } else if c.is(NS_DAV, "propname") {
            Some(PropRequest::PropName)
        } else {
            None
        }
    })
}

/// A REPORT's property request and the details of its `CALDAV:calendar-data`, if asked for.
/// An absent `DAV:prop` asks for no properties (only hrefs).
pub(crate) fn report_props(
    parent: &Node,
) -> Result<(PropRequest, Option<CalendarDataRequest>), XmlError> {
    let props = prop_request(parent).unwrap_or(PropRequest::Prop(vec![]));
    let calendar_data = match parent
        .child(NS_DAV, "prop")
        .and_then(|p| p.child(NS_CALDAV, "calendar-data"))
    {
        Some(node) => Some(parse_calendar_data(node)?),
        None => None,
    };
    Ok((props, calendar_data))
}
