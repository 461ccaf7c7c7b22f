//! Streams records out of JSON log files without holding a file in memory. One walker serves
//! every JSON shape Skywarden imports, in any number of top-level values (one document, or
//! JSON lines):
//! - S3 CloudTrail delivery `{"Records": [event, ...]}` and a bare array `[event, ...]`;
//! - LookupEvents output `{"Events": [{"CloudTrailEvent": "<event JSON>"}, ...]}`;
//! - CloudWatch Logs subscription envelopes `{"owner": ..., "logEvents": [{"message": ...}]}`
//!   and `aws logs filter-log-events` output `{"events": [...]}`;
//! - one event per line, and `{"message": "<flow log line>"}` wrappers.
//!
//! A byte scanner finds where each record starts and ends (tracking strings, escapes and
//! nesting) in a buffer filled by large reads; each record is then handed to serde_json as a
//! slice. This is several times faster than deserialising from a reader byte by byte, and
//! memory stays bounded by the largest record, not the file; a record larger than the limit
//! (one event, one JSON line, one array element) is reported and skipped without being held.

use std::fmt;
use std::io::{self, Read};

use serde::Deserialize;

/// Receives what the walker finds.
pub trait JsonSink {
    /// A CloudTrail event (or a LookupEvents item wrapping one), as its JSON text. Its bounds
    /// are known but its content is not yet checked: the event parser does that, so one
    /// malformed record costs only itself.
    fn event(&mut self, raw: &str);
    /// A CloudWatch Logs message: a flow log line or an event's JSON.
    fn log_message(&mut self, message: &str, timestamp_ms: Option<i64>, owner: Option<&str>);
    /// A record that is not log data (a CloudTrail digest file, say).
    fn skipped(&mut self, what: &'static str);
    /// A top-level value that is none of the known shapes.
    fn unrecognised(&mut self, description: String);
    /// A record larger than the limit, at a byte offset of the (decompressed) content: skipped
    /// without being read into memory; the walk goes on after it.
    fn too_large(&mut self, offset: u64, line: usize, limit: usize) {
        self.unrecognised(too_large_message(offset, line, limit));
    }
}

/// How a record over the size limit is described.
pub fn too_large_message(offset: u64, line: usize, limit: usize) -> String {
    format!("the record at byte {offset} (line {line}) is larger than the limit of {limit} bytes; skipped")
}

/// Why a walk stopped early.
#[derive(Debug)]
pub enum WalkError {
    Io(io::Error),
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A value over the record size limit where it cannot be skipped (an object key, say).
    TooLarge {
        offset: u64,
        line: usize,
        limit: usize,
    },
}

impl WalkError {
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io(_))
    }

    pub fn line(&self) -> usize {
        match self {
            Self::Syntax { line, .. } | Self::TooLarge { line, .. } => *line,
            Self::Io(_) => 0,
        }
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => write!(f, "{error}"),
            Self::Syntax { line, column, message } => write!(f, "{message} at line {line} column {column}"),
            Self::TooLarge { offset, line, limit } => {
                write!(f, "a value at byte {offset} (line {line}) is larger than the limit of {limit} bytes")
            }
        }
    }
}

impl std::error::Error for WalkError {}

/// Largest record the scanner holds by default: CloudTrail events are under 256 KB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

/// Walks every top-level JSON value in `reader`. A syntax error stops the walk and is returned
/// (with its line and column); what came before it has already reached the sink. Records are
/// limited to [`DEFAULT_MAX_RECORD_BYTES`].
pub fn walk<R: Read>(reader: R, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
    walk_limited(reader, DEFAULT_MAX_RECORD_BYTES, sink)
}

/// [`walk`] with a record size limit: a larger record goes to [`JsonSink::too_large`] and is
/// skipped, so the scanner never holds much more than `max_record_bytes`.
pub fn walk_limited<R: Read>(reader: R, max_record_bytes: usize, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
    Scanner::new(reader, max_record_bytes.max(1)).walk(sink)
}

