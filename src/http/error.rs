//! The API's one error type: each variant knows its status code; a 500 is logged with its
//! cause and never shown to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a bearer token is required")]
    Unauthorized,
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    #[error("{message}")]
    BadRequest { field: &'static str, message: String },
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("wrong user name, password or token")]
    LoginFailed,
    #[error("the CSRF token is missing or wrong")]
    Csrf,
    #[error("too many failed logins; try again later")]
    TooManyRequests(i64),
    /// PostgreSQL cancelled a statement that ran past the API's `statement_timeout`.
    #[error(
        "the database query ran longer than the API's statement timeout and was cancelled; narrow the filters (a shorter time range, an account, a principal) and try again"
    )]
    QueryTimeout,
    /// No database connection came free in time.
    #[error("the database is busy; try again shortly")]
    DatabaseBusy,
    /// The request ran past the API's request timeout (in seconds).
    #[error("the request took longer than the {0} s request timeout and was stopped; narrow the filters and try again")]
    RequestTimeout(u64),
    /// As many requests as the API takes at once are running (the limit).
    #[error("the server is answering {0} requests already, its limit; try again shortly")]
    Busy(usize),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// The body of every error answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    error: String,
    /// The request field (query parameter or body member) that was wrong, on a 400.
    field: Option<String>,
}

impl ApiError {
    pub fn bad(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { field, message: message.into() }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::LoginFailed => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::QueryTimeout | Self::DatabaseBusy | Self::RequestTimeout(_) | Self::Busy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        // A value PostgreSQL cannot hold as text (a NUL character, invalid UTF-8) is the
        // client's mistake, wherever it came from (path, query or body).
        if let Some(unavailable) = Self::unavailable(&error) {
            return unavailable;
        }
        let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        match code.as_deref() {
            Some("22021") | Some("22P05") => {
                Self::bad("body", "a value contains a character PostgreSQL cannot store (NUL)")
            }
            _ => Self::Internal(error.into()),
        }
    }
}

impl ApiError {
    /// A statement cancelled by its timeout, or no connection in time: the client hears so
    /// (a 503), not "internal error".
    fn unavailable(error: &sqlx::Error) -> Option<Self> {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            return Some(Self::DatabaseBusy);
        }
        // 57014 query_canceled: what `statement_timeout` raises.
        let code = error.as_database_error().and_then(|e| e.code());
        (code.as_deref() == Some("57014")).then_some(Self::QueryTimeout)
    }

    /// An internal error whose cause is a database timeout, as the timeout; wrapped by a
    /// module's own error type on the way.
    fn classified(self) -> Self {
        if let Self::Internal(cause) = &self
            && let Some(unavailable) =
                cause.chain().find_map(|source| source.downcast_ref::<sqlx::Error>().and_then(Self::unavailable))
        {
            return unavailable;
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.classified();
        match &error {
            Self::Internal(cause) => tracing::error!(error = format!("{cause:#}"), "request failed"),
            Self::QueryTimeout | Self::DatabaseBusy | Self::RequestTimeout(_) => {
                tracing::warn!(error = %error, "request not answered in time")
            }
            _ => {}
        }
        // Overload passes quickly: say when to come back.
        let retry_soon = matches!(error, Self::Busy(_) | Self::DatabaseBusy);
        let mut response = error.body_response();
        if retry_soon {
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

impl ApiError {
    fn body_response(self) -> Response {
        let body = match &self {
            Self::BadRequest { field, message } => json!({"error": message, "field": field}),
            other => json!({"error": other.to_string()}),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Self::TooManyRequests(seconds) = &self
            && let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert("retry-after", value);
        }
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
