//! VPC flow logs delivered as Apache Parquet (`FileFormat=parquet`, GZIP-compressed columns):
//! one column per field, named as the field with underscores (`log_status` for `log-status`),
//! numbers as INT32/INT64 and the rest as strings, null for a field with no value. A row
//! becomes the same [`FlowRecord`], with the same identity, as the line the text layout writes
//! for it.
//!
//! Read with the `parquet` crate's row reader (no Arrow: a fraction of the compile time, and
//! flow logs are flat rows anyway). Parquet needs random access to its footer, so the caller
//! hands a file, never a stream.

use std::borrow::Cow;
use std::fs::File;

use ::parquet::file::serialized_reader::SerializedFileReader;
use ::parquet::record::{Field, Row};

use super::{FlowError, FlowRecord};

/// A Parquet object that cannot be read as a whole: the object fails, rows already read or not.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("not a readable Parquet file: {0}")]
    Unreadable(#[source] ::parquet::errors::ParquetError),
    #[error("Parquet row {row} cannot be read: {source}")]
    Row {
        row: u64,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
}

/// The flow log field a column holds: `log_status` → `log-status`, `type` → `type`.
pub fn field_name(column: &str) -> String {
    column.replace('_', "-")
}

/// A column value as the text layout writes it; `None` for no value (null, empty or `-`).
pub fn field_text(value: &Field) -> Option<Cow<'_, str>> {
    let text: Cow<'_, str> = match value {
        Field::Null => return None,
        Field::Str(text) => Cow::Borrowed(text.as_str()),
        Field::Bytes(bytes) => String::from_utf8_lossy(bytes.data()),
        Field::Bool(v) => Cow::Owned(v.to_string()),
        Field::Byte(v) => Cow::Owned(v.to_string()),
        Field::Short(v) => Cow::Owned(v.to_string()),
        Field::Int(v) => Cow::Owned(v.to_string()),
        Field::Long(v) => Cow::Owned(v.to_string()),
        Field::UByte(v) => Cow::Owned(v.to_string()),
        Field::UShort(v) => Cow::Owned(v.to_string()),
        Field::UInt(v) => Cow::Owned(v.to_string()),
        Field::ULong(v) => Cow::Owned(v.to_string()),
        other => Cow::Owned(other.to_string()),
    };
    (!text.is_empty() && text != "-").then_some(text)
}

