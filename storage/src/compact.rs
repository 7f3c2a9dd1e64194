//! Compaction: rewrite each closed hour as a few large files, sorted by trace id within
//! one-minute time buckets.
//!
//! Every flush writes one small Parquet file per (date, hour) partition it touches, sorted by
//! `(trace_id, start_time_unix_nano)`. A busy hour ends up with hundreds of them, and every
//! read pays per file (open, footer, statistics, bloom filter).
//!
//! Once an hour is closed (its end plus a grace period has passed, so late spans have had time
//! to arrive), the compactor rewrites it:
//!
//! ```text
//!  small files of one (date, hour), each sorted by trace id
//!    │ split by time bucket (1 min by default; a file straddling a boundary feeds both)
//!    v
//!  per bucket: streaming k-way merge on (trace_id, start) ──► files of ~target size, tagged
//!    │                                                        tracelake.bucket = <start secs>
//!    v
//!  one Delta commit per hour: remove the inputs, add the outputs (dataChange = false)
//!    │
//!    v
//!  the hour's trace index (crate::trace_index): trace id -> first and last start
//! ```
//!
//! Why short buckets: the two read paths want opposite layouts. A TraceQL search walks the
//! window newest first in time slices and wants time order (start-time statistics then rule
//! out everything outside the slice); a lookup by trace id wants trace-id order. Sorting a whole
//! hour by trace id made each search slice read the whole hour (measured: 2-3x slower
//! searches; see BENCHMARKS.md), and five-minute buckets made a one-minute slice decode five
//! minutes. One-minute buckets give a search slice exactly its minutes; lookups do not check
//! every bucket, because the trace index tells them which minutes hold the trace. Within a
//! bucket, trace-id order still lets min/max statistics and the page index find a trace's rows.
//!
//! - The inputs are already sorted, so a streaming merge suffices: memory is about one batch and
//!   one row group per input, never the whole hour. At most `max_inputs` files are merged at
//!   once; a bucket with more inputs gets several sorted runs.
//! - Outputs carry the Delta file tag `tracelake.bucket`. An hour is compacted while it has
//!   untagged files; late spans (a new untagged file) rewrite only the buckets they touch.
//! - The commit only changes the log's file list. Readers pinned to an older snapshot keep
//!   reading the old files, which stay until a vacuum removes them. A concurrent append (a
//!   flush) does not conflict: Delta treats a rewrite without data change under snapshot
//!   isolation, and the files it adds are not among the ones removed.
//! - The commit carries no `txn`, so the WAL replay watermark is untouched, and it is made only
//!   if the outputs hold exactly as many rows as the inputs.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, SortOptions};
use arrow::datatypes::Int64Type;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use chrono::{NaiveDate, NaiveTime};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, UnboundedMemoryPool};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafile::writer::{PartitionWriter, PartitionWriterConfig};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, LogicalFileView};
use deltalake::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use deltalake::parquet::file::metadata::ParquetMetaData;
use deltalake::parquet::file::statistics::Statistics;
use deltalake::protocol::DeltaOperation;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaTable, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use indexmap::IndexMap;
use tracelake_proto::{columns, PARTITION_COLUMNS};
use tracing::info;

use crate::error::{Error, Result};
use crate::table::span_writer_properties;

/// The Delta file tag that marks a compacted file, with its time bucket's start (unix seconds).
pub const BUCKET_TAG: &str = "tracelake.bucket";

/// Compaction settings.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// How long after an hour ends before it is compacted, so that late spans land first.
    pub grace: Duration,
    /// Width of the time buckets within which spans are sorted by trace id.
    pub bucket: Duration,
    /// Target size of compacted files in bytes.
    pub target_file_bytes: u64,
    /// At most this many files are merged at once (memory is about one row group per input).
    pub max_inputs: usize,
    /// Rows per batch read from each input.
    pub batch_rows: usize,
    /// Files replaced by compaction are deleted from storage this long after (a Delta vacuum,
    /// lite mode: only files the log has removed). `None` keeps them.
    pub vacuum_retention: Option<Duration>,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10 * 60),
            bucket: Duration::from_secs(60),
            target_file_bytes: 128 * 1024 * 1024,
            max_inputs: 128,
            batch_rows: 4096,
            vacuum_retention: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// What a compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionStats {
    /// Partitions (hours) rewritten.
    pub partitions: u64,
    /// Files removed from the table (they stay on storage until a vacuum).
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
    /// Spans rewritten.
    pub spans: u64,
    /// Bytes of the files removed.
    pub bytes_removed: u64,
    /// Bytes of the files written.
    pub bytes_added: u64,
    /// Replaced files deleted from storage by the vacuum after their retention.
    pub files_vacuumed: u64,
    /// Hours whose trace index was built (see [`crate::trace_index`]).
    pub hours_indexed: u64,
    /// Hours whose `span_metrics_1m` rollup files were folded into one.
    pub rollup_hours: u64,
}

