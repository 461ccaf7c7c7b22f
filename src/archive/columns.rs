//! A Parquet writer for nested OCSF rows with the `parquet` crate's own column writers (no
//! Arrow). A class is a list of leaf paths (`src_endpoint.location.country`); every group and
//! leaf is optional, and a group is present in a row when any leaf under it has a value, so a
//! reader sees `{"ip": "…"}` and never an empty object. Rows are buffered one row group at a
//! time, and a row group closes at a number of rows or of buffered bytes, whichever comes
//! first: memory is bounded whatever the file holds, huge events included. Writing is
//! blocking (encoding, compression, file I/O): async callers run [`ClassWriter::flush`] and
//! [`ClassWriter::finish`] on a blocking thread.

use std::fs::File;
use std::sync::Arc;

use parquet::basic::{Compression, GzipLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

/// The physical type of a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Utf8,
    Int32,
    Int64,
    Bool,
    Double,
}

/// One value of a row, in the order of the class's leaves.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Str(String),
    I32(i32),
    I64(i64),
    Bool(bool),
    F64(f64),
}

impl From<Option<String>> for Value {
    fn from(value: Option<String>) -> Self {
        value.map_or(Value::Null, Value::Str)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Str(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Str(value.to_owned())
    }
}

/// A class's leaves as a Parquet schema, with each leaf's optional ancestors.
pub struct ClassSchema {
    pub leaves: &'static [(&'static str, Kind)],
    /// Per leaf: the index (into `groups`) of each ancestor group, outermost first.
    ancestors: Vec<Vec<usize>>,
    groups: usize,
    schema: Arc<Type>,
    /// The leaf rows are sorted by (declared to readers as the sorting column).
    time_leaf: usize,
}

impl ClassSchema {
    /// The schema of `leaves`: leaves sharing a group must be listed together (the order of
    /// the Parquet columns is the order of the list).
    pub fn new(leaves: &'static [(&'static str, Kind)], time_leaf: &str) -> Self {
        let mut group_names: Vec<String> = Vec::new();
        let ancestors = leaves
            .iter()
            .map(|(path, _)| {
                let parts: Vec<&str> = path.split('.').collect();
                (1..parts.len())
                    .map(|depth| {
                        let prefix = parts[..depth].join(".");
                        group_names.iter().position(|g| *g == prefix).unwrap_or_else(|| {
                            group_names.push(prefix);
                            group_names.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        let message = message_type(leaves);
        let schema = Arc::new(parquet::schema::parser::parse_message_type(&message).expect("archive schema parses"));
        let time_leaf = leaves.iter().position(|(p, _)| *p == time_leaf).expect("time leaf listed");
        Self { leaves, ancestors, groups: group_names.len(), schema, time_leaf }
    }

    /// A writer closing a row group at `row_group_rows` rows or `row_group_bytes` buffered
    /// bytes (values and levels), whichever is reached first.
    pub fn writer(
        &self,
        file: File,
        row_group_rows: usize,
        row_group_bytes: usize,
    ) -> Result<ClassWriter<'_>, parquet::errors::ParquetError> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::GZIP(GzipLevel::default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(row_group_rows))
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: i32::try_from(self.time_leaf).unwrap_or(0),
                descending: false,
                nulls_first: false,
            }]))
            .set_created_by(concat!("skywarden ", env!("CARGO_PKG_VERSION")).to_owned())
            .build();
        let writer = SerializedFileWriter::new(file, self.schema.clone(), Arc::new(properties))?;
        Ok(ClassWriter {
            class: self,
            writer,
            buffer: self.empty_buffer(),
            rows: 0,
            bytes: 0,
            row_group_rows,
            row_group_bytes,
            written: 0,
        })
    }

    fn empty_buffer(&self) -> Vec<LeafBuffer> {
        self.leaves.iter().map(|(_, kind)| LeafBuffer::new(*kind)).collect()
    }
}

