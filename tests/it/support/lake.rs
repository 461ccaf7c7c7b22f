//! Archiving a test database's months to a lake (a folder, or a bucket on moto) through the real
//! `skywarden::archive::run`, for the tests that write the lake and those that read it back.

use skywarden::archive::destination::Destination;
use skywarden::archive::{self, ArchiveError, ArchiveOptions, RunReport};
use skywarden::aws::{AwsSettings, Service};
use sqlx::PgPool;

use super::TestDb;
use super::aws as fake;

/// Settings for a folder lake: it needs no AWS, and any call that tried would fail.
pub fn no_aws() -> AwsSettings {
    fake::settings_for("http://127.0.0.1:1")
}

/// Options that archive every month before December 2026 (the sample incident is November
/// 2026's; the generated months are older) to `to`, in row groups of `row_group_rows` rows.
pub fn before_december_2026(to: &str, row_group_rows: usize) -> ArchiveOptions {
    ArchiveOptions {
        older_than_days: 1,
        destination_text: to.to_owned(),
        dry_run: false,
        row_group_rows,
        row_group_bytes: archive::DEFAULT_ROW_GROUP_BYTES,
        now: chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 20, 0, 0, 0).unwrap(),
        fail_after_objects: None,
        test_hook: None,
    }
}

/// One archive run with `options`, to the destination they name.
pub async fn run(pool: &PgPool, settings: &AwsSettings, options: &ArchiveOptions) -> Result<RunReport, ArchiveError> {
    let destination = Destination::open(&options.destination_text, settings).await.unwrap();
    archive::run(pool, &destination, options).await
}

/// Archives every month before December 2026 to `to` (see [`before_december_2026`]), asserting
/// that no month failed.
pub async fn archive_before_december_2026(db: &TestDb, to: &str, settings: &AwsSettings, row_group_rows: usize) {
    let report = run(&db.pool, settings, &before_december_2026(to, row_group_rows)).await.unwrap();
    assert_eq!(report.failed(), 0, "{:?}", report.months);
}

/// An S3 client on moto (the endpoint of `settings`) and a new bucket for a lake.
pub async fn bucket(settings: &AwsSettings) -> (aws_sdk_s3::Client, String) {
    let base = settings.load().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&base)
            .endpoint_url(settings.endpoint_for(Service::S3).unwrap())
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("lake-{}", fake::random_account_id());
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    (s3, bucket)
}
