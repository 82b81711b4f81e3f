//! RFC 5545 content-line writer: escaping, parameter quoting and folding.
//!
//! We write iCalendar ourselves rather than through the `icalendar` crate's builder,
//! which inserts a DTSTAMP and a random UID into every component it writes (invalid
//! inside VTIMEZONE, and unstable across renders) and leaves `X-` text properties
//! unescaped. Parsing stays with the `icalendar` crate.

/// Content lines are folded so that no line exceeds this many octets (CRLF excluded).
pub const FOLD_OCTETS: usize = 75;

/// Appends content lines to a string buffer.
#[derive(Debug, Default)]
pub struct ContentWriter {
    out: String,
    line: String,
}

impl ContentWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        ContentWriter {
            out: String::with_capacity(bytes),
            line: String::with_capacity(256),
        }
    }

    pub fn begin(&mut self, component: &str) {
        self.raw("BEGIN", &[], component);
    }

    pub fn end(&mut self, component: &str) {
        self.raw("END", &[], component);
    }

    /// A property as the `icalendar` parser read it, written back (text values
    /// re-escaped as they were read).
    pub fn parsed_property(&mut self, p: &icalendar::parser::Property<'_>) {
        let params: Vec<(String, String)> = p
            .params
            .iter()
            .map(|x| {
                (
                    x.key.as_str().to_owned(),
                    x.val
                        .as_ref()
                        .map(|v| v.as_str().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let name = p.name.as_str();
        let is_text = matches!(
            name,
            "SUMMARY" | "DESCRIPTION" | "LOCATION" | "COMMENT" | "CONTACT"
        );
        if is_text {
            self.text(name, &refs, p.val.as_str());
        } else {
            self.raw(name, &refs, p.val.as_str());
        }
    }

    /// A parsed component with everything in it, written back.
    pub fn parsed_component(&mut self, c: &icalendar::parser::Component<'_>) {
        self.begin(c.name.as_str());
        for p in &c.properties {
            self.parsed_property(p);
        }
        for sub in &c.components {
            self.parsed_component(sub);
        }
        self.end(c.name.as_str());
    }

    /// A property whose value is already in iCalendar syntax (dates, numbers, enums).
    pub fn raw(&mut self, name: &str, params: &[(&str, &str)], value: &str) {
        self.start_line(name, params);
        self.line.push_str(value);
        self.flush_line();
    }

    /// A TEXT property: the value is escaped per RFC 5545 §3.3.11.
    pub fn text(&mut self, name: &str, params: &[(&str, &str)], value: &str) {
        self.start_line(name, params);
        escape_text_into(&mut self.line, value);
        self.flush_line();
    }

    /// A whole content line in iCalendar syntax (unfolded, without its line end),
    /// folded as written here.
    pub fn line(&mut self, line: &str) {
        self.line.clear();
        self.line.push_str(line);
        self.flush_line();
    }

    /// Content lines written earlier by a writer, appended as they are.
    pub fn rendered(&mut self, lines: &str) {
        self.out.push_str(lines);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn start_line(&mut self, name: &str, params: &[(&str, &str)]) {
        self.line.clear();
        self.line.push_str(name);
        for (key, value) in params {
            self.line.push(';');
            self.line.push_str(key);
            self.line.push('=');
            push_param_value(&mut self.line, value);
        }
        self.line.push(':');
    }

    /// Moves the pending line to the output, folded at 75 octets on char boundaries.
    fn flush_line(&mut self) {
        let mut octets = 0;
        for ch in self.line.chars() {
            let len = ch.len_utf8();
            if octets + len > FOLD_OCTETS {
                self.out.push_str("\r\n ");
                octets = 1;
            }
            self.out.push(ch);
            octets += len;
        }
        self.out.push_str("\r\n");
    }
}

/// Escapes TEXT: backslash, semicolon, comma and newlines; drops other controls
/// (RFC 5545 allows none but HTAB in TEXT).
pub fn escape_text_into(out: &mut String, value: &str) {
    let mut chars = value.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push_str("\\n");
                }
            }
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// Parameter values cannot contain DQUOTE or controls; quote when they hold `:;,`.
fn push_param_value(out: &mut String, value: &str) {
    let clean: String = value
        .chars()
        .filter(|c| *c != '"' && !c.is_control())
        .collect();
    if clean.contains([':', ';', ',']) {
        out.push('"');
        out.push_str(&clean);
        out.push('"');
    } else {
        out.push_str(&clean);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> String {
        let mut w = ContentWriter::default();
        w.text(name, &[], value);
        w.finish()
    }

    #[test]
    fn escapes_text() {
        assert_eq!(
            one("SUMMARY", "a,b;c\\d\r\ne\nf\u{7}"),
            "SUMMARY:a\\,b\\;c\\\\d\\ne\\nf\r\n"
        );
    }

    #[test]
    fn folds_at_75_octets_without_splitting_characters() {
        let text = "é".repeat(100) + &"🎉".repeat(40);
        let out = one("DESCRIPTION", &text);
        for line in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= FOLD_OCTETS, "{} octets: {line}", line.len());
        }
        let unfolded = out.replace("\r\n ", "");
        assert_eq!(unfolded, format!("DESCRIPTION:{text}\r\n"));
    }

    #[test]
    fn quotes_parameters() {
        let mut w = ContentWriter::default();
        w.raw(
            "X-A",
            &[("CN", "Doe, \"J\""), ("TZID", "Europe/Paris")],
            "1",
        );
        assert_eq!(w.finish(), "X-A;CN=\"Doe, J\";TZID=Europe/Paris:1\r\n");
    }
}