/// `message ocsf { optional group api { optional binary operation (STRING); … } … }`.
fn message_type(leaves: &[(&str, Kind)]) -> String {
    let mut out = String::from("message ocsf {\n");
    let mut open: Vec<&str> = Vec::new();
    let mut closed: Vec<String> = Vec::new();
    for (path, kind) in leaves {
        let parts: Vec<&str> = path.split('.').collect();
        let (groups, leaf) = parts.split_at(parts.len() - 1);
        let common = open.iter().zip(groups).take_while(|(a, b)| a == b).count();
        for depth in (common..open.len()).rev() {
            closed.push(open[..=depth].join("."));
            out.push_str("}\n");
        }
        open.truncate(common);
        for group in &groups[common..] {
            open.push(group);
            // A group split in two would be two fields of one name.
            assert!(!closed.contains(&open.join(".")), "{path}: list the leaves of {} together", open.join("."));
            out.push_str(&format!("optional group {group} {{\n"));
        }
        let physical = match kind {
            Kind::Utf8 => "binary",
            Kind::Int32 => "int32",
            Kind::Int64 => "int64",
            Kind::Bool => "boolean",
            Kind::Double => "double",
        };
        let annotation = if *kind == Kind::Utf8 { " (STRING)" } else { "" };
        out.push_str(&format!("optional {physical} {}{annotation};\n", leaf[0]));
    }
    for _ in &open {
        out.push_str("}\n");
    }
    out.push('}');
    out
}

enum LeafValues {
    Utf8(Vec<ByteArray>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Bool(Vec<bool>),
    Double(Vec<f64>),
}

struct LeafBuffer {
    values: LeafValues,
    definitions: Vec<i16>,
}

impl LeafBuffer {
    fn new(kind: Kind) -> Self {
        let values = match kind {
            Kind::Utf8 => LeafValues::Utf8(Vec::new()),
            Kind::Int32 => LeafValues::Int32(Vec::new()),
            Kind::Int64 => LeafValues::Int64(Vec::new()),
            Kind::Bool => LeafValues::Bool(Vec::new()),
            Kind::Double => LeafValues::Double(Vec::new()),
        };
        Self { values, definitions: Vec::new() }
    }

    /// Adds a value: the bytes it holds, or None when its type is not the leaf's (a bug in a
    /// mapping).
    fn push(&mut self, value: Value) -> Option<usize> {
        let bytes = match (&mut self.values, value) {
            (LeafValues::Utf8(v), Value::Str(s)) => {
                let len = s.len();
                v.push(ByteArray::from(s.into_bytes()));
                len
            }
            (LeafValues::Int32(v), Value::I32(n)) => {
                v.push(n);
                4
            }
            (LeafValues::Int64(v), Value::I64(n)) => {
                v.push(n);
                8
            }
            (LeafValues::Bool(v), Value::Bool(b)) => {
                v.push(b);
                1
            }
            (LeafValues::Double(v), Value::F64(f)) => {
                v.push(f);
                8
            }
            _ => return None,
        };
        Some(bytes)
    }
}

/// Writes rows of one class to one file, a row group at a time.
pub struct ClassWriter<'a> {
    class: &'a ClassSchema,
    writer: SerializedFileWriter<File>,
    buffer: Vec<LeafBuffer>,
    rows: usize,
    /// Bytes held by the buffered values and levels.
    bytes: usize,
    row_group_rows: usize,
    row_group_bytes: usize,
    written: u64,
}

