//! Namespaces and qualified (namespace + local name) element and property names.

use std::fmt;

/// WebDAV (RFC 4918).
pub const NS_DAV: &str = "DAV:";
/// CalDAV (RFC 4791).
pub const NS_CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
/// CardDAV (RFC 6352): only named so its reports can be refused precisely.
pub const NS_CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
/// Apple's CalendarServer extensions (`getctag`, `pushkey`, ...).
pub const NS_CALENDARSERVER: &str = "http://calendarserver.org/ns/";
/// Apple iCal properties (`calendar-color`, `calendar-order`, ...).
pub const NS_APPLE_ICAL: &str = "http://apple.com/ns/ical/";
/// Apple's MobileMe namespace (`bulk-requests`), asked for by macOS Calendar.
pub const NS_ME_COM: &str = "http://me.com/_namespace/";

/// A namespaced XML name: a property (`DAV:` + `getetag`), an element, an attribute or a
/// precondition. `ns` is empty for names in no namespace.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PropName {
    pub ns: String,
    pub name: String,
}

impl PropName {
    pub fn new(ns: impl Into<String>, name: impl Into<String>) -> Self {
        PropName {
            ns: ns.into(),
            name: name.into(),
        }
    }

    pub fn dav(name: impl Into<String>) -> Self {
        Self::new(NS_DAV, name)
    }

    pub fn caldav(name: impl Into<String>) -> Self {
        Self::new(NS_CALDAV, name)
    }

    pub fn calendarserver(name: impl Into<String>) -> Self {
        Self::new(NS_CALENDARSERVER, name)
    }

    pub fn apple(name: impl Into<String>) -> Self {
        Self::new(NS_APPLE_ICAL, name)
    }

    /// True when this is `name` in namespace `ns`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// Clark notation, `{DAV:}getetag` (or just the local name when in no namespace): the
    /// unambiguous form used in logs and fixtures.
    pub fn clark(&self) -> String {
        if self.ns.is_empty() {
            self.name.clone()
        } else {
            format!("{{{}}}{}", self.ns, self.name)
        }
    }
}

/// The conventional prefix for a well-known namespace, used only for human-readable display.
fn display_prefix(ns: &str) -> Option<&'static str> {
    match ns {
        NS_DAV => Some("D"),
        NS_CALDAV => Some("C"),
        NS_CARDDAV => Some("CARD"),
        NS_CALENDARSERVER => Some("CS"),
        NS_APPLE_ICAL => Some("ICAL"),
        _ => None,
    }
}

/// `D:propfind`, `C:calendar-query`, `CS:getctag`; unknown namespaces in Clark notation.
/// Error messages use this form because it reads like what clients send.
impl fmt::Display for PropName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match display_prefix(&self.ns) {
            Some(prefix) => write!(f, "{prefix}:{}", self.name),
            None => f.write_str(&self.clark()),
        }
    }
}

impl fmt::Debug for PropName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.clark())
    }
}
