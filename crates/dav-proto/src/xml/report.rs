//! REPORT bodies: CalDAV's calendar-query, calendar-multiget and free-busy-query
//! (RFC 4791 §7.8-7.10), WebDAV sync-collection (RFC 6578), and the principal reports
//! clients probe with (RFC 3253 expand-property, RFC 3744 principal reports).

use super::dom::{Node, parse_document};
use super::error::XmlError;
use super::names::{NS_CALDAV, NS_DAV, PropName};
use super::request::{PropRequest, report_props};
use super::time::{Period, TimeRange, UtcDateTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRequest {
    CalendarQuery(CalendarQuery),
    CalendarMultiget(CalendarMultiget),
    SyncCollection(SyncCollection),
    FreeBusyQuery(TimeRange),
    /// RFC 3253 §3.8: the properties to expand, outermost first.
    ExpandProperty(Vec<ExpandProperty>),
    PrincipalPropertySearch(PrincipalPropertySearch),
    /// RFC 3744 §9.5; the body carries nothing else.
    PrincipalSearchPropertySet,
    /// RFC 3744 §9.2: the properties to return for each principal in the ACL.
    AclPrincipalPropSet(Vec<PropName>),
    /// Any other report (CardDAV's, principal-match, ...): answer 403 with
    /// `DAV:supported-report` or 501, naming this root.
    Unsupported(PropName),
}

/// `CALDAV:calendar-query` (RFC 4791 §7.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarQuery {
    /// Properties to return. `CALDAV:calendar-data`, when asked for, is also in this list,
    /// in request order; its options are in `calendar_data`.
    pub props: PropRequest,
    pub calendar_data: Option<CalendarDataRequest>,
    /// The `VCALENDAR` comp-filter (the single child of `CALDAV:filter`).
    pub filter: CompFilter,
    /// `CALDAV:timezone`: a VCALENDAR with one VTIMEZONE, for floating times (§9.8).
    pub timezone: Option<String>,
}

/// `CALDAV:calendar-multiget` (RFC 4791 §7.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarMultiget {
    pub props: PropRequest,
    pub calendar_data: Option<CalendarDataRequest>,
    /// As written by the client (percent-encoded, absolute path or full URL), trimmed.
    pub hrefs: Vec<String>,
}

/// `DAV:sync-collection` (RFC 6578 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCollection {
    /// Empty for an initial sync (`<sync-token/>`, or no sync-token element at all).
    pub sync_token: String,
    pub sync_level: SyncLevel,
    /// `DAV:limit/DAV:nresults` (RFC 5323 §5.17), when given.
    pub limit: Option<u32>,
    pub props: PropRequest,
    /// Clients such as macOS Calendar ask for calendar-data inline.
    pub calendar_data: Option<CalendarDataRequest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncLevel {
    One,
    Infinite,
}

/// `CALDAV:calendar-data` in a request (RFC 4791 §9.6): which parts of the objects to return.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalendarDataRequest {
    /// `content-type` attribute (default `text/calendar`).
    pub content_type: Option<String>,
    /// `version` attribute (default `2.0`).
    pub version: Option<String>,
    /// `CALDAV:comp`: which components and properties to return; `None` means everything.
    pub comp: Option<CompRequest>,
    pub expand: Option<Period>,
    pub limit_recurrence_set: Option<Period>,
    pub limit_freebusy_set: Option<Period>,
}

/// `CALDAV:comp` (RFC 4791 §9.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompRequest {
    pub name: String,
    /// `CALDAV:allprop`, or the `CALDAV:prop` list (empty = no properties).
    pub props: Selection<CalPropRequest>,
    /// `CALDAV:allcomp`, or the nested `CALDAV:comp` list (empty = no sub-components).
    pub comps: Selection<CompRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    All,
    Only(Vec<T>),
}

/// `CALDAV:prop` inside `CALDAV:comp` (RFC 4791 §9.6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalPropRequest {
    pub name: String,
    /// `novalue="yes"`: return the property without its value.
    pub novalue: bool,
}

