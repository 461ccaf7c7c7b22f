//! Query-string parameters, read the same way by every route: unknown names are refused, and a
//! bad value is a 400 naming its field.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::error::ApiError;

pub struct Params<'q> {
    query: &'q HashMap<String, String>,
}

impl<'q> Params<'q> {
    /// Accepts `query` if every name in it is one of `known`.
    pub fn new(query: &'q HashMap<String, String>, known: &[&'static str]) -> Result<Self, ApiError> {
        if let Some(unknown) = query.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::bad("query", format!("unknown filter {unknown:?}; known: {}", known.join(", "))));
        }
        // PostgreSQL text cannot hold NUL; say which parameter had one rather than fail later.
        for name in known {
            if query.get(*name).is_some_and(|value| value.contains('\0')) {
                return Err(ApiError::bad(name, format!("{name} contains a NUL character")));
            }
        }
        Ok(Self { query })
    }

    /// The value of `name`; an empty value counts as absent.
    pub fn text(&self, name: &str) -> Option<String> {
        self.query.get(name).filter(|v| !v.is_empty()).cloned()
    }

    pub fn time(&self, name: &'static str) -> Result<Option<DateTime<Utc>>, ApiError> {
        use chrono::Datelike;
        let time: Option<DateTime<Utc>> = self
            .text(name)
            .map(|v| v.parse().map_err(|_| ApiError::bad(name, format!("{name} must be an RFC 3339 time"))))
            .transpose()?;
        // chrono reads years PostgreSQL cannot store (and date arithmetic would overflow).
        if time.is_some_and(|t| !(1970..=9999).contains(&t.year())) {
            return Err(ApiError::bad(name, format!("{name} must be between the years 1970 and 9999")));
        }
        Ok(time)
    }

    pub fn flag(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        self.text(name)
            .map(|v| v.parse().map_err(|_| ApiError::bad(name, format!("{name} must be true or false"))))
            .transpose()
    }

    /// `limit`, from 1 to `max`, or `default` when absent.
    pub fn limit(&self, default: i64, max: i64) -> Result<i64, ApiError> {
        match self.text("limit") {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad("limit", format!("limit must be a whole number from 1 to {max}"))),
            },
        }
    }
}
