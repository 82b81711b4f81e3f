//! Fixture pairs (`fixtures/dav/requests/NN-method-client-what.xml` and
//! `.expected.json`) and golden strings for the writer.
//!
//! The JSON rendering below exists only to make expected parses readable and exact: names
//! in Clark notation (`{DAV:}getetag`), empty and default fields left out. Set
//! `DAV_FIXTURES_BLESS=1` to (re)write the expected files, then review the diff by hand.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::dom::parse_document;
use super::*;

fn name(n: &PropName) -> Value {
    Value::String(n.clark())
}

fn names(list: &[PropName]) -> Value {
    Value::Array(list.iter().map(name).collect())
}

fn prop_request(p: &PropRequest) -> Value {
    match p {
        PropRequest::AllProp { include } if include.is_empty() => json!("allprop"),
        PropRequest::AllProp { include } => json!({ "allprop": { "include": names(include) } }),
        PropRequest::PropName => json!("propname"),
        PropRequest::Prop(list) => json!({ "prop": names(list) }),
    }
}

fn attrs(list: &[XmlAttr]) -> Value {
    let map: Map<String, Value> = list
        .iter()
        .map(|a| (a.name.clark(), Value::String(a.value.clone())))
        .collect();
    Value::Object(map)
}

/// Attributes, text and children, each only when present.
fn content(map: &mut Map<String, Value>, a: &[XmlAttr], text: &str, children: &[XmlElement]) {
    if !a.is_empty() {
        map.insert("attrs".into(), attrs(a));
    }
    if !text.is_empty() {
        map.insert("text".into(), json!(text));
    }
    if !children.is_empty() {
        map.insert(
            "children".into(),
            Value::Array(children.iter().map(element).collect()),
        );
    }
}

fn element(e: &XmlElement) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), name(&e.name));
    content(&mut map, &e.attrs, &e.text, &e.children);
    Value::Object(map)
}

fn prop_value(v: &PropValue) -> Value {
    let mut map = Map::new();
    content(&mut map, &v.attrs, &v.text, &v.children);
    Value::Object(map)
}

fn set_list(set: &[(PropName, PropValue)]) -> Value {
    Value::Array(
        set.iter()
            .map(|(n, v)| json!({ "set": name(n), "value": prop_value(v) }))
            .collect(),
    )
}

fn time_range(t: &TimeRange) -> Value {
    let mut map = Map::new();
    if let Some(s) = t.start {
        map.insert("start".into(), json!(s.to_string()));
    }
    if let Some(e) = t.end {
        map.insert("end".into(), json!(e.to_string()));
    }
    Value::Object(map)
}

fn period(p: &Period) -> Value {
    json!({ "start": p.start.to_string(), "end": p.end.to_string() })
}

fn comp_request(c: &CompRequest) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), json!(c.name));
    map.insert(
        "props".into(),
        match &c.props {
            Selection::All => json!("all"),
            Selection::Only(list) => Value::Array(
                list.iter()
                    .map(|p| {
                        if p.novalue {
                            json!({ "name": p.name, "novalue": true })
                        } else {
                            json!(p.name)
                        }
                    })
                    .collect(),
            ),
        },
    );
    map.insert(
        "comps".into(),
        match &c.comps {
            Selection::All => json!("all"),
            Selection::Only(list) => Value::Array(list.iter().map(comp_request).collect()),
        },
    );
    Value::Object(map)
}

fn calendar_data(c: &CalendarDataRequest) -> Value {
    let mut map = Map::new();
    if let Some(t) = &c.content_type {
        map.insert("content-type".into(), json!(t));
    }
    if let Some(v) = &c.version {
        map.insert("version".into(), json!(v));
    }
    if let Some(comp) = &c.comp {
        map.insert("comp".into(), comp_request(comp));
    }
    for (key, p) in [
        ("expand", &c.expand),
        ("limit-recurrence-set", &c.limit_recurrence_set),
        ("limit-freebusy-set", &c.limit_freebusy_set),
    ] {
        if let Some(p) = p {
            map.insert(key.into(), period(p));
        }
    }
    Value::Object(map)
}

