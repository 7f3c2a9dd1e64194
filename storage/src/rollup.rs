//! `span_metrics_1m`: per-minute RED rollups of the spans, written by every flush beside them.
//!
//! One row per minute × service × span name × span kind × status class × HTTP route, for the
//! spans one flush commits:
//!
//! | column | meaning |
//! | --- | --- |
//! | `minute` | start of the minute (unix ns) the spans started in |
//! | `service_name`, `span_name`, `span_kind`, `http_route` | as in `spans` |
//! | `status_class` | `error` (status ERROR), else the HTTP class (`5xx` ... `1xx`), else `ok` or `unset` |
//! | `count` | Σ `adjusted_count`: the spans this row stands for before sampling |
//! | `error_count` | Σ `adjusted_count` of spans with status ERROR or HTTP status ≥ 500 |
//! | `duration_sum_nanos` | Σ `adjusted_count` × duration |
//! | `duration_sketch` | DDSketch of the durations, each counted round(`adjusted_count`) times |
//! | `duration_le` | Σ `adjusted_count` of spans with duration ≤ each bound of [`LATENCY_BOUNDS_MS`], cumulative (a list) |
//! | `spans` | spans stored (int64: Delta has no unsigned integers) |
//!
//! `duration_le` makes latency SLIs exact for thresholds on the ladder (the sketch alone is
//! within 1 %, which would misclassify spans near the threshold).
//!
//! A minute gets several rows when several flushes (or late spans) touch it; readers merge
//! them (`SUM`, `ddsketch_merge`). Compaction rewrites span files without changing their rows,
//! so the rollups stay right without being rebuilt; it folds each closed hour's rollup files
//! (one per flush) into one ([`compact_rollups`]), so a 30-day window reads 720 files.
//!
//! Exactly once: the rollups of a flush are committed *before* its spans, with the same Delta
//! `txn(app_id, seq)`. A flush computes rollups only from records above the rollup table's txn:
//! if the spans commit fails (or the process dies) after the rollup commit, the spans stay
//! buffered or are replayed from the WAL, and their next flush commits them without counting
//! them twice.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Float64Builder, Int32Builder, Int64Builder,
    ListBuilder, RecordBatch, StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use deltalake::datafile::writer::{PartitionWriter, PartitionWriterConfig};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaTable, DeltaTableError};
use futures::TryStreamExt;
use sketches_ddsketch::DDSketch;
use tracelake_proto::{columns, PARTITION_COLUMNS};
use tracing::info;

use crate::compact::{
    closed_hours, commit_rewrite, open_file, partition_values, CompactionConfig, FileRef,
};
use crate::error::{Error, Result};
use crate::sketch::{encode, new_sketch};

/// The dataset name of the rollup table under each tenant.
pub const ROLLUP_DATASET: &str = "span_metrics_1m";

/// Column names of `span_metrics_1m`.
pub mod rollup_columns {
    /// Start of the minute, unix nanoseconds.
    pub const MINUTE: &str = "minute";
    /// `service.name`.
    pub const SERVICE_NAME: &str = "service_name";
    /// The span name.
    pub const SPAN_NAME: &str = "span_name";
    /// The span kind (OTLP number).
    pub const SPAN_KIND: &str = "span_kind";
    /// `error`, `5xx` ... `1xx`, `ok` or `unset`.
    pub const STATUS_CLASS: &str = "status_class";
    /// `http.route`.
    pub const HTTP_ROUTE: &str = "http_route";
    /// Σ adjusted_count.
    pub const COUNT: &str = "count";
    /// Σ adjusted_count of error spans (status ERROR or HTTP status ≥ 500).
    pub const ERROR_COUNT: &str = "error_count";
    /// Σ adjusted_count × duration.
    pub const DURATION_SUM_NANOS: &str = "duration_sum_nanos";
    /// DDSketch of durations (nanoseconds), weighted.
    pub const DURATION_SKETCH: &str = "duration_sketch";
    /// Σ adjusted_count of spans with duration ≤ each bound of [`super::LATENCY_BOUNDS_MS`].
    pub const DURATION_LE: &str = "duration_le";
    /// Spans stored.
    pub const SPANS: &str = "spans";
}

