//! Reads a request body into a small owned tree with resolved namespaces, refusing hostile
//! or malformed input before any DAV meaning is looked for: non-UTF-8 bytes, DOCTYPE (so no
//! entity declarations, no XXE, no billion laughs), undefined entities, undeclared prefixes,
//! mismatched or missing end tags, more than one root, nesting deeper than [`MAX_DEPTH`]
//! and more than [`MAX_ELEMENTS`] elements. Request bodies are small (the HTTP layer caps
//! their size), so a tree is simpler than streaming and costs little.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};

use super::error::XmlError;
use super::names::PropName;
use super::value::{PropValue, XmlAttr, XmlElement};

/// Deepest element nesting accepted. Real DAV bodies stay under 10; a calendar-query with
/// nested comp-, prop- and param-filters is about 8.
pub const MAX_DEPTH: usize = 64;
/// Most elements accepted in one body (a multiget of a few thousand hrefs fits easily).
pub const MAX_ELEMENTS: usize = 100_000;

/// An element of the request, with the byte offset of its `<` for error messages.
#[derive(Debug)]
pub(crate) struct Node {
    pub name: PropName,
    pub attrs: Vec<XmlAttr>,
    pub children: Vec<Node>,
    pub text: String,
    pub offset: usize,
}

impl Node {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name.is(ns, name)
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// The required child `ns` + `name`.
    pub fn require(&self, ns: &str, name: &str) -> Result<&Node, XmlError> {
        self.child(ns, name)
            .ok_or_else(|| XmlError::MissingElement {
                parent: self.name.clone(),
                child: PropName::new(ns, name),
                offset: self.offset,
            })
    }

    /// The value of the no-namespace attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name.ns.is_empty() && a.name.name == name)
            .map(|a| a.value.as_str())
    }

    /// The required no-namespace attribute `name`.
    pub fn require_attr(&self, name: &'static str) -> Result<&str, XmlError> {
        self.attr(name).ok_or_else(|| XmlError::MissingAttribute {
            element: self.name.clone(),
            attribute: name,
            offset: self.offset,
        })
    }

    /// The element's text with surrounding XML whitespace removed.
    pub fn trimmed_text(&self) -> &str {
        self.text.trim_matches(is_xml_space)
    }

    pub fn to_element(&self) -> XmlElement {
        let v = self.to_value();
        XmlElement {
            name: self.name.clone(),
            attrs: v.attrs,
            children: v.children,
            text: v.text,
        }
    }

    pub fn to_value(&self) -> PropValue {
        let children: Vec<XmlElement> = self.children.iter().map(Node::to_element).collect();
        // Indentation between child elements is not content.
        let text = if !children.is_empty() && self.trimmed_text().is_empty() {
            String::new()
        } else {
            self.text.clone()
        };
        PropValue {
            attrs: self.attrs.clone(),
            children,
            text,
        }
    }
}

pub(crate) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Parses `body` into its root element; `Ok(None)` when the body is empty or only
/// whitespace (an empty PROPFIND means allprop, an empty MKCALENDAR sets nothing).
pub(crate) fn parse_document(body: &[u8]) -> Result<Option<Node>, XmlError> {
    if body.starts_with(&[0xFF, 0xFE]) || body.starts_with(&[0xFE, 0xFF]) {
        return Err(XmlError::Utf16);
    }
    // Offsets in errors count from the body as received, so the BOM is added back.
    let (bytes, base) = match body.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        Some(rest) => (rest, 3),
        None => (body, 0),
    };
    let text = std::str::from_utf8(bytes).map_err(|e| XmlError::NotUtf8 {
        offset: base + e.valid_up_to(),
    })?;
    if text.trim_matches(is_xml_space).is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        reader: NsReader::from_str(text),
        base,
        ascii: bytes.is_ascii(),
        stack: Vec::new(),
        root: None,
        elements: 0,
    };
    parser.run()?;
    parser.root.map(Some).ok_or(XmlError::NoRoot)
}

struct Parser<'i> {
    reader: NsReader<&'i [u8]>,
    base: usize,
    ascii: bool,
    stack: Vec<Node>,
    root: Option<Node>,
    elements: usize,
}

