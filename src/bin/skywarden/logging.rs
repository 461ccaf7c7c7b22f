//! Logging of the binary: `tracing` to stderr (so `--json` output on stdout stays clean),
//! human-readable or JSON, filtered by `RUST_LOG`.
//!
//! The AWS SDK logs every credential source it tries, and at debug whole requests and the
//! instance metadata service's retries: a terminal gets none of it. Its crates log at warn at
//! most by default; one-shot commands keep them at error whatever `RUST_LOG` says, since they
//! report AWS failures themselves in one sentence.

use skywarden::telemetry::LogFormat;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::{EnvFilter, fmt};

/// Targets of the AWS SDK (a directive's target matches every module path it begins).
const AWS_SDK_TARGETS: &[&str] =
    &["aws_config", "aws_smithy", "aws_sdk", "aws_runtime", "aws_credential_types", "aws_types", "aws_sigv4"];

/// The filter: `RUST_LOG`, else info with sqlx and the AWS SDK at warn; for a one-shot command
/// (`long_running` false) the AWS SDK at error whatever `RUST_LOG` asks.
pub fn filter(rust_log: Option<&str>, long_running: bool) -> EnvFilter {
    let mut filter = rust_log.and_then(|text| EnvFilter::try_new(text).ok()).unwrap_or_else(|| {
        AWS_SDK_TARGETS
            .iter()
            .fold(EnvFilter::new("info,sqlx=warn"), |filter, target| filter.add_directive(directive(target, "warn")))
    });
    if !long_running {
        for target in AWS_SDK_TARGETS {
            filter = filter.add_directive(directive(target, "error"));
        }
    }
    filter
}

fn directive(target: &str, level: &str) -> Directive {
    format!("{target}={level}").parse().expect("a target and a level make a directive")
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, long_running: bool) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let builder = fmt().with_env_filter(filter(rust_log.as_deref(), long_running)).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn the_aws_sdk_never_logs_below_warn_and_one_shot_commands_show_only_its_errors() {
        let shown = |filter: &tracing_subscriber::EnvFilter| filter.to_string();
        let default = shown(&filter(None, true));
        assert!(default.contains("aws_config=warn") && default.contains("aws_smithy=warn"), "{default}");
        let asked = shown(&filter(Some("debug"), false));
        assert!(asked.contains("aws_config=error") && asked.contains("aws_smithy=error"), "{asked}");
        assert!(asked.contains("debug"), "{asked}");
        // A long-running process honours an explicit RUST_LOG for the SDK (to debug a connection).
        let explicit = shown(&filter(Some("info,aws_smithy_runtime=debug"), true));
        assert!(explicit.contains("aws_smithy_runtime=debug"), "{explicit}");
    }
}
