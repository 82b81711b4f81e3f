//! iTIP (RFC 5546) as CalDAV implicit scheduling (RFC 6638) applies it to stored
//! calendar objects: who organizes and who attends, whether a change matters to
//! attendees (and the Schedule-Tag that follows from it), the SCHEDULE-STATUS
//! parameters the server records, and the REQUEST, REPLY and CANCEL messages it
//! delivers.
//!
//! Works on content lines (RFC 5545 §3.1), not on a parsed model, so an object
//! the server edits keeps every line but the ones it changes. Nothing here knows
//! who the users are, where messages go, how they are stored, or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::ContentWriter;
use super::parse::unfolded;

/// SCHEDULE-STATUS codes the server records (RFC 6638 §3.2.9).
pub mod status {
    /// "The scheduling message has been successfully delivered."
    pub const DELIVERED: &str = "1.2";
    /// "The scheduling message was not delivered because the server was not able
    /// to find a way to deliver the message": a permanent failure, so clients do
    /// not retry (5.1 would invite retries; 3.7 would call a real address invalid).
    pub const NO_WAY_TO_DELIVER: &str = "5.2";
}

/// Parameters the scheduling server owns or reads per attendee, which say
/// nothing about the meeting itself.
const REPLY_PARAMS: [&str; 4] = ["PARTSTAT", "RSVP", "SCHEDULE-STATUS", "SCHEDULE-FORCE-SEND"];
/// Parameters that never travel in an iTIP message (RFC 6638 §7.1-7.3).
const SERVER_PARAMS: [&str; 3] = ["SCHEDULE-AGENT", "SCHEDULE-STATUS", "SCHEDULE-FORCE-SEND"];
/// Properties a client rewrites on every save (stamps, counters, its own
/// bookkeeping): a change in them alone is no change to the meeting.
const BOOKKEEPING: [&str; 7] = [
    "DTSTAMP",
    "SEQUENCE",
    "LAST-MODIFIED",
    "PRODID",
    "METHOD",
    "X-MOZ-GENERATION",
    "X-MOZ-LASTACK",
];
/// Properties a REPLY carries besides the replying attendee (RFC 5546 §3.2.3).
const REPLY_PROPS: [&str; 9] = [
    "UID",
    "SEQUENCE",
    "RECURRENCE-ID",
    "DTSTART",
    "DTEND",
    "DURATION",
    "DUE",
    "SUMMARY",
    "ORGANIZER",
];

/// Who processes scheduling for a participant (`SCHEDULE-AGENT`, RFC 6638 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Server,
    /// The client sends this participant's messages itself.
    Client,
    /// Nobody sends them any.
    None,
}

/// The organizer or an attendee of a scheduling object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    /// The calendar user address as written (`mailto:anna@example.com`).
    pub address: String,
    pub agent: Agent,
    /// SCHEDULE-STATUS as recorded on the object.
    pub status: Option<String>,
}

/// What a calendar object says about scheduling: present only on scheduling
/// object resources (an ORGANIZER and at least one ATTENDEE, RFC 6638 §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduling {
    pub organizer: Party,
    /// Every attendee once, in order of appearance (the first line naming an
    /// address speaks for it).
    pub attendees: Vec<Party>,
}

impl Scheduling {
    pub fn attendee(&self, address: &str) -> Option<&Party> {
        self.attendees
            .iter()
            .find(|a| same_address(&a.address, address))
    }
}