const EVENT_KEYS: &[&str] = &["eventName", "eventSource", "eventTime", "eventID", "@timestamp", "CloudTrailEvent"];
const READ_SIZE: usize = 256 * 1024;

#[derive(Deserialize)]
struct LogEvent {
    message: String,
    timestamp: Option<i64>,
}

struct Scanner<R> {
    reader: R,
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    pos: usize,
    eof: bool,
    /// Line and column of `buf[line_mark]`, and that mark: positions are counted lazily.
    line: usize,
    line_start: usize,
    counted_to: usize,
    /// Bytes dropped from the front of `buf` so far (keeps column arithmetic absolute).
    dropped: usize,
    /// Start of a top-level object held whole (one record, not a streamed document): nothing
    /// from there on may be dropped.
    hold: Option<usize>,
    max_record: usize,
}

impl<R: Read> Scanner<R> {
    fn new(reader: R, max_record: usize) -> Self {
        Self {
            reader,
            buf: Vec::with_capacity(READ_SIZE),
            pos: 0,
            eof: false,
            line: 1,
            line_start: 0,
            counted_to: 0,
            dropped: 0,
            hold: None,
            max_record,
        }
    }

    /// Where the record being read starts: the buffer holds nothing needed before it.
    fn record_start(&self) -> usize {
        self.hold.unwrap_or(self.pos)
    }

    /// The record being read is over the limit.
    fn too_large(&self) -> WalkError {
        let start = self.record_start();
        let (line, _) = self.position_of(start);
        WalkError::TooLarge { offset: (self.dropped + start) as u64, line, limit: self.max_record }
    }

    /// Reads more input; false at end of input. Refuses to grow the record being read past
    /// the limit, which bounds the buffer.
    fn fill(&mut self) -> Result<bool, WalkError> {
        if self.eof {
            return Ok(false);
        }
        if self.buf.len() - self.record_start() > self.max_record {
            return Err(self.too_large());
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_SIZE, 0);
        let n = loop {
            match self.reader.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.buf.truncate(len);
                    return Err(WalkError::Io(error));
                }
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// Drops consumed bytes, when nothing before `pos` is still needed (no object is held).
    fn compact(&mut self) {
        if self.pos > READ_SIZE && self.hold.is_none() {
            self.count_lines_to(self.pos);
            self.buf.drain(..self.pos);
            self.dropped += self.pos;
            self.line_start = self.line_start.saturating_sub(self.pos);
            self.counted_to -= self.pos;
            self.pos = 0;
        }
    }

    fn count_lines_to(&mut self, end: usize) {
        let end = end.min(self.buf.len());
        if end <= self.counted_to {
            return;
        }
        for index in memchr::memchr_iter(b'\n', &self.buf[self.counted_to..end]) {
            self.line += 1;
            self.line_start = self.counted_to + index + 1;
        }
        self.counted_to = end;
    }

    /// Line and column of `buf[at]`, counting on from what `compact` already counted.
    fn position_of(&self, at: usize) -> (usize, usize) {
        let (mut line, mut line_start) = (self.line, self.line_start);
        let end = at.min(self.buf.len());
        if end > self.counted_to {
            for index in memchr::memchr_iter(b'\n', &self.buf[self.counted_to..end]) {
                line += 1;
                line_start = self.counted_to + index + 1;
            }
        }
        (line, at.saturating_sub(line_start) + 1)
    }

    fn error_at(&self, at: usize, message: impl Into<String>) -> WalkError {
        let (line, column) = self.position_of(at);
        WalkError::Syntax { line, column, message: message.into() }
    }

    /// The next byte that is not white space, without consuming it.
    fn peek(&mut self) -> Result<Option<u8>, WalkError> {
        loop {
            while self.pos < self.buf.len() {
                let byte = self.buf[self.pos];
                if byte.is_ascii_whitespace() {
                    self.pos += 1;
                } else if self.pos == 0 && self.dropped == 0 && self.buf.starts_with(&[0xef, 0xbb, 0xbf]) {
                    self.pos = 3;
                } else {
                    return Ok(Some(byte));
                }
            }
            // White space between records is not kept (a held object keeps its own).
            self.compact();
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn expect(&mut self, wanted: u8, what: &str) -> Result<(), WalkError> {
        match self.peek()? {
            Some(byte) if byte == wanted => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(self.error_at(self.pos, format!("expected {what}"))),
            None => Err(self.error_at(self.pos, format!("EOF while expecting {what}"))),
        }
    }

    /// Scans one complete value starting at `pos` and returns its byte range.
    fn value(&mut self) -> Result<(usize, usize), WalkError> {
        let start = match self.peek()? {
            Some(_) => self.pos,
            None => return Err(self.error_at(self.pos, "EOF while parsing a value")),
        };
        let mut at = start;
        let mut depth = 0usize;
        loop {
            if at >= self.buf.len() {
                if !self.fill()? {
                    if depth == 0 && at > start && !matches!(self.buf[start], b'"' | b'{' | b'[') {
                        break;
                    }
                    return Err(self.error_at(at, "EOF while parsing a value"));
                }
                continue;
            }
            match self.buf[at] {
                b'"' => {
                    at = self.string_end(at)?;
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        at += 1;
                        break;
                    }
                }
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => break,
                _ => {}
            }
            at += 1;
        }
        if at - start > self.max_record {
            return Err(self.too_large());
        }
        self.pos = at;
        Ok((start, at))
    }

    /// Given a quote at `at`, returns the index just past the closing quote.
    fn string_end(&mut self, mut at: usize) -> Result<usize, WalkError> {
        at += 1;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.buf[at.min(self.buf.len())..]) {
                Some(offset) => {
                    let index = at + offset;
                    if self.buf[index] == b'"' {
                        return Ok(index + 1);
                    }
                    // A backslash escapes the next byte, which may not be read yet.
                    while index + 1 >= self.buf.len() {
                        if !self.fill()? {
                            return Err(self.error_at(index, "EOF while parsing a string"));
                        }
                    }
                    at = index + 2;
                }
                None => {
                    at = self.buf.len();
                    if !self.fill()? {
                        return Err(self.error_at(at, "EOF while parsing a string"));
                    }
                }
            }
        }
    }

