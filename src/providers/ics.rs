//! iCal URL subscriptions: fetch a feed and split it into one object per UID.
//!
//! [`fetch`] does a conditional GET through the [`SafeClient`] (ETag /
//! Last-Modified, plus a SHA-256 of the body for hosts that ignore validators),
//! checks that the body is iCalendar at all, and splits it: every UID becomes one
//! item (`series = item = UID`) whose body is a complete VCALENDAR holding that
//! UID's VEVENTs (master and overrides, written back verbatim), the VTIMEZONEs
//! they reference and the feed's `X-WR-TIMEZONE`, so each piece reads exactly as
//! it did inside the whole feed. [`render`] hands that text back.
//!
//! The feed is unfolded on bytes before it is decoded (producers fold inside
//! multi-byte UTF-8 sequences) and cut into components by line, each parsed on
//! its own: one malformed event is skipped, not the whole feed.

use std::collections::HashMap;

use http::header::{
    ACCEPT, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER,
};
use http::{HeaderName, StatusCode};
use icalendar::parser::Component;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::fetch::{FetchResponse, SafeClient, redact_url};
use super::{
    Cursor, FetchMode, Fetched, ItemChange, ProviderError, RenderContext, Rendered, retry_after,
};
use crate::ical::ContentWriter;

/// Most VEVENTs a feed may hold.
pub const MAX_EVENTS: usize = 50_000;

const ACCEPT_FEED: &str = "text/calendar, text/plain;q=0.5, */*;q=0.1";
const OUR_PRODID: &str = "-//calgate//iCal feed import//EN";

/// Fetches the feed at `url` (the caller passes the URL a permanent redirect
/// left in `cursor.url`, if any). With [`FetchMode::Incremental`], the cursor's
/// validators make the request conditional and a body identical to the last one
/// counts as unchanged; [`FetchMode::Full`] ignores both.
pub async fn fetch(
    client: &SafeClient,
    url: &str,
    cursor: &Cursor,
    mode: FetchMode,
) -> Result<Fetched, ProviderError> {
    let mut headers: Vec<(HeaderName, String)> = vec![(ACCEPT, ACCEPT_FEED.to_owned())];
    if mode == FetchMode::Incremental {
        if let Some(etag) = cursor.etag.as_ref().filter(|v| !v.is_empty()) {
            headers.push((IF_NONE_MATCH, etag.clone()));
        }
        if let Some(lm) = cursor.last_modified.as_ref().filter(|v| !v.is_empty()) {
            headers.push((IF_MODIFIED_SINCE, lm.clone()));
        }
    }
    let resp = client.get(url, &headers).await?;
    let shown = redact_url(&resp.final_url);
    let next_url = resp
        .permanent_redirect
        .clone()
        .or_else(|| cursor.url.clone());
    let header = |name: HeaderName| {
        resp.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = resp.status;
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::Unchanged {
            cursor: Cursor {
                token: None,
                etag: header(ETAG).or_else(|| cursor.etag.clone()),
                last_modified: header(LAST_MODIFIED).or_else(|| cursor.last_modified.clone()),
                body_sha256: cursor.body_sha256.clone(),
                url: next_url,
            },
        });
    }
    if !status.is_success() {
        return Err(status_failure(&resp, &shown));
    }
    if !looks_like_icalendar(&resp.body) {
        let content_type = header(CONTENT_TYPE).unwrap_or_else(|| "no content type".into());
        return Err(ProviderError::Permanent(format!(
            "{shown}: not an iCalendar feed (HTTP {status}, {content_type}, the body does not start with BEGIN:VCALENDAR; a login or error page?)"
        )));
    }
    let digest = hex::encode(Sha256::digest(&resp.body));
    let new_cursor = Cursor {
        token: None,
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
        body_sha256: Some(digest),
        url: next_url,
    };
    if mode == FetchMode::Incremental && cursor.body_sha256 == new_cursor.body_sha256 {
        return Ok(Fetched::Unchanged { cursor: new_cursor });
    }
    let body = resp.body.clone();
    let items = tokio::task::spawn_blocking(move || split(&body))
        .await
        .map_err(|e| ProviderError::retryable(format!("{shown}: feed parsing stopped: {e}")))?
        .map_err(|e| match e {
            ProviderError::Permanent(m) => ProviderError::Permanent(format!("{shown}: {m}")),
            ProviderError::Retryable {
                message,
                retry_after,
            } => ProviderError::Retryable {
                message: format!("{shown}: {message}"),
                retry_after,
            },
            other => other,
        })?;
    Ok(Fetched::Full {
        items,
        cursor: new_cursor,
    })
}

