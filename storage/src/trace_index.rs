//! The trace index: for each compacted hour, one row per trace (trace id, first and last span
//! start), sorted by trace id, in a Delta table `trace_index` beside the tenant's `spans`.
//!
//! Why: the two read paths want opposite layouts. A TraceQL search walks its window newest
//! first in time slices and wants spans in time order; a lookup by trace id wants trace-id
//! order. Compaction keeps spans in short time buckets (a search slice reads one or two), and
//! this index turns a lookup into two small reads per hour, however many spans the hour holds:
//!
//! ```text
//!  trace_index, one file per hour, sorted by trace id ──► (hour, first start, last start)
//!    │   (min/max statistics and the page index leave one page to read)
//!    v
//!  spans WHERE trace_id = X AND date/hour = .. AND start BETWEEN first AND last
//!        (start-time statistics leave the one or two buckets the trace lives in)
//! ```
//!
//! Consistency without coordination: each index file carries the Delta tag `tracelake.rows`,
//! the number of spans its hour held when it was built. A reader uses an hour's index only if
//! the span table it reads holds exactly that many rows in the hour ([`coverage`]). Compaction
//! keeps an hour's row count, a late span raises it, and a retention delete removes the whole
//! hour, so a count that matches means the index covers every span. Any other hour (open,
//! not yet compacted, late spans since, a failed index build) is read as before, through the
//! bloom filters and statistics of its files. The index is only ever an accelerator.
//!
//! The index is built by the compactor (see [`index_table`]) for hours whose files are all
//! compacted. Those files are each sorted by trace id, so building is a streaming k-way merge
//! of two columns, with memory of about one batch per file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroU64;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayBuilder, AsArray, BinaryBuilder, Int64Builder, RecordBatch};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafile::writer::{PartitionWriter, PartitionWriterConfig};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::Action;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaTable, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use tracelake_proto::{columns, PARTITION_COLUMNS};
use tracing::info;
use url::Url;

use crate::compact::{
    file_ref, file_tag, merge_sorted, open_file, partition_values, CompactionConfig, FileRef,
};
use crate::error::{Error, Result};

/// The dataset name of the trace index under each tenant.
pub const TRACE_INDEX_DATASET: &str = "trace_index";

/// The Delta file tag of an index file: the span rows of its hour that it covers.
pub const ROWS_TAG: &str = "tracelake.rows";

/// Column names of the trace index.
pub mod index_columns {
    /// The trace id (16 bytes), as in `spans`.
    pub const TRACE_ID: &str = "trace_id";
    /// The earliest `start_time_unix_nano` of the trace's spans in the hour.
    pub const START_MIN: &str = "start_min";
    /// The latest `start_time_unix_nano` of the trace's spans in the hour.
    pub const START_MAX: &str = "start_max";
}

/// A `(date, hour)` partition, as in the span table.
pub type Hour = (String, String);

/// Rows per index row group and per page: a lookup decodes one page of trace ids.
const INDEX_ROW_GROUP_ROWS: usize = 128 * 1024;
const INDEX_PAGE_ROWS: usize = 2048;

static INDEX_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = index_file_fields();
    fields.extend(
        PARTITION_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true)),
    );
    Arc::new(Schema::new(fields))
});

fn index_file_fields() -> Vec<Field> {
    vec![
        Field::new(index_columns::TRACE_ID, DataType::Binary, true),
        Field::new(index_columns::START_MIN, DataType::Int64, true),
        Field::new(index_columns::START_MAX, DataType::Int64, true),
    ]
}

/// The trace index's schema: its columns, then the partition columns.
pub fn index_schema() -> SchemaRef {
    INDEX_SCHEMA.clone()
}

/// Parquet writer properties for index files: sorted ids, page statistics, small pages.
fn index_writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(INDEX_ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(INDEX_PAGE_ROWS)
        .build()
}

/// Which hours of a span table a reader may look up through the index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexCoverage {
    /// Hours whose index covers every span the table holds in them.
    pub indexed: BTreeSet<Hour>,
    /// Hours with spans that the index does not (fully) cover.
    pub unindexed: Vec<Hour>,
}