/// `CALDAV:comp-filter` (RFC 4791 §9.7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompFilter {
    pub name: String,
    /// `CALDAV:is-not-defined`: matches when the component is absent. Exclusive with the rest.
    pub is_not_defined: bool,
    pub time_range: Option<TimeRange>,
    pub prop_filters: Vec<PropFilter>,
    pub comp_filters: Vec<CompFilter>,
}

/// `CALDAV:prop-filter` (RFC 4791 §9.7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropFilter {
    pub name: String,
    pub is_not_defined: bool,
    pub time_range: Option<TimeRange>,
    pub text_match: Option<TextMatch>,
    pub param_filters: Vec<ParamFilter>,
}

/// `CALDAV:param-filter` (RFC 4791 §9.7.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamFilter {
    pub name: String,
    pub is_not_defined: bool,
    pub text_match: Option<TextMatch>,
}

/// `CALDAV:text-match` (RFC 4791 §9.7.5): a substring match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextMatch {
    /// The text as sent (entities resolved, not trimmed).
    pub text: String,
    /// `i;ascii-casemap` unless the client names another (`i;octet`, `i;unicode-casemap`).
    /// Unsupported collations are the caller's to refuse (`CALDAV:supported-collation`).
    pub collation: String,
    /// `negate-condition="yes"`.
    pub negate: bool,
}

/// `DAV:property` in an expand-property report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandProperty {
    pub name: PropName,
    pub children: Vec<ExpandProperty>,
}

/// `DAV:principal-property-search` (RFC 3744 §9.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalPropertySearch {
    /// `test="anyof"`; the default (all searches must match) otherwise.
    pub any_of: bool,
    pub searches: Vec<PropertySearch>,
    pub props: Vec<PropName>,
    pub apply_to_principal_collection_set: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertySearch {
    pub props: Vec<PropName>,
    pub match_text: String,
    /// Apple's `match-type` attribute (`starts-with`, `equals`); `None` means contains.
    pub match_type: Option<String>,
}

const DEFAULT_COLLATION: &str = "i;ascii-casemap";

/// Parses a REPORT body. The root element names the report; unknown reports come back as
/// [`ReportRequest::Unsupported`] rather than an error, so the caller can answer precisely.
pub fn parse_report(body: &[u8]) -> Result<ReportRequest, XmlError> {
    let root = parse_document(body)?.ok_or(XmlError::EmptyBody {
        expected: "a report element such as <C:calendar-query>",
    })?;
    let name = &root.name;
    let report = if name.is(NS_CALDAV, "calendar-query") {
        ReportRequest::CalendarQuery(calendar_query(&root)?)
    } else if name.is(NS_CALDAV, "calendar-multiget") {
        ReportRequest::CalendarMultiget(calendar_multiget(&root)?)
    } else if name.is(NS_DAV, "sync-collection") {
        ReportRequest::SyncCollection(sync_collection(&root)?)
    } else if name.is(NS_CALDAV, "free-busy-query") {
        let range = root.require(NS_CALDAV, "time-range")?;
        ReportRequest::FreeBusyQuery(time_range(range)?)
    } else if name.is(NS_DAV, "expand-property") {
        ReportRequest::ExpandProperty(expand_properties(&root)?)
    } else if name.is(NS_DAV, "principal-property-search") {
        ReportRequest::PrincipalPropertySearch(principal_property_search(&root)?)
    } else if name.is(NS_DAV, "principal-search-property-set") {
        ReportRequest::PrincipalSearchPropertySet
    } else if name.is(NS_DAV, "acl-principal-prop-set") {
        ReportRequest::AclPrincipalPropSet(prop_names(root.child(NS_DAV, "prop")))
    } else {
        ReportRequest::Unsupported(name.clone())
    };
    Ok(report)
}