fn status_failure(resp: &FetchResponse, shown: &str) -> ProviderError {
    let status = resp.status;
    let message = format!("{shown}: HTTP {status}");
    match status.as_u16() {
        429 | 503 => ProviderError::Retryable {
            message,
            retry_after: retry_after(resp.headers.get(RETRY_AFTER)),
        },
        500..=599 | 408 => ProviderError::Retryable {
            message,
            retry_after: None,
        },
        404 | 410 => {
            ProviderError::Permanent(format!("{message}: the feed is not there (any more)"))
        }
        401 | 403 => ProviderError::Permanent(format!(
            "{message}: the feed is not public (is the secret address still valid?)"
        )),
        _ => ProviderError::Permanent(message),
    }
}

/// After an optional UTF-8 BOM and whitespace, the body starts with `BEGIN:VCALENDAR`.
pub fn looks_like_icalendar(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let magic = b"BEGIN:VCALENDAR";
    body.get(start..start + magic.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(magic))
}

/// The stored text of a series: its single item's string.
pub fn render(items: &[Value], _ctx: &RenderContext) -> Rendered {
    items.iter().find_map(Value::as_str).map(str::to_owned)
}

/// Line ends normalised to CRLF, folded lines joined and blank lines dropped, on
/// bytes (a fold may split a multi-byte character), then decoded (lossy).
fn unfold(body: &[u8]) -> String {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 2);
    let mut line_start = 0;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b != b'\r' && b != b'\n' {
            out.push(b);
            i += 1;
            continue;
        }
        // A line break: CRLF, LF or a lone CR.
        i += if b == b'\r' && body.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        if matches!(body.get(i), Some(b' ' | b'\t')) {
            // Continuation: drop the break and the one whitespace character.
            i += 1;
            continue;
        }
        end_line(&mut out, &mut line_start);
    }
    end_line(&mut out, &mut line_start);
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn end_line(out: &mut Vec<u8>, line_start: &mut usize) {
    if out[*line_start..].iter().all(u8::is_ascii_whitespace) {
        out.truncate(*line_start);
    } else {
        out.extend_from_slice(b"\r\n");
        *line_start = out.len();
    }
}

/// `BEGIN:X` / `END:X` → `X`, upper-cased.
fn delimiter<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    let head = line.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| line[keyword.len()..].trim())
}

/// A top-level component of the feed: its name and its lines.
struct Block<'t> {
    name: String,
    text: &'t str,
}

/// The parts of a feed: calendar properties (raw lines) and top-level components.
struct Outline<'t> {
    properties: Vec<&'t str>,
    blocks: Vec<Block<'t>>,
    complete: bool,
}

fn outline(text: &str) -> Outline<'_> {
    let mut out = Outline {
        properties: Vec::new(),
        blocks: Vec::new(),
        complete: false,
    };
    let mut depth = 0usize;
    let mut block: Option<(String, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive("\r\n") {
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches("\r\n");
        if let Some(name) = delimiter(content, "BEGIN:") {
            match depth {
                0 if name.eq_ignore_ascii_case("VCALENDAR") => depth = 1,
                0 => {}
                1 => {
                    block = Some((name.to_ascii_uppercase(), start));
                    depth = 2;
                }
                _ => depth += 1,
            }
        } else if delimiter(content, "END:").is_some() {
            match depth {
                0 => {}
                1 => {
                    depth = 0;
                    out.complete = true;
                }
                2 => {
                    if let Some((name, from)) = block.take() {
                        out.blocks.push(Block {
                            name,
                            text: &text[from..offset],
                        });
                    }
                    depth = 1;
                }
                _ => depth -= 1,
            }
        } else if depth == 1 {
            out.properties.push(content);
        }
    }
    out
}