    /// Parses `buf[range]` with serde; a syntax error gets its position in the file.
    fn parse_or_fail<'b, T: Deserialize<'b>>(&'b self, range: (usize, usize)) -> Result<T, WalkError> {
        let slice = &self.buf[range.0..range.1];
        serde_json::from_slice(slice).map_err(|error| {
            // serde counts lines and columns from the slice start; find the byte it means.
            let mut offset = 0;
            let mut line = 1;
            for (index, byte) in slice.iter().enumerate() {
                if line == error.line() {
                    offset = index + error.column().saturating_sub(1);
                    break;
                }
                if *byte == b'\n' {
                    line += 1;
                }
            }
            let message = error.to_string();
            let message = message.split(" at line ").next().unwrap_or_default().to_string();
            self.error_at(range.0 + offset, message)
        })
    }

    fn emit_event(&self, range: (usize, usize), sink: &mut dyn JsonSink) {
        match std::str::from_utf8(&self.buf[range.0..range.1]) {
            Ok(text) => sink.event(text),
            Err(_) => sink.unrecognised("a record that is not UTF-8 text".to_string()),
        }
    }

    fn walk(&mut self, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
        loop {
            self.compact();
            let (read, skippable) = match self.peek()? {
                None => return Ok(()),
                Some(b'[') => {
                    self.pos += 1;
                    (self.event_array(sink), false)
                }
                // An object held whole is one record (a JSON line); a streamed one is not.
                Some(b'{') => (self.object(sink), self.hold.is_some()),
                Some(_) => (self.top_level_scalar(sink), true),
            };
            match read {
                Err(WalkError::TooLarge { offset, line, limit }) if skippable => {
                    self.skip_record(sink, (offset, line, limit))?
                }
                other => other?,
            }
        }
    }