fn text_match(t: &TextMatch) -> Value {
    let mut map = Map::new();
    map.insert("text".into(), json!(t.text));
    map.insert("collation".into(), json!(t.collation));
    if t.negate {
        map.insert("negate".into(), json!(true));
    }
    Value::Object(map)
}

fn param_filter(p: &ParamFilter) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), json!(p.name));
    if p.is_not_defined {
        map.insert("is-not-defined".into(), json!(true));
    }
    if let Some(t) = &p.text_match {
        map.insert("text-match".into(), text_match(t));
    }
    Value::Object(map)
}

fn prop_filter(p: &PropFilter) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), json!(p.name));
    if p.is_not_defined {
        map.insert("is-not-defined".into(), json!(true));
    }
    if let Some(t) = &p.time_range {
        map.insert("time-range".into(), time_range(t));
    }
    if let Some(t) = &p.text_match {
        map.insert("text-match".into(), text_match(t));
    }
    if !p.param_filters.is_empty() {
        map.insert(
            "param-filters".into(),
            Value::Array(p.param_filters.iter().map(param_filter).collect()),
        );
    }
    Value::Object(map)
}

fn comp_filter(c: &CompFilter) -> Value {
    let mut map = Map::new();
    map.insert("name".into(), json!(c.name));
    if c.is_not_defined {
        map.insert("is-not-defined".into(), json!(true));
    }
    if let Some(t) = &c.time_range {
        map.insert("time-range".into(), time_range(t));
    }
    if !c.prop_filters.is_empty() {
        map.insert(
            "prop-filters".into(),
            Value::Array(c.prop_filters.iter().map(prop_filter).collect()),
        );
    }
    if !c.comp_filters.is_empty() {
        map.insert(
            "comp-filters".into(),
            Value::Array(c.comp_filters.iter().map(comp_filter).collect()),
        );
    }
    Value::Object(map)
}

fn props_and_data(map: &mut Map<String, Value>, p: &PropRequest, c: &Option<CalendarDataRequest>) {
    map.insert("props".into(), prop_request(p));
    if let Some(c) = c {
        map.insert("calendar-data".into(), calendar_data(c));
    }
}

fn expand_property(e: &ExpandProperty) -> Value {
    if e.children.is_empty() {
        name(&e.name)
    } else {
        json!({
            "name": name(&e.name),
            "children": Value::Array(e.children.iter().map(expand_property).collect()),
        })
    }
}

