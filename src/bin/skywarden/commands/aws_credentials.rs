//! Skywarden's own AWS credentials, checked before a command relies on them: when none are
//! found, one sentence names every place the SDK's default chain looked (not the SDK's error
//! dump), and an instance metadata service that never answers cannot hold the command up.

use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_types::SdkConfig;
use skywarden::aws::AwsSettings;

/// Longest the chain may take: off EC2, the metadata service may swallow connections.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Skywarden's AWS settings and configuration, once its credentials are found (see [`probe`]).
pub(crate) async fn load_checked(what_else: &str) -> anyhow::Result<(AwsSettings, SdkConfig)> {
    let settings = AwsSettings::from_env();
    let base = settings.load().await;
    probe(&base, what_else).await?;
    Ok((settings, base))
}

/// Loads Skywarden's credentials once; `what_else` ends the message (how to go on without).
pub(crate) async fn probe(base: &SdkConfig, what_else: &str) -> anyhow::Result<()> {
    let Some(provider) = base.credentials_provider() else {
        anyhow::bail!("no AWS credentials found ({}); {what_else}", places_tried())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(CredentialsError::CredentialsNotLoaded(_))) => {
            anyhow::bail!("no AWS credentials found ({}); {what_else}", places_tried())
        }
        Ok(Err(CredentialsError::ProviderTimedOut(_))) | Err(_) => anyhow::bail!(
            "no AWS credentials found within {}s ({}; one of them did not answer, often the instance metadata \
             service off EC2: AWS_EC2_METADATA_DISABLED=true skips it); {what_else}",
            PROBE_TIMEOUT.as_secs(),
            places_tried()
        ),
        Ok(Err(error)) => anyhow::bail!(
            "AWS credentials could not be loaded: {}; {what_else}",
            skywarden::aws::error::display_chain(&error)
        ),
    }
}

/// Where the default chain looks, in its order, with the files and profile it would read.
fn places_tried() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let config = var("AWS_CONFIG_FILE").unwrap_or_else(|| "~/.aws/config".into());
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| "~/.aws/credentials".into());
    let imds_off = var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    format!(
        "tried: the environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; profile \"{profile}\" \
         (AWS_PROFILE) in the shared config and credentials files {config} and {credentials}, with SSO and \
         credential_process; web identity (AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN); ECS/EKS container \
         credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI); the EC2 \
         instance metadata service (IMDS){}",
        if imds_off { ", turned off by AWS_EC2_METADATA_DISABLED" } else { "" }
    )
}
