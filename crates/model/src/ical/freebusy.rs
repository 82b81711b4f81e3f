//! VFREEBUSY components (RFC 5545 §3.6.4) from merged busy blocks, for CalDAV's
//! free-busy-query REPORT and the scheduling outbox.

use chrono::{DateTime, Utc};

use super::{ContentWriter, format_utc};
use crate::model::BusyBlock;
use crate::model::{BusyKind, Span};

fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

/// FBTYPE of a busy kind (RFC 5545 §3.2.9).
fn fbtype(kind: BusyKind) -> &'static str {
    match kind {
        BusyKind::Oof => "BUSY-UNAVAILABLE",
        BusyKind::Tentative => "BUSY-TENTATIVE",
        BusyKind::Busy | BusyKind::Free => "BUSY",
    }
}

/// What goes around the FREEBUSY lines: the window and, for scheduling replies,
/// who is asking about whom.
#[derive(Debug, Default, Clone)]
pub struct FreeBusyHeader<'a> {
    pub uid: Option<&'a str>,
    pub organizer: Option<&'a str>,
    pub attendee: Option<&'a str>,
}

/// Writes one VFREEBUSY for `window`, one FREEBUSY line per block (UTC periods).
pub fn write_vfreebusy(
    w: &mut ContentWriter,
    window: Span,
    blocks: &[BusyBlock],
    header: &FreeBusyHeader<'_>,
    now: DateTime<Utc>,
) {
    w.begin("VFREEBUSY");
    if let Some(uid) = header.uid {
        w.text("UID", &[], uid);
    }
    w.raw("DTSTAMP", &[], &format_utc(now));
    w.raw("DTSTART", &[], &format_utc(utc(window.start)));
    w.raw("DTEND", &[], &format_utc(utc(window.end)));
    if let Some(organizer) = header.organizer {
        w.raw("ORGANIZER", &[], organizer);
    }
    if let Some(attendee) = header.attendee {
        w.raw("ATTENDEE", &[], attendee);
    }
    for b in blocks {
        let period = format!(
            "{}/{}",
            format_utc(utc(b.span.start)),
            format_utc(utc(b.span.end))
        );
        w.raw("FREEBUSY", &[("FBTYPE", fbtype(b.kind))], &period);
    }
    w.end("VFREEBUSY");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_periods_with_fbtypes() {
        let block = |a: i64, b: i64, kind| BusyBlock {
            span: Span::new(a * 3_600_000, b * 3_600_000),
            kind,
            contributors: vec![],
        };
        let mut w = ContentWriter::default();
        write_vfreebusy(
            &mut w,
            Span::new(0, 24 * 3_600_000),
            &[
                block(9, 10, BusyKind::Busy),
                block(11, 12, BusyKind::Tentative),
                block(13, 14, BusyKind::Oof),
            ],
            &FreeBusyHeader::default(),
            utc(0),
        );
        let text = w.finish();
        assert!(text.contains("DTSTART:19700101T000000Z\r\nDTEND:19700102T000000Z\r\n"));
        assert!(text.contains("FREEBUSY;FBTYPE=BUSY:19700101T090000Z/19700101T100000Z\r\n"));
        assert!(
            text.contains("FREEBUSY;FBTYPE=BUSY-TENTATIVE:19700101T110000Z/19700101T120000Z\r\n")
        );
        assert!(
            text.contains("FREEBUSY;FBTYPE=BUSY-UNAVAILABLE:19700101T130000Z/19700101T140000Z\r\n")
        );
    }
}