fn calendar_query(root: &Node) -> Result<CalendarQuery, XmlError> {
    let (props, calendar_data) = report_props(root)?;
    let filter = root.require(NS_CALDAV, "filter")?;
    let mut comps = filter.children_named(NS_CALDAV, "comp-filter");
    let top = comps.next().ok_or_else(|| XmlError::MissingElement {
        parent: filter.name.clone(),
        child: PropName::caldav("comp-filter"),
        offset: filter.offset,
    })?;
    if comps.next().is_some() {
        return Err(XmlError::Invalid {
            element: filter.name.clone(),
            problem: "has more than one top-level comp-filter",
            offset: filter.offset,
        });
    }
    Ok(CalendarQuery {
        props,
        calendar_data,
        filter: comp_filter(top)?,
        timezone: root.child(NS_CALDAV, "timezone").map(|t| t.text.clone()),
    })
}

fn calendar_multiget(root: &Node) -> Result<CalendarMultiget, XmlError> {
    let (props, calendar_data) = report_props(root)?;
    let mut hrefs = Vec::new();
    for href in root.children_named(NS_DAV, "href") {
        let text = href.trimmed_text();
        if text.is_empty() {
            return Err(XmlError::Invalid {
                element: href.name.clone(),
                problem: "is empty",
                offset: href.offset,
            });
        }
        hrefs.push(text.to_string());
    }
    Ok(CalendarMultiget {
        props,
        calendar_data,
        hrefs,
    })
}

fn sync_collection(root: &Node) -> Result<SyncCollection, XmlError> {
    let sync_token = root
        .child(NS_DAV, "sync-token")
        .map(|t| t.trimmed_text().to_string())
        .unwrap_or_default();
    // RFC 6578 requires sync-level; some clients omit it and mean "1".
    let sync_level = match root.child(NS_DAV, "sync-level") {
        None => SyncLevel::One,
        Some(level) => match level.trimmed_text() {
            "1" => SyncLevel::One,
            l if l.eq_ignore_ascii_case("infinite") => SyncLevel::Infinite,
            other => {
                return Err(XmlError::BadValue {
                    element: level.name.clone(),
                    value: other.to_string(),
                    expected: "\"1\" or \"infinite\"",
                    offset: level.offset,
                });
            }
        },
    };
    let limit = match root.child(NS_DAV, "limit") {
        None => None,
        Some(limit) => {
            let n = limit.require(NS_DAV, "nresults")?;
            let value = n.trimmed_text();
            Some(value.parse::<u32>().map_err(|_| XmlError::BadValue {
                element: n.name.clone(),
                value: value.to_string(),
                expected: "a whole number",
                offset: n.offset,
            })?)
        }
    };
    let (props, calendar_data) = report_props(root)?;
    Ok(SyncCollection {
        sync_token,
        sync_level,
        limit,
        props,
        calendar_data,
    })
}

pub(crate) fn parse_calendar_data(node: &Node) -> Result<CalendarDataRequest, XmlError> {
    let mut request = CalendarDataRequest {
        content_type: node.attr("content-type").map(str::to_string),
        version: node.attr("version").map(str::to_string),
        ..Default::default()
    };
    for child in &node.children {
        if child.name.ns != NS_CALDAV {
            continue;
        }
        match child.name.name.as_str() {
            "comp" if request.comp.is_none() => request.comp = Some(comp_request(child)?),
            "expand" => request.expand = Some(period(child)?),
            "limit-recurrence-set" => request.limit_recurrence_set = Some(period(child)?),
            "limit-freebusy-set" => request.limit_freebusy_set = Some(period(child)?),
            _ => {}
        }
    }
    Ok(request)
}

fn comp_request(node: &Node) -> Result<CompRequest, XmlError> {
    let name = node.require_attr("name")?.to_string();
    let mut props = Selection::Only(vec![]);
    let mut comps = Selection::Only(vec![]);
    for child in &node.children {
        if child.name.ns != NS_CALDAV {
            continue;
        }
        match child.name.name.as_str() {
            "allprop" => props = Selection::All,
            "allcomp" => comps = Selection::All,
            "prop" => {
                let prop = CalPropRequest {
                    name: child.require_attr("name")?.to_string(),
                    novalue: yes_no(child, "novalue")?,
                };
                if let Selection::Only(list) = &mut props {
                    list.push(prop);
                }
            }
            "comp" => {
                let comp = comp_request(child)?;
                if let Selection::Only(list) = &mut comps {
                    list.push(comp);
                }
            }
            _ => {}
        }
    }
    Ok(CompRequest { name, props, comps })
}

