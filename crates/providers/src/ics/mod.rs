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

mod provider;

pub use provider::Ics;

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
    Ok(fetch_with_digests(client, url, cursor, mode, None)
        .await?
        .fetched)
}

/// What [`fetch_with_digests`] brought back.
#[derive(Debug)]
pub struct FeedFetch {
    /// A [`Fetched::Full`] lists only the UIDs that are new or changed since
    /// `known`; the ones in `kept` are still in the feed, unchanged.
    pub fetched: Fetched,
    /// UIDs (series and item) still in the feed exactly as when `known` was taken.
    pub kept: Vec<String>,
    /// When the feed was compared with `known` (its feed-level parts unchanged):
    /// the UIDs `known` listed that the feed no longer has. The listing is then
    /// a delta against `known`: its items are the new and changed UIDs.
    pub removed: Option<Vec<String>>,
    /// The digests of this feed, to keep with the mirror once it is applied
    /// (`None`: not worth keeping; the next sync splits the whole feed again).
    pub digests: Option<FeedDigests>,
}

impl FeedFetch {
    /// A fetch that keeps no listing digests (every provider but iCal feeds).
    pub fn of(fetched: Fetched) -> Self {
        FeedFetch {
            fetched,
            kept: Vec::new(),
            removed: None,
            digests: None,
        }
    }
}

