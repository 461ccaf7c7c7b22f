//! Encoder for PostgreSQL's COPY text format: one line per row, tab-separated columns,
//! `\N` for NULL, and backslash escapes for the characters that would break the framing.

use std::fmt::Write as _;

/// Builds COPY text rows into one buffer.
#[derive(Default)]
pub struct CopyBuffer {
    data: Vec<u8>,
    rows: usize,
    columns_in_row: usize,
}

impl CopyBuffer {
    pub fn with_capacity(bytes: usize) -> Self {
        Self { data: Vec::with_capacity(bytes), rows: 0, columns_in_row: 0 }
    }

    /// Appends the complete rows of another buffer.
    pub fn append(&mut self, other: &CopyBuffer) {
        self.data.extend_from_slice(&other.data);
        self.rows += other.rows;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn len_bytes(&self) -> usize {
        self.data.len()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn separator(&mut self) {
        if self.columns_in_row > 0 {
            self.data.push(b'\t');
        }
        self.columns_in_row += 1;
    }

    pub fn null(&mut self) {
        self.separator();
        self.data.extend_from_slice(b"\\N");
    }

    /// A text value. NUL characters, which PostgreSQL text cannot hold, are dropped.
    pub fn text(&mut self, value: &str) {
        self.separator();
        escape_into(&mut self.data, value);
    }

    pub fn opt_text(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn display(&mut self, value: impl std::fmt::Display) {
        self.separator();
        let mut s = String::new();
        let _ = write!(s, "{value}");
        escape_into(&mut self.data, &s);
    }

    pub fn opt_display<T: std::fmt::Display>(&mut self, value: Option<T>) {
        match value {
            Some(v) => self.display(v),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, value: Option<bool>) {
        match value {
            Some(true) => self.raw("t"),
            Some(false) => self.raw("f"),
            None => self.null(),
        }
    }

    /// A `bytea` value in hex form.
    pub fn bytea(&mut self, value: &[u8]) {
        self.separator();
        self.data.extend_from_slice(b"\\\\x");
        for byte in value {
            let _ = write!(HexSink(&mut self.data), "{byte:02x}");
        }
    }

    /// A one-dimensional `text[]` array literal.
    pub fn text_array<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) {
        let mut literal = String::from("{");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                literal.push(',');
            }
            literal.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    literal.push('\\');
                }
                literal.push(c);
            }
            literal.push('"');
        }
        literal.push('}');
        self.text(&literal);
    }

    /// A value already known to need no escaping (numbers, timestamps we formatted).
    pub fn raw(&mut self, value: &str) {
        self.separator();
        self.data.extend_from_slice(value.as_bytes());
    }

    pub fn end_row(&mut self) {
        self.data.push(b'\n');
        self.rows += 1;
        self.columns_in_row = 0;
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.rows = 0;
        self.columns_in_row = 0;
    }
}

struct HexSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for HexSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn escape_into(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_framing_characters_and_nulls() {
        let mut buf = CopyBuffer::default();
        buf.text("a\tb\nc\\d\0e");
        buf.null();
        buf.text_array(["sg-1", "we\"ird"]);
        buf.bytea(&[0xab, 0x01]);
        buf.end_row();
        assert_eq!(
            std::str::from_utf8(buf.as_bytes()).unwrap(),
            "a\\tb\\nc\\\\de\t\\N\t{\"sg-1\",\"we\\\\\"ird\"}\t\\\\xab01\n"
        );
        assert_eq!(buf.rows(), 1);
    }
}