fn comp_filter(node: &Node) -> Result<CompFilter, XmlError> {
    let mut filter = CompFilter {
        name: node.require_attr("name")?.to_string(),
        is_not_defined: node.child(NS_CALDAV, "is-not-defined").is_some(),
        time_range: None,
        prop_filters: vec![],
        comp_filters: vec![],
    };
    for child in &node.children {
        if child.name.ns != NS_CALDAV {
            continue;
        }
        match child.name.name.as_str() {
            "time-range" if filter.time_range.is_none() => {
                filter.time_range = Some(time_range(child)?)
            }
            "prop-filter" => filter.prop_filters.push(prop_filter(child)?),
            "comp-filter" => filter.comp_filters.push(comp_filter(child)?),
            _ => {}
        }
    }
    let has_tests = filter.time_range.is_some()
        || !filter.prop_filters.is_empty()
        || !filter.comp_filters.is_empty();
    if filter.is_not_defined && has_tests {
        return Err(is_not_defined_conflict(node));
    }
    Ok(filter)
}

fn prop_filter(node: &Node) -> Result<PropFilter, XmlError> {
    let mut filter = PropFilter {
        name: node.require_attr("name")?.to_string(),
        is_not_defined: node.child(NS_CALDAV, "is-not-defined").is_some(),
        time_range: None,
        text_match: None,
        param_filters: vec![],
    };
    for child in &node.children {
        if child.name.ns != NS_CALDAV {
            continue;
        }
        match child.name.name.as_str() {
            "time-range" if filter.time_range.is_none() => {
                filter.time_range = Some(time_range(child)?)
            }
            "text-match" if filter.text_match.is_none() => {
                filter.text_match = Some(text_match(child)?)
            }
            "param-filter" => filter.param_filters.push(param_filter(child)?),
            _ => {}
        }
    }
    if filter.time_range.is_some() && filter.text_match.is_some() {
        return Err(XmlError::Invalid {
            element: node.name.clone(),
            problem: "has both a time-range and a text-match (RFC 4791 §9.7.2 allows one)",
            offset: node.offset,
        });
    }
    let has_tests = filter.time_range.is_some()
        || filter.text_match.is_some()
        || !filter.param_filters.is_empty();
    if filter.is_not_defined && has_tests {
        return Err(is_not_defined_conflict(node));
    }
    Ok(filter)
}

fn param_filter(node: &Node) -> Result<ParamFilter, XmlError> {
    let filter = ParamFilter {
        name: node.require_attr("name")?.to_string(),
        is_not_defined: node.child(NS_CALDAV, "is-not-defined").is_some(),
        text_match: match node.child(NS_CALDAV, "text-match") {
            Some(t) => Some(text_match(t)?),
            None => None,
        },
    };
    if filter.is_not_defined && filter.text_match.is_some() {
        return Err(is_not_defined_conflict(node));
    }
    Ok(filter)
}

fn is_not_defined_conflict(node: &Node) -> XmlError {
    XmlError::Invalid {
        element: node.name.clone(),
        problem: "combines is-not-defined with other tests",
        offset: node.offset,
    }
}

fn text_match(node: &Node) -> Result<TextMatch, XmlError> {
    Ok(TextMatch {
        text: node.text.clone(),
        collation: node
            .attr("collation")
            .unwrap_or(DEFAULT_COLLATION)
            .to_string(),
        negate: yes_no(node, "negate-condition")?,
    })
}