/// `NAME;PARAMS:VALUE` → (upper-cased NAME, VALUE).
fn split_property(line: &str) -> Option<(String, &str)> {
    let colon = line.find(':')?;
    let name_end = line[..colon].find(';').unwrap_or(colon);
    Some((
        line[..name_end].trim().to_ascii_uppercase(),
        &line[colon + 1..],
    ))
}

fn parse_block<'t>(block: &Block<'t>) -> Option<Component<'t>> {
    match icalendar::parser::read_components(block.text) {
        Ok(mut components) if !components.is_empty() => Some(components.swap_remove(0)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(
                component = %block.name,
                error = %e.lines().take(3).collect::<Vec<_>>().join(" "),
                "unreadable feed component skipped"
            );
            None
        }
    }
}

fn prop_value<'c>(c: &'c Component<'_>, name: &str) -> Option<&'c str> {
    c.properties
        .iter()
        .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
        .map(|p| p.val.as_str().trim())
}

/// TZIDs a component's properties (and sub-components) refer to, in order.
fn referenced_zones(c: &Component<'_>, out: &mut Vec<String>) {
    for p in &c.properties {
        for param in &p.params {
            if !param.key.as_str().eq_ignore_ascii_case("TZID") {
                continue;
            }
            if let Some(v) = &param.val {
                let tzid = v.as_str().trim().trim_matches('"');
                if !tzid.is_empty() && !out.iter().any(|t| t == tzid) {
                    out.push(tzid.to_owned());
                }
            }
        }
    }
    for sub in &c.components {
        referenced_zones(sub, out);
    }
}