fn report(r: &ReportRequest) -> Value {
    match r {
        ReportRequest::CalendarQuery(q) => {
            let mut map = Map::new();
            props_and_data(&mut map, &q.props, &q.calendar_data);
            map.insert("filter".into(), comp_filter(&q.filter));
            if let Some(tz) = &q.timezone {
                map.insert("timezone".into(), json!(tz));
            }
            json!({ "calendar-query": map })
        }
        ReportRequest::CalendarMultiget(m) => {
            let mut map = Map::new();
            props_and_data(&mut map, &m.props, &m.calendar_data);
            map.insert("hrefs".into(), json!(m.hrefs));
            json!({ "calendar-multiget": map })
        }
        ReportRequest::SyncCollection(s) => {
            let mut map = Map::new();
            map.insert("sync-token".into(), json!(s.sync_token));
            let level = match s.sync_level {
                SyncLevel::One => "1",
                SyncLevel::Infinite => "infinite",
            };
            map.insert("sync-level".into(), json!(level));
            if let Some(limit) = s.limit {
                map.insert("limit".into(), json!(limit));
            }
            props_and_data(&mut map, &s.props, &s.calendar_data);
            json!({ "sync-collection": map })
        }
        ReportRequest::FreeBusyQuery(t) => json!({ "free-busy-query": time_range(t) }),
        ReportRequest::ExpandProperty(list) => json!({
            "expand-property": Value::Array(list.iter().map(expand_property).collect())
        }),
        ReportRequest::PrincipalPropertySearch(p) => {
            let searches: Vec<Value> = p
                .searches
                .iter()
                .map(|s| {
                    let mut map = Map::new();
                    map.insert("props".into(), names(&s.props));
                    map.insert("match".into(), json!(s.match_text));
                    if let Some(t) = &s.match_type {
                        map.insert("match-type".into(), json!(t));
                    }
                    Value::Object(map)
                })
                .collect();
            let mut map = Map::new();
            if p.any_of {
                map.insert("anyof".into(), json!(true));
            }
            map.insert("searches".into(), Value::Array(searches));
            map.insert("props".into(), names(&p.props));
            if p.apply_to_principal_collection_set {
                map.insert("apply-to-principal-collection-set".into(), json!(true));
            }
            json!({ "principal-property-search": map })
        }
        ReportRequest::PrincipalSearchPropertySet => json!("principal-search-property-set"),
        ReportRequest::AclPrincipalPropSet(list) => {
            json!({ "acl-principal-prop-set": names(list) })
        }
        ReportRequest::Unsupported(n) => json!({ "unsupported": name(n) }),
    }
}