/// Row counts per hour of the span table (`None` for an hour with a file without statistics).
fn span_hours(spans: &DeltaTable) -> Result<BTreeMap<Hour, Option<u64>>> {
    let state = spans
        .snapshot()
        .map_err(|e| Error::delta(spans.table_url(), e))?;
    let mut hours: BTreeMap<Hour, Option<u64>> = BTreeMap::new();
    for file in state.log_data().iter() {
        if let Some((hour, f)) = file_ref(&file) {
            let entry = hours.entry(hour).or_insert(Some(0));
            *entry = entry.zip(f.records).map(|(a, b)| a + b);
        }
    }
    Ok(hours)
}

/// The span rows each hour's index covers, from the index files' tags.
fn index_hours(index: &DeltaTable) -> Result<BTreeMap<Hour, (u64, Vec<FileRef>)>> {
    let state = index
        .snapshot()
        .map_err(|e| Error::delta(index.table_url(), e))?;
    let mut hours: BTreeMap<Hour, (u64, Vec<FileRef>)> = BTreeMap::new();
    for file in state.log_data().iter() {
        let rows = file_tag(&file, ROWS_TAG).and_then(|r| r.parse::<u64>().ok());
        if let (Some((hour, f)), Some(rows)) = (file_ref(&file), rows) {
            let entry = hours.entry(hour).or_insert((rows, Vec::new()));
            // Files of one hour are written together and agree; a disagreement disables it.
            if entry.0 != rows {
                entry.0 = u64::MAX;
            }
            entry.1.push(f);
        }
    }
    Ok(hours)
}

/// The hours of `spans` that `index` covers (see the module docs), and the others.
pub fn coverage(spans: &DeltaTable, index: Option<&DeltaTable>) -> Result<IndexCoverage> {
    let indexed_rows = match index {
        Some(index) => index_hours(index)?,
        None => BTreeMap::new(),
    };
    let mut coverage = IndexCoverage::default();
    for (hour, rows) in span_hours(spans)? {
        let covered = rows.is_some_and(|n| indexed_rows.get(&hour).is_some_and(|(r, _)| *r == n));
        if covered {
            coverage.indexed.insert(hour);
        } else {
            coverage.unindexed.push(hour);
        }
    }
    Ok(coverage)
}

/// Opens the trace index at `url`, creating it when `create` and it does not exist.
pub async fn open_index_table(
    url: &Url,
    options: &HashMap<String, String>,
    create: bool,
) -> Result<Option<DeltaTable>> {
    let table = DeltaTable::try_from_url_with_storage_options(url.clone(), options.clone())
        .await
        .map_err(|e| Error::delta(url, e))?;
    if table.version().is_some() {
        return Ok(Some(table));
    }
    if !create {
        return Ok(None);
    }
    let table = crate::table::open_or_create_table(
        url,
        options,
        &index_schema(),
        "trace_index",
        "tracelake trace index: first and last span start per trace and hour",
    )
    .await?;
    Ok(Some(table))
}

/// Builds the index of every hour of `spans` whose files are all compacted and whose index is
/// missing or stale, one Delta commit per hour. Returns the index table after the last commit
/// (`None` when nothing was built) and the number of hours indexed.
pub async fn index_table(
    spans: &DeltaTable,
    index_url: &Url,
    options: &HashMap<String, String>,
    config: &CompactionConfig,
) -> Result<(Option<DeltaTable>, u64)> {
    let url = spans.table_url().clone();
    let mut spans = spans.clone();
    spans
        .update_incremental(None)
        .await
        .map_err(|e| Error::delta(&url, e))?;
    // Hours whose files are all compacted (sorted by trace id) and counted.
    let mut candidates: BTreeMap<Hour, (u64, Vec<FileRef>)> = BTreeMap::new();
    let mut excluded: BTreeSet<Hour> = BTreeSet::new();
    {
        let state = spans.snapshot().map_err(|e| Error::delta(&url, e))?;
        for file in state.log_data().iter() {
            let Some((hour, f)) = file_ref(&file) else {
                continue;
            };
            match (f.bucket, f.records) {
                (Some(_), Some(n)) => {
                    let entry = candidates.entry(hour).or_insert((0, Vec::new()));
                    entry.0 += n;
                    entry.1.push(f);
                }
                _ => {
                    excluded.insert(hour);
                }
            }
        }
    }
    candidates.retain(|hour, _| !excluded.contains(hour));
    let mut index = open_index_table(index_url, options, false).await?;
    let existing = match &index {
        Some(index) => index_hours(index)?,
        None => BTreeMap::new(),
    };
    candidates.retain(|hour, (rows, _)| existing.get(hour).is_none_or(|(r, _)| r != rows));
    if candidates.is_empty() {
        return Ok((None, 0));
    }
    let mut index = match index.take() {
        Some(index) => index,
        None => open_index_table(index_url, options, true)
            .await?
            .ok_or_else(|| Error::Config(format!("creating the trace index at {index_url}")))?,
    };
    let store = spans.log_store().object_store(None);
    let mut built = 0;
    for (hour, (rows, files)) in candidates {
        let old = existing
            .get(&hour)
            .map(|(_, f)| f.as_slice())
            .unwrap_or(&[]);
        index_hour(&mut index, &store, &hour, rows, &files, old, config).await?;
        built += 1;
    }
    Ok((Some(index), built))
}

