//! Reading an archived month back: every object is fetched whole, opened as Parquet, and each
//! row's content (id, account, `time_dt` and `raw_data`, the stored row itself) hashed and
//! summed, as the rows were when written ([`content_parts`]): a row lost, duplicated or altered
//! changes the sum.

use std::fs::File;

use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::record::{Field, Row};

use super::ArchiveError;
use super::destination::Destination;
use super::store::Tally;

/// Only the columns the checksum needs are decoded (the message is named as the file's root,
/// which a projection must match: `ocsf` from us, `schema` from pyarrow).
const CONTENT: &str = "{
    optional binary time_dt (STRING);
    optional group metadata { optional binary uid (STRING); }
    optional binary raw_data (STRING);
    optional group cloud { optional group account { optional binary uid (STRING); } }
}";

/// The leaves a row's content checksum covers, in hashing order.
pub const CONTENT_LEAVES: [&str; 4] = ["metadata.uid", "cloud.account.uid", "time_dt", "raw_data"];

/// A row's content as hashed: the [`CONTENT_LEAVES`] (an absent one as empty text).
pub fn content_parts(values: [Option<&str>; 4]) -> [&str; 4] {
    values.map(|v| v.unwrap_or(""))
}

/// The tally of every object in `written`; each must hold exactly the rows written to it.
pub async fn read_back(destination: &Destination, written: &[(String, Tally)]) -> Result<Tally, ArchiveError> {
    let mut total = Tally::default();
    for (key, expected) in written {
        let (path, temporary) = destination.fetch(key).await?;
        // Decoding and decompressing are blocking work: off the async runtime.
        let read = path.clone();
        let tally = tokio::task::spawn_blocking(move || tally_file(&read))
            .await
            .map_err(|e| ArchiveError::Destination(format!("{key}: reading back: {e}")))?
            .map_err(|e| ArchiveError::Parquet(key.clone(), e));
        if temporary {
            let _ = std::fs::remove_file(&path);
        }
        let tally = tally?;
        if tally != *expected {
            return Err(ArchiveError::Destination(format!(
                "{key}: read back {} rows (checksum {}), wrote {} (checksum {})",
                tally.rows, tally.checksum, expected.rows, expected.checksum
            )));
        }
        total.merge(tally);
    }
    Ok(total)
}

/// Rows and checksum of one Parquet file (blocking: called on a file of bounded row groups).
pub fn tally_file(path: &std::path::Path) -> Result<Tally, parquet::errors::ParquetError> {
    let file =
        File::open(path).map_err(|e| parquet::errors::ParquetError::General(format!("{}: {e}", path.display())))?;
    let reader = SerializedFileReader::new(file)?;
    let root = reader.metadata().file_metadata().schema().name().to_owned();
    let projection = parquet::schema::parser::parse_message_type(&format!("message {root} {CONTENT}"))?;
    let mut tally = Tally::default();
    for row in reader.get_row_iter(Some(projection))? {
        let row = row?;
        let values = CONTENT_LEAVES.map(|leaf| text_at(&row, &leaf.split('.').collect::<Vec<_>>()));
        if values[0].is_none() || values[1].is_none() {
            return Err(parquet::errors::ParquetError::General(format!("row {} has no id or account", tally.rows)));
        }
        tally.add_parts(&content_parts(values));
    }
    Ok(tally)
}

fn text_at<'a>(row: &'a Row, path: &[&str]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    let (_, field) = row.get_column_iter().find(|(name, _)| name.as_str() == *first)?;
    match (field, rest.is_empty()) {
        (Field::Str(text), true) => Some(text.as_str()),
        (Field::Group(group), false) => text_at(group, rest),
        _ => None,
    }
}