/// A `yes`/`no` attribute, `no` when absent.
fn yes_no(node: &Node, attribute: &'static str) -> Result<bool, XmlError> {
    match node.attr(attribute) {
        None | Some("no") => Ok(false),
        Some("yes") => Ok(true),
        Some(other) => Err(XmlError::BadValue {
            element: node.name.clone(),
            value: format!("{attribute}=\"{other}\""),
            expected: "\"yes\" or \"no\"",
            offset: node.offset,
        }),
    }
}

fn datetime(node: &Node, attribute: &'static str) -> Result<Option<UtcDateTime>, XmlError> {
    match node.attr(attribute) {
        None => Ok(None),
        Some(value) => UtcDateTime::parse(value)
            .map(Some)
            .ok_or_else(|| XmlError::BadDateTime {
                element: node.name.name.clone(),
                attribute,
                value: value.to_string(),
                offset: node.offset,
            }),
    }
}

fn time_range(node: &Node) -> Result<TimeRange, XmlError> {
    let range = TimeRange {
        start: datetime(node, "start")?,
        end: datetime(node, "end")?,
    };
    if range.start.is_none() && range.end.is_none() {
        return Err(XmlError::MissingAttribute {
            element: node.name.clone(),
            attribute: "start or end",
            offset: node.offset,
        });
    }
    check_order(node, range.start, range.end)?;
    Ok(range)
}

fn period(node: &Node) -> Result<Period, XmlError> {
    let start = datetime(node, "start")?;
    let end = datetime(node, "end")?;
    let (Some(start), Some(end)) = (start, end) else {
        return Err(XmlError::MissingAttribute {
            element: node.name.clone(),
            attribute: if start.is_none() { "start" } else { "end" },
            offset: node.offset,
        });
    };
    check_order(node, Some(start), Some(end))?;
    Ok(Period { start, end })
}

/// RFC 4791 §9.9: the end must be after the start.
fn check_order(
    node: &Node,
    start: Option<UtcDateTime>,
    end: Option<UtcDateTime>,
) -> Result<(), XmlError> {
    match (start, end) {
        (Some(s), Some(e)) if e <= s => Err(XmlError::Invalid {
            element: node.name.clone(),
            problem: "ends before or when it starts",
            offset: node.offset,
        }),
        _ => Ok(()),
    }
}

fn prop_names(prop: Option<&Node>) -> Vec<PropName> {
    prop.map(|p| p.children.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
}

fn expand_properties(parent: &Node) -> Result<Vec<ExpandProperty>, XmlError> {
    parent
        .children_named(NS_DAV, "property")
        .map(|p| {
            Ok(ExpandProperty {
                name: PropName::new(
                    p.attr("namespace").unwrap_or(NS_DAV),
                    p.require_attr("name")?,
                ),
                children: expand_properties(p)?,
            })
        })
        .collect()
}

fn principal_property_search(root: &Node) -> Result<PrincipalPropertySearch, XmlError> {
    let mut searches = Vec::new();
    for search in root.children_named(NS_DAV, "property-search") {
        let m = search.require(NS_DAV, "match")?;
        searches.push(PropertySearch {
            props: prop_names(search.child(NS_DAV, "prop")),
            match_text: m.text.clone(),
            match_type: m.attr("match-type").map(str::to_string),
        });
    }
    let mut props = prop_names(root.child(NS_DAV, "prop"));
    // python caldav 3.6 writes the wanted properties beside an empty DAV:prop
    // instead of inside it; any other child element can only mean the same.
    props.extend(
        root.children
            .iter()
            .filter(|c| {
                c.name.ns != NS_DAV
                    || !matches!(
                        c.name.name.as_str(),
                        "prop" | "property-search" | "apply-to-principal-collection-set"
                    )
            })
            .map(|c| c.name.clone()),
    );
    Ok(PrincipalPropertySearch {
        any_of: root.attr("test") == Some("anyof"),
        searches,
        props,
        apply_to_principal_collection_set: root
            .child(NS_DAV, "apply-to-principal-collection-set")
            .is_some(),
    })
}
