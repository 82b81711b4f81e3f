//! Why a request body was refused. Every message names the problem and, where there is
//! one, the byte offset in the body as received (a UTF-8 byte order mark included), so a
//! 400 answer or a log line is enough to find the fault in a captured request.

use super::names::PropName;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is not UTF-8: invalid byte sequence at byte {offset}")]
    NotUtf8 { offset: usize },

    #[error("the body starts with a UTF-16 byte order mark; only UTF-8 is accepted")]
    Utf16,

    #[error(
        "the XML declaration names encoding \"{encoding}\" and the body is not plain ASCII; \
         only UTF-8 is accepted"
    )]
    UnsupportedEncoding { encoding: String },

    #[error("the body is empty; expected {expected}")]
    EmptyBody { expected: &'static str },

    #[error("DOCTYPE declarations are not accepted (at byte {offset})")]
    Doctype { offset: usize },

    #[error(
        "undefined entity &{name}; at byte {offset} (only &amp; &lt; &gt; &quot; &apos; and \
         character references are accepted)"
    )]
    UndefinedEntity { name: String, offset: usize },

    #[error("invalid character reference &{reference}; at byte {offset}")]
    BadCharRef { reference: String, offset: usize },

    #[error("malformed XML at byte {offset}: {message}")]
    Syntax { offset: usize, message: String },

    #[error("end tag </{found}> at byte {offset} does not match the open element <{expected}>")]
    MismatchedEndTag {
        expected: String,
        found: String,
        offset: usize,
    },

    #[error("element <{name}> opened at byte {offset} is not closed before the end of the body")]
    Unclosed { name: String, offset: usize },

    #[error("undeclared namespace prefix \"{prefix}\" at byte {offset}")]
    UndeclaredPrefix { prefix: String, offset: usize },

    #[error("elements are nested deeper than {limit} levels (at byte {offset})")]
    TooDeep { limit: usize, offset: usize },

    #[error("the body has more than {limit} elements (at byte {offset})")]
    TooManyElements { limit: usize, offset: usize },

    #[error("the body has no root element")]
    NoRoot,

    #[error("text outside the root element at byte {offset}")]
    TextOutsideRoot { offset: usize },

    #[error("a second root element at byte {offset}")]
    SecondRoot { offset: usize },

    #[error("expected {expected} as the root element, found <{found}>")]
    WrongRoot {
        expected: &'static str,
        found: PropName,
    },

    #[error("<{parent}> at byte {offset} has no <{child}>")]
    MissingElement {
        parent: PropName,
        child: PropName,
        offset: usize,
    },

    #[error("<{element}> at byte {offset} has no {attribute} attribute")]
    MissingAttribute {
        element: PropName,
        attribute: &'static str,
        offset: usize,
    },

    /// The brief's wording: `time-range start "2026-13-01" is not a UTC date-time ...`.
    #[error(
        "{element} {attribute} \"{value}\" is not a UTC date-time (YYYYMMDDTHHMMSSZ) at byte {offset}"
    )]
    BadDateTime {
        element: String,
        attribute: &'static str,
        value: String,
        offset: usize,
    },

    #[error("<{element}> at byte {offset} is \"{value}\"; expected {expected}")]
    BadValue {
        element: PropName,
        value: String,
        expected: &'static str,
        offset: usize,
    },

    #[error("<{element}> at byte {offset}: {problem}")]
    Invalid {
        element: PropName,
        problem: &'static str,
        offset: usize,
    },
}

impl XmlError {
    /// Byte offset of the fault in the body, when the error has one.
    pub fn offset(&self) -> Option<usize> {
        use XmlError::*;
        match self {
            NotUtf8 { offset }
            | Doctype { offset }
            | UndefinedEntity { offset, .. }
            | BadCharRef { offset, .. }
            | Syntax { offset, .. }
            | MismatchedEndTag { offset, .. }
            | Unclosed { offset, .. }
            | UndeclaredPrefix { offset, .. }
            | TooDeep { offset, .. }
            | TooManyElements { offset, .. }
            | TextOutsideRoot { offset }
            | SecondRoot { offset }
            | MissingElement { offset, .. }
            | MissingAttribute { offset, .. }
            | BadDateTime { offset, .. }
            | BadValue { offset, .. }
            | Invalid { offset, .. } => Some(*offset),
            Utf16 | UnsupportedEncoding { .. } | EmptyBody { .. } | NoRoot | WrongRoot { .. } => {
                None
            }
        }
    }
}
