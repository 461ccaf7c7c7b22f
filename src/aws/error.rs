//! One error type for every AWS call, classified so callers can react (back off when throttled,
//! tell the user to fix the role when denied) and so messages name the call that failed.

use std::fmt;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What went wrong, as far as a caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// The caller's credentials do not allow the call (or the role cannot be assumed).
    AccessDenied,
    /// The service asked us to slow down.
    Throttled,
    /// The endpoint could not be reached or did not answer in time.
    Unreachable,
    /// The request was refused for another reason (bad parameter, missing resource ...).
    Rejected,
    /// Anything else, including malformed responses.
    Other,
}

#[derive(Debug, thiserror::Error)]
pub struct AwsError {
    /// The call, as `service:Operation` (the IAM action name).
    pub operation: &'static str,
    pub region: String,
    pub kind: AwsErrorKind,
    /// The service's error code, when it sent one.
    pub code: Option<String>,
    pub message: String,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {} failed", self.operation, self.region)?;
        match &self.code {
            Some(code) => write!(f, ": {code}: {}", self.message)?,
            None => write!(f, ": {}", self.message)?,
        }
        match self.kind {
            AwsErrorKind::AccessDenied if self.operation != "sts:AssumeRole" => {
                write!(f, " (access denied: check the role's permissions)")
            }
            AwsErrorKind::Unreachable => write!(f, " (endpoint unreachable)"),
            _ => Ok(()),
        }
    }
}

const ACCESS_DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedAccess",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
    "SignatureDoesNotMatch",
];

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "LimitExceededException",
];

impl AwsError {
    /// Classifies an SDK error from `operation` (e.g. `"ec2:DescribeSecurityGroups"`).
    pub fn from_sdk<E>(
        operation: &'static str,
        region: &str,
        error: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        use aws_smithy_runtime_api::client::result::SdkError;
        let (kind, code, message) = match &error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                let code = inner.code().map(str::to_owned);
                let status = service.raw().status().as_u16();
                let message = match (inner.message(), &code) {
                    (Some(message), _) => message.to_owned(),
                    // No AWS error in the answer (a proxy's or an emulator's error page, say).
                    (None, None) => format!("HTTP {status} with no AWS error in the body"),
                    (None, Some(_)) => display_chain(inner),
                };
                // A server-side failure is not a refusal of the request.
                let kind = match classify_code(code.as_deref()) {
                    AwsErrorKind::Rejected if status >= 500 => AwsErrorKind::Other,
                    kind => kind,
                };
                (kind, code, message)
            }
            SdkError::TimeoutError(_) => (AwsErrorKind::Unreachable, None, "the request timed out".to_owned()),
            SdkError::DispatchFailure(failure) => {
                let kind = if failure.is_io() || failure.is_timeout() {
                    AwsErrorKind::Unreachable
                } else {
                    AwsErrorKind::Other
                };
                (kind, None, display_chain(&error))
            }
            _ => {
                let code = error.code().map(str::to_owned);
                (classify_code(code.as_deref()), code, display_chain(&error))
            }
        };
        Self { operation, region: region.to_owned(), kind, code, message }
    }

    pub fn is_throttling(&self) -> bool {
        self.kind == AwsErrorKind::Throttled
    }
}

/// The error and each of its causes, each once: what the SDK's `DisplayErrorContext` shows,
/// without the `Debug` dump it appends (kilobytes for a failed credential chain).
pub fn display_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn classify_code(code: Option<&str>) -> AwsErrorKind {
    match code {
        Some(code) if ACCESS_DENIED_CODES.contains(&code) => AwsErrorKind::AccessDenied,
        Some(code) if THROTTLING_CODES.contains(&code) => AwsErrorKind::Throttled,
        Some(_) => AwsErrorKind::Rejected,
        None => AwsErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(classify_code(Some("ThrottlingException")), AwsErrorKind::Throttled);
        assert_eq!(classify_code(Some("AccessDenied")), AwsErrorKind::AccessDenied);
        assert_eq!(classify_code(Some("InvalidGroup.NotFound")), AwsErrorKind::Rejected);
        assert_eq!(classify_code(None), AwsErrorKind::Other);
    }

    #[test]
    fn message_names_the_call_and_the_region() {
        let mut error = AwsError {
            operation: "ec2:DescribeInstances",
            region: "us-east-1".into(),
            kind: AwsErrorKind::AccessDenied,
            code: Some("UnauthorizedOperation".into()),
            message: "not authorized".into(),
        };
        let text = error.to_string();
        assert!(
            text.starts_with("ec2:DescribeInstances in us-east-1 failed: UnauthorizedOperation: not authorized"),
            "{text}"
        );
        assert!(text.ends_with("(access denied: check the role's permissions)"), "{text}");
        // A refused AssumeRole is about the trust policy, which its own message explains.
        error.operation = "sts:AssumeRole";
        assert!(!error.to_string().contains("role's permissions"));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("dispatch failure")]
    struct Outer(#[source] Middle);
    #[derive(Debug, thiserror::Error)]
    #[error("other: no credentials found in chain")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_each_cause_once_and_no_debug_dump() {
        let error = Outer(Middle(std::io::Error::other("no credentials found in chain")));
        assert_eq!(display_chain(&error), "dispatch failure: other: no credentials found in chain");
    }
}