static ROLLUP_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use rollup_columns as c;
    let mut fields = vec![
        Field::new(c::MINUTE, DataType::Int64, false),
        Field::new(c::SERVICE_NAME, DataType::Utf8, true),
        Field::new(c::SPAN_NAME, DataType::Utf8, true),
        Field::new(c::SPAN_KIND, DataType::Int32, true),
        Field::new(c::STATUS_CLASS, DataType::Utf8, false),
        Field::new(c::HTTP_ROUTE, DataType::Utf8, true),
        Field::new(c::COUNT, DataType::Float64, false),
        Field::new(c::ERROR_COUNT, DataType::Float64, false),
        Field::new(c::DURATION_SUM_NANOS, DataType::Float64, false),
        Field::new(c::DURATION_SKETCH, DataType::Binary, false),
        Field::new_list(c::DURATION_LE, le_item(), false),
        Field::new(c::SPANS, DataType::Int64, false),
    ];
    fields.extend(
        PARTITION_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true)),
    );
    Arc::new(Schema::new(fields))
});

/// Latency bounds (milliseconds) of the `duration_le` column: a latency SLO whose threshold is
/// one of them is computed exactly from the rollups.
pub const LATENCY_BOUNDS_MS: [u64; 29] = [
    1, 2, 5, 10, 20, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1_000, 1_500, 2_000,
    2_500, 3_000, 4_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 60_000,
];

/// The position of `threshold` in [`LATENCY_BOUNDS_MS`], if it is one of them.
pub fn latency_bound_index(threshold: std::time::Duration) -> Option<usize> {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|ms| u128::from(*ms) * 1_000_000 == threshold.as_nanos())
}

/// The list item of `duration_le`, named as Delta names list elements.
fn le_item() -> Field {
    Field::new("element", DataType::Float64, false)
}

const BOUNDS: usize = LATENCY_BOUNDS_MS.len();

/// The first bound a duration (ns) is within, or `BOUNDS` when it exceeds them all.
fn le_bucket(nanos: i64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|ms| (*ms as i64) * 1_000_000 < nanos)
}

/// The schema of `span_metrics_1m`: its columns, then the partition columns.
pub fn rollup_schema() -> SchemaRef {
    ROLLUP_SCHEMA.clone()
}

/// Parquet writer properties for rollup files.
pub(crate) fn rollup_writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .build()
}

const MINUTE_NANOS: i64 = 60_000_000_000;

/// The status class of a span: `error` for status ERROR, else the HTTP status class, else
/// `ok` or `unset`.
fn status_class(status_code: Option<i32>, http_status: Option<i64>) -> &'static str {
    if status_code == Some(2) {
        return "error";
    }
    match http_status {
        Some(500..) => "5xx",
        Some(400..=499) => "4xx",
        Some(300..=399) => "3xx",
        Some(200..=299) => "2xx",
        Some(100..=199) => "1xx",
        _ if status_code == Some(1) => "ok",
        _ => "unset",
    }
}

#[derive(Default)]
struct Acc {
    count: f64,
    errors: f64,
    duration_sum: f64,
    spans: u64,
    sketch: Option<DDSketch>,
    /// Cumulative counts per bound once built (per-bucket while [`rollup`] adds spans).
    le: [f64; BOUNDS],
}

fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let array = batch.column_by_name(name).ok_or_else(|| {
        Error::Arrow(arrow::error::ArrowError::SchemaError(format!(
            "batch has no column {name}"
        )))
    })?;
    Ok(cast(array, to)?)
}

/// A rollup row's dimensions: minute, service, span name, kind, status class, route.
type Key<'a> = (
    i64,
    Option<&'a str>,
    Option<&'a str>,
    Option<i32>,
    &'a str,
    Option<&'a str>,
);

