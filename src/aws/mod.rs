//! The connection to AWS: Skywarden's own credentials (the standard aws-config chain), the role
//! it assumes in each onboarded account, and SDK clients for one account and region.
//!
//! Every client can be pointed at another endpoint (an emulator, a VPC endpoint) with
//! `SKYWARDEN_AWS_ENDPOINT_URL`, per service with `SKYWARDEN_AWS_ENDPOINT_URL_<SERVICE>`, or per
//! account.
//!
//! The only module that builds SDK clients and assumes roles. Imports `model`; it must not
//! know about accounts in the database, logs or alerts.

pub mod arn;
pub mod error;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_types::SdkConfig;
use aws_types::region::Region;

pub use arn::{AccountId, ArnError, RoleArn};
pub use error::{AwsError, AwsErrorKind};

/// The AWS services Skywarden calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Sts,
    CloudTrail,
    Ec2,
    Iam,
    S3,
    Logs,
    Organizations,
    GuardDuty,
    SecurityHub,
}

impl Service {
    pub const ALL: [Service; 9] = [
        Service::Sts,
        Service::CloudTrail,
        Service::Ec2,
        Service::Iam,
        Service::S3,
        Service::Logs,
        Service::Organizations,
        Service::GuardDuty,
        Service::SecurityHub,
    ];

    /// The suffix of its endpoint variable, as in the AWS SDKs' `AWS_ENDPOINT_URL_<SERVICE>`.
    pub fn env_suffix(self) -> &'static str {
        match self {
            Service::Sts => "STS",
            Service::CloudTrail => "CLOUDTRAIL",
            Service::Ec2 => "EC2",
            Service::Iam => "IAM",
            Service::S3 => "S3",
            Service::Logs => "CLOUDWATCH_LOGS",
            Service::Organizations => "ORGANIZATIONS",
            Service::GuardDuty => "GUARDDUTY",
            Service::SecurityHub => "SECURITYHUB",
        }
    }
}

/// How Skywarden reaches AWS.
#[derive(Clone, Default)]
pub struct AwsSettings {
    /// Endpoint for every service, unless a service has its own.
    pub endpoint_url: Option<String>,
    pub service_endpoints: HashMap<Service, String>,
    /// Credentials to use instead of the default chain (tests, or a dedicated key).
    pub static_credentials: Option<Credentials>,
    /// Region for STS and IAM calls.
    pub home_region: Option<String>,
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("endpoint_url", &self.endpoint_url)
            .field("service_endpoints", &self.service_endpoints)
            .field("static_credentials", &self.static_credentials.as_ref().map(|_| "<redacted>"))
            .field("home_region", &self.home_region)
            .finish()
    }
}

pub const DEFAULT_HOME_REGION: &str = "us-east-1";

pub use crate::model::GLOBAL_REGION;

/// Whether `name` has the shape of a region name: `us-east-1`, `ap-southeast-4`,
/// `us-gov-west-1`, `eu-isoe-west-1` (lowercase words and a final number, hyphen-separated).
pub fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Where CloudTrail's LookupEvents shows the events of global services (IAM, STS's global
/// endpoint, console sign-in, CloudFront, Route 53, Organizations): one region per partition.
/// `None` for partitions whose global-events region Skywarden does not know; their accounts
/// see global events only in the regions they poll.
pub fn global_events_region(partition: &str) -> Option<&'static str> {
    match partition {
        "aws" => Some("us-east-1"),
        "aws-us-gov" => Some("us-gov-west-1"),
        "aws-cn" => Some("cn-north-1"),
        _ => None,
    }
}

/// The event sources of global services, which record in the global-events region only. An
/// account that does not poll that region still gets these events from it, and no others.
pub const GLOBAL_SERVICE_EVENT_SOURCES: &[&str] = &[
    "signin.amazonaws.com",
    "iam.amazonaws.com",
    "sts.amazonaws.com",
    "cloudfront.amazonaws.com",
    "route53.amazonaws.com",
    "route53domains.amazonaws.com",
    "organizations.amazonaws.com",
    "account.amazonaws.com",
    "waf.amazonaws.com",
    "shield.amazonaws.com",
    "health.amazonaws.com",
    "support.amazonaws.com",
    "trustedadvisor.amazonaws.com",
    "billingconsole.amazonaws.com",
    "aws-portal.amazonaws.com",
    "ce.amazonaws.com",
    "budgets.amazonaws.com",
];