/// Splits a feed body into one item per UID (see the module docs).
pub fn split(body: &[u8]) -> Result<Vec<ItemChange>, ProviderError> {
    let text = unfold(body);
    let outline = outline(&text);
    if !outline.complete {
        // A cut-off download would look like a feed whose later events vanished.
        return Err(ProviderError::retryable(
            "the feed is incomplete (no END:VCALENDAR)",
        ));
    }
    let event_count = outline.blocks.iter().filter(|b| b.name == "VEVENT").count();
    if event_count > MAX_EVENTS {
        return Err(ProviderError::Permanent(format!(
            "the feed has {event_count} events, more than the {MAX_EVENTS} accepted"
        )));
    }

    let mut prodid = None;
    let mut calscale = None;
    let mut x_wr_timezone = None;
    for line in &outline.properties {
        match split_property(line) {
            Some((name, value)) if name == "PRODID" => prodid = Some(value),
            Some((name, value)) if name == "CALSCALE" => calscale = Some(value),
            Some((name, value)) if name == "X-WR-TIMEZONE" => x_wr_timezone = Some(value.trim()),
            _ => {}
        }
    }

    let mut zones: HashMap<String, Component<'_>> = HashMap::new();
    // (uid, synthetic, event) in feed order
    let mut events: Vec<(String, bool, Component<'_>)> = Vec::with_capacity(event_count);
    for block in &outline.blocks {
        match block.name.as_str() {
            "VTIMEZONE" => {
                if let Some(c) = parse_block(block)
                    && let Some(tzid) = prop_value(&c, "TZID").map(str::to_owned)
                {
                    zones.entry(tzid).or_insert(c);
                }
            }
            "VEVENT" => {
                if let Some(c) = parse_block(block) {
                    match prop_value(&c, "UID").filter(|u| !u.is_empty()) {
                        Some(uid) => events.push((uid.to_owned(), false, c)),
                        None => {
                            // Stable across fetches while the event stays the same.
                            let digest = hex::encode(Sha256::digest(block.text.as_bytes()));
                            let uid = format!("calgate-{}@feed", &digest[..32]);
                            events.push((uid, true, c));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    let mut order: Vec<&str> = Vec::new();
    let mut by_uid: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (uid, _, _)) in events.iter().enumerate() {
        by_uid
            .entry(uid.as_str())
            .or_insert_with(|| {
                order.push(uid.as_str());
                Vec::new()
            })
            .push(i);
    }

    let mut items = Vec::with_capacity(order.len());
    for uid in order {
        let members = &by_uid[uid];
        let mut tzids = Vec::new();
        if let Some(x) = x_wr_timezone {
            tzids.push(x.to_owned());
        }
        for &i in members {
            referenced_zones(&events[i].2, &mut tzids);
        }
        let mut w = ContentWriter::with_capacity(1024);
        w.begin("VCALENDAR");
        w.raw("VERSION", &[], "2.0");
        w.raw("PRODID", &[], prodid.unwrap_or(OUR_PRODID));
        if let Some(scale) = calscale {
            w.raw("CALSCALE", &[], scale);
        }
        if let Some(x) = x_wr_timezone {
            w.raw("X-WR-TIMEZONE", &[], x);
        }
        for tzid in &tzids {
            if let Some(zone) = zones.get(tzid.as_str()) {
                w.parsed_component(zone);
            }
        }
        for &i in members {
            let (uid, synthetic, event) = &events[i];
            if *synthetic {
                w.begin("VEVENT");
                w.raw("UID", &[], uid);
                for p in &event.properties {
                    w.parsed_property(p);
                }
                for sub in &event.components {
                    w.parsed_component(sub);
                }
                w.end("VEVENT");
            } else {
                w.parsed_component(event);
            }
        }
        w.end("VCALENDAR");
        items.push(ItemChange {
            series: uid.to_owned(),
            item: uid.to_owned(),
            body: Some(Value::String(w.finish())),
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ical::expand::{ExpandOptions, expand};
    use crate::ical::parse::parse;
    use crate::model::{BusyKind, Span};
    use chrono::{DateTime, Utc};

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/feeds")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn utc(ms: i64) -> String {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    /// Busy occurrences of every split series, as (start, end, uid), sorted.
    fn busy_after_split(name: &str) -> (usize, Vec<(String, String, String)>) {
        let items = split(&fixture(name)).unwrap();
        let opts = ExpandOptions {
            default_zone: chrono_tz::Europe::Berlin,
            window: Span::new(ms("2030-05-01T00:00:00Z"), ms("2030-06-01T00:00:00Z")),
        };
        let mut busy = Vec::new();
        for item in &items {
            assert_eq!(item.series, item.item);
            let text = item.body.as_ref().and_then(Value::as_str).unwrap();
            let cal = parse(text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", item.series));
            assert!(
                cal.events.iter().all(|e| e.uid == item.series),
                "one UID per series: {text}"
            );
            let (occurrences, _) = expand(&cal, &opts);
            for o in occurrences {
                if o.busy > BusyKind::Free && o.span.end > o.span.start {
                    busy.push((utc(o.span.start), utc(o.span.end), o.uid.clone()));
                }
            }
        }
        busy.sort();
        (items.len(), busy)
    }

    fn expected(name: &str) -> Vec<(String, String, String)> {
        let v: Value = serde_json::from_slice(&fixture(name)).unwrap();
        let mut out: Vec<(String, String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let s = |k: &str| i[k].as_str().unwrap().to_owned();
                (s("start"), s("end"), s("uid"))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn google_style_feed_splits_into_the_expected_busy_time() {
        let (series, busy) = busy_after_split("google_style.ics");
        assert_eq!(series, 6);
        assert_eq!(busy, expected("google_style.expected.json"));
    }

    #[test]
    fn outlook_style_feed_splits_into_the_expected_busy_time() {
        let (series, busy) = busy_after_split("outlook_style.ics");
        assert_eq!(series, 7);
        assert_eq!(busy, expected("outlook_style.expected.json"));
    }

    #[test]
    fn lf_only_quirks_feed_splits_into_the_expected_busy_time() {
        let (series, busy) = busy_after_split("quirks_lf_only.ics");
        assert_eq!(series, 7);
        assert_eq!(busy, expected("quirks_lf_only.expected.json"));
    }

    #[test]
    fn series_carry_their_zones_and_the_calendar_zone() {
        let items = split(&fixture("google_style.ics")).unwrap();
        let text = |uid: &str| {
            items
                .iter()
                .find(|i| i.series == uid)
                .and_then(|i| i.body.as_ref())
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        };
        let recurring = text("fakerecur0001@google.com");
        assert!(recurring.contains("X-WR-TIMEZONE:Europe/Berlin\r\n"));
        assert_eq!(recurring.matches("BEGIN:VTIMEZONE").count(), 1);
        assert_eq!(recurring.matches("BEGIN:VEVENT").count(), 3);
        assert!(!recurring.contains("METHOD:"));
        let all_day = text("fakealld0001@google.com");
        assert!(all_day.contains("SUMMARY:Conference (fake\\, two days)\r\n"));
        // The X-WR-TIMEZONE zone's VTIMEZONE travels along, referenced or not.
        assert_eq!(all_day.matches("BEGIN:VEVENT").count(), 1);
    }

    #[test]
    fn outlook_uids_folded_across_lines_are_joined() {
        let items = split(&fixture("outlook_style.ics")).unwrap();
        assert!(items.iter().all(|i| i.series.len() == 112), "{items:?}");
        let planning = items[0].body.as_ref().and_then(Value::as_str).unwrap();
        assert!(planning.contains("BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time"));
        // "Eastern Standard Time" has no VTIMEZONE in the feed: nothing to carry.
        let ny = items[1].body.as_ref().and_then(Value::as_str).unwrap();
        assert!(!ny.contains("BEGIN:VTIMEZONE"));
    }

    #[test]
    fn a_fold_inside_a_multibyte_character_is_joined_on_bytes() {
        let items = split(&fixture("quirks_lf_only.ics")).unwrap();
        let text = items[0].body.as_ref().and_then(Value::as_str).unwrap();
        let cal = parse(text).unwrap();
        let summary = cal.events[0].summary.clone().unwrap();
        assert!(summary.contains("Müller"), "{summary}");
        assert!(!summary.contains('\u{fffd}'), "{summary}");
    }

    #[test]
    fn events_without_uid_get_a_stable_synthetic_one_and_bad_events_are_skipped() {
        let feed = "\u{feff}\r\n\r\nBEGIN:VCALENDAR\nVERSION:2.0\n\
BEGIN:VEVENT\nDTSTART:20300501T100000Z\nDTEND:20300501T110000Z\nSUMMARY:no uid\nEND:VEVENT\n\
BEGIN:VEVENT\nUID:ok\nDTSTART:20300502T100000Z\nEND:VEVENT\n\
BEGIN:VTODO\nUID:todo\nEND:VTODO\n\
END:VCALENDAR\n";
        assert!(looks_like_icalendar(feed.as_bytes()));
        let a = split(feed.as_bytes()).unwrap();
        let b = split(feed.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert!(a[0].series.starts_with("calgate-"));
        let text = a[0].body.as_ref().and_then(Value::as_str).unwrap();
        let cal = parse(text).unwrap();
        assert_eq!(cal.events[0].uid, a[0].series);
        assert_eq!(a[1].series, "ok");
    }

    #[test]
    fn truncated_and_oversized_feeds_are_errors() {
        assert!(matches!(
            split(b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\n"),
            Err(ProviderError::Retryable { .. })
        ));
        let mut big = String::from("BEGIN:VCALENDAR\r\n");
        for i in 0..=MAX_EVENTS {
            big.push_str(&format!("BEGIN:VEVENT\r\nUID:{i}\r\nEND:VEVENT\r\n"));
        }
        big.push_str("END:VCALENDAR\r\n");
        assert!(matches!(
            split(big.as_bytes()),
            Err(ProviderError::Permanent(m)) if m.contains("50000")
        ));
    }

    #[test]
    fn sniffing() {
        assert!(looks_like_icalendar(
            b"\xEF\xBB\xBF \r\n\tbegin:vcalendar\r\n"
        ));
        assert!(!looks_like_icalendar(&fixture("html_login_page.html")));
        assert!(!looks_like_icalendar(b""));
        assert!(!looks_like_icalendar(b"BEGIN:VCAL"));
    }

    #[test]
    fn render_returns_the_series_text() {
        let ctx = RenderContext {
            default_zone: chrono_tz::UTC,
            source: "s",
        };
        assert_eq!(
            render(&[Value::String("BEGIN:VCALENDAR".into())], &ctx).as_deref(),
            Some("BEGIN:VCALENDAR")
        );
        assert_eq!(render(&[], &ctx), None);
    }
}