/// Whether two calendar user addresses name the same user (case-insensitive,
/// as e-mail addresses are in practice).
pub fn same_address(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Who organizes and attends the object, if it is a scheduling object.
pub fn scheduling(text: &str) -> Option<Scheduling> {
    if !may_schedule(text) {
        return None;
    }
    let unfolded = unfolded(text);
    let doc = Doc::read(&unfolded);
    let mut organizer = None;
    let mut attendees: Vec<Party> = Vec::new();
    for (line, _) in doc.item_props() {
        if line.is("ORGANIZER") && organizer.is_none() {
            organizer = Some(line.party());
        } else if line.is("ATTENDEE")
            && !attendees
                .iter()
                .any(|a| same_address(&a.address, line.value))
        {
            attendees.push(line.party());
        }
    }
    match organizer {
        Some(organizer) if !attendees.is_empty() => Some(Scheduling {
            organizer,
            attendees,
        }),
        _ => None,
    }
}

/// A cheap test that rules out most objects before any parsing: a scheduling
/// object names an ORGANIZER.
pub fn may_schedule(text: &str) -> bool {
    text.as_bytes()
        .windows(9)
        .any(|w| w.eq_ignore_ascii_case(b"ORGANIZER"))
}

/// The Schedule-Tag of a scheduling object (RFC 6638 §3.2.10), quoted like an
/// ETag: a digest of everything that matters to attendees, so it changes with
/// every change that sends them a message and with no reply.
pub fn schedule_tag(text: &str) -> Option<String> {
    scheduling(text)?;
    let digest = Sha256::digest(meeting(text).as_bytes());
    Some(format!("\"{}\"", hex::encode(&digest[..12])))
}

/// Whether going from `old` to `new` changes the meeting for its attendees:
/// anything but replies (PARTSTAT, RSVP), server status, alarms, time zone
/// definitions, and the stamps and counters clients rewrite on each save.
pub fn changes_meeting(old: &str, new: &str) -> bool {
    meeting(old) != meeting(new)
}

/// Whether the participation of the attendee `is_me` picks out differs between
/// the two versions (in any instance).
pub fn reply_changed(old: &str, new: &str, is_me: &dyn Fn(&str) -> bool) -> bool {
    partstat_map(old, is_me) != partstat_map(new, is_me)
}

/// SCHEDULE-STATUS values to record: for each address listed, the status to
/// set (`None`: none recorded); addresses not listed are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statuses {
    pub attendees: Vec<(String, Option<String>)>,
    /// For the ORGANIZER line (the last reply's delivery); `None` leaves it.
    pub organizer: Option<Option<String>>,
}

/// `text` with the SCHEDULE-STATUS parameters of `statuses`; None when it
/// already has them all.
pub fn record_statuses(text: &str, statuses: &Statuses) -> Option<String> {
    let unfolded = unfolded(text);
    let doc = Doc::read(&unfolded);
    let mut changed = false;
    let out = doc.write(|entry, _| {
        let Entry::Prop(line, Scope::Item(_)) = entry else {
            return Edit::Keep;
        };
        let wanted = if line.is("ATTENDEE") {
            statuses
                .attendees
                .iter()
                .find(|(a, _)| same_address(a, line.value))
                .map(|(_, s)| s.as_deref())
        } else if line.is("ORGANIZER") {
            statuses.organizer.as_ref().map(Option::as_deref)
        } else {
            None
        };
        match wanted {
            Some(status) if line.param("SCHEDULE-STATUS").as_deref() != status => {
                changed = true;
                Edit::Replace(line.with_param("SCHEDULE-STATUS", status))
            }
            _ => Edit::Keep,
        }
    });
    changed.then_some(out)
}

/// `text` with the PARTSTAT that `stored` records for each attendee `keep`
/// picks out, instance by instance: replies that arrived since the writer read
/// the object survive its write (RFC 6638 §3.2.10). None when nothing changes.
pub fn keep_replies(text: &str, stored: &str, keep: &dyn Fn(&str) -> bool) -> Option<String> {
    let stored = partstat_map(stored, keep);
    let unfolded = unfolded(text);
    let doc = Doc::read(&unfolded);
    let mut changed = false;
    let out = doc.write(|entry, items| {
        let Entry::Prop(line, Scope::Item(i)) = entry else {
            return Edit::Keep;
        };
        if !line.is("ATTENDEE") || !keep(line.value) {
            return Edit::Keep;
        }
        let key = (items[*i].recurrence_id.clone(), normal(line.value));
        match stored.get(&key) {
            Some(partstat) if line.param("PARTSTAT").as_deref() != partstat.as_deref() => {
                changed = true;
                Edit::Replace(line.with_param("PARTSTAT", partstat.as_deref()))
            }
            _ => Edit::Keep,
        }
    });
    changed.then_some(out)
}