fn get_str(a: &arrow::array::StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// The rollup rows of `batches` (span batches), or `None` when they hold no span.
pub fn rollup(batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    let mut columns_of = Vec::with_capacity(batches.len());
    for b in batches {
        columns_of.push([
            column(b, columns::START_TIME_UNIX_NANO, &DataType::Int64)?,
            column(b, columns::SERVICE_NAME, &DataType::Utf8)?,
            column(b, columns::NAME, &DataType::Utf8)?,
            column(b, columns::KIND, &DataType::Int32)?,
            column(b, columns::STATUS_CODE, &DataType::Int32)?,
            column(b, columns::HTTP_RESPONSE_STATUS_CODE, &DataType::Int64)?,
            column(b, columns::HTTP_ROUTE, &DataType::Utf8)?,
            column(b, columns::ADJUSTED_COUNT, &DataType::Float64)?,
            column(b, columns::DURATION_NANO, &DataType::Int64)?,
        ]);
    }
    let mut groups: HashMap<Key<'_>, Acc> = HashMap::new();
    for cols in &columns_of {
        let start = cols[0].as_primitive::<Int64Type>();
        let service = cols[1].as_string::<i32>();
        let name = cols[2].as_string::<i32>();
        let kind = cols[3].as_primitive::<Int32Type>();
        let status = cols[4].as_primitive::<Int32Type>();
        let http = cols[5].as_primitive::<Int64Type>();
        let route = cols[6].as_string::<i32>();
        let weight = cols[7].as_primitive::<Float64Type>();
        let duration = cols[8].as_primitive::<Int64Type>();
        for i in 0..start.len() {
            let minute = if start.is_valid(i) {
                let s = start.value(i);
                s - s.rem_euclid(MINUTE_NANOS)
            } else {
                0
            };
            let status = status.is_valid(i).then(|| status.value(i));
            let http = http.is_valid(i).then(|| http.value(i));
            let class = status_class(status, http);
            let key: Key<'_> = (
                minute,
                get_str(service, i),
                get_str(name, i),
                kind.is_valid(i).then(|| kind.value(i)),
                class,
                get_str(route, i),
            );
            // Spans stored before sampling existed (or unsampled) stand for themselves.
            let w = if weight.is_valid(i) {
                weight.value(i)
            } else {
                1.0
            };
            let d = if duration.is_valid(i) {
                duration.value(i).max(0)
            } else {
                0
            };
            let acc = groups.entry(key).or_default();
            acc.count += w;
            if class == "error" || class == "5xx" {
                acc.errors += w;
            }
            acc.duration_sum += w * d as f64;
            acc.spans += 1;
            if let Some(slot) = acc.le.get_mut(le_bucket(d)) {
                *slot += w;
            }
            let times = w.round();
            if times >= 1.0 {
                acc.sketch
                    .get_or_insert_with(new_sketch)
                    .add_with_count(d as f64, times as u64);
            }
        }
    }
    if groups.is_empty() {
        return Ok(None);
    }
    for acc in groups.values_mut() {
        for i in 1..BOUNDS {
            acc.le[i] += acc.le[i - 1];
        }
    }
    rows_batch(groups, true).map(Some)
}