impl std::ops::AddAssign for CompactionStats {
    fn add_assign(&mut self, o: Self) {
        self.partitions += o.partitions;
        self.files_removed += o.files_removed;
        self.files_added += o.files_added;
        self.spans += o.spans;
        self.bytes_removed += o.bytes_removed;
        self.bytes_added += o.bytes_added;
        self.files_vacuumed += o.files_vacuumed;
        self.hours_indexed += o.hours_indexed;
        self.rollup_hours += o.rollup_hours;
    }
}

/// The files of one closed hour that has untagged (not yet compacted) files.
#[derive(Debug)]
struct HourPlan {
    /// `(date, hour)` partition values.
    partition: (String, String),
    files: Vec<FileRef>,
}

#[derive(Debug, Clone)]
pub(crate) struct FileRef {
    pub(crate) path: deltalake::Path,
    pub(crate) size: u64,
    /// Row count from the file's Delta stats, when present.
    pub(crate) records: Option<u64>,
    /// The bucket start (unix seconds) of a compacted file.
    pub(crate) bucket: Option<i64>,
    pub(crate) remove: Action,
}

/// The value of a file's Delta tag `name`.
pub(crate) fn file_tag(file: &LogicalFileView, name: &str) -> Option<String> {
    #[allow(deprecated)] // the tags are only reachable through the Add action
    file.add_action().tags?.get(name).cloned().flatten()
}

/// Partition values of a `(date, hour)` partition, for a [`PartitionWriter`].
pub(crate) fn partition_values(
    date: &str,
    hour: &str,
) -> IndexMap<String, delta_kernel::expressions::Scalar> {
    PARTITION_COLUMNS
        .iter()
        .zip([date, hour])
        .map(|(name, value)| {
            (
                name.to_string(),
                delta_kernel::expressions::Scalar::String(value.to_string()),
            )
        })
        .collect()
}

/// A streaming k-way merge of `streams`, each sorted by `ordering`.
pub(crate) fn merge_sorted(
    streams: Vec<SendableRecordBatchStream>,
    schema: &SchemaRef,
    ordering: &LexOrdering,
    batch_rows: usize,
    what: &'static str,
) -> Result<SendableRecordBatchStream> {
    let pool: Arc<dyn MemoryPool> = Arc::new(UnboundedMemoryPool::default());
    StreamingMergeBuilder::new()
        .with_streams(streams)
        .with_schema(schema.clone())
        .with_expressions(ordering)
        .with_metrics(BaselineMetrics::new(&ExecutionPlanMetricsSet::new(), 0))
        .with_batch_size(batch_rows)
        .with_reservation(MemoryConsumer::new(what).register(&pool))
        .build()
        .map_err(|e| Error::Config(format!("{what} merge: {e}")))
}

/// A live file of a table partitioned by `(date, hour)`, with its partition; `None` for a file
/// with a deletion vector or without both partition values.
pub(crate) fn file_ref(file: &LogicalFileView) -> Option<((String, String), FileRef)> {
    if file.deletion_vector_descriptor().is_some() {
        return None;
    }
    let values = file.partition_values_map();
    let get = |k: &str| values.get(k).cloned().flatten();
    let (date, hour) = (get(columns::DATE)?, get(columns::HOUR)?);
    let bucket = file_tag(file, BUCKET_TAG).and_then(|b| b.parse().ok());
    let file = FileRef {
        path: file.object_store_path(),
        size: u64::try_from(file.size()).unwrap_or(0),
        records: file.num_records().map(|n| n as u64),
        bucket,
        remove: Action::Remove(file.remove_action(false)),
    };
    Some(((date, hour), file))
}