/// [`fetch`], skipping the UIDs whose raw text is unchanged since `known` (the
/// digests kept from the last applied feed): only the new and changed UIDs are
/// parsed and rendered (see [`split_with`]).
pub async fn fetch_with_digests(
    client: &SafeClient,
    url: &str,
    cursor: &Cursor,
    mode: FetchMode,
    known: Option<FeedDigests>,
) -> Result<FeedFetch, ProviderError> {
    let unchanged = |cursor| FeedFetch {
        fetched: Fetched::Unchanged { cursor },
        kept: Vec::new(),
        removed: None,
        digests: None,
    };
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
        return Ok(unchanged(Cursor {
            token: None,
            etag: header(ETAG).or_else(|| cursor.etag.clone()),
            last_modified: header(LAST_MODIFIED).or_else(|| cursor.last_modified.clone()),
            body_sha256: cursor.body_sha256.clone(),
            url: next_url,
        }));
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
        return Ok(unchanged(new_cursor));
    }
    let body = resp.body.clone();
    let split = tokio::task::spawn_blocking(move || split_with(&body, known.as_ref()))
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
    Ok(FeedFetch {
        fetched: Fetched::Full {
            items: split.items,
            cursor: new_cursor,
        },
        kept: split.kept,
        removed: split.removed,
        digests: split.digests,
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
        // The line up to its break, copied whole.
        let end = memchr::memchr2(b'\r', b'\n', &body[i..]).map_or(body.len(), |n| i + n);
        out.extend_from_slice(&body[i..end]);
        i = end;
        let Some(&b) = body.get(i) else {
            break;
        };
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
    // Unfolded text has CRLF line ends and no other CR or LF, so a line ends at
    // each LF (found with memchr; a two-byte pattern search is several times slower).
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.strip_suffix("\r\n").unwrap_or(line);
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
    match crate::ical::parse::read_components(block.text) {
        Ok(mut components) if !components.is_empty() => Some(components.swap_remove(0)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(component = %block.name, error = %e, "unreadable feed component skipped");
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

/// Bump when [`split`]'s output for the same feed changes: digests kept by an
/// older version then no longer match, and the next sync renders everything.
const SPLIT_VERSION: &[u8] = b"calgate-ics-split-1";

/// Digest of one UID's raw (unfolded) VEVENT texts, in feed order.
type UidDigest = [u8; 16];

/// What a feed looked like when it was last applied: a digest of its
/// feed-level parts (calendar properties, VTIMEZONEs, [`SPLIT_VERSION`]) and one
/// per UID of its raw VEVENT texts. Only UIDs that were rendered into an item
/// (their events parsed, and the parser read the UID the line scan found) are
/// listed, so an unchanged UID here is one whose item the mirror holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedDigests {
    feed: [u8; 32],
    uids: HashMap<String, UidDigest>,
}

const DIGESTS_MAGIC: &[u8; 4] = b"CGD1";

impl FeedDigests {
    /// UIDs listed.
    pub fn len(&self) -> usize {
        self.uids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
    }

    /// `magic, feed digest, then per UID: u32 length, UID, digest`.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.uids.keys().map(|u| u.len() + 20).sum();
        let mut out = Vec::with_capacity(36 + size);
        out.extend_from_slice(DIGESTS_MAGIC);
        out.extend_from_slice(&self.feed);
        for (uid, digest) in &self.uids {
            out.extend_from_slice(&(uid.len() as u32).to_le_bytes());
            out.extend_from_slice(uid.as_bytes());
            out.extend_from_slice(digest);
        }
        out
    }

    /// `None` for anything [`FeedDigests::encode`] did not write.
    pub fn decode(mut raw: &[u8]) -> Option<FeedDigests> {
        raw = raw.strip_prefix(DIGESTS_MAGIC)?;
        let feed: [u8; 32] = raw.get(..32)?.try_into().ok()?;
        raw = &raw[32..];
        let mut uids = HashMap::new();
        while !raw.is_empty() {
            let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
            let uid = std::str::from_utf8(raw.get(4..4 + len)?).ok()?;
            let digest: UidDigest = raw.get(4 + len..4 + len + 16)?.try_into().ok()?;
            uids.insert(uid.to_owned(), digest);
            raw = &raw[4 + len + 16..];
        }
        Some(FeedDigests { feed, uids })
    }
}

/// A split feed: the items of new and changed UIDs, the unchanged UIDs, and the
/// digests to keep (see [`split_with`]).
#[derive(Debug)]
pub struct Split {
    pub items: Vec<ItemChange>,
    pub kept: Vec<String>,
    /// See [`FeedFetch::removed`].
    pub removed: Option<Vec<String>>,
    pub digests: Option<FeedDigests>,
}

/// Splits a feed body into one item per UID (see the module docs).
pub fn split(body: &[u8]) -> Result<Vec<ItemChange>, ProviderError> {
    Ok(split_with(body, None)?.items)
}

/// [`split`], skipping the UIDs `known` says are unchanged: a line scan finds
/// each VEVENT's UID (the `UID` line at the event's own level) and digests the
/// raw text of each UID's events; when the feed-level parts are as in `known`,
/// a UID whose digest matches is not parsed or rendered but listed in `kept`.
/// Everything is split as before when there is nothing to compare with, the
/// feed-level parts changed, or the scan is unsure (a `UID` line with
/// parameters, two of them in one event) — or disagrees with the parser.
pub fn split_with(body: &[u8], known: Option<&FeedDigests>) -> Result<Split, ProviderError> {
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
    // Without a trustworthy scan, every event is split and parsed.
    let split_everything = || Split {
        items: split_blocks(&outline, None).0,
        kept: Vec::new(),
        removed: None,
        digests: None,
    };
    let Some(scanned) = scan_uids(&outline) else {
        return Ok(split_everything());
    };
    let feed = feed_digest(&outline);
    let known = known.filter(|k| k.feed == feed);
    // The feed's UIDs, each once, and per block the UID it belongs to: every
    // later step works on indexes (a feed has ~10,000 UIDs, and map look-ups
    // by string were most of the cost of splitting a feed that barely changed).
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(scanned.len());
    let mut groups: Vec<(&str, Sha256)> = Vec::with_capacity(scanned.len());
    let mut group_of: Vec<Option<usize>> = Vec::with_capacity(scanned.len());
    for (block, uid) in outline.blocks.iter().zip(&scanned) {
        group_of.push(uid.as_deref().map(|uid| {
            let g = *index.entry(uid).or_insert_with(|| {
                groups.push((uid, Sha256::new()));
                groups.len() - 1
            });
            // A UID's digest covers its events' raw text, in feed order.
            let h = &mut groups[g].1;
            h.update((block.text.len() as u64).to_le_bytes());
            h.update(block.text.as_bytes());
            g
        }));
    }
    let mut listed_before = 0;
    let groups: Vec<(&str, UidDigest, bool)> = groups
        .into_iter()
        .map(|(uid, h)| {
            let full = h.finalize();
            let mut d = [0u8; 16];
            d.copy_from_slice(&full[..16]);
            let before = known.and_then(|k| k.uids.get(uid));
            listed_before += usize::from(before.is_some());
            (uid, d, before == Some(&d))
        })
        .collect();
    let selected: Vec<bool> = group_of
        .iter()
        .map(|g| g.is_some_and(|g| !groups[g].2))
        .collect();
    let (items, parsed) = split_blocks(&outline, Some(&selected));
    // The parser must read the UIDs the scan found; if not, trust the parser.
    let agrees = parsed
        .iter()
        .zip(&scanned)
        .all(|(parsed, scanned)| parsed.is_none() || parsed == scanned);
    if !agrees {
        return Ok(split_everything());
    }
    let mut kept = Vec::new();
    let mut uids: HashMap<String, UidDigest> = HashMap::with_capacity(groups.len());
    for (uid, digest, unchanged) in &groups {
        if *unchanged {
            kept.push((*uid).to_owned());
            uids.insert((*uid).to_owned(), *digest);
        }
    }
    for item in &items {
        if let Some(&g) = index.get(item.series.as_str()) {
            uids.insert(item.series.clone(), groups[g].1);
        }
    }
    // UIDs listed before that are not listed now (gone from the feed, or no
    // longer readable).
    let removed = known.map(|k| {
        if listed_before == k.uids.len() && uids.len() == groups.len() {
            // Every UID listed before is in the feed still, and listed again.
            return Vec::new();
        }
        k.uids
            .keys()
            .filter(|uid| !uids.contains_key(uid.as_str()))
            .cloned()
            .collect()
    });
    Ok(Split {
        items,
        kept,
        removed,
        digests: Some(FeedDigests { feed, uids }),
    })
}

/// Digest of what every item of the feed shares: calendar properties and
/// VTIMEZONEs (and the splitter's version).
fn feed_digest(outline: &Outline<'_>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SPLIT_VERSION);
    for line in &outline.properties {
        h.update((line.len() as u64).to_le_bytes());
        h.update(line.as_bytes());
    }
    for block in outline.blocks.iter().filter(|b| b.name == "VTIMEZONE") {
        h.update((block.text.len() as u64).to_le_bytes());
        h.update(block.text.as_bytes());
    }
    h.finalize().into()
}

/// The UID each top-level block would get from [`split_blocks`] (`None` for
/// blocks that are not VEVENTs), found by a line scan: the `UID:` line at the
/// event's own level, trimmed, or the synthetic UID when there is none or it is
/// empty. `None` when a VEVENT is ambiguous to a line scan (a `UID` line with
/// parameters or odd spacing, two `UID` lines).
fn scan_uids(outline: &Outline<'_>) -> Option<Vec<Option<String>>> {
    let mut out = Vec::with_capacity(outline.blocks.len());
    for block in &outline.blocks {
        if block.name != "VEVENT" {
            out.push(None);
            continue;
        }
        let mut depth = 0usize;
        let mut uid: Option<&str> = None;
        for line in block.text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if delimiter(line, "BEGIN:").is_some() {
                depth += 1;
            } else if delimiter(line, "END:").is_some() {
                depth = depth.saturating_sub(1);
            } else if depth == 1 {
                let name_end = line.find([':', ';']).unwrap_or(line.len());
                let name = &line[..name_end];
                if !name.trim().eq_ignore_ascii_case("UID") {
                    continue;
                }
                if name.len() != 3 || line.as_bytes().get(3) != Some(&b':') || uid.is_some() {
                    return None;
                }
                uid = Some(line[4..].trim());
            }
        }
        out.push(Some(match uid.filter(|u| !u.is_empty()) {
            Some(uid) => uid.to_owned(),
            None => synthetic_uid(block),
        }));
    }
    Some(out)
}

/// Stable across fetches while the event stays the same.
fn synthetic_uid(block: &Block<'_>) -> String {
    let digest = hex::encode(Sha256::digest(block.text.as_bytes()));
    format!("calgate-{}@feed", &digest[..32])
}

/// Renders the VEVENT blocks of `outline` (all, or those `selected` by index)
/// into one item per UID; also returns, per block, the UID the parser read
/// (`None` for blocks not rendered or unreadable).
fn split_blocks(
    outline: &Outline<'_>,
    selected: Option<&[bool]>,
) -> (Vec<ItemChange>, Vec<Option<String>>) {
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

    let mut parsed_uids: Vec<Option<String>> = vec![None; outline.blocks.len()];
    let mut zones: HashMap<String, Component<'_>> = HashMap::new();
    // (uid, synthetic, event) in feed order
    let mut events: Vec<(String, bool, Component<'_>)> = Vec::new();
    for (index, block) in outline.blocks.iter().enumerate() {
        match block.name.as_str() {
            "VTIMEZONE" => {
                if let Some(c) = parse_block(block)
                    && let Some(tzid) = prop_value(&c, "TZID").map(str::to_owned)
                {
                    zones.entry(tzid).or_insert(c);
                }
            }
            "VEVENT" => {
                if selected.is_some_and(|s| !s.get(index).copied().unwrap_or(false)) {
                    continue;
                }
                if let Some(c) = parse_block(block) {
                    let (uid, synthetic) = match prop_value(&c, "UID").filter(|u| !u.is_empty()) {
                        Some(uid) => (uid.to_owned(), false),
                        None => (synthetic_uid(block), true),
                    };
                    parsed_uids[index] = Some(uid.clone());
                    events.push((uid, synthetic, c));
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
    (items, parsed_uids)
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
            .join("../../fixtures/feeds")
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

    /// A small LF-only feed in a fake zone (`offset` in winter and summer), with
    /// folded lines (a UID folded across lines among them), a weekly series with
    /// a moved instance, and the given single events `(uid, day, hour)`.
    fn digest_feed(offset: &str, singles: &[(&str, u32, u32)]) -> String {
        let mut f = format!(
            "BEGIN:VCALENDAR\nPRODID:-//test//digests//EN\nVERSION:2.0\nX-WR-TIMEZONE:Test/Zone\n\
BEGIN:VTIMEZONE\nTZID:Test/Zone\nBEGIN:STANDARD\nTZOFFSETFROM:{offset}\nTZOFFSETTO:{offset}\n\
DTSTART:19700101T000000\nEND:STANDARD\nEND:VTIMEZONE\n\
BEGIN:VEVENT\nUID:weekly-with-a-long-\n uid-folded@example.test\nDTSTART;TZID=Test/Zone:20300506T090000\n\
DTEND;TZID=Test/Zone:20300506T100000\nRRULE:FREQ=WEEKLY;COUNT=4\nSUMMARY:Weekly \n folded summary\nEND:VEVENT\n"
        );
        for (uid, day, hour) in singles {
            f.push_str(&format!(
                "BEGIN:VEVENT\nUID:{uid}\nDTSTART;TZID=Test/Zone:203005{day:02}T{hour:02}0000\n\
DTEND;TZID=Test/Zone:203005{day:02}T{:02}3000\nSUMMARY:Single {uid}\n\
BEGIN:VALARM\nACTION:DISPLAY\nUID:alarm-{uid}\nTRIGGER:-PT5M\nEND:VALARM\nEND:VEVENT\n",
                hour
            ));
        }
        // The moved instance comes after the other events, as exporters do.
        f.push_str(
            "BEGIN:VEVENT\nUID:weekly-with-a-long-uid-folded@example.test\n\
RECURRENCE-ID;TZID=Test/Zone:20300513T090000\nDTSTART;TZID=Test/Zone:20300513T110000\n\
DTEND;TZID=Test/Zone:20300513T120000\nSUMMARY:Moved\nEND:VEVENT\nEND:VCALENDAR\n",
        );
        f
    }

    fn texts(items: &[ItemChange]) -> std::collections::BTreeMap<String, String> {
        items
            .iter()
            .map(|i| {
                let text = i.body.as_ref().and_then(Value::as_str).unwrap_or_default();
                (i.series.clone(), text.to_owned())
            })
            .collect()
    }

    /// Splits `next` against the digests of `previous` and checks that the kept
    /// items of `previous` plus the new ones are exactly what a full split of
    /// `next` gives.
    fn split_against(previous: &str, next: &str) -> Split {
        let before = split_with(previous.as_bytes(), None).unwrap();
        let known = before.digests.clone().unwrap();
        // Stored and read back as the sync engine does.
        let known = FeedDigests::decode(&known.encode()).unwrap();
        let after = split_with(next.as_bytes(), Some(&known)).unwrap();
        let mut assembled = texts(&before.items);
        assembled.retain(|uid, _| after.kept.contains(uid));
        assembled.extend(texts(&after.items));
        assert_eq!(assembled, texts(&split(next.as_bytes()).unwrap()));
        after
    }

    #[test]
    fn unchanged_uids_are_kept_and_changed_ones_split_again() {
        let old = digest_feed("+0200", &[("a", 1, 9), ("b", 2, 9), ("c", 3, 9)]);
        // b moved, c removed, d added.
        let new = digest_feed("+0200", &[("a", 1, 9), ("b", 2, 14), ("d", 4, 9)]);
        let series = "weekly-with-a-long-uid-folded@example.test";
        let s = split_against(&old, &new);
        let changed: Vec<&str> = s.items.iter().map(|i| i.series.as_str()).collect();
        assert_eq!(changed, ["b", "d"]);
        let mut kept = s.kept.clone();
        kept.sort();
        assert_eq!(kept, ["a", series]);
        assert_eq!(s.removed, Some(vec!["c".to_owned()]));
        assert_eq!(s.digests.as_ref().map(FeedDigests::len), Some(4));

        // The same feed again: nothing to split, nothing removed.
        let s = split_against(&new, &new);
        assert!(s.items.is_empty(), "{:?}", s.items);
        assert_eq!(s.kept.len(), 4);
        assert_eq!(s.removed, Some(Vec::new()));

        // An override changing changes its whole series (master included).
        let moved = new.replace(
            "DTSTART;TZID=Test/Zone:20300513T110000",
            "DTSTART;TZID=Test/Zone:20300513T150000",
        );
        let s = split_against(&new, &moved);
        assert_eq!(texts(&s.items).keys().collect::<Vec<_>>(), [series]);
        assert_eq!(
            texts(&s.items)[series].matches("BEGIN:VEVENT").count(),
            2,
            "master and override travel together"
        );

        // A changed event the parser cannot read is no longer listed: its
        // earlier version goes, as a full split would leave it out too.
        let unreadable = new.replace("SUMMARY:Single b\n", "SUMMARY:Single b\nNOT A PROPERTY\n");
        let s = split_against(&new, &unreadable);
        assert!(s.items.is_empty(), "{:?}", s.items);
        assert_eq!(s.removed, Some(vec!["b".to_owned()]));
        assert_eq!(s.digests.as_ref().map(FeedDigests::len), Some(3));

        // The same events refolded and with CRLF line ends read the same.
        let crlf = new
            .replace("SUMMARY:Weekly \n folded", "SUMMARY:Weekly f\r\n olded")
            .replace('\n', "\r\n")
            .replace("\r\r\n", "\r\n");
        let s = split_against(&new, &crlf);
        assert!(s.items.is_empty(), "{:?}", s.items);
    }

    #[test]
    fn a_changed_zone_or_calendar_property_splits_everything_again() {
        let singles = [("a", 1, 9), ("b", 2, 9)];
        let old = digest_feed("+0200", &singles);
        let s = split_against(&old, &digest_feed("+0300", &singles));
        assert_eq!(s.items.len(), 3);
        assert!(s.kept.is_empty());
        assert_eq!(s.removed, None);
        let renamed = old.replace("PRODID:-//test//digests//EN", "PRODID:-//test//other//EN");
        let s = split_against(&old, &renamed);
        assert_eq!((s.items.len(), s.kept.len(), s.removed), (3, 0, None));
    }

    #[test]
    fn uid_lines_a_scan_cannot_read_fall_back_to_the_parser() {
        let old = digest_feed("+0200", &[("a", 1, 9)]);
        let odd = old.replace("UID:a\n", "UID;X-NOTE=\"x:y\":a\n");
        let known = split_with(old.as_bytes(), None).unwrap().digests.unwrap();
        let s = split_with(odd.as_bytes(), Some(&known)).unwrap();
        assert_eq!((s.items.len(), s.kept.len()), (2, 0));
        assert!(s.removed.is_none() && s.digests.is_none());
        assert_eq!(texts(&s.items), texts(&split(odd.as_bytes()).unwrap()));
    }

    #[test]
    fn quirky_fixture_feeds_are_kept_whole_when_unchanged() {
        for name in [
            "google_style.ics",
            "outlook_style.ics",
            "quirks_lf_only.ics",
        ] {
            let body = fixture(name);
            let first = split_with(&body, None).unwrap();
            let known = first
                .digests
                .clone()
                .unwrap_or_else(|| panic!("{name}: no digests"));
            assert_eq!(known.len(), first.items.len(), "{name}");
            let again = split_with(&body, Some(&known)).unwrap();
            assert!(again.items.is_empty(), "{name}: {:?}", again.items);
            assert_eq!(again.kept.len(), first.items.len(), "{name}");
            assert_eq!(again.removed, Some(Vec::new()), "{name}");
        }
    }

    #[test]
    fn digests_round_trip_and_reject_garbage() {
        let feed = digest_feed("+0200", &[("a", 1, 9), ("ü-b", 2, 9)]);
        let d = split_with(feed.as_bytes(), None).unwrap().digests.unwrap();
        assert_eq!(FeedDigests::decode(&d.encode()), Some(d.clone()));
        let raw = d.encode();
        assert_eq!(FeedDigests::decode(&raw[..raw.len() - 1]), None);
        assert_eq!(FeedDigests::decode(b"nope"), None);
        assert_eq!(FeedDigests::decode(b""), None);
    }
}