/// The iTIP methods the server delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Request,
    Reply,
    Cancel,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Request => "REQUEST",
            Method::Reply => "REPLY",
            Method::Cancel => "CANCEL",
        }
    }
}

/// Who writes a message, and when.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub prodid: &'a str,
    pub now: DateTime<Utc>,
}

/// The iTIP message of `method` for the object `text` (RFC 5546 §3.2): a
/// REQUEST or CANCEL carries the whole meeting (a CANCEL marked cancelled); a
/// REPLY the instances with the replying attendee (`is_me`) alone. Alarms stay
/// behind, server-owned parameters are dropped and DTSTAMP is the message's.
pub fn message(
    text: &str,
    method: Method,
    is_me: &dyn Fn(&str) -> bool,
    stamp: Stamp<'_>,
) -> String {
    let unfolded = unfolded(text);
    let doc = Doc::read(&unfolded);
    let mut w = ContentWriter::with_capacity(unfolded.len() + 256);
    w.begin("VCALENDAR");
    w.raw("VERSION", &[], "2.0");
    w.text("PRODID", &[], stamp.prodid);
    w.raw("METHOD", &[], method.as_str());
    let dtstamp = super::format_utc(stamp.now);
    let mut has_stamp = false;
    let mut has_status = false;
    for entry in doc.entries_outside(&["VALARM"]) {
        match entry {
            Entry::Begin(name) if name.eq_ignore_ascii_case("VCALENDAR") => {}
            Entry::End(name) if name.eq_ignore_ascii_case("VCALENDAR") => {}
            Entry::Begin(name) => {
                has_stamp = false;
                has_status = false;
                w.begin(name);
            }
            Entry::End(name) => {
                if is_item(name) {
                    if !has_stamp {
                        w.raw("DTSTAMP", &[], &dtstamp);
                    }
                    if method == Method::Cancel && !has_status {
                        w.raw("STATUS", &[], "CANCELLED");
                    }
                }
                w.end(name);
            }
            Entry::Prop(line, Scope::Calendar) => {
                if !["VERSION", "PRODID", "METHOD"].iter().any(|n| line.is(n)) {
                    w.line(line.raw);
                }
            }
            Entry::Prop(line, Scope::Item(_)) => {
                if line.is("DTSTAMP") {
                    has_stamp = true;
                    w.raw("DTSTAMP", &[], &dtstamp);
                } else if line.is("STATUS") && method == Method::Cancel {
                    has_status = true;
                    w.raw("STATUS", &[], "CANCELLED");
                } else if line.is("ATTENDEE") || line.is("ORGANIZER") {
                    let replying = line.is("ORGANIZER") || is_me(line.value);
                    if method != Method::Reply || replying {
                        w.line(&line.without_params(&SERVER_PARAMS));
                    }
                } else if method != Method::Reply || REPLY_PROPS.iter().any(|n| line.is(n)) {
                    w.line(line.raw);
                }
            }
            Entry::Prop(line, Scope::Other) => w.line(line.raw),
            Entry::Raw(raw) => w.line(raw),
        }
    }
    w.end("VCALENDAR");
    w.finish()
}

/// The part of an object that matters to its attendees, in a canonical form
/// (property and component order, parameter order and quoting do not count).
fn meeting(text: &str) -> String {
    let unfolded = unfolded(text);
    let doc = Doc::read(&unfolded);
    // (name, property lines, sub-components) of each open component.
    let mut stack: Vec<(String, Vec<String>, Vec<String>)> = vec![(String::new(), vec![], vec![])];
    for entry in doc.entries_outside(&["VALARM", "VTIMEZONE"]) {
        match entry {
            Entry::Begin(name) => stack.push((name.to_ascii_uppercase(), vec![], vec![])),
            Entry::End(_) => {
                if stack.len() > 1
                    && let Some((name, mut props, mut subs)) = stack.pop()
                {
                    props.sort();
                    subs.sort();
                    let text = format!("{name}\n{}\n{}\nEND", props.join("\n"), subs.join("\n"));
                    if let Some(parent) = stack.last_mut() {
                        parent.2.push(text);
                    }
                }
            }
            Entry::Prop(line, _) => {
                if BOOKKEEPING.iter().any(|n| line.is(n)) {
                    continue;
                }
                if let Some(top) = stack.last_mut() {
                    top.1.push(line.canonical());
                }
            }
            Entry::Raw(raw) => {
                if let Some(top) = stack.last_mut() {
                    top.1.push((*raw).to_owned());
                }
            }
        }
    }
    let mut root: Vec<String> = stack
        .into_iter()
        .flat_map(|(_, p, s)| p.into_iter().chain(s))
        .collect();
    root.sort();
    root.join("\n")
}

