//! Owned property values, as set by PROPPATCH, MKCALENDAR and extended MKCOL, kept whole so
//! dead properties (Apple's `calendar-color` with its `symbolic-color` attribute, unknown
//! client properties) can be stored and written back unchanged by [`super::write`].

use super::names::PropName;

/// An attribute. Unprefixed attributes are in no namespace (`name.ns` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlAttr {
    pub name: PropName,
    pub value: String,
}

/// An element with its attributes, child elements and character content.
///
/// `text` is the element's own character data (entities and CDATA resolved, line ends
/// normalised as XML requires). When the element has children, whitespace-only text is
/// dropped as indentation; otherwise text is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XmlElement {
    pub name: PropName,
    pub attrs: Vec<XmlAttr>,
    pub children: Vec<XmlElement>,
    pub text: String,
}

impl XmlElement {
    /// The first child named `ns` + `name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&XmlElement> {
        self.children.iter().find(|c| c.name.is(ns, name))
    }

    /// The value of the no-namespace attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name.ns.is_empty() && a.name.name == name)
            .map(|a| a.value.as_str())
    }
}

/// A property's value: the content of the property element (its attributes, text and child
/// elements), without the element's own name.
///
/// `<D:displayname>Work</D:displayname>` has `text == "Work"`;
/// `<C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>`
/// has one child; `<ICAL:calendar-color symbolic-color="red">#FB0055FF</ICAL:calendar-color>`
/// has an attribute and text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropValue {
    pub attrs: Vec<XmlAttr>,
    pub children: Vec<XmlElement>,
    pub text: String,
}

impl PropValue {
    /// A plain text value.
    pub fn text(text: impl Into<String>) -> Self {
        PropValue {
            text: text.into(),
            ..Default::default()
        }
    }

    /// No attributes, no children and no text (`<D:displayname/>`).
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty() && self.children.is_empty() && self.text.is_empty()
    }

    /// The first child element named `ns` + `name`.
    pub fn child(&self, ns: &str, name: &str) -> Option<&XmlElement> {
        self.children.iter().find(|c| c.name.is(ns, name))
    }
}
