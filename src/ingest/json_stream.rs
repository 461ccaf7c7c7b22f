//! Streams records out of JSON log files without holding a file in memory. One walker serves
//! every JSON shape Skywarden imports, in any number of top-level values (one document, or
//! JSON lines):
//! - S3 CloudTrail delivery `{"Records": [event, ...]}` and a bare array `[event, ...]`;
//! - LookupEvents output `{"Events": [{"CloudTrailEvent": "<event JSON>"}, ...]}`;
//! - CloudWatch Logs subscription envelopes `{"owner": ..., "logEvents": [{"message": ...}]}`
//!   and `aws logs filter-log-events` output `{"events": [...]}`;
//! - one event per line, and `{"message": "<flow log line>"}` wrappers.

use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Receives what the walker finds.
pub trait JsonSink {
    /// A CloudTrail event (or a LookupEvents item wrapping one).
    fn event(&mut self, raw: &RawValue);
    /// A CloudWatch Logs message: a flow log line or an event's JSON.
    fn log_message(&mut self, message: &str, timestamp_ms: Option<i64>, owner: Option<&str>);
    /// A record that is not log data (a CloudTrail digest file, say).
    fn skipped(&mut self, what: &'static str);
    /// A top-level value that is none of the known shapes.
    fn unrecognised(&mut self, description: String);
}

/// Walks every top-level JSON value in `reader`. A syntax error stops the walk and is returned
/// (with its line and column); what came before it has already reached the sink.
pub fn walk<R: Read>(reader: R, sink: &mut dyn JsonSink) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    loop {
        TopLevel { sink: &mut *sink }.deserialize(&mut de)?;
        // `end` succeeds only at end of input; otherwise the next value is still buffered.
        if de.end().is_ok() {
            return Ok(());
        }
    }
}

const EVENT_KEYS: &[&str] = &["eventName", "eventSource", "eventTime", "eventID", "@timestamp", "CloudTrailEvent"];

struct TopLevel<'s> {
    sink: &'s mut dyn JsonSink,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or array of log records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        EventArray { sink: self.sink }.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
        let mut owner: Option<String> = None;
        let mut streamed = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Records" | "Events" => {
                    map.next_value_seed(EventArray { sink: &mut *self.sink })?;
                    streamed = true;
                }
                "logEvents" | "events" => {
                    map.next_value_seed(LogEventArray { sink: &mut *self.sink, owner: owner.as_deref() })?;
                    streamed = true;
                }
                _ => {
                    let value: Box<RawValue> = map.next_value()?;
                    if key == "owner" {
                        owner = serde_json::from_str::<String>(value.get()).ok();
                    }
                    fields.push((key, value));
                }
            }
        }
        if !streamed {
            classify_object(fields, owner.as_deref(), self.sink);
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.sink.unrecognised("a JSON null".to_string());
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.sink.unrecognised("a JSON boolean".to_string());
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.sink.unrecognised("a JSON number".to_string());
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.sink.unrecognised("a JSON number".to_string());
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.sink.unrecognised("a JSON number".to_string());
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.sink.unrecognised("a JSON string".to_string());
        Ok(())
    }
}

/// Decides what a top-level object with no record array is: one event (JSON lines), a flow log
/// message wrapper, a CloudTrail digest, or something else.
fn classify_object(fields: Vec<(String, Box<RawValue>)>, owner: Option<&str>, sink: &mut dyn JsonSink) {
    let has = |name: &str| fields.iter().any(|(k, _)| k == name);
    if EVENT_KEYS.iter().any(|k| has(k)) {
        // Reassemble the object from its fields, which are kept verbatim.
        let mut json =
            String::with_capacity(fields.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum::<usize>() + 2);
        json.push('{');
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&serde_json::to_string(key).unwrap_or_default());
            json.push(':');
            json.push_str(value.get());
        }
        json.push('}');
        match RawValue::from_string(json) {
            Ok(raw) => sink.event(&raw),
            Err(error) => sink.unrecognised(format!("an object that cannot be reassembled: {error}")),
        }
        return;
    }
    if let Some((_, message)) = fields.iter().find(|(k, _)| k == "message") {
        match serde_json::from_str::<String>(message.get()) {
            Ok(message) => {
                let timestamp = fields
                    .iter()
                    .find(|(k, _)| k == "timestamp")
                    .and_then(|(_, v)| serde_json::from_str::<i64>(v.get()).ok());
                sink.log_message(&message, timestamp, owner);
            }
            Err(_) => sink.unrecognised("an object whose \"message\" is not a string".to_string()),
        }
        return;
    }
    if has("digestStartTime") || has("digestEndTime") {
        sink.skipped("CloudTrail digest file");
        return;
    }
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).take(8).collect();
    sink.unrecognised(format!(
        "a JSON object with keys [{}], which is not a CloudTrail event, a LookupEvents or S3 delivery \
         document, or a CloudWatch Logs envelope",
        keys.join(", ")
    ));
}

/// `Records` / `Events` / a bare array: each element goes to the sink as one event.
struct EventArray<'s> {
    sink: &'s mut dyn JsonSink,
}

impl<'de> DeserializeSeed<'de> for EventArray<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventArray<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of CloudTrail events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            self.sink.event(&raw);
        }
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.sink.unrecognised("an object where an array of events was expected".to_string());
        Ok(())
    }
}

#[derive(Deserialize)]
struct LogEvent {
    message: String,
    timestamp: Option<i64>,
}

/// CloudWatch Logs `logEvents` / `events`: each message goes to the sink.
struct LogEventArray<'s, 'o> {
    sink: &'s mut dyn JsonSink,
    owner: Option<&'o str>,
}

impl<'de> DeserializeSeed<'de> for LogEventArray<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for LogEventArray<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of CloudWatch Logs events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(event) = seq.next_element::<LogEvent>()? {
            self.sink.log_message(&event.message, event.timestamp, self.owner);
        }
        Ok(())
    }
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
        fn event(&mut self, raw: &RawValue) {
            let value: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
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

    fn collect(input: &str) -> (Collected, Result<(), serde_json::Error>) {
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