/// PARTSTAT of the attendees `wanted` picks out, by instance and address.
fn partstat_map(
    text: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> BTreeMap<(Option<String>, String), Option<String>> {
    let unfolded = unfolded(text);
    let doc = Doc::read(&unfolded);
    doc.item_props()
        .filter(|(line, _)| line.is("ATTENDEE") && wanted(line.value))
        .map(|(line, i)| {
            let partstat = line.param("PARTSTAT").map(|p| p.to_ascii_uppercase());
            (
                (doc.items[i].recurrence_id.clone(), normal(line.value)),
                partstat,
            )
        })
        .collect()
}

/// An address as compared.
fn normal(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

/// Components that are scheduled (RFC 6638 §3.1).
fn is_item(name: &str) -> bool {
    name.eq_ignore_ascii_case("VEVENT") || name.eq_ignore_ascii_case("VTODO")
}

/// One content line, unfolded and split (RFC 5545 §3.1), borrowed from the text.
#[derive(Debug, Clone)]
struct Line<'a> {
    raw: &'a str,
    name: &'a str,
    /// Key and value as written (quotes kept).
    params: Vec<(&'a str, &'a str)>,
    value: &'a str,
}

impl<'a> Line<'a> {
    /// None for a line that is not `name *(";" param) ":" value`.
    fn parse(raw: &'a str) -> Option<Line<'a>> {
        let bytes = raw.as_bytes();
        let mut i = raw.find([';', ':'])?;
        let name = &raw[..i];
        let mut params = Vec::new();
        while bytes.get(i) == Some(&b';') {
            let key_start = i + 1;
            i = key_start;
            while i < bytes.len() && !matches!(bytes[i], b'=' | b';' | b':') {
                i += 1;
            }
            let key = &raw[key_start..i];
            let mut value = "";
            if bytes.get(i) == Some(&b'=') {
                let value_start = i + 1;
                i = value_start;
                let mut quoted = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'"' => quoted = !quoted,
                        b';' | b':' if !quoted => break,
                        _ => {}
                    }
                    i += 1;
                }
                value = &raw[value_start..i];
            }
            params.push((key, value));
        }
        if bytes.get(i) != Some(&b':') || name.is_empty() {
            return None;
        }
        Some(Line {
            raw,
            name,
            params,
            value: &raw[i + 1..],
        })
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// A parameter's value without its quotes.
    fn param(&self, key: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.replace('"', ""))
    }

    fn party(&self) -> Party {
        let agent = match self
            .param("SCHEDULE-AGENT")
            .map(|a| a.to_ascii_uppercase())
            .as_deref()
        {
            Some("CLIENT") => Agent::Client,
            Some("NONE") => Agent::None,
            _ => Agent::Server,
        };
        Party {
            address: self.value.trim().to_owned(),
            agent,
            status: self.param("SCHEDULE-STATUS"),
        }
    }

    /// The line with parameter `key` set to `value` (a plain token) in place,
    /// or appended; removed with `None`.
    fn with_param(&self, key: &str, value: Option<&str>) -> String {
        let mut params: Vec<(&str, &str)> = Vec::with_capacity(self.params.len() + 1);
        let mut done = false;
        for &(k, v) in &self.params {
            if k.eq_ignore_ascii_case(key) {
                if let (Some(value), false) = (value, done) {
                    params.push((key, value));
                }
                done = true;
            } else {
                params.push((k, v));
            }
        }
        if let (Some(value), false) = (value, done) {
            params.push((key, value));
        }
        render(self.name, &params, self.value)
    }

    fn without_params(&self, keys: &[&str]) -> String {
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .copied()
            .filter(|(k, _)| !keys.iter().any(|x| k.eq_ignore_ascii_case(x)))
            .collect();
        render(self.name, &params, self.value)
    }

    /// Upper-case names, parameters sorted and unquoted, addresses lower-case;
    /// on participants, the parameters replies change left out.
    fn canonical(&self) -> String {
        let participant = self.is("ATTENDEE") || self.is("ORGANIZER");
        let mut params: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| {
                !(participant && REPLY_PARAMS.iter().any(|x| k.eq_ignore_ascii_case(x)))
            })
            .map(|(k, v)| (k.to_ascii_uppercase(), v.replace('"', "")))
            .collect();
        params.sort();
        let value = if participant {
            normal(self.value)
        } else {
            self.value.to_owned()
        };
        let params: String = params.iter().map(|(k, v)| format!(";{k}={v}")).collect();
        format!("{}{params}:{value}", self.name.to_ascii_uppercase())
    }
}