/// One row as a flow record.
pub fn record_from_row(row: &Row) -> Result<FlowRecord, FlowError> {
    let fields: Vec<(String, Cow<'_, str>)> =
        row.get_column_iter().filter_map(|(column, value)| Some((field_name(column), field_text(value)?))).collect();
    FlowRecord::from_fields(fields.iter().map(|(name, value)| (name.as_str(), value.as_ref())))
}

/// Reads every row of a Parquet file, handing each (1-based row number, record) to `each`,
/// which returns false to stop. Returns the rows read.
pub fn read_records(
    file: File,
    each: &mut dyn FnMut(u64, Result<FlowRecord, FlowError>) -> bool,
) -> Result<u64, ParquetError> {
    let reader = SerializedFileReader::new(file).map_err(ParquetError::Unreadable)?;
    let mut rows = 0;
    for row in reader {
        let row = row.map_err(|source| ParquetError::Row { row: rows + 1, source })?;
        rows += 1;
        if !each(rows, record_from_row(&row)) {
            break;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, Write};
    use std::sync::Arc;

    use ::parquet::basic::Compression;
    use ::parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
    use ::parquet::file::properties::WriterProperties;
    use ::parquet::file::writer::SerializedFileWriter;
    use ::parquet::schema::parser::parse_message_type;

    use super::*;
    use crate::ingest::flowlogs::FlowFormat;

    const SCHEMA: &str = "message flows {
        OPTIONAL INT32 version; OPTIONAL BYTE_ARRAY account_id (UTF8); OPTIONAL BYTE_ARRAY srcaddr (UTF8);
        OPTIONAL INT32 dstport; OPTIONAL INT64 start; OPTIONAL BYTE_ARRAY log_status (UTF8);
        OPTIONAL BYTE_ARRAY ecs_cluster_name (UTF8);
    }";

    /// Two rows as AWS writes them (GZIP columns); the second has no source address.
    fn flow_file() -> File {
        let props = WriterProperties::builder().set_compression(Compression::GZIP(Default::default())).build();
        let schema = Arc::new(parse_message_type(SCHEMA).unwrap());
        let mut file = tempfile::tempfile().unwrap();
        let mut writer = SerializedFileWriter::new(file.try_clone().unwrap(), schema, Arc::new(props)).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let text = |values: &[&str]| values.iter().map(|v| ByteArray::from(*v)).collect::<Vec<_>>();
        let columns: [(&str, Vec<i16>); 7] = [
            ("version", vec![1, 1]),
            ("account", vec![1, 1]),
            ("srcaddr", vec![1, 0]),
            ("dstport", vec![1, 1]),
            ("start", vec![1, 1]),
            ("status", vec![1, 1]),
            ("cluster", vec![0, 0]),
        ];
        for (name, levels) in columns {
            let mut column = group.next_column().unwrap().unwrap();
            match name {
                "version" => column.typed::<Int32Type>().write_batch(&[5, 5], Some(&levels), None),
                "dstport" => column.typed::<Int32Type>().write_batch(&[443, 22], Some(&levels), None),
                "start" => {
                    column.typed::<Int64Type>().write_batch(&[1_795_910_400, 1_795_910_460], Some(&levels), None)
                }
                "account" => {
                    column.typed::<ByteArrayType>().write_batch(&text(&["111122223333"; 2]), Some(&levels), None)
                }
                "srcaddr" => column.typed::<ByteArrayType>().write_batch(&text(&["10.0.0.5"]), Some(&levels), None),
                "status" => column.typed::<ByteArrayType>().write_batch(&text(&["OK", "OK"]), Some(&levels), None),
                _ => column.typed::<ByteArrayType>().write_batch(&[], Some(&levels), None),
            }
            .unwrap();
            column.close().unwrap();
        }
        group.close().unwrap();
        writer.close().unwrap();
        file.rewind().unwrap();
        file
    }

    #[test]
    fn columns_are_the_fields_with_underscores() {
        assert_eq!(field_name("log_status"), "log-status");
        assert_eq!(field_name("pkt_src_aws_service"), "pkt-src-aws-service");
        assert_eq!(field_name("type"), "type");
        assert_eq!(field_text(&Field::Null), None);
        assert_eq!(field_text(&Field::Str(String::new())), None);
        assert_eq!(field_text(&Field::Long(1_795_910_400)).as_deref(), Some("1795910400"));
        assert_eq!(field_text(&Field::Str("eni-1".into())).as_deref(), Some("eni-1"));
    }

    #[test]
    fn a_parquet_row_is_the_same_record_as_its_text_line() {
        let mut records = Vec::new();
        let rows = read_records(flow_file(), &mut |row, record| {
            records.push((row, record.unwrap()));
            true
        })
        .unwrap();
        assert_eq!(rows, 2);
        let format = FlowFormat::parse("version account-id srcaddr dstport start log-status ecs-cluster-name").unwrap();
        let first = FlowRecord::parse("5 111122223333 10.0.0.5 443 1795910400 OK -", &format).unwrap();
        let second = FlowRecord::parse("5 111122223333 - 22 1795910460 OK -", &format).unwrap();
        assert_eq!(records[0], (1, first));
        assert_eq!(records[1], (2, second));
        assert_eq!(records[1].1.srcaddr, None);
        assert!(records[0].1.extra.is_empty(), "a null column is no value");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_one() {
        let mut whole = Vec::new();
        std::io::Read::read_to_end(&mut flow_file(), &mut whole).unwrap();
        for broken in [&whole[..whole.len() / 2], b"PAR1 this is not parquet PAR1".as_slice(), b"".as_slice()] {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(broken).unwrap();
            file.rewind().unwrap();
            let error = read_records(file, &mut |_, _| true).unwrap_err();
            assert!(error.to_string().starts_with("not a readable Parquet file"), "{error}");
        }
    }
}
