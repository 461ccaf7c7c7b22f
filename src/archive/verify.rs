//! Reading an archived month back: every object is fetched whole, opened as Parquet, and its
//! rows' accounts and ids summed, as the database's are.

use std::fs::File;

use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::record::{Field, Row};

use super::ArchiveError;
use super::destination::Destination;
use super::store::Tally;

/// Only the two columns the checksum needs are decoded.
const IDS: &str = "message ocsf {
    optional group metadata { optional binary uid (STRING); }
    optional group cloud { optional group account { optional binary uid (STRING); } }
}";

/// The tally of every object in `written`; each must hold exactly the rows written to it.
pub async fn read_back(destination: &Destination, written: &[(String, Tally)]) -> Result<Tally, ArchiveError> {
    let mut total = Tally::default();
    for (key, expected) in written {
        let (path, temporary) = destination.fetch(key).await?;
        let tally = tally_file(&path).map_err(|e| ArchiveError::Parquet(key.clone(), e));
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
    let projection = parquet::schema::parser::parse_message_type(IDS)?;
    let mut tally = Tally::default();
    for row in reader.get_row_iter(Some(projection))? {
        let row = row?;
        let id = text_at(&row, &["metadata", "uid"]);
        let account = text_at(&row, &["cloud", "account", "uid"]);
        match (account, id) {
            (Some(account), Some(id)) => tally.add(account, id),
            _ => {
                return Err(parquet::errors::ParquetError::General(format!("row {} has no id or account", tally.rows)));
            }
        }
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
