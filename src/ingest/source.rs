//! Opening log files: gzip is recognised by its magic bytes, not its name, and the kind of log
//! (JSON CloudTrail/CloudWatch shapes, flow log text, or Parquet flow logs) by the first bytes
//! of content. Gzip content that inflates far beyond its size is refused (a gzip bomb).

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
/// Largest ratio of decompressed to compressed bytes by default: log files compress 5 to 20
/// times, a gzip bomb about 1000 times.
pub const DEFAULT_MAX_GZIP_RATIO: u64 = 100;
/// Decompressed bytes allowed whatever the ratio (small files may compress well).
pub const GZIP_RATIO_FLOOR: u64 = 64 << 20;

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

/// Stops gzip content that inflates more than `max_ratio` times the compressed bytes read
/// (past `floor`), before it costs hours of parsing.
struct RatioLimit<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    inflated: u64,
    max_ratio: u64,
    floor: u64,
}

impl<R: Read> Read for RatioLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inflated += n as u64;
        let compressed = self.compressed.load(Ordering::Relaxed);
        if self.max_ratio > 0 && self.inflated > self.floor && self.inflated > compressed.saturating_mul(self.max_ratio)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "gzip content inflates to more than {} times its compressed size ({} bytes from the first \
                     {compressed} bytes): refused as a likely gzip bomb (the limit is --max-gzip-ratio)",
                    self.max_ratio, self.inflated
                ),
            ));
        }
        Ok(n)
    }
}

/// Opens a log file, transparently decompressing gzip (within `max_gzip_ratio`, 0 for no
/// limit), and peeks at its content kind.
pub fn open(
    path: &Path,
    progress: Arc<AtomicU64>,
    max_gzip_ratio: u64,
) -> io::Result<(Box<dyn BufRead + Send>, ContentKind)> {
    open_reader_limited(Counting { inner: File::open(path)?, counter: progress }, max_gzip_ratio)
}

/// Like `open`, for content that is not a file (an S3 object's body), with the default gzip
/// ratio limit.
pub fn open_reader(inner: impl Read + Send + 'static) -> io::Result<(Box<dyn BufRead + Send>, ContentKind)> {
    open_reader_limited(inner, DEFAULT_MAX_GZIP_RATIO)
}

/// Like `open_reader`, with a gzip ratio limit (0 for none).
pub fn open_reader_limited(
    inner: impl Read + Send + 'static,
    max_gzip_ratio: u64,
) -> io::Result<(Box<dyn BufRead + Send>, ContentKind)> {
    open_with_floor(inner, max_gzip_ratio, GZIP_RATIO_FLOOR)
}

fn open_with_floor(
    inner: impl Read + Send + 'static,
    max_ratio: u64,
    floor: u64,
) -> io::Result<(Box<dyn BufRead + Send>, ContentKind)> {
    let compressed = Arc::new(AtomicU64::new(0));
    let mut file = BufReader::with_capacity(READ_BUFFER, Counting { inner, counter: compressed.clone() });
    let gzip = file.fill_buf()?.starts_with(&GZIP_MAGIC);
    let mut reader: Box<dyn BufRead + Send> = if gzip {
        let inflate = flate2::bufread::MultiGzDecoder::new(file);
        let limited = RatioLimit { inner: inflate, compressed, inflated: 0, max_ratio, floor };
        Box::new(BufReader::with_capacity(READ_BUFFER, limited))
    } else {
        Box::new(file)
    };
    let kind = peek_kind(&mut reader)?;
    Ok((reader, kind))
}

/// What [`read_line_limited`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// No more input.
    End,
    /// A line, in the buffer (with its `\n`, if it had one).
    Line,
    /// A line longer than the limit: consumed to its end, not kept.
    TooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRead {
    pub kind: LineKind,
    /// Bytes consumed, the `\n` included.
    pub length: u64,
}

/// Reads one line into `line` (cleared first), holding at most `max` bytes of it: a longer
/// line is consumed to its end without being kept.
pub fn read_line_limited(reader: &mut dyn BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<LineRead> {
    line.clear();
    let (mut length, mut too_long) = (0u64, false);
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buf.is_empty() {
            let kind = match (length, too_long) {
                (0, _) => LineKind::End,
                (_, true) => LineKind::TooLong,
                _ => LineKind::Line,
            };
            return Ok(LineRead { kind, length });
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(index) => (index + 1, true),
            None => (buf.len(), false),
        };
        // The limit is on the line's content, its `\n` aside.
        too_long |= line.len() + take - usize::from(done) > max;
        if too_long {
            line.clear();
        } else {
            line.extend_from_slice(&buf[..take]);
        }
        reader.consume(take);
        length += take as u64;
        if done {
            let kind = if too_long { LineKind::TooLong } else { LineKind::Line };
            return Ok(LineRead { kind, length });
        }
    }
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

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gzip, data).unwrap();
        gzip.finish().unwrap()
    }

    /// Opens and reads everything (white space alone is read through by the opening); the
    /// error, if any.
    fn read_all(content: &[u8], max_ratio: u64, floor: u64) -> Option<io::Error> {
        let (mut reader, _) = match open_with_floor(io::Cursor::new(content.to_vec()), max_ratio, floor) {
            Ok(opened) => opened,
            Err(error) => return Some(error),
        };
        io::copy(&mut reader, &mut io::sink()).err()
    }

    #[test]
    fn gzip_inflating_past_the_ratio_is_refused_past_the_floor() {
        // 4 MiB of spaces in about 4 KB: a ratio near 1000.
        for content in [vec![b' '; 4 << 20], [b"[\"".as_slice(), &vec![b'a'; 4 << 20]].concat()] {
            let bomb = gzip(&content);
            let error = read_all(&bomb, 100, 1 << 20).expect("refused");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(error.to_string().contains("more than 100 times its compressed size"), "{error}");
            // Under the floor, or with no limit, or within the ratio, it is read.
            for (ratio, floor) in [(100, 8 << 20), (0, 0), (2_000, 0)] {
                assert!(read_all(&bomb, ratio, floor).is_none(), "ratio {ratio}, floor {floor}");
            }
        }
        // Ordinary content compresses far less than 100 times.
        let lines: String =
            (0..20_000).map(|i| format!("2 111122223333 eni-{i:08x} 10.0.0.{} ACCEPT OK\n", i % 250)).collect();
        assert!(read_all(&gzip(lines.as_bytes()), 100, 0).is_none());
    }

    #[test]
    fn lines_longer_than_the_limit_are_consumed_not_kept() {
        let input = format!("short\n{}\nexactly10!\n{}", "x".repeat(50), "tail");
        let mut reader = io::Cursor::new(input.into_bytes());
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            let read = read_line_limited(&mut reader, &mut line, 10).unwrap();
            if read.kind == LineKind::End {
                break;
            }
            seen.push((read.kind, read.length, String::from_utf8(line.clone()).unwrap()));
        }
        assert_eq!(
            seen,
            [
                (LineKind::Line, 6, "short\n".to_string()),
                (LineKind::TooLong, 51, String::new()),
                (LineKind::Line, 11, "exactly10!\n".to_string()),
                (LineKind::Line, 4, "tail".to_string()),
            ]
        );
    }
}