impl AwsSettings {
    /// Settings from `SKYWARDEN_AWS_ENDPOINT_URL[_<SERVICE>]` and `SKYWARDEN_AWS_HOME_REGION`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut settings = Self {
            endpoint_url: var("SKYWARDEN_AWS_ENDPOINT_URL"),
            home_region: var("SKYWARDEN_AWS_HOME_REGION"),
            ..Default::default()
        };
        for service in Service::ALL {
            if let Some(url) = var(&format!("SKYWARDEN_AWS_ENDPOINT_URL_{}", service.env_suffix())) {
                settings.service_endpoints.insert(service, url);
            }
        }
        settings
    }

    pub fn endpoint_for(&self, service: Service) -> Option<&str> {
        self.service_endpoints.get(&service).or(self.endpoint_url.as_ref()).map(String::as_str)
    }

    pub fn home_region(&self) -> &str {
        self.home_region.as_deref().unwrap_or(DEFAULT_HOME_REGION)
    }

    /// Skywarden's own AWS configuration: its credentials from the standard chain (environment,
    /// profile, SSO, web identity, container or instance role) unless static ones are set.
    pub async fn load(&self) -> SdkConfig {
        let http_client =
            aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .operation_timeout(Duration::from_secs(180))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .region(Region::new(self.home_region().to_owned()));
        if let Some(credentials) = &self.static_credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        loader.load().await
    }
}

/// Credentials of an assumed role, with the settings to build clients from.
#[derive(Clone)]
pub struct AccountSession {
    pub account_id: String,
    base: SdkConfig,
    settings: AwsSettings,
    /// Overrides every service endpoint for this account.
    endpoint_override: Option<String>,
}

impl fmt::Debug for AccountSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSession").field("account_id", &self.account_id).finish_non_exhaustive()
    }
}

/// The role to assume in an onboarded account.
#[derive(Clone)]
pub struct AssumeRoleTarget<'a> {
    pub role_arn: &'a RoleArn,
    pub external_id: &'a str,
    pub endpoint_url: Option<&'a str>,
}

impl fmt::Debug for AssumeRoleTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssumeRoleTarget").field("role_arn", &self.role_arn.as_str()).finish_non_exhaustive()
    }
}

/// Session names show up in the account's own CloudTrail: make them say who we are.
const SESSION_NAME_PREFIX: &str = "skywarden-";

