//! Several stored iCalendar objects written as one VCALENDAR (a GET of a whole
//! calendar collection): each object's components copied as they are, the
//! time zones they share written once.
//!
//! Works on content lines, without parsing values: what is copied is exactly
//! what was stored (line ends made CRLF).

use std::collections::HashSet;

/// Appends the components of `text` (an iCalendar object) to `out`, skipping
/// VTIMEZONEs whose TZID is already in `zones` (and recording new ones).
pub fn append_components(text: &str, out: &mut String, zones: &mut HashSet<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut depth = 0usize;
    let mut start = None;
    for (i, line) in lines.iter().enumerate() {
        let upper = |prefix: &str| {
            line.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        };
        if upper("BEGIN:") {
            depth += 1;
            // Depth 2: a component directly inside VCALENDAR.
            if depth == 2 {
                start = Some(i);
            }
        } else if upper("END:") {
            if depth == 2
                && let Some(from) = start.take()
            {
                let block = &lines[from..=i];
                if keep(block, zones) {
                    for l in block {
                        out.push_str(l);
                        out.push_str("\r\n");
                    }
                }
            }
            depth = depth.saturating_sub(1);
        }
    }
}

/// Whether a component is written: everything but a VTIMEZONE seen before.
fn keep(block: &[&str], zones: &mut HashSet<String>) -> bool {
    let is_zone = block
        .first()
        .is_some_and(|l| l.trim_end().eq_ignore_ascii_case("BEGIN:VTIMEZONE"));
    if !is_zone {
        return true;
    }
    let tzid = block
        .iter()
        .find_map(|l| {
            l.get(..5)
                .filter(|p| p.eq_ignore_ascii_case("TZID:"))
                .map(|_| l[5..].trim().to_owned())
        })
        .unwrap_or_default();
    zones.insert(tzid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARIS: &str = "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n";

    fn object(uid: &str) -> String {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n{PARIS}BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART;TZID=Europe/Paris:20261201T100000\r\nDESCRIPTION:a long line that was\r\n  folded\r\nBEGIN:VALARM\r\nTRIGGER:-PT5M\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    }

    #[test]
    fn components_are_copied_and_zones_written_once() {
        let mut out = String::new();
        let mut zones = HashSet::new();
        append_components(&object("a"), &mut out, &mut zones);
        append_components(&object("b").replace("\r\n", "\n"), &mut out, &mut zones);
        assert_eq!(out.matches("BEGIN:VTIMEZONE").count(), 1);
        assert_eq!(out.matches("BEGIN:VEVENT").count(), 2);
        assert_eq!(out.matches("BEGIN:VALARM").count(), 2);
        assert!(out.contains("UID:b\r\n"), "LF-only lines become CRLF");
        assert!(out.contains("was\r\n  folded\r\n"), "folding kept");
        assert!(
            !out.contains("PRODID"),
            "calendar properties are the caller's"
        );
        assert!(!out.contains("\n\n"));
    }
}