    fn top_level_scalar(&mut self, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
        let range = self.value()?;
        let kind = match self.buf[range.0] {
            b'"' => "a JSON string",
            b'n' => "a JSON null",
            b't' | b'f' => "a JSON boolean",
            b'-' | b'0'..=b'9' => "a JSON number",
            _ => return Err(self.error_at(range.0, "expected value")),
        };
        sink.unrecognised(kind.to_string());
        Ok(())
    }

    /// Tells the sink of a record over the limit, then skips it from where it starts without
    /// holding it.
    fn skip_record(
        &mut self,
        sink: &mut dyn JsonSink,
        (offset, line, limit): (u64, usize, usize),
    ) -> Result<(), WalkError> {
        sink.too_large(offset, line, limit);
        self.pos = self.record_start();
        self.hold = None;
        self.skip_value()
    }

    /// Scans past the value at `pos`, dropping bytes as it goes (strings, escapes and nesting
    /// tracked as in [`Scanner::value`]).
    fn skip_value(&mut self) -> Result<(), WalkError> {
        let scalar = !matches!(self.buf[self.pos], b'"' | b'{' | b'[');
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            if self.pos >= self.buf.len() {
                self.compact();
                if !self.fill()? {
                    if scalar {
                        return Ok(());
                    }
                    return Err(self.error_at(self.pos, "EOF while skipping a record over the size limit"));
                }
                continue;
            }
            if escaped {
                self.pos += 1;
                escaped = false;
                continue;
            }
            if in_string {
                match memchr::memchr2(b'"', b'\\', &self.buf[self.pos..]) {
                    None => self.pos = self.buf.len(),
                    Some(offset) => {
                        let index = self.pos + offset;
                        self.pos = index + 1;
                        if self.buf[index] == b'\\' {
                            escaped = true;
                        } else {
                            in_string = false;
                            if depth == 0 {
                                return Ok(());
                            }
                        }
                    }
                }
                continue;
            }
            match self.buf[self.pos] {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 1 => depth -= 1,
                b'}' | b']' if depth == 1 => {
                    self.pos += 1;
                    return Ok(());
                }
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return Ok(()),
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// Elements of an array whose `[` was consumed, each an event.
    fn event_array(&mut self, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
        self.array_elements(sink, |scanner, sink, range| {
            scanner.emit_event(range, sink);
            Ok(())
        })
    }

    fn log_event_array(&mut self, sink: &mut dyn JsonSink, owner: Option<&str>) -> Result<(), WalkError> {
        self.array_elements(sink, |scanner, sink, range| {
            let event: LogEvent = scanner.parse_or_fail(range)?;
            sink.log_message(&event.message, event.timestamp, owner);
            Ok(())
        })
    }

    /// Elements of an array of records (never inside a held object).
    fn array_elements(
        &mut self,
        sink: &mut dyn JsonSink,
        mut each: impl FnMut(&mut Self, &mut dyn JsonSink, (usize, usize)) -> Result<(), WalkError>,
    ) -> Result<(), WalkError> {
        if self.peek()? == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            match self.value() {
                Ok(range) => each(self, sink, range)?,
                // An element over the limit is one record: skip it, go on with the next.
                Err(WalkError::TooLarge { offset, line, limit }) => self.skip_record(sink, (offset, line, limit))?,
                Err(error) => return Err(error),
            }
            match self.peek()? {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => return Err(self.error_at(self.pos, "expected `,` or `]`")),
                None => return Err(self.error_at(self.pos, "EOF while parsing a list")),
            }
            // Records are independent: what came before this one is no longer needed.
            self.compact();
        }
    }

    /// A top-level object: a record document (streamed), or one record (JSON lines).
    fn object(&mut self, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
        let start = self.pos;
        self.hold = Some(start);
        self.pos += 1;
        let members = self.members(sink)?;
        if !members.streamed {
            if self.pos - start > self.max_record {
                return Err(self.too_large());
            }
            // Nothing was streamed, so the buffer was held: the object is still whole.
            self.single_object((start, self.pos), &members, sink);
        }
        self.hold = None;
        Ok(())
    }

    /// Reads an object's members, after its `{` up to its `}`, streaming arrays of records to
    /// `sink` and keeping the other values' ranges.
    fn members(&mut self, sink: &mut dyn JsonSink) -> Result<Members, WalkError> {
        let mut members = Members::default();
        if self.peek()? == Some(b'}') {
            self.pos += 1;
            return Ok(members);
        }
        loop {
            let key_range = match self.peek()? {
                Some(b'"') => self.value()?,
                Some(_) => return Err(self.error_at(self.pos, "key must be a string")),
                None => return Err(self.error_at(self.pos, "EOF while parsing an object")),
            };
            let key: String = self.parse_or_fail(key_range)?;
            self.expect(b':', "`:`")?;
            self.member(key, &mut members, sink)?;
            match self.peek()? {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(members);
                }
                Some(_) => return Err(self.error_at(self.pos, "expected `,` or `}`")),
                None => return Err(self.error_at(self.pos, "EOF while parsing an object")),
            }
        }
    }

