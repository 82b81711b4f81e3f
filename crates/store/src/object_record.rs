//! How a [`CalendarObject`] is laid out on disk.
//!
//! The iCalendar text is most of an object and what reads want (GET, multiget,
//! calendar-query with data); inside a JSON record it would be a string full of
//! escaped line ends that every read has to unescape. So a record is a small JSON
//! head (everything else) followed by the text as raw bytes:
//!
//! ```text
//! 0x02 | ETag length (u16 LE) | ETag | head length (u32 LE) | head JSON
//!      | occurrence count (u32 LE) | count × (start i64 LE, end i64 LE, kind u8)
//!      | iCalendar text (UTF-8)
//! ```
//!
//! The ETag comes first so that multiget can read it and the text without any
//! JSON; occurrences are binary because a daily series holds hundreds of them.
//!
//! Also read: `0x01` records (the same without the leading ETag, which is in the
//! head) and plain JSON records (they start with `{`), from earlier versions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{BusySpan, CalendarObject, Span};

use super::{kind_byte, kind_of};

/// First byte of a record in the current layout.
const LAYOUT_V2: u8 = 0x02;
/// The layout before the ETag was moved out of the head.
const LAYOUT_V1: u8 = 0x01;

#[derive(Serialize)]
struct HeadOut<'a> {
    id: &'a str,
    uid: &'a Option<String>,
    updated: &'a DateTime<Utc>,
    recurring: bool,
    diagnostics: &'a [String],
}

#[derive(Deserialize)]
struct HeadIn {
    id: String,
    uid: Option<String>,
    /// Only in `0x01` records.
    #[serde(default)]
    etag: Option<String>,
    updated: DateTime<Utc>,
    recurring: bool,
    diagnostics: Vec<String>,
}

/// Bytes of one occurrence.
const OCCURRENCE_BYTES: usize = 17;

pub fn encode(object: &CalendarObject) -> Vec<u8> {
    let head = HeadOut {
        id: &object.id,
        uid: &object.uid,
        updated: &object.updated,
        recurring: object.recurring,
        diagnostics: &object.diagnostics,
    };
    // Our own plain data always serialises.
    let head = serde_json::to_vec(&head).expect("object heads serialise to JSON");
    let etag = object.etag.as_bytes();
    // ETags are ours (a quoted digest), far below 64 KiB.
    let etag_len = u16::try_from(etag.len()).expect("ETags are short");
    let occurrences = object.occurrences.len() * OCCURRENCE_BYTES;
    let mut out = Vec::with_capacity(11 + etag.len() + head.len() + occurrences + object.ics.len());
    out.push(LAYOUT_V2);
    out.extend_from_slice(&etag_len.to_le_bytes());
    out.extend_from_slice(etag);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&(object.occurrences.len() as u32).to_le_bytes());
    for o in &object.occurrences {
        out.extend_from_slice(&o.span.start.to_le_bytes());
        out.extend_from_slice(&o.span.end.to_le_bytes());
        out.push(kind_byte(o.kind));
    }
    out.extend_from_slice(object.ics.as_bytes());
    out
}

/// A binary record cut into its parts (none of them decoded).
struct Parts<'a> {
    /// None in `0x01` records (the ETag is in the head).
    etag: Option<&'a str>,
    head: &'a [u8],
    occurrences: &'a [u8],
    text_start: usize,
}

/// None for JSON records.
fn parts(raw: &[u8]) -> Result<Option<Parts<'_>>, String> {
    let (etag, head_len_at) = match raw.first() {
        Some(&LAYOUT_V2) => {
            let len = u16::from_le_bytes(
                raw.get(1..3)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("truncated record")?,
            ) as usize;
            let etag = raw.get(3..3 + len).ok_or("truncated ETag")?;
            let etag = std::str::from_utf8(etag).map_err(|e| e.to_string())?;
            (Some(etag), 3 + len)
        }
        Some(&LAYOUT_V1) => (None, 1),
        Some(b'{') => return Ok(None),
        _ => return Err("unknown record layout".into()),
    };
    let head_start = head_len_at + 4;
    let head_end = head_start + read_u32(raw, head_len_at)? as usize;
    let head = raw
        .get(head_start..head_end)
        .ok_or("truncated record head")?;
    let count = read_u32(raw, head_end)? as usize;
    let spans_start = head_end + 4;
    let text_start = count
        .checked_mul(OCCURRENCE_BYTES)
        .and_then(|n| n.checked_add(spans_start))
        .filter(|&end| end <= raw.len())
        .ok_or("truncated occurrences")?;
    Ok(Some(Parts {
        etag,
        head,
        occurrences: &raw[spans_start..text_start],
        text_start,
    }))
}