/// Re-aggregates rollup rows (as stored: without the partition columns) into one row per
/// dimension, merging their sketches. The output has the stored schema too.
pub(crate) fn merge_rollups(batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    use rollup_columns as c;
    let mut groups: HashMap<Key<'_>, Acc> = HashMap::new();
    // Columns cast to the types read below: stored types may differ (Delta has no unsigned
    // integers, readers may choose view types).
    let mut typed = Vec::with_capacity(batches.len());
    for b in batches {
        let mut cols = Vec::with_capacity(12);
        for (name, to) in [
            (c::MINUTE, DataType::Int64),
            (c::SERVICE_NAME, DataType::Utf8),
            (c::SPAN_NAME, DataType::Utf8),
            (c::SPAN_KIND, DataType::Int32),
            (c::STATUS_CLASS, DataType::Utf8),
            (c::HTTP_ROUTE, DataType::Utf8),
            (c::COUNT, DataType::Float64),
            (c::ERROR_COUNT, DataType::Float64),
            (c::DURATION_SUM_NANOS, DataType::Float64),
            (c::DURATION_SKETCH, DataType::Binary),
            (c::DURATION_LE, DataType::new_list(DataType::Float64, true)),
            (c::SPANS, DataType::Int64),
        ] {
            cols.push(column(b, name, &to)?);
        }
        typed.push((b.num_rows(), cols));
    }
    for (rows, cols) in &typed {
        let minute = cols[0].as_primitive::<Int64Type>();
        let service = cols[1].as_string::<i32>();
        let name = cols[2].as_string::<i32>();
        let kind = cols[3].as_primitive::<Int32Type>();
        let class = cols[4].as_string::<i32>();
        let route = cols[5].as_string::<i32>();
        let count = cols[6].as_primitive::<Float64Type>();
        let errors = cols[7].as_primitive::<Float64Type>();
        let duration = cols[8].as_primitive::<Float64Type>();
        let sketch = cols[9].as_binary::<i32>();
        let le = cols[10].as_list::<i32>();
        let spans = cols[11].as_primitive::<Int64Type>();
        for i in 0..*rows {
            let key: Key<'_> = (
                minute.value(i),
                get_str(service, i),
                get_str(name, i),
                kind.is_valid(i).then(|| kind.value(i)),
                class.value(i),
                get_str(route, i),
            );
            let acc = groups.entry(key).or_default();
            acc.count += count.value(i);
            acc.errors += errors.value(i);
            acc.duration_sum += duration.value(i);
            acc.spans += u64::try_from(spans.value(i)).unwrap_or(0);
            add_le(&mut acc.le, &le.value(i))?;
            let s = crate::sketch::decode(sketch.value(i))
                .map_err(|e| Error::Config(format!("rollup sketch: {e}")))?;
            match &mut acc.sketch {
                Some(into) => into
                    .merge(&s)
                    .map_err(|e| Error::Config(format!("rollup sketch merge: {e}")))?,
                None => acc.sketch = Some(s),
            }
        }
    }
    if groups.is_empty() {
        return Ok(None);
    }
    rows_batch(groups, false).map(Some)
}

/// One file of the rollup table, as a reader needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupFile {
    /// The object path, unique per file (files are immutable).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// The first and last `minute` (unix ns) in the file: from its statistics, else its hour.
    pub minutes: (i64, i64),
}

/// The files of the rollup table's loaded version.
pub fn rollup_files(table: &DeltaTable) -> Result<Vec<RollupFile>> {
    let minute = |v| crate::table::long_stat(v, rollup_columns::MINUTE);
    let state = table
        .snapshot()
        .map_err(|e| Error::delta(table.table_url(), e))?;
    Ok(state
        .log_data()
        .iter()
        .filter_map(|f| {
            let stats = minute(f.min_values()).zip(minute(f.max_values()));
            let ((date, hour), file) = crate::compact::file_ref(&f)?;
            let minutes = stats.or_else(|| {
                let start = crate::compact::partition_start(&date, &hour)?
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .ok()?
                    .as_nanos() as i64;
                Some((start, start + 3_600_000_000_000 - MINUTE_NANOS))
            })?;
            Some(RollupFile {
                path: file.path.to_string(),
                size: file.size,
                minutes,
            })
        })
        .collect())
}