impl AccountSession {
    /// Assumes the account's role with its external ID and returns a session for its clients.
    #[tracing::instrument(skip_all, fields(role_arn = %target.role_arn))]
    pub async fn assume(
        base: &SdkConfig,
        settings: &AwsSettings,
        target: &AssumeRoleTarget<'_>,
    ) -> Result<Self, AwsError> {
        let endpoint = target.endpoint_url.or(settings.endpoint_for(Service::Sts));
        let mut config = aws_sdk_sts::config::Builder::from(base);
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        let sts = aws_sdk_sts::Client::from_conf(config.build());
        let region = settings.home_region().to_owned();
        let response = sts
            .assume_role()
            .role_arn(target.role_arn.as_str())
            .role_session_name(format!("{SESSION_NAME_PREFIX}{}", target.role_arn.account()))
            .external_id(target.external_id)
            .duration_seconds(3600)
            .send()
            .await
            .map_err(|error| {
                let mut error = AwsError::from_sdk("sts:AssumeRole", &region, error);
                if error.kind == AwsErrorKind::AccessDenied {
                    error.message = format!(
                        "{} — the role does not exist, its trust policy does not name Skywarden's principal, or the \
                         external ID does not match (deploy `skywarden accounts template` with this account's external ID)",
                        error.message
                    );
                }
                error
            })?;
        let Some(credentials) = response.credentials() else {
            return Err(AwsError {
                operation: "sts:AssumeRole",
                region,
                kind: AwsErrorKind::Other,
                code: None,
                message: "the response carried no credentials".into(),
            });
        };
        let expiry = std::time::SystemTime::try_from(*credentials.expiration()).ok();
        let assumed = Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            expiry,
            "skywarden-assume-role",
        );
        let config = base.to_builder().credentials_provider(SharedCredentialsProvider::new(assumed)).build();
        Ok(Self {
            account_id: target.role_arn.account().to_string(),
            base: config,
            settings: settings.clone(),
            endpoint_override: target.endpoint_url.map(str::to_owned),
        })
    }

    fn endpoint(&self, service: Service) -> Option<&str> {
        self.endpoint_override.as_deref().or(self.settings.endpoint_for(service))
    }

    pub fn sts(&self) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::config::Builder::from(&self.base);
        if let Some(url) = self.endpoint(Service::Sts) {
            config = config.endpoint_url(url);
        }
        aws_sdk_sts::Client::from_conf(config.build())
    }

    pub fn cloudtrail(&self, region: &str) -> aws_sdk_cloudtrail::Client {
        let mut config = aws_sdk_cloudtrail::config::Builder::from(&self.base).region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint(Service::CloudTrail) {
            config = config.endpoint_url(url);
        }
        aws_sdk_cloudtrail::Client::from_conf(config.build())
    }

    /// CloudTrail client with the SDK's retries off: the LookupEvents poller paces itself and
    /// backs off on throttling with its own jitter, and counts each throttle.
    pub fn cloudtrail_without_retries(&self, region: &str) -> aws_sdk_cloudtrail::Client {
        let mut config = aws_sdk_cloudtrail::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .retry_config(RetryConfig::disabled());
        if let Some(url) = self.endpoint(Service::CloudTrail) {
            config = config.endpoint_url(url);
        }
        aws_sdk_cloudtrail::Client::from_conf(config.build())
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let mut config = aws_sdk_ec2::config::Builder::from(&self.base).region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint(Service::Ec2) {
            config = config.endpoint_url(url);
        }
        aws_sdk_ec2::Client::from_conf(config.build())
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        let mut config = aws_sdk_iam::config::Builder::from(&self.base);
        if let Some(url) = self.endpoint(Service::Iam) {
            config = config.endpoint_url(url);
        }
        aws_sdk_iam::Client::from_conf(config.build())
    }

    pub fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let mut config = aws_sdk_s3::config::Builder::from(&self.base).region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint(Service::S3) {
            // Emulators and VPC endpoints serve buckets by path, not by host name.
            config = config.endpoint_url(url).force_path_style(true);
        }
        aws_sdk_s3::Client::from_conf(config.build())
    }

    pub fn logs(&self, region: &str) -> aws_sdk_cloudwatchlogs::Client {
        let mut config =
            aws_sdk_cloudwatchlogs::config::Builder::from(&self.base).region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint(Service::Logs) {
            config = config.endpoint_url(url);
        }
        aws_sdk_cloudwatchlogs::Client::from_conf(config.build())
    }

    /// An SQS client for the queue at `endpoint`, the origin of its URL: SQS serves a queue at
    /// its URL's host (AWS, a VPC endpoint, an emulator).
    pub fn sqs(&self, region: &str, endpoint: &str) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .endpoint_url(endpoint);
        aws_sdk_sqs::Client::from_conf(config.build())
    }

    pub fn guardduty(&self, region: &str) -> aws_sdk_guardduty::Client {
        let mut config = aws_sdk_guardduty::config::Builder::from(&self.base).region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint(Service::GuardDuty) {
            config = config.endpoint_url(url);
        }
        aws_sdk_guardduty::Client::from_conf(config.build())
    }

    pub fn securityhub(&self, region: &str) -> aws_sdk_securityhub::Client {
        let mut config = aws_sdk_securityhub::config::Builder::from(&self.base).region(Region::new(region.to_owned()));
        if let Some(url) = self.endpoint(Service::SecurityHub) {
            config = config.endpoint_url(url);
        }
        aws_sdk_securityhub::Client::from_conf(config.build())
    }

    /// Organizations is a global service: asked in the home region, its endpoint resolver
    /// picks the partition's single endpoint.
    pub fn organizations(&self) -> aws_sdk_organizations::Client {
        let mut config = aws_sdk_organizations::config::Builder::from(&self.base)
            .region(Region::new(self.settings.home_region().to_owned()));
        if let Some(url) = self.endpoint(Service::Organizations) {
            config = config.endpoint_url(url);
        }
        aws_sdk_organizations::Client::from_conf(config.build())
    }
}