impl<'i> Parser<'i> {
    fn run(&mut self) -> Result<(), XmlError> {
        loop {
            let offset = self.pos();
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(e) => return Err(self.quick_xml_error(e)),
            };
            match event {
                Event::Start(e) => {
                    let node = self.open(&e, offset)?;
                    self.stack.push(node);
                }
                Event::Empty(e) => {
                    let node = self.open(&e, offset)?;
                    self.close(node);
                }
                Event::End(_) => {
                    // quick-xml has already checked the name against the open element.
                    match self.stack.pop() {
                        Some(node) => self.close(node),
                        None => {
                            return Err(XmlError::Syntax {
                                offset,
                                message: "end tag without a start tag".into(),
                            });
                        }
                    }
                }
                Event::Text(t) => self.text(&t.xml10_content(), offset)?,
                Event::CData(c) => self.text(&c.xml10_content(), offset)?,
                Event::GeneralRef(r) => {
                    let resolved = resolve_reference(&r, offset)?;
                    let mut buf = [0u8; 4];
                    self.text(resolved.encode_utf8(&mut buf), offset)?;
                }
                Event::DocType(_) => return Err(XmlError::Doctype { offset }),
                Event::Decl(d) => {
                    if let Some(Ok(encoding)) = d.encoding() {
                        let utf8 = ["utf-8", "utf8", "us-ascii", "ascii"]
                            .iter()
                            .any(|e| encoding.eq_ignore_ascii_case(e));
                        // An ASCII body reads the same in any ASCII-compatible charset.
                        if !utf8 && !self.ascii {
                            return Err(XmlError::UnsupportedEncoding {
                                encoding: encoding.into_owned(),
                            });
                        }
                    }
                }
                Event::Comment(_) | Event::PI(_) => {}
                Event::Eof => {
                    return match self.stack.pop() {
                        Some(open) => Err(XmlError::Unclosed {
                            name: open.name.to_string(),
                            offset: open.offset,
                        }),
                        None => Ok(()),
                    };
                }
            }
        }
    }

    fn pos(&self) -> usize {
        self.base + usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    fn open(&mut self, e: &BytesStart<'_>, offset: usize) -> Result<Node, XmlError> {
        if self.root.is_some() {
            return Err(XmlError::SecondRoot { offset });
        }
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(XmlError::TooManyElements {
                limit: MAX_ELEMENTS,
                offset,
            });
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(XmlError::TooDeep {
                limit: MAX_DEPTH,
                offset,
            });
        }
        let resolver = self.reader.resolver();
        let (ns, local) = resolver.resolve_element(e.name());
        let name = PropName::new(namespace(ns, offset)?, local.as_ref());
        let mut attrs = Vec::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|err| XmlError::Syntax {
                offset,
                message: err.to_string(),
            })?;
            let key = attr.key;
            // Namespace declarations are consumed by the resolver, not content.
            if key.as_namespace_binding().is_some() {
                continue;
            }
            let (ns, local) = resolver.resolve_attribute(key);
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| XmlError::Syntax {
                    offset,
                    message: format!("attribute {}: {err}", key.as_ref()),
                })?;
            attrs.push(XmlAttr {
                name: PropName::new(namespace(ns, offset)?, local.as_ref()),
                value: value.into_owned(),
            });
        }
        Ok(Node {
            name,
            attrs,
            children: Vec::new(),
            text: String::new(),
            offset,
        })
    }

    fn close(&mut self, node: Node) {
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(node),
            None => self.root = Some(node),
        }
    }

    fn text(&mut self, text: &str, offset: usize) -> Result<(), XmlError> {
        match self.stack.last_mut() {
            Some(node) => {
                node.text.push_str(text);
                Ok(())
            }
            None if text.chars().all(is_xml_space) => Ok(()),
            None => Err(XmlError::TextOutsideRoot { offset }),
        }
    }

    fn quick_xml_error(&self, e: quick_xml::Error) -> XmlError {
        use quick_xml::errors::{Error, IllFormedError};
        let offset =
            self.base + usize::try_from(self.reader.error_position()).unwrap_or(usize::MAX);
        match e {
            Error::IllFormed(IllFormedError::MismatchedEndTag { expected, found }) => {
                XmlError::MismatchedEndTag {
                    expected,
                    found,
                    offset,
                }
            }
            Error::Namespace(quick_xml::name::NamespaceError::UnknownPrefix(prefix)) => {
                XmlError::UndeclaredPrefix { prefix, offset }
            }
            other => XmlError::Syntax {
                offset,
                message: other.to_string(),
            },
        }
    }
}

fn namespace(ns: ResolveResult<'_>, offset: usize) -> Result<String, XmlError> {
    match ns {
        ResolveResult::Bound(ns) => Ok(ns.0.to_string()),
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Unknown(prefix) => Err(XmlError::UndeclaredPrefix { prefix, offset }),
    }
}

/// `&amp;`-style and `&#NN;` references. Nothing else can be defined without a DOCTYPE, and
/// DOCTYPE is refused, so any other name is an error rather than something to expand.
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>, offset: usize) -> Result<char, XmlError> {
    let name: &str = r;
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(c),
            _ => Err(XmlError::BadCharRef {
                reference: name.to_string(),
                offset,
            }),
        };
    }
    match name {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => Err(XmlError::UndefinedEntity {
            name: name.to_string(),
            offset,
        }),
    }
}

/// XML 1.0 `Char`: what a character reference may name.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}
