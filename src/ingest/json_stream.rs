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
//! memory stays bounded by the largest record, not the file.

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
}

/// Why a walk stopped early.
#[derive(Debug)]
pub enum WalkError {
    Io(io::Error),
    Syntax { line: usize, column: usize, message: String },
}

impl WalkError {
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io(_))
    }

    pub fn line(&self) -> usize {
        match self {
            Self::Syntax { line, .. } => *line,
            Self::Io(_) => 0,
        }
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => write!(f, "{error}"),
            Self::Syntax { line, column, message } => write!(f, "{message} at line {line} column {column}"),
        }
    }
}

impl std::error::Error for WalkError {}

/// Walks every top-level JSON value in `reader`. A syntax error stops the walk and is returned
/// (with its line and column); what came before it has already reached the sink.
pub fn walk<R: Read>(reader: R, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
    Scanner::new(reader).walk(sink)
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
}

impl<R: Read> Scanner<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::with_capacity(READ_SIZE),
            pos: 0,
            eof: false,
            line: 1,
            line_start: 0,
            counted_to: 0,
            dropped: 0,
        }
    }

    /// Reads more input; false at end of input.
    fn fill(&mut self) -> Result<bool, WalkError> {
        if self.eof {
            return Ok(false);
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

    /// Drops consumed bytes, when nothing before `pos` is still needed.
    fn compact(&mut self) {
        if self.pos > READ_SIZE {
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
            match self.peek()? {
                None => return Ok(()),
                Some(b'[') => {
                    self.pos += 1;
                    self.event_array(sink)?;
                }
                Some(b'{') => self.object(sink)?,
                Some(_) => {
                    let range = self.value()?;
                    let kind = match self.buf[range.0] {
                        b'"' => "a JSON string",
                        b'n' => "a JSON null",
                        b't' | b'f' => "a JSON boolean",
                        b'-' | b'0'..=b'9' => "a JSON number",
                        _ => return Err(self.error_at(range.0, "expected value")),
                    };
                    sink.unrecognised(kind.to_string());
                }
            }
        }
    }

    /// Elements of an array whose `[` was consumed, each an event.
    fn event_array(&mut self, sink: &mut dyn JsonSink) -> Result<(), WalkError> {
        self.array_elements(|scanner, range| {
            scanner.emit_event(range, sink);
            Ok(())
        })
    }

    fn log_event_array(&mut self, sink: &mut dyn JsonSink, owner: Option<&str>) -> Result<(), WalkError> {
        self.array_elements(|scanner, range| {
            let event: LogEvent = scanner.parse_or_fail(range)?;
            sink.log_message(&event.message, event.timestamp, owner);
            Ok(())
        })
    }

    fn array_elements(
        &mut self,
        mut each: impl FnMut(&mut Self, (usize, usize)) -> Result<(), WalkError>,
    ) -> Result<(), WalkError> {
        if self.peek()? == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let range = self.value()?;
            each(self, range)?;
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
        self.pos += 1;
        let members = self.members(sink)?;
        if !members.streamed {
            // Nothing was streamed, so the buffer was not compacted: the object is still whole.
            self.single_object((start, self.pos), &members, sink);
        }
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
                self.pos += 1;
                self.event_array(sink)?;
                members.streamed = true;
            }
            "logEvents" | "events" if list => {
                self.pos += 1;
                self.log_event_array(sink, members.owner.as_deref())?;
                members.streamed = true;
            }
            _ => {
                let range = self.value()?;
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

    #[test]
    fn syntax_errors_keep_what_came_before() {
        let (c, r) = collect("{\"Records\":[{\"eventID\":\"a\"},\n{\"eventID\":\"b\"\n{");
        let error = r.unwrap_err();
        assert_eq!(c.events, ["a"]);
        assert_eq!(error.line(), 3);
    }
}