impl ClassWriter<'_> {
    /// Adds a row and writes the row group when it is full (blocking).
    #[cfg(test)]
    pub fn push(&mut self, row: Vec<Value>) -> Result<(), parquet::errors::ParquetError> {
        if self.buffer(row)? {
            self.flush()?;
        }
        Ok(())
    }

    /// Adds a row to the row group in memory; true when the group is full and the caller
    /// should [`Self::flush`] it before the next row.
    pub fn buffer(&mut self, row: Vec<Value>) -> Result<bool, parquet::errors::ParquetError> {
        let class = self.class;
        if row.len() != class.leaves.len() {
            return Err(parquet::errors::ParquetError::General(format!(
                "a row of {} values for {} leaves",
                row.len(),
                class.leaves.len()
            )));
        }
        let mut present = vec![false; class.groups];
        for (value, ancestors) in row.iter().zip(&class.ancestors) {
            if *value != Value::Null {
                for group in ancestors {
                    present[*group] = true;
                }
            }
        }
        for ((value, ancestors), (leaf, (path, _))) in
            row.into_iter().zip(&class.ancestors).zip(self.buffer.iter_mut().zip(class.leaves))
        {
            let groups_present = ancestors.iter().take_while(|g| present[**g]).count();
            let level = if value == Value::Null {
                groups_present
            } else {
                let Some(bytes) = leaf.push(value) else {
                    return Err(parquet::errors::ParquetError::General(format!("{path}: a value of the wrong type")));
                };
                self.bytes += bytes;
                ancestors.len() + 1
            };
            leaf.definitions.push(i16::try_from(level).unwrap_or(i16::MAX));
            self.bytes += std::mem::size_of::<i16>();
        }
        self.rows += 1;
        Ok(self.rows >= self.row_group_rows || self.bytes >= self.row_group_bytes)
    }

    /// Writes the buffered rows as one row group (blocking: encoding, compression, file I/O).
    pub fn flush(&mut self) -> Result<(), parquet::errors::ParquetError> {
        if self.rows == 0 {
            return Ok(());
        }
        let buffer = std::mem::replace(&mut self.buffer, self.class.empty_buffer());
        let mut group = self.writer.next_row_group()?;
        for leaf in buffer {
            let mut column = group
                .next_column()?
                .ok_or_else(|| parquet::errors::ParquetError::General("fewer columns than leaves".into()))?;
            let levels = Some(leaf.definitions.as_slice());
            match &leaf.values {
                LeafValues::Utf8(v) => column.typed::<ByteArrayType>().write_batch(v, levels, None)?,
                LeafValues::Int32(v) => column.typed::<Int32Type>().write_batch(v, levels, None)?,
                LeafValues::Int64(v) => column.typed::<Int64Type>().write_batch(v, levels, None)?,
                LeafValues::Bool(v) => column.typed::<BoolType>().write_batch(v, levels, None)?,
                LeafValues::Double(v) => column.typed::<DoubleType>().write_batch(v, levels, None)?,
            };
            column.close()?;
        }
        group.close()?;
        self.written += self.rows as u64;
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }

    /// Writes the last row group and the footer; the rows written.
    pub fn finish(mut self) -> Result<u64, parquet::errors::ParquetError> {
        self.flush()?;
        self.writer.close()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAVES: &[(&str, Kind)] =
        &[("a.b.x", Kind::Utf8), ("a.b.y", Kind::Int64), ("a.z", Kind::Int32), ("t", Kind::Int64)];

    #[test]
    fn nested_leaves_become_groups_in_order() {
        let schema = ClassSchema::new(LEAVES, "t");
        let columns: Vec<String> = schema.schema_descr_paths().into_iter().map(|p| p.join(".")).collect();
        assert_eq!(columns, ["a.b.x", "a.b.y", "a.z", "t"]);
        assert_eq!(schema.ancestors, vec![vec![0, 1], vec![0, 1], vec![0], vec![]]);
    }

    #[test]
    fn rows_round_trip_with_absent_groups() {
        let schema = ClassSchema::new(LEAVES, "t");
        let path = std::env::temp_dir().join(format!("skywarden-columns-{}.parquet", std::process::id()));
        let mut writer = schema.writer(File::create(&path).unwrap(), 2, usize::MAX).unwrap();
        writer.push(vec![Value::from("x1"), Value::Null, Value::I32(3), Value::I64(1)]).unwrap();
        writer.push(vec![Value::Null, Value::Null, Value::Null, Value::I64(2)]).unwrap();
        writer.push(vec![Value::Null, Value::I64(9), Value::Null, Value::I64(3)]).unwrap();
        assert_eq!(writer.finish().unwrap(), 3);
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let rows: Vec<String> = parquet::file::reader::FileReader::get_row_iter(&reader, None)
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .collect();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            rows,
            [
                r#"{a: {b: {x: "x1", y: null}, z: 3}, t: 1}"#,
                "{a: null, t: 2}",
                "{a: {b: {x: null, y: 9}, z: null}, t: 3}"
            ]
        );
        assert_eq!(parquet::file::reader::FileReader::metadata(&reader).num_row_groups(), 2);
    }

    #[test]
    fn a_row_group_closes_at_its_byte_bound_whatever_its_rows() {
        let schema = ClassSchema::new(LEAVES, "t");
        let path = std::env::temp_dir().join(format!("skywarden-columns-bytes-{}.parquet", std::process::id()));
        // 300 KB values, a 1 MB bound: four rows a group at most, never 65,536.
        let mut writer = schema.writer(File::create(&path).unwrap(), 65_536, 1 << 20).unwrap();
        for t in 0..10 {
            writer.push(vec![Value::Str("x".repeat(300_000)), Value::Null, Value::Null, Value::I64(t)]).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), 10);
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let metadata = parquet::file::reader::FileReader::metadata(&reader);
        let groups: Vec<i64> = metadata.row_groups().iter().map(|g| g.num_rows()).collect();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(groups, [4, 4, 2]);
    }

    impl ClassSchema {
        fn schema_descr_paths(&self) -> Vec<Vec<String>> {
            let descr = parquet::schema::types::SchemaDescriptor::new(self.schema.clone());
            descr.columns().iter().map(|c| c.path().parts().to_vec()).collect()
        }
    }
}
