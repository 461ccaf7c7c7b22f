//! Where the lake lives: a folder, or an S3 bucket and prefix (`s3://bucket/prefix`). Objects
//! are written whole or not at all: a folder's through a temporary name renamed into place, an
//! S3 object from a finished local file, by one PutObject or, past the part size (100 MiB),
//! by a multipart upload that S3 shows only once completed (and that is aborted on failure).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::ArchiveError;
use crate::aws::{AwsSettings, Service};

pub enum Destination {
    Folder(PathBuf),
    S3 { client: aws_sdk_s3::Client, bucket: String, prefix: String, part_size: u64 },
}

/// Objects larger than this go up in parts of this size.
pub const DEFAULT_PART_SIZE: u64 = 100 << 20;
/// S3's limits: every part but the last at least 5 MiB, at most 10,000 parts.
const MIN_PART_SIZE: u64 = 5 << 20;
const MAX_PARTS: u64 = 10_000;

static STAGED: AtomicU64 = AtomicU64::new(0);

impl Destination {
    /// `s3://bucket/prefix` (Skywarden's own AWS credentials, `SKYWARDEN_AWS_ENDPOINT_URL_S3`
    /// honoured) or a folder, created if missing.
    pub async fn open(text: &str, settings: &AwsSettings) -> Result<Self, ArchiveError> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ArchiveError::Destination(format!("{text}: no bucket name after s3://")));
            }
            let base = settings.load().await;
            let mut config = aws_sdk_s3::config::Builder::from(&base);
            if let Some(url) = settings.endpoint_for(Service::S3) {
                config = config.endpoint_url(url).force_path_style(true);
            }
            let client = aws_sdk_s3::Client::from_conf(config.build());
            let prefix = prefix.trim_matches('/').to_owned();
            return Ok(Self::S3 { client, bucket: bucket.to_owned(), prefix, part_size: DEFAULT_PART_SIZE });
        }
        let path = PathBuf::from(text);
        std::fs::create_dir_all(&path)
            .map_err(|e| ArchiveError::Destination(format!("{}: cannot create the folder: {e}", path.display())))?;
        Ok(Self::Folder(path))
    }

    /// Another multipart part size (at least S3's 5 MiB): objects larger go up in parts.
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        if let Self::S3 { part_size, .. } = &mut self {
            *part_size = bytes.max(MIN_PART_SIZE);
        }
        self
    }

    /// A local file to write an object's content to before `commit`.
    pub fn stage(&self, key: &str) -> Result<PathBuf, ArchiveError> {
        let unique = format!("{}.{}.tmp", std::process::id(), STAGED.fetch_add(1, Ordering::Relaxed));
        let path = match self {
            Self::Folder(root) => {
                let target = root.join(key);
                let parent = target.parent().unwrap_or(root);
                std::fs::create_dir_all(parent).map_err(|e| io_error(parent, &e))?;
                parent.join(format!(".{}.{unique}", file_name(key)))
            }
            Self::S3 { .. } => std::env::temp_dir().join(format!("skywarden-archive-{unique}")),
        };
        Ok(path)
    }

    /// Puts the staged file at `key` (replacing what was there: names are deterministic).
    pub async fn commit(&self, staged: &Path, key: &str) -> Result<(), ArchiveError> {
        match self {
            Self::Folder(root) => {
                let (root, target, staged) = (root.clone(), root.join(key), staged.to_path_buf());
                tokio::task::spawn_blocking(move || commit_durably(&root, &staged, &target))
                    .await
                    .map_err(|e| ArchiveError::Destination(format!("{key}: the committing thread failed: {e}")))?
            }
            Self::S3 { client, bucket, prefix, part_size } => {
                let size = tokio::fs::metadata(staged).await.map_err(|e| io_error(staged, &e))?.len();
                let upload = Upload { client, bucket, key: object_key(prefix, key), staged };
                let result = if size > *part_size {
                    upload.multipart(size, (*part_size).max(size.div_ceil(MAX_PARTS))).await
                } else {
                    upload.put().await
                };
                let _ = tokio::fs::remove_file(staged).await;
                result.map_err(|e| ArchiveError::Destination(format!("s3://{bucket}/{}: {e}", object_key(prefix, key))))
            }
        }
    }

    /// A local file holding the object's content, to read back; the bool says whether it is a
    /// temporary copy for the caller to remove.
    pub async fn fetch(&self, key: &str) -> Result<(PathBuf, bool), ArchiveError> {
        match self {
            Self::Folder(root) => Ok((root.join(key), false)),
            Self::S3 { client, bucket, prefix, .. } => {
                let object = client
                    .get_object()
                    .bucket(bucket)
                    .key(object_key(prefix, key))
                    .send()
                    .await
                    .map_err(|e| s3_error(bucket, prefix, key, &e))?;
                let path = self.stage(key)?;
                let mut file = tokio::fs::File::create(&path).await.map_err(|e| io_error(&path, &e))?;
                let mut body = object.body.into_async_read();
                tokio::io::copy(&mut body, &mut file).await.map_err(|e| io_error(&path, &e))?;
                Ok((path, true))
            }
        }
    }

    /// Removes an object no longer part of the month (a rewrite wrote fewer files).
    pub async fn delete(&self, key: &str) -> Result<(), ArchiveError> {
        match self {
            Self::Folder(root) => match tokio::fs::remove_file(root.join(key)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&root.join(key), &e)),
                _ => Ok(()),
            },
            Self::S3 { client, bucket, prefix, .. } => client
                .delete_object()
                .bucket(bucket)
                .key(object_key(prefix, key))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| s3_error(bucket, prefix, key, &e)),
        }
    }
}