/// Writes the index of one hour from its compacted span files and swaps it in.
async fn index_hour(
    index: &mut DeltaTable,
    spans_store: &Arc<dyn object_store::ObjectStore>,
    hour: &Hour,
    rows: u64,
    files: &[FileRef],
    old: &[FileRef],
    config: &CompactionConfig,
) -> Result<()> {
    let url = index.table_url().clone();
    let delta = |e: DeltaTableError| Error::delta(&url, e);
    let readers = DefaultParquetFileReaderFactory::new(spans_store.clone());
    let projected: SchemaRef = Arc::new(Schema::new(vec![
        Field::new(columns::TRACE_ID, DataType::Binary, true),
        Field::new(columns::START_TIME_UNIX_NANO, DataType::Int64, true),
    ]));
    let mut streams = Vec::with_capacity(files.len());
    for file in files {
        let builder = open_file(&readers, file, config).await?;
        let parquet_schema = builder.parquet_schema();
        let leaves: Vec<usize> = [columns::TRACE_ID, columns::START_TIME_UNIX_NANO]
            .iter()
            .map(|name| {
                parquet_schema
                    .columns()
                    .iter()
                    .position(|c| c.path().string() == *name)
                    .ok_or_else(|| {
                        Error::Config(format!("trace index: {} has no column {name}", file.path))
                    })
            })
            .collect::<Result<_>>()?;
        let mask = ProjectionMask::leaves(parquet_schema, leaves);
        let stream = builder
            .with_projection(mask)
            .build()
            .map_err(|e| Error::Config(format!("trace index: reading {}: {e}", file.path)))?
            .map_err(|e| DataFusionError::ParquetError(Box::new(e)));
        let schema = projected.clone();
        let stream = stream.and_then(move |batch| {
            // Same columns, our field metadata: the merge checks schemas.
            let batch = RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
                .map_err(DataFusionError::from);
            futures::future::ready(batch)
        });
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(projected.clone(), stream));
        streams.push(stream);
    }
    let ordering = LexOrdering::new([PhysicalSortExpr::new(
        Arc::new(Column::new(columns::TRACE_ID, 0)),
        SortOptions::default(),
    )])
    .ok_or_else(|| Error::Config("trace index: empty sort order".into()))?;
    let mut merged = merge_sorted(
        streams,
        &projected,
        &ordering,
        config.batch_rows,
        "trace index",
    )?;

    let file_schema: SchemaRef = Arc::new(Schema::new(index_file_fields()));
    let writer_config = PartitionWriterConfig::try_new(
        file_schema.clone(),
        partition_values(&hour.0, &hour.1),
        Some(index_writer_properties()),
        // One file per hour: readers then probe one footer.
        NonZeroU64::new(u64::MAX),
        None,
        None,
        None,
    )
    .map_err(delta)?;
    let num_indexed_cols = index
        .snapshot()
        .map_err(delta)?
        .table_config()
        .num_indexed_cols();
    let mut writer = PartitionWriter::try_with_config(
        index.log_store().object_store(None),
        writer_config,
        num_indexed_cols,
        None,
    )
    .map_err(delta)?;

    let mut acc = TraceRanges::new(file_schema.clone());
    let mut seen = 0u64;
    while let Some(batch) = merged.next().await {
        let batch = batch.map_err(|e| Error::Config(format!("trace index merge: {e}")))?;
        seen += batch.num_rows() as u64;
        if let Some(out) = acc.push(&batch)? {
            writer.write(&out).await.map_err(delta)?;
        }
    }
    if let Some(out) = acc.finish()? {
        writer.write(&out).await.map_err(delta)?;
    }
    if seen != rows {
        return Err(Error::Config(format!(
            "trace index of {}/{}: read {seen} spans but the table holds {rows}; nothing \
             committed",
            hour.0, hour.1
        )));
    }
    let mut actions: Vec<Action> = old.iter().map(|f| f.remove.clone()).collect();
    let adds = writer.close().await.map_err(delta)?;
    let files_added = adds.len();
    for mut add in adds {
        add.tags = Some(HashMap::from([(
            ROWS_TAG.to_string(),
            Some(rows.to_string()),
        )]));
        actions.push(Action::Add(add));
    }
    let operation = DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(PARTITION_COLUMNS.iter().map(|c| c.to_string()).collect()),
        predicate: Some(format!("date = '{}' AND hour = '{}'", hour.0, hour.1)),
    };
    {
        let state = index.snapshot().map_err(delta)?;
        CommitBuilder::from(CommitProperties::default())
            .with_actions(actions)
            .build(Some(state), index.log_store(), operation)
            .await
            .map_err(delta)?;
    }
    index.update_incremental(None).await.map_err(delta)?;
    info!(table = %url, date = hour.0, hour = hour.1, spans = rows, files_added, "indexed");
    Ok(())
}