fn render(name: &str, params: &[(&str, &str)], value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 16 * params.len());
    out.push_str(name);
    for (k, v) in params {
        out.push(';');
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out.push(':');
    out.push_str(value);
    out
}

/// Where a property stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// On the VCALENDAR itself.
    Calendar,
    /// Directly in the scheduled component (VEVENT, VTODO) with this index.
    Item(usize),
    /// Anywhere else (VTIMEZONE, VALARM, ...).
    Other,
}

enum Entry<'a> {
    Begin(&'a str),
    End(&'a str),
    Prop(Line<'a>, Scope),
    /// A line that does not parse: kept as it is.
    Raw(&'a str),
}

/// A scheduled component's identity within the object.
#[derive(Debug, Clone, Default)]
struct Item {
    recurrence_id: Option<String>,
}

enum Edit {
    Keep,
    Replace(String),
}

/// The content lines of an object, each with where it stands.
struct Doc<'a> {
    entries: Vec<Entry<'a>>,
    items: Vec<Item>,
}

impl<'a> Doc<'a> {
    fn read(unfolded: &'a str) -> Doc<'a> {
        let mut entries = Vec::new();
        let mut items: Vec<Item> = Vec::new();
        // (component name, its item index) of each open component.
        let mut stack: Vec<(&str, Option<usize>)> = Vec::new();
        for raw in unfolded.split("\r\n").filter(|l| !l.trim().is_empty()) {
            let keyword = |k: &str| {
                raw.get(..k.len())
                    .filter(|p| p.eq_ignore_ascii_case(k))
                    .map(|_| raw[k.len()..].trim())
            };
            if let Some(name) = keyword("BEGIN:") {
                let in_calendar = stack
                    .last()
                    .is_none_or(|(n, _)| n.eq_ignore_ascii_case("VCALENDAR"));
                let item = (in_calendar && is_item(name)).then(|| {
                    items.push(Item::default());
                    items.len() - 1
                });
                stack.push((name, item));
                entries.push(Entry::Begin(name));
            } else if let Some(name) = keyword("END:") {
                stack.pop();
                entries.push(Entry::End(name));
            } else {
                let Some(line) = Line::parse(raw) else {
                    entries.push(Entry::Raw(raw));
                    continue;
                };
                let scope = match stack.last() {
                    Some((_, Some(i))) => Scope::Item(*i),
                    Some((n, None)) if n.eq_ignore_ascii_case("VCALENDAR") => Scope::Calendar,
                    _ => Scope::Other,
                };
                if let Scope::Item(i) = scope
                    && line.is("RECURRENCE-ID")
                {
                    items[i].recurrence_id = Some(line.value.trim().to_owned());
                }
                entries.push(Entry::Prop(line, scope));
            }
        }
        Doc { entries, items }
    }

    /// The entries but those of components named in `skip` (contents included).
    fn entries_outside<'d>(&'d self, skip: &'d [&str]) -> impl Iterator<Item = &'d Entry<'a>> {
        let mut depth = 0usize;
        self.entries.iter().filter(move |entry| {
            if depth > 0 {
                match entry {
                    Entry::Begin(_) => depth += 1,
                    Entry::End(_) => depth -= 1,
                    _ => {}
                }
                return false;
            }
            if let Entry::Begin(name) = entry
                && skip.iter().any(|s| name.eq_ignore_ascii_case(s))
            {
                depth = 1;
                return false;
            }
            true
        })
    }

    /// Properties directly in scheduled components, with the component's index.
    fn item_props(&self) -> impl Iterator<Item = (&Line<'a>, usize)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Prop(line, Scope::Item(i)) => Some((line, *i)),
            _ => None,
        })
    }

    /// The object written back with each entry as `edit` says.
    fn write(&self, mut edit: impl FnMut(&Entry<'a>, &[Item]) -> Edit) -> String {
        let mut w = ContentWriter::with_capacity(4096);
        for entry in &self.entries {
            match (edit(entry, &self.items), entry) {
                (Edit::Replace(line), _) => w.line(&line),
                (Edit::Keep, Entry::Begin(name)) => w.begin(name),
                (Edit::Keep, Entry::End(name)) => w.end(name),
                (Edit::Keep, Entry::Prop(line, _)) => w.line(line.raw),
                (Edit::Keep, Entry::Raw(raw)) => w.line(raw),
            }
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEETING: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Test//EN\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:m-1\r\nDTSTAMP:20261101T000000Z\r\nSEQUENCE:0\r\nDTSTART;TZID=Europe/Paris:20261222T100000\r\nDTEND;TZID=Europe/Paris:20261222T110000\r\nSUMMARY:Team meeting\\, weekly\r\nORGANIZER;CN=Ana:mailto:ana@salon.example\r\nATTENDEE;CN=Ana;PARTSTAT=ACCEPTED:mailto:ana@salon.example\r\nATTENDEE;CN=\"Bea; B.\";PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bea@salon.example\r\nATTENDEE;SCHEDULE-AGENT=CLIENT:mailto:carl@elsewhere.example\r\nBEGIN:VALARM\r\nACTION:EMAIL\r\nTRIGGER:-PT15M\r\nATTENDEE:mailto:ana@salon.example\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    fn stamp() -> Stamp<'static> {
        Stamp {
            prodid: "-//calgate//test//EN",
            now: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
        }
    }

    fn is(address: &'static str) -> impl Fn(&str) -> bool {
        move |a: &str| same_address(a, address)
    }

    #[test]
    fn reads_organizer_and_attendees() {
        let s = scheduling(MEETING).unwrap();
        assert_eq!(s.organizer.address, "mailto:ana@salon.example");
        let addresses: Vec<&str> = s.attendees.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(
            addresses,
            [
                "mailto:ana@salon.example",
                "mailto:bea@salon.example",
                "mailto:carl@elsewhere.example"
            ],
            "the alarm's ATTENDEE is an e-mail recipient, not a participant"
        );
        assert_eq!(s.attendees[2].agent, Agent::Client);
        assert!(s.attendee("MAILTO:BEA@salon.example").is_some());
        let plain = MEETING.replace("ORGANIZER;CN=Ana:mailto:ana@salon.example\r\n", "");
        assert!(scheduling(&plain).is_none(), "no ORGANIZER: not scheduled");
        assert!(schedule_tag(&plain).is_none());
        assert!(!may_schedule("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"));
    }

    #[test]
    fn replies_and_stamps_keep_the_schedule_tag() {
        let tag = schedule_tag(MEETING).unwrap();
        assert!(tag.starts_with('"') && tag.ends_with('"'));
        // Bea accepts; her client re-serialises (other order, quoting, stamps).
        let replied = MEETING
            .replace(
                "ATTENDEE;CN=\"Bea; B.\";PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bea@salon.example",
                "ATTENDEE;RSVP=FALSE;PARTSTAT=ACCEPTED;SCHEDULE-STATUS=1.2;CN=\"Bea; B.\":MAILTO:Bea@salon.example",
            )
            .replace("DTSTAMP:20261101T000000Z", "DTSTAMP:20261102T080000Z")
            .replace("SEQUENCE:0", "SEQUENCE:1")
            .replace("TRIGGER:-PT15M", "TRIGGER:-PT5M")
            .replace("TZOFFSETTO:+0100", "TZOFFSETTO:+0100\r\nTZNAME:CET");
        assert!(!changes_meeting(MEETING, &replied));
        assert_eq!(schedule_tag(&replied), Some(tag.clone()));
        assert!(reply_changed(
            MEETING,
            &replied,
            &is("mailto:bea@salon.example")
        ));
        assert!(!reply_changed(
            MEETING,
            &replied,
            &is("mailto:ana@salon.example")
        ));
        // A new time is a new meeting.
        let moved = MEETING.replace("T100000", "T090000");
        assert!(changes_meeting(MEETING, &moved));
        assert_ne!(schedule_tag(&moved), Some(tag));
        // So is a new attendee.
        let more = MEETING.replace(
            "END:VEVENT",
            "ATTENDEE:mailto:dora@salon.example\r\nEND:VEVENT",
        );
        assert!(changes_meeting(MEETING, &more));
    }

    #[test]
    fn statuses_are_recorded_in_place() {
        let statuses = Statuses {
            attendees: vec![
                (
                    "MAILTO:bea@salon.example".into(),
                    Some(status::DELIVERED.into()),
                ),
                ("mailto:nobody@else.example".into(), Some("5.2".into())),
            ],
            organizer: None,
        };
        let out = unfolded(&record_statuses(MEETING, &statuses).unwrap());
        assert!(
            out.contains(
                "ATTENDEE;CN=\"Bea; B.\";PARTSTAT=NEEDS-ACTION;RSVP=TRUE;SCHEDULE-STATUS=1.2:mailto:bea@salon.example\r\n"
            ),
            "{out}"
        );
        assert!(out.contains("SUMMARY:Team meeting\\, weekly\r\n"), "{out}");
        assert!(out.contains("BEGIN:VALARM\r\n"), "{out}");
        assert_eq!(out.matches("SCHEDULE-STATUS").count(), 1, "{out}");
        assert_eq!(record_statuses(&out, &statuses), None, "already recorded");
        // Removed, and on the organizer.
        let back = Statuses {
            attendees: vec![("mailto:bea@salon.example".into(), None)],
            organizer: Some(Some("1.2".into())),
        };
        let out = unfolded(&record_statuses(&out, &back).unwrap());
        assert!(
            out.contains("ORGANIZER;CN=Ana;SCHEDULE-STATUS=1.2:mailto:ana@salon.example\r\n"),
            "{out}"
        );
        assert!(out.contains("RSVP=TRUE:mailto:bea@salon.example"), "{out}");
    }

    #[test]
    fn replies_survive_a_stale_write() {
        let replied = MEETING.replace("PARTSTAT=NEEDS-ACTION", "PARTSTAT=DECLINED");
        // The organizer's client still has NEEDS-ACTION and changes the summary.
        let stale = MEETING.replace("Team meeting", "Team meeting (room 2)");
        let keep_others = |a: &str| !same_address(a, "mailto:ana@salon.example");
        let merged = keep_replies(&stale, &replied, &keep_others).unwrap();
        assert!(merged.contains("PARTSTAT=DECLINED"), "{merged}");
        assert!(merged.contains("room 2"), "{merged}");
        assert_eq!(keep_replies(&merged, &replied, &keep_others), None);
    }

    #[test]
    fn messages() {
        let request = message(MEETING, Method::Request, &|_| false, stamp());
        assert!(request.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calgate//test//EN\r\nMETHOD:REQUEST\r\nBEGIN:VTIMEZONE\r\n"), "{request}");
        assert!(
            request.contains("DTSTAMP:20270115T080000Z\r\n"),
            "{request}"
        );
        assert!(
            !request.contains("VALARM"),
            "alarms are the organizer's: {request}"
        );
        assert!(!request.contains("SCHEDULE-AGENT"), "{request}");
        assert!(
            request.contains("ATTENDEE:mailto:carl@elsewhere.example\r\n"),
            "{request}"
        );
        assert!(
            request.contains("SUMMARY:Team meeting\\, weekly\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with("END:VEVENT\r\nEND:VCALENDAR\r\n"),
            "{request}"
        );
        let parsed = crate::ical::parse::parse(&request).unwrap();
        assert_eq!(parsed.events[0].uid, "m-1");

        let cancel = message(MEETING, Method::Cancel, &|_| false, stamp());
        assert!(
            cancel.contains("METHOD:CANCEL\r\n") && cancel.contains("STATUS:CANCELLED\r\n"),
            "{cancel}"
        );

        let replied = MEETING.replace("PARTSTAT=NEEDS-ACTION", "PARTSTAT=ACCEPTED");
        let reply = message(
            &replied,
            Method::Reply,
            &is("mailto:bea@salon.example"),
            stamp(),
        );
        assert!(reply.contains("METHOD:REPLY\r\n"), "{reply}");
        assert!(
            reply.contains("PARTSTAT=ACCEPTED;RSVP=TRUE:mailto:bea@salon.example\r\n"),
            "{reply}"
        );
        assert_eq!(reply.matches("ATTENDEE").count(), 1, "{reply}");
        assert!(
            reply.contains("ORGANIZER;CN=Ana:mailto:ana@salon.example\r\n"),
            "{reply}"
        );
        assert!(
            reply.contains("DTSTART;TZID=Europe/Paris:20261222T100000\r\n"),
            "{reply}"
        );
        assert!(
            reply.contains("SUMMARY:Team meeting\\, weekly\r\n"),
            "{reply}"
        );
    }

    #[test]
    fn lines_parse_with_quotes_and_garbage_does_not_panic() {
        let line = Line::parse("ATTENDEE;CN=\"a:b;c\";ROLE=CHAIR:mailto:x@y").unwrap();
        assert_eq!(line.params, [("CN", "\"a:b;c\""), ("ROLE", "CHAIR")]);
        assert_eq!(line.value, "mailto:x@y");
        for bad in [
            "",
            ":",
            ";;;",
            "NAME",
            "X;\"",
            "ATTENDEE;CN=\"open:mailto:x",
        ] {
            assert!(Line::parse(bad).is_none_or(|l| !l.name.is_empty()), "{bad}");
        }
        for text in [
            "garbage",
            "BEGIN:VEVENT\r\nEND:VCALENDAR\r\nEND:X",
            "ORGANIZER",
        ] {
            let _ = scheduling(text);
            let _ = schedule_tag(text);
            let _ = message(text, Method::Cancel, &|_| true, stamp());
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Objects made of plausible and broken content lines.
        fn object() -> impl Strategy<Value = String> {
            let line = prop_oneof![
                Just("BEGIN:VCALENDAR".to_owned()),
                Just("BEGIN:VEVENT".to_owned()),
                Just("END:VEVENT".to_owned()),
                Just("BEGIN:VALARM".to_owned()),
                Just("END:VALARM".to_owned()),
                Just("UID:p-1".to_owned()),
                Just("RECURRENCE-ID:20261222T090000Z".to_owned()),
                Just("ORGANIZER;CN=\"A: b\":mailto:a@x.example".to_owned()),
                Just("ATTENDEE;PARTSTAT=ACCEPTED:mailto:b@x.example".to_owned()),
                Just("ATTENDEE;SCHEDULE-STATUS=1.2;CN=\"c;d\":MAILTO:c@x.example".to_owned()),
                "[A-Z;=:\"a-z@.-]{0,30}",
                "\\PC{0,30}",
            ];
            prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\r\n"))
        }

        proptest! {
            #[test]
            fn statuses_never_change_the_meeting(text in object(), code in "[0-9]\\.[0-9]") {
                let statuses = Statuses {
                    attendees: vec![
                        ("mailto:b@x.example".into(), Some(code.clone())),
                        ("mailto:c@x.example".into(), None),
                    ],
                    organizer: Some(Some(code)),
                };
                let recorded = record_statuses(&text, &statuses);
                let after = recorded.as_deref().unwrap_or(&text);
                prop_assert_eq!(schedule_tag(after), schedule_tag(&text));
                prop_assert!(!changes_meeting(&text, after));
                prop_assert_eq!(scheduling(after).map(|s| s.attendees.len()), scheduling(&text).map(|s| s.attendees.len()));
                let _ = message(after, Method::Reply, &|a| same_address(a, "mailto:b@x.example"), stamp());
                let _ = keep_replies(after, &text, &|_| true);
            }
        }
    }
}