/// The start of a `(date, hour)` partition, if its values parse.
pub(crate) fn partition_start(date: &str, hour: &str) -> Option<SystemTime> {
    let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let hour: u32 = hour.parse().ok().filter(|h| *h < 24)?;
    let at = day.and_time(NaiveTime::from_hms_opt(hour, 0, 0)?).and_utc();
    let secs = u64::try_from(at.timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The files of each closed hour (ended more than `grace` before `now`).
pub(crate) fn closed_hours(
    files: impl Iterator<Item = LogicalFileView>,
    grace: Duration,
    now: SystemTime,
) -> BTreeMap<(String, String), Vec<FileRef>> {
    let mut by_partition: BTreeMap<(String, String), Vec<FileRef>> = BTreeMap::new();
    for ((date, hour), file) in files.filter_map(|f| file_ref(&f)) {
        let closed = partition_start(&date, &hour)
            .is_some_and(|start| start + Duration::from_secs(3600) + grace <= now);
        if closed {
            by_partition.entry((date, hour)).or_default().push(file);
        }
    }
    by_partition
}

/// Commits the rewrite of one hour: `removed` out, `adds` in, without data change.
pub(crate) async fn commit_rewrite(
    table: &mut DeltaTable,
    (date, hour): (&str, &str),
    removed: &[&FileRef],
    adds: Vec<deltalake::kernel::Add>,
    target_size: u64,
) -> Result<()> {
    let url = table.table_url().clone();
    let delta = |e: DeltaTableError| Error::delta(&url, e);
    let mut actions: Vec<Action> = removed.iter().map(|f| f.remove.clone()).collect();
    actions.extend(adds.into_iter().map(|mut add| {
        add.data_change = false;
        Action::Add(add)
    }));
    let operation = DeltaOperation::Optimize {
        predicate: Some(format!("date = '{date}' AND hour = '{hour}'")),
        target_size: i64::try_from(target_size).unwrap_or(i64::MAX),
    };
    {
        let state = table.snapshot().map_err(delta)?;
        CommitBuilder::from(CommitProperties::default())
            .with_actions(actions)
            .build(Some(state), table.log_store(), operation)
            .await
            .map_err(delta)?;
    }
    table.update_incremental(None).await.map_err(delta)
}

/// The closed hours of a table that hold files not yet compacted, with all their files.
fn plan(
    files: impl Iterator<Item = LogicalFileView>,
    config: &CompactionConfig,
    now: SystemTime,
) -> Vec<HourPlan> {
    closed_hours(files, config.grace, now)
        .into_iter()
        .filter(|(_, files)| files.iter().any(|f| f.bucket.is_none()))
        .map(|(partition, mut files)| {
            files.sort_by(|a, b| a.path.as_ref().cmp(b.path.as_ref()));
            HourPlan { partition, files }
        })
        .collect()
}

/// Compacts every closed hour of `table` (see the module docs). Returns the table after the
/// last commit (or `None` when nothing was done) and what was done.
pub async fn compact_table(
    table: &DeltaTable,
    config: &CompactionConfig,
    now: SystemTime,
) -> Result<(Option<DeltaTable>, CompactionStats)> {
    let url = table.table_url().clone();
    let delta = |e: DeltaTableError| Error::delta(&url, e);
    let mut table = table.clone();
    table.update_incremental(None).await.map_err(delta)?;
    let hours = {
        let state = table.snapshot().map_err(delta)?;
        plan(state.log_data().iter(), config, now)
    };
    if hours.is_empty() {
        return Ok((None, CompactionStats::default()));
    }
    let mut stats = CompactionStats::default();
    for hour in hours {
        stats += compact_hour(&mut table, &hour, config).await?;
    }
    Ok((Some(table), stats))
}

/// Deletes the files that compaction replaced more than `config.vacuum_retention` ago (Delta
/// vacuum, lite mode). Returns the table after the vacuum's commits (`None` when nothing was
/// deleted) and the number of files deleted.
pub async fn vacuum_table(
    table: &DeltaTable,
    config: &CompactionConfig,
) -> Result<(Option<DeltaTable>, u64)> {
    let Some(retention) = config.vacuum_retention else {
        return Ok((None, 0));
    };
    let url = table.table_url().clone();
    let retention = chrono::Duration::from_std(retention)
        .map_err(|e| Error::Config(format!("vacuum retention {retention:?}: {e}")))?;
    let (table, metrics) = table
        .clone()
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .await
        .map_err(|e| Error::delta(&url, e))?;
    let deleted = metrics.files_deleted.len() as u64;
    if deleted > 0 {
        info!(table = %url, files_deleted = deleted, "vacuumed replaced files");
    }
    Ok(((deleted > 0).then_some(table), deleted))
}

/// Compacts one table, then vacuums it.
pub(crate) async fn compact_and_vacuum(
    table: &DeltaTable,
    config: &CompactionConfig,
    now: SystemTime,
) -> Result<(Option<DeltaTable>, CompactionStats)> {
    let (compacted, mut stats) = compact_table(table, config, now).await?;
    let (vacuumed, deleted) = vacuum_table(compacted.as_ref().unwrap_or(table), config).await?;
    stats.files_vacuumed = deleted;
    Ok((vacuumed.or(compacted), stats))
}

/// Compacts the span table of every tenant under `location` once (for `tracelake compact`,
/// which runs apart from a server). Returns the per-tenant results in tenant order.
pub async fn compact_location(
    location: &crate::StorageLocation,
    config: &CompactionConfig,
) -> Result<Vec<(String, CompactionStats)>> {
    let mut done = Vec::new();
    for tenant in location.list_tenants().await? {
        let url = location.table_url(&tenant, crate::SPANS_DATASET)?;
        let table =
            DeltaTable::try_from_url_with_storage_options(url.clone(), location.options().clone())
                .await
                .map_err(|e| Error::delta(&url, e))?;
        if table.version().is_none() {
            continue;
        }
        let (compacted, mut stats) = compact_and_vacuum(&table, config, SystemTime::now()).await?;
        let index_url = location.table_url(&tenant, crate::trace_index::TRACE_INDEX_DATASET)?;
        let (_, hours) = crate::trace_index::index_and_vacuum(
            compacted.as_ref().unwrap_or(&table),
            &index_url,
            location.options(),
            config,
        )
        .await?;
        stats.hours_indexed = hours;
        let rollup_url = location.table_url(&tenant, crate::rollup::ROLLUP_DATASET)?;
        let rollups = DeltaTable::try_from_url_with_storage_options(
            rollup_url.clone(),
            location.options().clone(),
        )
        .await
        .map_err(|e| Error::delta(&rollup_url, e))?;
        if rollups.version().is_some() {
            let now = SystemTime::now();
            let (compacted, hours) = crate::rollup::compact_rollups(&rollups, config, now).await?;
            vacuum_table(compacted.as_ref().unwrap_or(&rollups), config).await?;
            stats.rollup_hours = hours;
        }
        done.push((tenant, stats));
    }
    Ok(done)
}

/// Opens a Parquet file of the table for streaming reads.
pub(crate) async fn open_file(
    readers: &DefaultParquetFileReaderFactory,
    file: &FileRef,
    config: &CompactionConfig,
) -> Result<ParquetRecordBatchStreamBuilder<Box<dyn AsyncFileReader>>> {
    open_path(readers, &file.path, file.size, config.batch_rows).await
}

/// [`open_file`] by path and size.
pub(crate) async fn open_path(
    readers: &DefaultParquetFileReaderFactory,
    path: &deltalake::Path,
    size: u64,
    batch_rows: usize,
) -> Result<ParquetRecordBatchStreamBuilder<Box<dyn AsyncFileReader>>> {
    let reader = readers
        .create_reader(
            0,
            PartitionedFile::new(path.to_string(), size),
            None,
            &ExecutionPlanMetricsSet::new(),
        )
        .map_err(|e| Error::Config(format!("reading {path}: {e}")))?;
    // `AsyncFileReader` is `Send` already; the parquet crate implements it for the plain box.
    let reader: Box<dyn AsyncFileReader> = reader;
    Ok(ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| Error::Config(format!("reading {path}: {e}")))?
        .with_batch_size(batch_rows))
}

/// The range of `start_time_unix_nano` in a file, from its row-group statistics (`None` when
/// the file has no rows or no statistics).
fn start_range(meta: &ParquetMetaData) -> Option<(i64, i64)> {
    let col = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == columns::START_TIME_UNIX_NANO)?;
    let mut range: Option<(i64, i64)> = None;
    for rg in meta.row_groups() {
        if let Some(Statistics::Int64(s)) = rg.column(col).statistics() {
            if let (Some(&lo), Some(&hi)) = (s.min_opt(), s.max_opt()) {
                range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
    }
    range
}

/// The bucket (start, in nanoseconds) holding `nanos`.
fn bucket_of(nanos: i64, width: i64) -> i64 {
    nanos - nanos.rem_euclid(width)
}

/// Keeps the rows of `batch` in bucket `[lo, lo + width)`, plus rows without a start time
/// when `with_nulls`.
fn bucket_rows(
    batch: &RecordBatch,
    start: usize,
    lo: i64,
    width: i64,
    with_nulls: bool,
) -> std::result::Result<RecordBatch, ArrowError> {
    let starts = batch.column(start).as_primitive::<Int64Type>();
    let keep: BooleanArray = starts
        .iter()
        .map(|v| Some(v.map_or(with_nulls, |v| v >= lo && v - lo < width)))
        .collect();
    filter_record_batch(batch, &keep)
}

/// One input of a bucket's merge: a file, and whether its rows must be filtered to the bucket
/// (it straddles a boundary) and whether it contributes its rows without a start time.
struct BucketInput {
    file: usize,
    filter: bool,
    with_nulls: bool,
}

/// Rewrites one hour's untagged files, and the compacted files of the buckets they touch,
/// as per-bucket sorted runs; commits the swap.
async fn compact_hour(
    table: &mut DeltaTable,
    hour: &HourPlan,
    config: &CompactionConfig,
) -> Result<CompactionStats> {
    let url = table.table_url().clone();
    let delta = |e: DeltaTableError| Error::delta(&url, e);
    let store = table.log_store().object_store(None);
    let readers = DefaultParquetFileReaderFactory::new(store.clone());
    let (date, hour_value) = &hour.partition;
    // Whole seconds: the tag records the bucket start in seconds.
    let width = i64::try_from(config.bucket.as_secs().max(1))
        .unwrap_or(3600)
        .saturating_mul(1_000_000_000);
    let hour_start = partition_start(date, hour_value)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64);

    // Which buckets each file feeds.
    let mut inputs: BTreeMap<i64, Vec<BucketInput>> = BTreeMap::new();
    let mut schema: Option<SchemaRef> = None;
    for (i, file) in hour.files.iter().enumerate() {
        if file.bucket.is_some() {
            continue;
        }
        let builder = open_file(&readers, file, config).await?;
        let file_schema = builder.schema().clone();
        match &schema {
            None => schema = Some(file_schema),
            Some(s) if s.fields() != file_schema.fields() => {
                return Err(Error::Config(format!(
                    "compaction: {} has a different schema from the other files of its hour; \
                     the hour is left as it is",
                    file.path
                )));
            }
            Some(_) => {}
        }
        let (lo, hi) = start_range(builder.metadata()).unwrap_or((hour_start, hour_start));
        let (first, last) = (bucket_of(lo, width), bucket_of(hi, width));
        let mut b = first;
        while b <= last {
            inputs.entry(b).or_default().push(BucketInput {
                file: i,
                filter: first != last,
                with_nulls: b == first,
            });
            b += width;
        }
    }
    let schema = schema.ok_or_else(|| Error::Config("compaction: no file to compact".into()))?;
    // Compacted files of the touched buckets are merged again with the new rows.
    for (i, file) in hour.files.iter().enumerate() {
        if let Some(bucket_secs) = file.bucket {
            if let Some(list) = inputs.get_mut(&(bucket_secs * 1_000_000_000)) {
                list.push(BucketInput {
                    file: i,
                    filter: false,
                    with_nulls: true,
                });
            }
        }
    }

    let start_col = schema.index_of(columns::START_TIME_UNIX_NANO)?;
    let sort_key = |name: &str| -> Result<PhysicalSortExpr> {
        let index = schema.index_of(name)?;
        Ok(PhysicalSortExpr::new(
            Arc::new(Column::new(name, index)),
            SortOptions::default(),
        ))
    };
    let ordering = LexOrdering::new([
        sort_key(columns::TRACE_ID)?,
        sort_key(columns::START_TIME_UNIX_NANO)?,
    ])
    .ok_or_else(|| Error::Config("compaction: empty sort order".into()))?;
    let properties = {
        let state = table.snapshot().map_err(delta)?;
        let props = state.table_config();
        (
            props.num_indexed_cols(),
            props
                .data_skipping_stats_columns
                .as_ref()
                .map(|cols| cols.iter().map(|c| c.to_string()).collect::<Vec<String>>()),
        )
    };
    let mut adds = Vec::new();
    let mut spans = 0u64;
    let max_inputs = config.max_inputs.max(2);
    for (&bucket, bucket_inputs) in &inputs {
        let bucket_secs = bucket.div_euclid(1_000_000_000);
        for run in bucket_inputs.chunks(max_inputs) {
            let mut streams = Vec::with_capacity(run.len());
            for input in run {
                let file = &hour.files[input.file];
                let stream = open_file(&readers, file, config)
                    .await?
                    .build()
                    .map_err(|e| Error::Config(format!("compaction: reading {}: {e}", file.path)))?
                    .map_err(|e| DataFusionError::ParquetError(Box::new(e)));
                let (filter, with_nulls) = (input.filter, input.with_nulls);
                let stream = stream.and_then(move |batch| {
                    let result = if filter {
                        bucket_rows(&batch, start_col, bucket, width, with_nulls)
                            .map_err(DataFusionError::from)
                    } else {
                        Ok(batch)
                    };
                    futures::future::ready(result)
                });
                let stream: SendableRecordBatchStream =
                    Box::pin(RecordBatchStreamAdapter::new(schema.clone(), stream));
                streams.push(stream);
            }
            let mut merged =
                merge_sorted(streams, &schema, &ordering, config.batch_rows, "compaction")?;
            let writer_config = PartitionWriterConfig::try_new(
                schema.clone(),
                partition_values(date, hour_value),
                Some(span_writer_properties()),
                NonZeroU64::new(config.target_file_bytes),
                None,
                None,
                None,
            )
            .map_err(delta)?;
            let mut writer = PartitionWriter::try_with_config(
                store.clone(),
                writer_config,
                properties.0,
                properties.1.clone(),
            )
            .map_err(delta)?;
            while let Some(batch) = merged.next().await {
                let batch = batch.map_err(|e| Error::Config(format!("compaction merge: {e}")))?;
                spans += batch.num_rows() as u64;
                writer.write(&batch).await.map_err(delta)?;
            }
            for mut add in writer.close().await.map_err(delta)? {
                add.data_change = false;
                add.tags = Some(HashMap::from([(
                    BUCKET_TAG.to_string(),
                    Some(bucket_secs.to_string()),
                )]));
                adds.push(add);
            }
        }
    }

    // Removed: every untagged file, and the compacted files of the buckets rewritten.
    let rewritten: Vec<&FileRef> = hour
        .files
        .iter()
        .filter(|f| {
            f.bucket
                .is_none_or(|b| inputs.contains_key(&(b * 1_000_000_000)))
        })
        .collect();
    // The outputs must hold exactly the inputs' rows; otherwise commit nothing (the files just
    // written are unreferenced, and a vacuum removes them).
    let input_spans: Option<u64> = rewritten.iter().map(|f| f.records).sum();
    if let Some(expected) = input_spans.filter(|n| *n != spans) {
        return Err(Error::Config(format!(
            "compaction of {date}/{hour_value}: wrote {spans} rows but the inputs hold \
             {expected}; nothing committed"
        )));
    }
    let stats = CompactionStats {
        partitions: 1,
        files_removed: rewritten.len() as u64,
        files_added: adds.len() as u64,
        spans,
        bytes_removed: rewritten.iter().map(|f| f.size).sum(),
        bytes_added: adds.iter().map(|a| a.size.max(0) as u64).sum(),
        files_vacuumed: 0,
        hours_indexed: 0,
        rollup_hours: 0,
    };
    commit_rewrite(
        table,
        (date, hour_value),
        &rewritten,
        adds,
        config.target_file_bytes,
    )
    .await?;
    info!(
        table = %url,
        date,
        hour = hour_value,
        buckets = inputs.len(),
        files_removed = stats.files_removed,
        files_added = stats.files_added,
        spans,
        "compacted"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_start_parses_and_rejects() {
        let t = partition_start("2026-11-02", "10").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_793_613_600
        );
        assert!(partition_start("2026-11-02", "24").is_none());
        assert!(partition_start("2026-13-02", "01").is_none());
        assert!(partition_start("yesterday", "01").is_none());
    }
}