/// One staged file going to one S3 key.
struct Upload<'a> {
    client: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    key: String,
    staged: &'a Path,
}

impl Upload<'_> {
    async fn put(&self) -> Result<(), String> {
        let body = self.part(0, None).await?;
        let put = self.client.put_object().bucket(self.bucket).key(&self.key).body(body).send().await;
        put.map(|_| ()).map_err(|e| chain(&e))
    }

    /// The file's bytes from `offset` (`length` of them, or to the end), read as sent.
    async fn part(&self, offset: u64, length: Option<u64>) -> Result<ByteStream, String> {
        let mut builder = ByteStream::read_from().path(self.staged).offset(offset);
        if let Some(length) = length {
            builder = builder.length(Length::Exact(length));
        }
        builder.build().await.map_err(|e| format!("{}: {e}", self.staged.display()))
    }

    /// Uploads the file in parts of `part_size`, one at a time (memory stays one buffer); an
    /// upload that fails is aborted, so no invisible parts are left to pay for.
    async fn multipart(&self, size: u64, part_size: u64) -> Result<(), String> {
        let created = self.client.create_multipart_upload().bucket(self.bucket).key(&self.key).send().await;
        let upload_id =
            created.map_err(|e| chain(&e))?.upload_id.ok_or("CreateMultipartUpload returned no UploadId")?;
        let result = self.send_parts(&upload_id, size, part_size).await;
        if result.is_err() {
            let abort = self.client.abort_multipart_upload().bucket(self.bucket).key(&self.key).upload_id(&upload_id);
            if let Err(error) = abort.send().await {
                tracing::warn!(key = %self.key, %upload_id, error = %chain(&error), "aborting a failed multipart upload failed");
            }
        }
        result
    }

    async fn send_parts(&self, upload_id: &str, size: u64, part_size: u64) -> Result<(), String> {
        let mut parts = Vec::new();
        for (index, offset) in (0..size).step_by(usize::try_from(part_size).unwrap_or(usize::MAX)).enumerate() {
            let number = i32::try_from(index + 1).map_err(|_| "too many parts")?;
            let body = self.part(offset, Some(part_size.min(size - offset))).await?;
            let sent = self
                .client
                .upload_part()
                .bucket(self.bucket)
                .key(&self.key)
                .upload_id(upload_id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(|e| format!("part {number}: {}", chain(&e)))?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag).build());
        }
        let completed = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        self.client
            .complete_multipart_upload()
            .bucket(self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| chain(&e))
    }
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn object_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}/{key}") }
}

fn io_error(path: &Path, error: &std::io::Error) -> ArchiveError {
    ArchiveError::Destination(format!("{}: {error}", path.display()))
}

fn s3_error(bucket: &str, prefix: &str, key: &str, error: &impl std::error::Error) -> ArchiveError {
    ArchiveError::Destination(format!("s3://{bucket}/{}: {}", object_key(prefix, key), chain(error)))
}

/// An error with its causes (the SDK's own message is only "service error").
pub(super) fn chain(error: &impl std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

/// Renames `staged` to `target` so that both the content and the name survive a power loss
/// before the month is dropped from PostgreSQL: the file is synced, renamed, then its folder
/// and every folder up to `root` (some were just created) are synced.
fn commit_durably(root: &Path, staged: &Path, target: &Path) -> Result<(), ArchiveError> {
    std::fs::File::open(staged).and_then(|f| f.sync_all()).map_err(|e| io_error(staged, &e))?;
    std::fs::rename(staged, target).map_err(|e| io_error(target, &e))?;
    let mut folder = target.parent();
    while let Some(dir) = folder {
        std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| io_error(dir, &e))?;
        if dir == root || !dir.starts_with(root) {
            break;
        }
        folder = dir.parent();
    }
    Ok(())
}