/// Folds a stream of `(trace_id, start)` rows sorted by trace id into one row per trace.
struct TraceRanges {
    schema: SchemaRef,
    current: Option<(Vec<u8>, i64, i64)>,
    ids: BinaryBuilder,
    mins: Int64Builder,
    maxs: Int64Builder,
}

impl TraceRanges {
    fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            current: None,
            ids: BinaryBuilder::new(),
            mins: Int64Builder::new(),
            maxs: Int64Builder::new(),
        }
    }

    /// Adds a sorted batch; returns a batch of finished traces once enough have gathered.
    fn push(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let ids = batch.column(0).as_binary::<i32>();
        let starts = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                continue;
            }
            let id = ids.value(i);
            // A span without a start time could be anywhere in the hour.
            let (lo, hi) = if starts.is_null(i) {
                (i64::MIN, i64::MAX)
            } else {
                (starts.value(i), starts.value(i))
            };
            match &mut self.current {
                Some((cur, min, max)) if cur.as_slice() == id => {
                    *min = (*min).min(lo);
                    *max = (*max).max(hi);
                }
                _ => {
                    if let Some((cur, min, max)) = self.current.take() {
                        self.ids.append_value(cur);
                        self.mins.append_value(min);
                        self.maxs.append_value(max);
                    }
                    self.current = Some((id.to_vec(), lo, hi));
                }
            }
        }
        if self.ids.len() >= INDEX_ROW_GROUP_ROWS {
            return self.take().map(Some);
        }
        Ok(None)
    }

    fn take(&mut self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(self.ids.finish()),
                Arc::new(self.mins.finish()),
                Arc::new(self.maxs.finish()),
            ],
        )?)
    }

    fn finish(mut self) -> Result<Option<RecordBatch>> {
        if let Some((cur, min, max)) = self.current.take() {
            self.ids.append_value(cur);
            self.mins.append_value(min);
            self.maxs.append_value(max);
        }
        if self.ids.is_empty() {
            return Ok(None);
        }
        self.take().map(Some)
    }
}

/// Indexes `spans` ([`index_table`]), then deletes index files replaced more than the
/// vacuum retention ago. Returns the index after its last commit, if any, and the hours
/// indexed.
pub async fn index_and_vacuum(
    spans: &DeltaTable,
    index_url: &Url,
    options: &HashMap<String, String>,
    config: &CompactionConfig,
) -> Result<(Option<DeltaTable>, u64)> {
    let (built, hours) = index_table(spans, index_url, options, config).await?;
    let index = match built {
        Some(index) => Some(index),
        None => open_index_table(index_url, options, false).await?,
    };
    let vacuumed = match &index {
        Some(index) => crate::compact::vacuum_table(index, config).await?.0,
        None => None,
    };
    Ok((vacuumed.or(index), hours))
}