    /// One member's value: an array of records is streamed, anything else kept.
    fn member(&mut self, key: String, members: &mut Members, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
        let list = self.peek()? == Some(b'[');
        match key.as_str() {
            "Records" | "Events" if list => {
                // A document of records: each record is held, not the document.
                (self.hold, members.streamed) = (None, true);
                self.pos += 1;
                self.event_array(sink)?;
            }
            "logEvents" | "events" if list => {
                (self.hold, members.streamed) = (None, true);
                self.pos += 1;
                self.log_event_array(sink, members.owner.as_deref())?;
            }
            _ => {
                let range = match self.value() {
                    Ok(range) => range,
                    // Beside the records of a document (nothing is held): skipped like a record.
                    Err(WalkError::TooLarge { offset, line, limit }) if self.hold.is_none() => {
                        return self.skip_record(sink, (offset, line, limit));
                    }
                    Err(error) => return Err(error),
                };
                if key == "owner" {
                    members.owner = serde_json::from_slice(&self.buf[range.0..range.1]).ok();
                }
                members.kept.push((key, range));
            }
        }
        Ok(())
    }

    /// An object that streamed nothing, at `whole`: one event, one log message, a digest, or
    /// none of the known shapes.
    fn single_object(&self, whole: (usize, usize), members: &Members, sink: &mut dyn JsonSink) {
        let keys = &members.kept;
        let has = |name: &str| keys.iter().any(|(k, _)| k == name);
        if EVENT_KEYS.iter().any(|k| has(k)) {
            self.emit_event(whole, sink);
        } else if let Some((_, range)) = keys.iter().find(|(k, _)| k == "message") {
            match serde_json::from_slice::<String>(&self.buf[range.0..range.1]) {
                Ok(message) => {
                    let timestamp = keys
                        .iter()
                        .find(|(k, _)| k == "timestamp")
                        .and_then(|(_, r)| serde_json::from_slice::<i64>(&self.buf[r.0..r.1]).ok());
                    sink.log_message(&message, timestamp, members.owner.as_deref());
                }
                Err(_) => sink.unrecognised("an object whose \"message\" is not a string".to_string()),
            }
        } else if has("digestStartTime") || has("digestEndTime") {
            sink.skipped("CloudTrail digest file");
        } else if has("Records") || has("Events") || has("logEvents") {
            sink.unrecognised("an object where an array of events was expected".to_string());
        } else {
            let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).take(8).collect();
            sink.unrecognised(format!(
                "a JSON object with keys [{}], which is not a CloudTrail event, a LookupEvents or S3 delivery \
                 document, or a CloudWatch Logs envelope",
                names.join(", ")
            ));
        }
    }
}

/// What reading an object's members found.
#[derive(Default)]
struct Members {
    /// The members not streamed: key and the byte range of the value.
    kept: Vec<(String, (usize, usize))>,
    /// A CloudWatch Logs envelope's `owner`, for its log events.
    owner: Option<String>,
    /// An array of records went to the sink (and the buffer may have been compacted since).
    streamed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct Collected {
        events: Vec<String>,
        messages: Vec<(String, Option<i64>, Option<String>)>,
        skipped: Vec<&'static str>,
        unrecognised: Vec<String>,
    }