/// The rows of one rollup file (without the partition columns), only `columns` when given.
pub async fn read_rollup_file(
    table: &DeltaTable,
    file: &RollupFile,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>> {
    let store = table.log_store().object_store(None);
    let readers = DefaultParquetFileReaderFactory::new(store);
    let path = deltalake::Path::from(file.path.as_str());
    let mut builder = crate::compact::open_path(&readers, &path, file.size, 8192).await?;
    if let Some(columns) = columns {
        let roots: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| columns.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let mask =
            deltalake::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("rollups: reading {}: {e}", file.path)))?
        .try_collect()
        .await
        .map_err(|e| Error::Config(format!("rollups: reading {}: {e}", file.path)))
}

/// Appends rollup rows (with the partition columns, as [`rollup_schema`]) in one Delta commit,
/// one file per partition. For tools and benchmarks that build rollups themselves; flushes
/// commit theirs with a WAL watermark instead.
pub async fn append_rollups(table: &DeltaTable, batches: Vec<RecordBatch>) -> Result<DeltaTable> {
    let url = table.table_url().clone();
    table
        .clone()
        .write(batches)
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .with_writer_properties(rollup_writer_properties())
        .await
        .map_err(|e| Error::delta(&url, e))
}

/// Re-aggregates every closed hour of the rollup table that has more than one file (one per
/// flush that touched it) into one file, in one Delta commit per hour without data change:
/// the sums and merged sketches are those of the rows it replaces. Late rollups for a compacted
/// hour add a file, and the next pass folds it in. Returns the table after the last commit
/// (`None` when nothing was done) and the hours rewritten.
pub async fn compact_rollups(
    table: &DeltaTable,
    config: &CompactionConfig,
    now: SystemTime,
) -> Result<(Option<DeltaTable>, u64)> {
    let url = table.table_url().clone();
    let delta = |e: DeltaTableError| Error::delta(&url, e);
    let mut table = table.clone();
    table.update_incremental(None).await.map_err(delta)?;
    let mut hours = {
        let state = table.snapshot().map_err(delta)?;
        closed_hours(state.log_data().iter(), config.grace, now)
    };
    hours.retain(|_, files| files.len() > 1);
    if hours.is_empty() {
        return Ok((None, 0));
    }
    let store = table.log_store().object_store(None);
    let readers = DefaultParquetFileReaderFactory::new(store.clone());
    let mut done = 0;
    for ((date, hour), files) in &hours {
        let mut batches = Vec::new();
        for file in files {
            let stream = open_file(&readers, file, config)
                .await?
                .build()
                .map_err(|e| Error::Config(format!("rollups: reading {}: {e}", file.path)))?;
            batches.extend(
                stream
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| Error::Config(format!("rollups: reading {}: {e}", file.path)))?,
            );
        }
        let Some(merged) = merge_rollups(&batches)? else {
            continue;
        };
        let spans = |b: &RecordBatch| -> Result<i64> {
            let c = column(b, rollup_columns::SPANS, &DataType::Int64)?;
            Ok(arrow::compute::sum(c.as_primitive::<Int64Type>()).unwrap_or(0))
        };
        let mut before = 0;
        for b in &batches {
            before += spans(b)?;
        }
        let after = spans(&merged)?;
        if before != after {
            return Err(Error::Config(format!(
                "rollup compaction of {date}/{hour}: {after} spans after, {before} before; \
                 nothing committed"
            )));
        }
        let writer_config = PartitionWriterConfig::try_new(
            merged.schema(),
            partition_values(date, hour),
            Some(rollup_writer_properties()),
            NonZeroU64::new(config.target_file_bytes),
            None,
            None,
            None,
        )
        .map_err(delta)?;
        let num_indexed_cols = table
            .snapshot()
            .map_err(delta)?
            .table_config()
            .num_indexed_cols();
        let mut writer =
            PartitionWriter::try_with_config(store.clone(), writer_config, num_indexed_cols, None)
                .map_err(delta)?;
        writer.write(&merged).await.map_err(delta)?;
        let adds = writer.close().await.map_err(delta)?;
        let removed: Vec<&FileRef> = files.iter().collect();
        commit_rewrite(
            &mut table,
            (date, hour),
            &removed,
            adds,
            config.target_file_bytes,
        )
        .await?;
        info!(table = %url, date, hour, files = files.len(), rows = merged.num_rows(), "rollups compacted");
        done += 1;
    }
    Ok((Some(table), done))
}

