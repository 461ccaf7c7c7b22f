//! Opening log files: gzip is recognised by its magic bytes, not its name, and the kind of log
//! (JSON CloudTrail/CloudWatch shapes, flow log text, or Parquet flow logs) by the first bytes
//! of content.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use walkdir::WalkDir;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Parquet files start (and end) with these bytes.
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";
const READ_BUFFER: usize = 256 * 1024;

/// What the first bytes of a file say it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentKind {
    /// A JSON document or JSON lines (CloudTrail, LookupEvents, CloudWatch Logs envelopes).
    Json,
    /// Text lines (VPC flow logs).
    Text,
    /// An Apache Parquet file (VPC flow logs delivered with `FileFormat=parquet`).
    Parquet,
    Empty,
}

/// Counts bytes as they are read from disk, for the progress bar.
struct Counting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens a log file, transparently decompressing gzip, and peeks at its content kind.
pub fn open(path: &Path, progress: Arc<AtomicU64>) -> io::Result<(Box<dyn BufRead + Send>, ContentKind)> {
    open_reader(Counting { inner: File::open(path)?, counter: progress })
}

/// Like `open`, for content that is not a file (an S3 object's body).
pub fn open_reader(inner: impl Read + Send + 'static) -> io::Result<(Box<dyn BufRead + Send>, ContentKind)> {
    let mut file = BufReader::with_capacity(READ_BUFFER, inner);
    let gzip = file.fill_buf()?.starts_with(&GZIP_MAGIC);
    let mut reader: Box<dyn BufRead + Send> = if gzip {
        Box::new(BufReader::with_capacity(READ_BUFFER, flate2::bufread::MultiGzDecoder::new(file)))
    } else {
        Box::new(file)
    };
    let kind = peek_kind(&mut reader)?;
    Ok((reader, kind))
}

/// Skips a UTF-8 byte-order mark and leading white space, then classifies by the next byte.
fn peek_kind(reader: &mut Box<dyn BufRead + Send>) -> io::Result<ContentKind> {
    if reader.fill_buf()?.starts_with(PARQUET_MAGIC) {
        return Ok(ContentKind::Parquet);
    }
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(ContentKind::Empty);
        }
        if buf.starts_with(&[0xef, 0xbb, 0xbf]) {
            reader.consume(3);
            continue;
        }
        let skip = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        if skip == buf.len() {
            reader.consume(skip);
            continue;
        }
        return Ok(match buf[skip] {
            b'{' | b'[' => ContentKind::Json,
            _ => ContentKind::Text,
        });
    }
}

/// Copies `reader` to a temporary file, for content that must be read at random (Parquet keeps
/// its index at the end), and rewinds it. The file is unlinked at once, so nothing is left
/// behind whatever happens; more than `limit` bytes is an error, not a full disk.
pub fn spool(reader: &mut dyn Read, limit: u64) -> io::Result<File> {
    let mut file = anonymous_file()?;
    let copied = io::copy(&mut reader.take(limit.saturating_add(1)), &mut file)?;
    if copied > limit {
        return Err(io::Error::other(format!("the content is larger than the {limit} bytes allowed")));
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// A new file in the temporary folder that no path names any more.
fn anonymous_file() -> io::Result<File> {
    let directory = std::env::temp_dir();
    for _ in 0..16 {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
        let path = directory.join(format!(".skywarden-spool-{}", u64::from_le_bytes(bytes)));
        match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::other("no free temporary file name"))
}

/// Whether a file starts with the Parquet magic bytes (read where it lies, not copied).
pub fn is_parquet_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == PARQUET_MAGIC
}

/// Every regular file under the given paths (recursing into folders), sorted so that imports
/// are reproducible. Hidden files (dot files) inside folders are skipped.
pub fn list_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        for entry in WalkDir::new(path).follow_links(true).sort_by_file_name() {
            match entry {
                Ok(entry) if entry.file_type().is_file() => {
                    let hidden = entry.depth() > 0 && entry.file_name().to_string_lossy().starts_with('.');
                    if !hidden {
                        files.push(entry.into_path());
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let at = error.path().map(Path::to_path_buf).unwrap_or_else(|| path.clone());
                    let reason = error.io_error().map(|e| e.to_string()).unwrap_or_else(|| error.to_string());
                    errors.push((at, reason));
                }
            }
        }
    }
    (files, errors)
}

/// The account id in an S3 CloudTrail object name (`<account>_CloudTrail_<region>_...`), used
/// for events that name no account themselves.
pub fn account_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let (account, rest) = name.split_once('_')?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with("CloudTrail"))
        .then(|| account.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_from_s3_object_names() {
        let path = Path::new("AWSLogs/111111111111_CloudTrail_eu-central-1_20171211T1505Z_A6kvhMoVeCsc7v8U.json.gz");
        assert_eq!(account_from_file_name(path).as_deref(), Some("111111111111"));
        assert_eq!(account_from_file_name(Path::new("events.json")), None);
    }

    #[test]
    fn parquet_is_recognised_also_inside_gzip_and_spooled_within_a_limit() {
        let (_, kind) = open_reader(std::io::Cursor::new(b"PAR1\x15\x04rest".to_vec())).unwrap();
        assert_eq!(kind, ContentKind::Parquet);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, b"PAR1 more").unwrap();
        let (mut reader, kind) = open_reader(std::io::Cursor::new(gzip.finish().unwrap())).unwrap();
        assert_eq!(kind, ContentKind::Parquet);
        let mut spooled = String::new();
        spool(&mut reader, 9).unwrap().read_to_string(&mut spooled).unwrap();
        assert_eq!(spooled, "PAR1 more");
        let error = spool(&mut std::io::Cursor::new(vec![0u8; 10]), 9).unwrap_err();
        assert!(error.to_string().contains("larger than the 9 bytes"), "{error}");
    }
}