    impl JsonSink for Collected {
        fn event(&mut self, raw: &str) {
            let value: serde_json::Value = serde_json::from_str(raw).unwrap();
            self.events.push(value["eventID"].as_str().unwrap_or("?").to_string());
        }
        fn log_message(&mut self, message: &str, timestamp_ms: Option<i64>, owner: Option<&str>) {
            self.messages.push((message.to_string(), timestamp_ms, owner.map(str::to_string)));
        }
        fn skipped(&mut self, what: &'static str) {
            self.skipped.push(what);
        }
        fn unrecognised(&mut self, description: String) {
            self.unrecognised.push(description);
        }
    }

    fn collect(input: &str) -> (Collected, Result<(), WalkError>) {
        let mut sink = Collected::default();
        let result = walk(input.as_bytes(), &mut sink);
        (sink, result)
    }

    #[test]
    fn records_document_bare_array_and_json_lines() {
        let (c, r) = collect(r#"{"Records":[{"eventID":"a"},{"eventID":"b"}]}"#);
        r.unwrap();
        assert_eq!(c.events, ["a", "b"]);
        let (c, r) = collect("[{\"eventID\":\"a\"}]\n");
        r.unwrap();
        assert_eq!(c.events, ["a"]);
        let (c, r) = collect("{\"eventID\":\"a\",\"eventName\":\"X\"}\n{\"eventID\":\"b\",\"eventName\":\"Y\"}\n");
        r.unwrap();
        assert_eq!(c.events, ["a", "b"]);
    }

    #[test]
    fn lookup_events_and_cloudwatch_envelopes() {
        let (c, r) = collect(r#"{"Events":[{"EventId":"a","CloudTrailEvent":"{}"}],"NextToken":"t"}"#);
        r.unwrap();
        assert_eq!(c.events, ["?"]);
        let (c, r) = collect(
            r#"{"messageType":"DATA_MESSAGE","owner":"123456789010","logGroup":"g","logEvents":[{"id":"1","timestamp":1418530010000,"message":"2 123 eni-1 - - - - - - - 1 2 - NODATA"}]}"#,
        );
        r.unwrap();
        assert_eq!(
            c.messages,
            [(
                "2 123 eni-1 - - - - - - - 1 2 - NODATA".to_string(),
                Some(1418530010000),
                Some("123456789010".to_string())
            )]
        );
        let (c, r) = collect(r#"{"message":"2 4 eni-0 - - - - - - - 1 2 - NODATA"}"#);
        r.unwrap();
        assert_eq!(c.messages.len(), 1);
    }

    #[test]
    fn digests_are_skipped_and_strangers_reported() {
        let (c, r) = collect(r#"{"awsAccountId":"1","digestStartTime":"x","logFiles":[]}"#);
        r.unwrap();
        assert_eq!(c.skipped, ["CloudTrail digest file"]);
        let (c, r) = collect(r#"{"hello":"world"}"#);
        r.unwrap();
        assert_eq!(c.unrecognised.len(), 1);
        assert!(c.unrecognised[0].contains("hello"));
    }

    fn collect_limited(input: &[u8], limit: usize) -> (Collected, Result<(), WalkError>) {
        let mut sink = Collected::default();
        let result = walk_limited(input, limit, &mut sink);
        (sink, result)
    }

    /// `{"eventID":"<id>","pad":"<n bytes, with escaped quotes and brackets>"}`
    fn padded_event(id: &str, pad: usize) -> String {
        let filler: String = r#"x\"}]{["#.chars().cycle().take(pad).collect();
        // Never end the padding inside an escape.
        let filler = filler.trim_end_matches('\\');
        format!(r#"{{"eventID":"{id}","pad":"{filler}"}}"#)
    }

    #[test]
    fn records_over_the_limit_are_skipped_with_their_offset_and_line() {
        let big = padded_event("big", 5_000);
        let input = format!("{{\"Records\":[\n{},\n{big},\n{}]}}", padded_event("a", 10), padded_event("b", 10));
        let (c, r) = collect_limited(input.as_bytes(), 1_000);
        r.unwrap();
        assert_eq!(c.events, ["a", "b"]);
        let offset = input.find(&big).unwrap();
        assert_eq!(c.unrecognised, [too_large_message(offset as u64, 3, 1_000)]);
    }

    #[test]
    fn the_limit_is_exact_for_records_and_json_lines() {
        let event = padded_event("e", 50);
        for (limit, read) in [(event.len(), true), (event.len() - 1, false)] {
            let (c, r) = collect_limited(format!("[{event}]").as_bytes(), limit);
            r.unwrap();
            assert_eq!(c.events.len(), usize::from(read), "array element, limit {limit}");
            let line = event.replace(r#""eventID""#, r#""eventName":"X","eventID""#);
            let lines = format!("{line}\n{}\n", r#"{"eventID":"next","eventName":"Y"}"#);
            let (c, r) = collect_limited(lines.as_bytes(), limit + 16);
            r.unwrap();
            let expected: &[&str] = if read { &["e", "next"] } else { &["next"] };
            assert_eq!(c.events, expected, "JSON lines, limit {limit}");
            assert_eq!(c.unrecognised.len(), usize::from(!read));
        }
    }

    #[test]
    fn a_document_with_a_huge_member_before_its_records_is_skipped_whole() {
        let input = format!(
            "{{\"junk\":\"{}\",\"Records\":[{{\"eventID\":\"lost\"}}]}}\n{}",
            "j".repeat(3_000),
            r#"{"eventID":"after","eventName":"X"}"#
        );
        let (c, r) = collect_limited(input.as_bytes(), 1_000);
        r.unwrap();
        assert_eq!(c.events, ["after"]);
        assert_eq!(c.unrecognised, [too_large_message(0, 1, 1_000)]);
    }

    /// Never-ending input: `prefix`, then `filler` until `total` bytes.
    struct Endless {
        prefix: &'static [u8],
        filler: u8,
        served: usize,
        total: usize,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.total - self.served);
            for (i, byte) in buf[..n].iter_mut().enumerate() {
                *byte = self.prefix.get(self.served + i).copied().unwrap_or(self.filler);
            }
            self.served += n;
            Ok(n)
        }
    }

    #[test]
    fn memory_stays_bounded_by_the_limit_whatever_the_input() {
        let limit = 1 << 20;
        let cases: [(&'static [u8], u8, &str); 3] = [
            (b"{\"Records\":[{\"eventID\":\"", b'a', "EOF while skipping"),
            (b"{\"eventName\":\"X\",\"p\":[", b'[', "EOF while skipping"),
            (b"", b' ', ""),
        ];
        for (prefix, filler, error) in cases {
            let reader = Endless { prefix, filler, served: 0, total: 64 << 20 };
            let mut scanner = Scanner::new(reader, limit);
            let mut sink = Collected::default();
            let result = scanner.walk(&mut sink);
            // The record, what precedes it before a compaction and one read; doubled by Vec.
            assert!(scanner.buf.capacity() <= 2 * limit + 4 * READ_SIZE, "{} bytes held", scanner.buf.capacity());
            match result {
                Ok(()) => assert!(error.is_empty()),
                Err(e) => assert!(e.to_string().contains(error) && !error.is_empty(), "{e}"),
            }
            assert_eq!(sink.unrecognised.len(), usize::from(!error.is_empty()), "{:?}", sink.unrecognised);
        }
    }

    #[test]
    fn syntax_errors_keep_what_came_before() {
        let (c, r) = collect("{\"Records\":[{\"eventID\":\"a\"},\n{\"eventID\":\"b\"\n{");
        let error = r.unwrap_err();
        assert_eq!(c.events, ["a"]);
        assert_eq!(error.line(), 3);
    }
}