/// Why a record could not be read.
pub fn decode(raw: &[u8]) -> Result<CalendarObject, String> {
    let Some(parts) = parts(raw)? else {
        return serde_json::from_slice(raw).map_err(|e| e.to_string());
    };
    let head: HeadIn = serde_json::from_slice(parts.head).map_err(|e| e.to_string())?;
    let etag = match (parts.etag, head.etag) {
        (Some(etag), _) => etag.to_owned(),
        (None, Some(etag)) => etag,
        (None, None) => return Err("record without an ETag".into()),
    };
    let occurrences = parts
        .occurrences
        .chunks_exact(OCCURRENCE_BYTES)
        .map(|o| {
            let i64_at = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&o[at..at + 8]);
                i64::from_le_bytes(b)
            };
            BusySpan {
                span: Span::new(i64_at(0), i64_at(8)),
                kind: kind_of(o.get(16)),
            }
        })
        .collect();
    let ics = std::str::from_utf8(&raw[parts.text_start..]).map_err(|e| e.to_string())?;
    Ok(CalendarObject {
        id: head.id,
        uid: head.uid,
        ics: ics.to_owned(),
        etag,
        updated: head.updated,
        recurring: head.recurring,
        diagnostics: head.diagnostics,
        occurrences,
    })
}

/// A record's ETag and the offset of its iCalendar text (not checked to be UTF-8),
/// without decoding the rest (multiget wants only those). None for records of
/// earlier layouts, which the caller decodes whole.
pub fn etag_and_text_offset(raw: &[u8]) -> Result<Option<(String, usize)>, String> {
    Ok(parts(raw)?.and_then(|p| Some((p.etag?.to_owned(), p.text_start))))
}

fn read_u32(raw: &[u8], at: usize) -> Result<u32, String> {
    let bytes: [u8; 4] = raw
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .ok_or("truncated record")?;
    Ok(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BusyKind, Span};

    fn object() -> CalendarObject {
        CalendarObject {
            id: "a.ics".into(),
            uid: Some("u-1".into()),
            ics: "BEGIN:VCALENDAR\r\nSUMMARY:caf\u{e9} \"x\"\r\nEND:VCALENDAR\r\n".into(),
            etag: "\"e1\"".into(),
            updated: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
            recurring: true,
            diagnostics: vec!["unknown zone".into()],
            occurrences: vec![
                BusySpan {
                    span: Span::new(1, 2),
                    kind: BusyKind::Busy,
                },
                BusySpan {
                    span: Span::new(-5, 1_800_000_000_000),
                    kind: BusyKind::Free,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let o = object();
        let raw = encode(&o);
        assert_eq!(raw[0], LAYOUT_V2);
        assert_eq!(decode(&raw), Ok(o));
    }

    #[test]
    fn etag_and_text_are_read_alone() {
        let o = object();
        let raw = encode(&o);
        let (etag, at) = etag_and_text_offset(&raw)
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(etag, o.etag);
        assert_eq!(&raw[at..], o.ics.as_bytes());
        let json = serde_json::to_vec(&o).unwrap_or_default();
        assert_eq!(etag_and_text_offset(&json), Ok(None));
        assert!(etag_and_text_offset(&raw[..20]).is_err());
        assert!(
            etag_and_text_offset(&raw[..at - 1]).is_err(),
            "occurrences cut"
        );
    }

    #[test]
    fn reads_records_of_the_first_binary_layout() {
        let o = object();
        let head = serde_json::json!({
            "id": o.id, "uid": o.uid, "etag": o.etag, "updated": o.updated,
            "recurring": o.recurring, "diagnostics": o.diagnostics,
        })
        .to_string();
        let mut raw = vec![LAYOUT_V1];
        raw.extend_from_slice(&(head.len() as u32).to_le_bytes());
        raw.extend_from_slice(head.as_bytes());
        let v2 = encode(&o);
        let Ok(Some(p)) = parts(&v2) else {
            panic!("v2 record has parts");
        };
        raw.extend_from_slice(&((p.occurrences.len() / OCCURRENCE_BYTES) as u32).to_le_bytes());
        raw.extend_from_slice(p.occurrences);
        raw.extend_from_slice(o.ics.as_bytes());
        assert_eq!(decode(&raw), Ok(o));
        assert_eq!(etag_and_text_offset(&raw), Ok(None));
    }

    #[test]
    fn reads_json_records_written_before() {
        let o = object();
        let raw = serde_json::to_vec(&o).unwrap_or_default();
        assert_eq!(decode(&raw), Ok(o));
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let raw = encode(&object());
        for cut in [0, 1, 3, 5, 12, 90, 100] {
            assert!(decode(&raw[..cut]).is_err(), "cut at {cut}");
        }
    }
}