/// Adds a stored `duration_le` list to `into`; the error names a list of the wrong length.
fn add_le(into: &mut [f64; BOUNDS], values: &ArrayRef) -> Result<()> {
    let values = values.as_primitive::<Float64Type>();
    if values.len() != BOUNDS {
        return Err(Error::Config(format!(
            "rollup {}: {} bounds, expected {BOUNDS}",
            rollup_columns::DURATION_LE,
            values.len()
        )));
    }
    for (slot, v) in into.iter_mut().zip(values.iter()) {
        *slot += v.unwrap_or(0.0);
    }
    Ok(())
}

/// The rows of `groups`, sorted by dimension; with the partition columns when `partitions`.
fn rows_batch(groups: HashMap<Key<'_>, Acc>, partitions: bool) -> Result<RecordBatch> {
    let mut rows: Vec<(Key<'_>, Acc)> = groups.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let n = rows.len();
    let mut minute = Int64Builder::with_capacity(n);
    let mut service = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = Int32Builder::with_capacity(n);
    let mut class = StringBuilder::new();
    let mut route = StringBuilder::new();
    let mut count = Float64Builder::with_capacity(n);
    let mut errors = Float64Builder::with_capacity(n);
    let mut duration_sum = Float64Builder::with_capacity(n);
    let mut sketch = BinaryBuilder::new();
    let mut le = ListBuilder::with_capacity(Float64Builder::with_capacity(n * BOUNDS), n)
        .with_field(Arc::new(le_item()));
    let mut spans = Int64Builder::with_capacity(n);
    let mut date = StringBuilder::new();
    let mut hour = StringBuilder::new();
    for ((m, s, nm, k, c, r), acc) in &rows {
        minute.append_value(*m);
        service.append_option(*s);
        name.append_option(*nm);
        kind.append_option(*k);
        class.append_value(c);
        route.append_option(*r);
        count.append_value(acc.count);
        errors.append_value(acc.errors);
        duration_sum.append_value(acc.duration_sum);
        sketch.append_value(encode(acc.sketch.as_ref().unwrap_or(&new_sketch())));
        le.values().append_slice(&acc.le);
        le.append(true);
        spans.append_value(i64::try_from(acc.spans).unwrap_or(i64::MAX));
        if partitions {
            let (d, h) = tracelake_proto::partition_values(u64::try_from(*m).unwrap_or(0));
            date.append_value(d);
            hour.append_value(h);
        }
    }
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(minute.finish()),
        Arc::new(service.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(class.finish()),
        Arc::new(route.finish()),
        Arc::new(count.finish()),
        Arc::new(errors.finish()),
        Arc::new(duration_sum.finish()),
        Arc::new(sketch.finish()),
        Arc::new(le.finish()),
        Arc::new(spans.finish()),
    ];
    let schema = if partitions {
        arrays.push(Arc::new(date.finish()));
        arrays.push(Arc::new(hour.finish()));
        rollup_schema()
    } else {
        rollup_file_schema()
    };
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// The stored schema of rollup files: without the partition columns.
fn rollup_file_schema() -> SchemaRef {
    let schema = rollup_schema();
    let fields = schema.fields().len() - PARTITION_COLUMNS.len();
    Arc::new(Schema::new(schema.fields()[..fields].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(2), Some(200)), "error");
        assert_eq!(status_class(Some(0), Some(503)), "5xx");
        assert_eq!(status_class(None, Some(404)), "4xx");
        assert_eq!(status_class(Some(1), None), "ok");
        assert_eq!(status_class(Some(0), None), "unset");
        assert_eq!(status_class(None, Some(42)), "unset");
    }
}
