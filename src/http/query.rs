//! Query strings read into typed structs, the same way on every route. A route declares its
//! parameters once, as a struct deriving `Deserialize` and `utoipa::IntoParams` (doc comments
//! are the parameter descriptions), and takes [`TypedQuery<ThatStruct>`]: unknown names are
//! refused, an empty value counts as absent, the last of repeated names wins, and a bad value is
//! a 400 naming its field ("since must be an RFC 3339 time").

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Datelike, Utc};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Unexpected, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

use super::error::ApiError;

/// The query string as `T`, or a 400 naming the parameter that was wrong.
pub struct TypedQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for TypedQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse(parts.uri.query().unwrap_or_default()).map(Self)
    }
}

/// Reads a query string (without its `?`) into `T`.
pub fn parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let values: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    T::deserialize(QueryString { values }).map_err(ApiError::from)
}

/// Why a query string did not fit its struct.
#[derive(Debug)]
pub enum QueryError {
    /// What a value must be, to finish "{field} must be …".
    Expected(String),
    /// A whole message, about the value being read.
    Message(String),
    /// A message about one parameter.
    Field { field: &'static str, message: String },
}

impl QueryError {
    /// The error of the value of `field`.
    fn at(self, field: &'static str) -> Self {
        match self {
            Self::Expected(expected) => Self::Field { field, message: format!("{field} must be {expected}") },
            Self::Message(message) => Self::Field { field, message },
            located @ Self::Field { .. } => located,
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expected(expected) => write!(f, "must be {expected}"),
            Self::Message(message) | Self::Field { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for QueryError {}

impl de::Error for QueryError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        Self::Message(message.to_string())
    }

    fn invalid_type(_: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::Expected(expected.to_string())
    }

    fn invalid_value(_: Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        Self::Expected(expected.to_string())
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Self::Expected(one_of(expected))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Field { field, message: format!("{field} is required") }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Field { field, message } => ApiError::bad(field, message),
            other => ApiError::bad("query", other.to_string()),
        }
    }
}

/// `a, b or c`.
fn one_of(choices: &[&str]) -> String {
    match choices {
        [] => "nothing".into(),
        [one] => (*one).into(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The whole query string: only a struct can be read from it.
struct QueryString {
    values: BTreeMap<String, String>,
}

impl<'de> Deserializer<'de> for QueryString {
    type Error = QueryError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, QueryError> {
        Err(de::Error::custom("a query string is read into a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        // An unknown name is refused even when empty, so a typo never silently drops a filter.
        if let Some(unknown) = self.values.keys().find(|name| !fields.contains(&name.as_str())) {
            let message = format!("unknown filter {unknown:?}; known: {}", fields.join(", "));
            return Err(QueryError::Field { field: "query", message });
        }
        // PostgreSQL text cannot hold NUL; say which parameter had one rather than fail later.
        if let Some(field) = fields.iter().find(|f| self.values.get(**f).is_some_and(|v| v.contains('\0'))) {
            return Err(QueryError::Field { field, message: format!("{field} contains a NUL character") });
        }
        let mut values = self.values;
        // In the struct's order, so the first bad value reported is the first declared.
        let entries: Vec<(&'static str, String)> = fields
            .iter()
            .filter_map(|field| values.remove(*field).filter(|v| !v.is_empty()).map(|v| (*field, v)))
            .collect();
        visitor.visit_map(Entries { entries: entries.into_iter(), value: None })
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The non-empty parameters, name then value.
struct Entries {
    entries: std::vec::IntoIter<(&'static str, String)>,
    value: Option<(&'static str, String)>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = QueryError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, QueryError> {
        let Some((field, text)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((field, text));
        seed.deserialize(field.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, QueryError> {
        let (field, text) = self.value.take().ok_or_else(|| de::Error::custom("a value without its name"))?;
        seed.deserialize(Text(text)).map_err(|error| error.at(field))
    }
}

/// One parameter's value: text, read as the field's type asks.
struct Text(String);

impl Text {
    fn number<N: FromStr>(&self) -> Result<N, QueryError> {
        self.0.parse().map_err(|_| de::Error::invalid_value(Unexpected::Str(&self.0), &"an integer"))
    }
}

impl<'de> Deserializer<'de> for Text {
    type Error = QueryError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        match self.0.parse() {
            Ok(flag) => visitor.visit_bool(flag),
            Err(_) => Err(de::Error::invalid_value(Unexpected::Str(&self.0), &"true or false")),
        }
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_i32(self.number()?)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_i64(self.number()?)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_u16(self.number()?)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_u32(self.number()?)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, QueryError> {
        visitor.visit_u64(self.number()?)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, QueryError> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    forward_to_deserialize_any! {
        i8 i16 i128 u8 u128 f32 f64 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// `since` and `until`: an RFC 3339 time, in years PostgreSQL can store.
pub fn time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = String::deserialize(deserializer)?;
    let time: DateTime<Utc> =
        text.parse().map_err(|_| de::Error::invalid_value(Unexpected::Str(&text), &"an RFC 3339 time"))?;
    // chrono reads years PostgreSQL cannot store (and date arithmetic would overflow).
    if !(1970..=9999).contains(&time.year()) {
        return Err(de::Error::invalid_value(Unexpected::Str(&text), &"between the years 1970 and 9999"));
    }
    Ok(Some(time))
}

/// A value read with its `FromStr`; [`Self::EXPECTED`] finishes "{field} must be …".
pub trait QueryValue: FromStr {
    const EXPECTED: &'static str;
}

impl QueryValue for std::net::IpAddr {
    const EXPECTED: &'static str = "an IP address";
}

impl QueryValue for crate::net::Cidr {
    const EXPECTED: &'static str = "an address or CIDR";
}

impl QueryValue for crate::model::AlertStatus {
    const EXPECTED: &'static str = "open, acknowledged, resolved, dismissed or snoozed";
}

/// A value of type `T`, read with its `FromStr`.
pub fn parsed<'de, D: Deserializer<'de>, T: QueryValue>(deserializer: D) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(|_| de::Error::invalid_value(Unexpected::Str(&text), &T::EXPECTED))
}

/// Text that must read as a `T`, kept as given (the database parses it again, its own way).
pub fn checked<'de, D: Deserializer<'de>, T: QueryValue>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.parse::<T>() {
        Ok(_) => Ok(Some(text)),
        Err(_) => Err(de::Error::invalid_value(Unexpected::Str(&text), &T::EXPECTED)),
    }
}

/// `limit`: how many rows, a whole number from 1 to `MAX`; `DEFAULT` when absent. Mark the
/// field `#[serde(default)]` and `#[param(inline)]` (its schema states the range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit<const MAX: i64, const DEFAULT: i64>(pub i64);

impl<const MAX: i64, const DEFAULT: i64> Default for Limit<MAX, DEFAULT> {
    fn default() -> Self {
        Self(DEFAULT)
    }
}

impl<'de, const MAX: i64, const DEFAULT: i64> Deserialize<'de> for Limit<MAX, DEFAULT> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.parse::<i64>() {
            Ok(n) if (1..=MAX).contains(&n) => Ok(Self(n)),
            _ => Err(de::Error::invalid_value(
                Unexpected::Str(&text),
                &format!("a whole number from 1 to {MAX}").as_str(),
            )),
        }
    }
}

impl<const MAX: i64, const DEFAULT: i64> utoipa::PartialSchema for Limit<MAX, DEFAULT> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(MAX))
            .default(Some(DEFAULT.into()))
            .into()
    }
}

/// The sort key of a paged list's rows: what a cursor holds. `KIND` names the list, so a cursor
/// one list gave is refused by another.
pub trait CursorKey: serde::Serialize + DeserializeOwned {
    const KIND: &'static str;

    /// Whether a decoded key is one the API could have given (a client can send anything that
    /// parses: ids the database would refuse to cast, times out of range).
    fn is_plausible(&self) -> bool {
        true
    }
}

/// `cursor`: the position after which the next page starts, as the API gave it in `next_cursor`
/// (opaque to clients). Mark the field `#[serde(default)]` and
/// `#[param(value_type = Option<String>)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor<K>(pub K);

/// The longest cursor read; every key the API gives is far shorter.
const MAX_CURSOR: usize = 4096;

impl<K: CursorKey> Cursor<K> {
    /// The text a client sends back: base64url of `[kind, key]`.
    pub fn encode(key: &K) -> String {
        use base64::Engine;
        let json = serde_json::to_vec(&(K::KIND, key)).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn decode(text: &str) -> Option<K> {
        use base64::Engine;
        if text.len() > MAX_CURSOR {
            return None;
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        let (kind, key): (String, K) = serde_json::from_slice(&json).ok()?;
        (kind == K::KIND && key.is_plausible()).then_some(key)
    }
}

impl<'de, K: CursorKey> Deserialize<'de> for Cursor<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::decode(&text).map(Cursor).ok_or_else(|| de::Error::custom("cursor is not one this API gave"))
    }
}

/// One page of a list read with `LIMIT limit + 1`: at most `limit` rows, and the cursor of the
/// next page only when there is a row after them (so the last page has none).
pub fn page<T, K: CursorKey>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(|row| Cursor::encode(&key(row)));
    (rows, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: Option<String>,
        #[serde(default, deserialize_with = "time")]
        since: Option<DateTime<Utc>>,
        flag: Option<bool>,
        count: Option<i64>,
        #[serde(default)]
        limit: Limit<50, 10>,
        #[serde(default, deserialize_with = "checked::<_, std::net::IpAddr>")]
        address: Option<String>,
        #[serde(default)]
        colour: Colour,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Colour {
        #[default]
        Red,
        Green,
        Blue,
    }

    fn error(query: &str) -> (&'static str, String) {
        match parse::<Sample>(query) {
            Err(ApiError::BadRequest { field, message }) => (field, message),
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn values_read_as_their_types() {
        let sample: Sample =
            parse("name=a+b%21&since=2026-11-12T03:00:00Z&flag=true&count=-3&limit=7&address=::1&colour=green")
                .unwrap();
        assert_eq!(sample.name.as_deref(), Some("a b!"));
        assert_eq!(sample.since, Some("2026-11-12T03:00:00Z".parse().unwrap()));
        assert_eq!((sample.flag, sample.count, sample.limit), (Some(true), Some(-3), Limit(7)));
        assert_eq!((sample.address.as_deref(), sample.colour), (Some("::1"), Colour::Green));
    }

    #[test]
    fn empty_values_are_absent_and_the_last_repeat_wins() {
        let sample: Sample = parse("name=&since=&limit=&colour=&flag=false&flag=true&count=1&count=").unwrap();
        assert_eq!(
            sample,
            Sample {
                name: None,
                since: None,
                flag: Some(true),
                count: None,
                limit: Limit(10),
                address: None,
                colour: Colour::Red
            }
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        for (query, field, message) in [
            (
                "colour=blue&shade=dark",
                "query",
                "unknown filter \"shade\"; known: name, since, flag, count, limit, address, colour",
            ),
            ("shade=", "query", "unknown filter \"shade\"; known: name, since, flag, count, limit, address, colour"),
            ("name=a%00b", "name", "name contains a NUL character"),
            ("since=yesterday", "since", "since must be an RFC 3339 time"),
            ("since=-5000-01-01T00:00:00Z", "since", "since must be between the years 1970 and 9999"),
            ("flag=maybe", "flag", "flag must be true or false"),
            ("count=ten", "count", "count must be an integer"),
            ("limit=0", "limit", "limit must be a whole number from 1 to 50"),
            ("limit=51", "limit", "limit must be a whole number from 1 to 50"),
            ("address=nope", "address", "address must be an IP address"),
            ("colour=purple", "colour", "colour must be red, green or blue"),
        ] {
            assert_eq!(error(query), (field, message.to_string()), "{query}");
        }
    }

    impl CursorKey for (String, i64) {
        const KIND: &'static str = "sample";
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Paged {
        #[serde(default)]
        cursor: Option<Cursor<(String, i64)>>,
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_the_api_did_not_give() {
        let key = ("a b/é".to_string(), -7);
        let text = Cursor::encode(&key);
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text}");
        let paged: Paged = parse(&format!("cursor={text}")).unwrap();
        assert_eq!(paged.cursor, Some(Cursor(key)));
        use base64::Engine;
        let other_kind = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"["other",["a",1]]"#);
        for bad in ["zz!", "AAAA", other_kind.as_str(), &"A".repeat(5000)] {
            match parse::<Paged>(&format!("cursor={bad}")) {
                Err(ApiError::BadRequest { field, message }) => {
                    assert_eq!((field, message.as_str()), ("cursor", "cursor is not one this API gave"), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_page_has_a_cursor_only_when_rows_follow() {
        let key = |n: &i64| ("k".to_string(), *n);
        assert_eq!(page(vec![1, 2, 3], 3, key), (vec![1, 2, 3], None));
        let (rows, next) = page(vec![1, 2, 3, 4], 3, key);
        assert_eq!(rows, vec![1, 2, 3]);
        assert_eq!(Cursor::<(String, i64)>::decode(&next.unwrap()), Some(("k".to_string(), 3)));
        assert_eq!(page(Vec::<i64>::new(), 3, key), (vec![], None));
    }

    #[test]
    fn a_required_parameter_is_named_when_missing() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Needs {
            principal: String,
        }
        match parse::<Needs>("principal=") {
            Err(ApiError::BadRequest { field, message }) => {
                assert_eq!((field, message.as_str()), ("principal", "principal is required"))
            }
            other => panic!("{other:?}"),
        }
    }
}