/// Runs the parser the fixture's file name asks for (`NN-<method>-...`).
fn parse_fixture(method: &str, body: &[u8]) -> Value {
    let parsed = match method {
        "propfind" => parse_propfind(body).map(|r| json!({ "propfind": prop_request(&r) })),
        "proppatch" => parse_proppatch(body).map(|r| {
            let ops: Vec<Value> = r
                .ops
                .iter()
                .map(|op| match op {
                    PropPatchOp::Set(n, v) => json!({ "set": name(n), "value": prop_value(v) }),
                    PropPatchOp::Remove(n) => json!({ "remove": name(n) }),
                })
                .collect();
            json!({ "propertyupdate": ops })
        }),
        "mkcalendar" => parse_mkcalendar(body).map(|r| json!({ "mkcalendar": set_list(&r.set) })),
        "mkcol" => parse_mkcol(body).map(|r| json!({ "mkcol": set_list(&r.set) })),
        "report" => parse_report(body).map(|r| report(&r)),
        other => panic!(
            "fixture method \"{other}\" is not one of propfind, proppatch, mkcalendar, mkcol, report"
        ),
    };
    parsed.unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

#[test]
fn request_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dav/requests");
    let bless = std::env::var_os("DAV_FIXTURES_BLESS").is_some();
    let mut bodies: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures/dav/requests exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    bodies.sort();
    assert!(bodies.len() >= 25, "only {} request fixtures", bodies.len());

    let mut failures = Vec::new();
    for path in &bodies {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name");
        let method = stem.split('-').nth(1).expect("NN-method-... file name");
        let body = std::fs::read(path).expect("readable fixture");
        let actual = serde_json::to_string_pretty(&parse_fixture(method, &body))
            .expect("serialisable")
            + "\n";
        let expected_path = dir.join(format!("{stem}.expected.json"));
        if bless {
            std::fs::write(&expected_path, &actual).expect("writable expected file");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{stem}:\n--- expected\n{expected}--- actual\n{actual}"
            )),
            Err(_) => failures.push(format!(
                "{stem}: no {stem}.expected.json (run with DAV_FIXTURES_BLESS=1, then review)\n{actual}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- the reader's guarantees, beyond what fixtures show ----

/// Every prefix of every fixture (a body cut short by a dropped connection) yields a
/// result, never a panic, from every parser.
#[test]
fn truncated_bodies_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/dav/requests");
    for entry in std::fs::read_dir(&dir).expect("fixtures/dav/requests exists") {
        let path = entry.expect("readable dir entry").path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let body = std::fs::read(&path).expect("readable fixture");
        for end in 0..body.len() {
            let cut = &body[..end];
            let _ = parse_propfind(cut);
            let _ = parse_proppatch(cut);
            let _ = parse_mkcalendar(cut);
            let _ = parse_mkcol(cut);
            let _ = parse_report(cut);
        }
    }
}

#[test]
fn depth_limit_is_exact() {
    let body = |depth: usize| {
        let mut s = String::from("<D:propfind xmlns:D=\"DAV:\">");
        for _ in 1..depth {
            s.push_str("<x>");
        }
        for _ in 1..depth {
            s.push_str("</x>");
        }
        s.push_str("</D:propfind>");
        s
    };
    assert!(parse_propfind(body(MAX_DEPTH).as_bytes()).is_ok());
    let err = parse_propfind(body(MAX_DEPTH + 1).as_bytes()).expect_err("too deep");
    assert!(
        matches!(
            err,
            XmlError::TooDeep {
                limit: MAX_DEPTH,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn element_count_limit() {
    let mut s = String::from("<D:propfind xmlns:D=\"DAV:\"><D:prop>");
    for _ in 0..MAX_ELEMENTS {
        s.push_str("<a/>");
    }
    s.push_str("</D:prop></D:propfind>");
    let err = parse_propfind(s.as_bytes()).expect_err("too many");
    assert_eq!(
        err.to_string(),
        format!(
            "the body has more than {MAX_ELEMENTS} elements (at byte {})",
            35 + 4 * (MAX_ELEMENTS - 2)
        )
    );
}

#[test]
fn bom_is_skipped_and_offsets_count_it() {
    let ok = b"\xEF\xBB\xBF<D:propfind xmlns:D=\"DAV:\"><D:propname/></D:propfind>";
    assert_eq!(parse_propfind(ok), Ok(PropRequest::PropName));
    let bad = b"\xEF\xBB\xBF<D:propfind xmlns:D=\"DAV:\">\xFF</D:propfind>";
    assert_eq!(parse_propfind(bad), Err(XmlError::NotUtf8 { offset: 30 }));
    assert_eq!(parse_propfind(b"\xFF\xFE<\x00"), Err(XmlError::Utf16));
}

#[test]
fn declared_encodings() {
    let body = |decl: &str, name: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"{decl}\"?><D:propertyupdate xmlns:D=\"DAV:\">\
             <D:set><D:prop><D:displayname>{name}</D:displayname></D:prop></D:set></D:propertyupdate>"
        )
    };
    // Plain ASCII reads the same whatever ASCII-compatible charset is declared.
    assert!(parse_proppatch(body("ISO-8859-1", "Cafe").as_bytes()).is_ok());
    assert!(parse_proppatch(body("UTF-8", "Caf\u{e9}").as_bytes()).is_ok());
    assert_eq!(
        parse_proppatch(body("ISO-8859-1", "Caf\u{e9}").as_bytes()),
        Err(XmlError::UnsupportedEncoding {
            encoding: "ISO-8859-1".into()
        })
    );
}

#[test]
fn text_entities_cdata_and_line_ends() {
    let body = "<D:propertyupdate xmlns:D=\"DAV:\"><D:set><D:prop>\
        <D:displayname>A &amp; B &lt;x&gt; &#233;&#x2603; <![CDATA[<raw> & ]]>\r\nend&#13;</D:displayname>\
        </D:prop></D:set></D:propertyupdate>";
    let r = parse_proppatch(body.as_bytes()).expect("valid");
    let PropPatchOp::Set(_, v) = &r.ops[0] else {
        panic!("set expected")
    };
    // A literal CRLF becomes LF (XML 1.0 §2.11); &#13; stays a CR.
    assert_eq!(v.text, "A & B <x> é☃ <raw> & \nend\r");
}

#[test]
fn attribute_values_are_unescaped_and_refused_when_undefined() {
    let ok = "<C:calendar-query xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\
        <C:filter><C:comp-filter name=\"VCALENDAR\"><C:comp-filter name=\"VEVENT\">\
        <C:prop-filter name=\"SUMMARY\"><C:text-match collation=\"i;octet\">Tom &amp; Jerry</C:text-match>\
        </C:prop-filter></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>";
    let ReportRequest::CalendarQuery(q) = parse_report(ok.as_bytes()).expect("valid") else {
        panic!("calendar-query expected")
    };
    let tm = q.filter.comp_filters[0].prop_filters[0]
        .text_match
        .as_ref()
        .expect("text-match");
    assert_eq!(tm.text, "Tom & Jerry");
    assert_eq!(tm.collation, "i;octet");

    let bad = "<D:propfind xmlns:D=\"DAV:\" x=\"&ent;\"/>";
    let err = parse_propfind(bad.as_bytes()).expect_err("undefined entity in attribute");
    assert!(matches!(err, XmlError::Syntax { offset: 0, .. }), "{err}");
}

#[test]
fn errors_carry_offsets() {
    let err = parse_propfind(b"<D:propfind xmlns:D=\"DAV:\"><D:prop></D:propfind>")
        .expect_err("mismatch");
    assert_eq!(err.offset(), Some(35));
    assert_eq!(
        err.to_string(),
        "end tag </D:propfind> at byte 35 does not match the open element <D:prop>"
    );
}

// ---- writer golden strings ----

const HEAD: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:multistatus xmlns:d=\"DAV:\" \
    xmlns:cal=\"urn:ietf:params:xml:ns:caldav\" xmlns:cs=\"http://calendarserver.org/ns/\" \
    xmlns:ical=\"http://apple.com/ns/ical/\">\n";

#[test]
fn propfind_multistatus_with_unknown_namespaces() {
    let mut r = PropstatResponse::new("/dav/calendars/ann/work%20&%20play/");
    r.ok(
        PropName::dav("displayname"),
        PropContent::text("Work & <Play>"),
    )
    .ok(
        PropName::dav("resourcetype"),
        PropContent::raw("<d:collection/><cal:calendar/>"),
    )
    .ok(PropName::calendarserver("getctag"), PropContent::text("42"))
    .not_found(PropName::new(NS_ME_COM, "bulk-requests"))
    .not_found(PropName::apple("refreshrate"))
    .not_found(PropName::new("", "no-namespace"))
    .not_found(PropName::new(NS_ME_COM, "another"))
    .add(
        Status::FORBIDDEN,
        PropName::dav("quota-used-bytes"),
        PropContent::Empty,
    );
    let body = multistatus(&[r.into()], None);
    assert_eq!(
        body,
        format!(
            "{HEAD}<d:response><d:href>/dav/calendars/ann/work%20&amp;%20play/</d:href>\
             <d:propstat><d:prop><d:displayname>Work &amp; &lt;Play&gt;</d:displayname>\
             <d:resourcetype><d:collection/><cal:calendar/></d:resourcetype>\
             <cs:getctag>42</cs:getctag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>\
             <d:propstat><d:prop><x0:bulk-requests xmlns:x0=\"http://me.com/_namespace/\"/>\
             <ical:refreshrate/><no-namespace/><x0:another xmlns:x0=\"http://me.com/_namespace/\"/>\
             </d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>\
             <d:propstat><d:prop><d:quota-used-bytes/></d:prop>\
             <d:status>HTTP/1.1 403 Forbidden</d:status></d:propstat></d:response>\n\
             </d:multistatus>\n"
        )
    );
    assert_well_formed(&body);
}

#[test]
fn sync_collection_streamed_in_chunks() {
    let mut w = MultistatusWriter::new();
    let mut chunks = vec![w.begin()];
    let mut changed = PropstatResponse::new("/dav/cal/a.ics");
    changed
        .ok(PropName::dav("getetag"), PropContent::text("\"e1\""))
        .ok(
            PropName::caldav("calendar-data"),
            PropContent::text("BEGIN:VCALENDAR\r\nSUMMARY:R&D\r\nEND:VCALENDAR\r\n"),
        );
    let mut chunk = String::new();
    w.write_response(&mut chunk, &changed.into());
    chunks.push(chunk);
    let mut chunk = String::new();
    w.write_response(
        &mut chunk,
        &StatusResponse::new("/dav/cal/gone.ics", Status::NOT_FOUND).into(),
    );
    w.write_response(
        &mut chunk,
        &StatusResponse::new("/dav/cal/", Status::INSUFFICIENT_STORAGE)
            .with_error(Precondition::NumberOfMatchesWithinLimits, None)
            .into(),
    );
    chunks.push(chunk);
    chunks.push(w.end(Some("http://calgate/sync/7")));
    assert_eq!(
        chunks[1],
        "<d:response><d:href>/dav/cal/a.ics</d:href><d:propstat><d:prop>\
         <d:getetag>\"e1\"</d:getetag><cal:calendar-data>BEGIN:VCALENDAR&#13;\nSUMMARY:R&amp;D&#13;\n\
         END:VCALENDAR&#13;\n</cal:calendar-data></d:prop><d:status>HTTP/1.1 200 OK</d:status>\
         </d:propstat></d:response>\n"
    );
    assert_eq!(
        chunks[2],
        "<d:response><d:href>/dav/cal/gone.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status>\
         </d:response>\n<d:response><d:href>/dav/cal/</d:href>\
         <d:status>HTTP/1.1 507 Insufficient Storage</d:status><d:error>\
         <d:number-of-matches-within-limits/></d:error></d:response>\n"
    );
    assert_eq!(
        chunks[3],
        "<d:sync-token>http://calgate/sync/7</d:sync-token>\n</d:multistatus>\n"
    );
    let body = chunks.concat();
    assert_well_formed(&body);
    // The CRs survive a round trip through an XML reader.
    let root = parse_document(body.as_bytes())
        .expect("parses")
        .expect("root");
    let data = &root.children[0].children[1].children[0].children[1];
    assert_eq!(
        data.text,
        "BEGIN:VCALENDAR\r\nSUMMARY:R&D\r\nEND:VCALENDAR\r\n"
    );
}

#[test]
fn dead_properties_round_trip() {
    let patch = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<A:propertyupdate xmlns:A=\"DAV:\"><A:set><A:prop>\
        <D:calendar-color xmlns:D=\"http://apple.com/ns/ical/\" symbolic-color=\"red\">#FB0055FF</D:calendar-color>\
        <Z:settings xmlns:Z=\"urn:example:z\" xmlns:Y=\"urn:example:y\"><Z:item Y:kind=\"a&quot;b\">one</Z:item>\
        <Y:other><Z:item/></Y:other></Z:settings></A:prop></A:set></A:propertyupdate>";
    let r = parse_proppatch(patch.as_bytes()).expect("valid");
    let mut resp = PropstatResponse::new("/dav/cal/");
    for op in r.ops {
        if let PropPatchOp::Set(n, v) = op {
            resp.ok(n, PropContent::Stored(v));
        }
    }
    let body = multistatus(&[resp.into()], None);
    assert_eq!(
        body,
        format!(
            "{HEAD}<d:response><d:href>/dav/cal/</d:href><d:propstat><d:prop>\
             <ical:calendar-color symbolic-color=\"red\">#FB0055FF</ical:calendar-color>\
             <x0:settings xmlns:x0=\"urn:example:z\"><x0:item xmlns:x1=\"urn:example:y\" \
             x1:kind=\"a&quot;b\">one</x0:item><x1:other xmlns:x1=\"urn:example:y\"><x0:item/>\
             </x1:other></x0:settings></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>\
             </d:response>\n</d:multistatus>\n"
        )
    );
    assert_well_formed(&body);
    // Reading the written property back gives the stored value.
    let root = parse_document(body.as_bytes())
        .expect("parses")
        .expect("root");
    let prop = &root.children[0].children[1].children[0];
    assert_eq!(
        prop.children[1].to_value(),
        match parse_proppatch(patch.as_bytes()).expect("valid").ops[1].clone() {
            PropPatchOp::Set(_, v) => v,
            PropPatchOp::Remove(_) => unreachable!(),
        }
    );
}

#[test]
fn error_bodies() {
    assert_eq!(
        error_body(
            Precondition::NoUidConflict,
            Some(&href_list(&["/dav/calendars/ann/work/1 & 2.ics"]))
        ),
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<d:error xmlns:d=\"DAV:\" \
         xmlns:cal=\"urn:ietf:params:xml:ns:caldav\" xmlns:cs=\"http://calendarserver.org/ns/\" \
         xmlns:ical=\"http://apple.com/ns/ical/\"><cal:no-uid-conflict>\
         <d:href>/dav/calendars/ann/work/1 &amp; 2.ics</d:href></cal:no-uid-conflict></d:error>\n"
    );
    let tail = |p: Precondition| {
        let body = error_body(p, None);
        assert_well_formed(&body);
        body.split_once("\"http://apple.com/ns/ical/\">")
            .map(|(_, t)| t.to_string())
            .expect("root")
    };
    assert_eq!(
        tail(Precondition::ValidSyncToken),
        "<d:valid-sync-token/></d:error>\n"
    );
    assert_eq!(
        tail(Precondition::PropfindFiniteDepth),
        "<d:propfind-finite-depth/></d:error>\n"
    );
    assert_eq!(
        tail(Precondition::ValidCalendarData),
        "<cal:valid-calendar-data/></d:error>\n"
    );
    assert_eq!(
        tail(Precondition::SupportedCalendarComponent),
        "<cal:supported-calendar-component/></d:error>\n"
    );
    assert_eq!(
        tail(Precondition::MaxResourceSize),
        "<cal:max-resource-size/></d:error>\n"
    );
    assert_eq!(
        tail(Precondition::NumberOfMatchesWithinLimits),
        "<d:number-of-matches-within-limits/></d:error>\n"
    );
    let privileges = error_body(
        Precondition::NeedPrivileges,
        Some(
            "<d:resource><d:href>/dav/cal/</d:href><d:privilege><d:write/></d:privilege></d:resource>",
        ),
    );
    assert!(privileges.ends_with(
        "<d:need-privileges><d:resource><d:href>/dav/cal/</d:href><d:privilege><d:write/>\
         </d:privilege></d:resource></d:need-privileges></d:error>\n"
    ));
    // An unknown condition gets a local prefix.
    assert!(
        error_body(PropName::new("urn:example:x", "quota"), None)
            .ends_with("<x0:quota xmlns:x0=\"urn:example:x\"/></d:error>\n")
    );
}

#[test]
fn escaping_keeps_documents_well_formed() {
    assert_eq!(
        escape_text("a\u{1}b\u{FFFE}c\td\r\n"),
        "a\u{FFFD}b\u{FFFD}c\td&#13;\n"
    );
    assert_eq!(escape_attr("x\"y\n\tz"), "x&quot;y&#10;&#9;z");
    assert!(matches!(
        escape_text("plain"),
        std::borrow::Cow::Borrowed(_)
    ));
    let mut r = PropstatResponse::new("/dav/\u{7}");
    r.ok(PropName::dav("displayname"), PropContent::text("bell\u{7}"));
    assert_well_formed(&multistatus(&[r.into()], None));
}

/// The writer's output parses with our own strict reader, names resolved as intended.
fn assert_well_formed(body: &str) {
    let root = parse_document(body.as_bytes())
        .unwrap_or_else(|e| panic!("not well-formed: {e}\n{body}"))
        .expect("has a root");
    assert_eq!(root.name.ns, NS_DAV);
}
