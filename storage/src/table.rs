//! One Delta Lake table of spans: create if absent, append sorted Parquet with our writer
//! properties, and record how far the WAL is committed with Delta's `txn` action.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructType, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use tracelake_proto::{columns, span_schema, PARTITION_COLUMNS};
use url::Url;

use crate::error::{Error, Result};

/// Rows per Parquet row group. Smaller groups make trace-id pruning (statistics and bloom
/// filters) finer; 64k rows of spans is a few MB compressed.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Parquet writer properties for span files: zstd, dictionary-encoded strings, page-level
/// statistics (hence the page index), and a bloom filter on `trace_id`.
///
/// Every operation that rewrites files (write, optimize, delete) must pass these, or the bloom
/// filters disappear (deltalake's defaults have none).
pub fn span_writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_column_bloom_filter_enabled(ColumnPath::from(columns::TRACE_ID), true)
        .set_column_bloom_filter_fpp(ColumnPath::from(columns::TRACE_ID), 0.01)
        .set_column_bloom_filter_max_ndv(ColumnPath::from(columns::TRACE_ID), ROW_GROUP_ROWS as u64)
        // Ids are random: dictionaries only cost time there.
        .set_column_dictionary_enabled(ColumnPath::from(columns::TRACE_ID), false)
        .set_column_dictionary_enabled(ColumnPath::from(columns::SPAN_ID), false)
        .set_column_dictionary_enabled(ColumnPath::from(columns::PARENT_SPAN_ID), false)
        .build()
}

/// Sorts a batch by `(trace_id, start_time_unix_nano)`, so that a trace's spans are contiguous
/// and min/max statistics on `trace_id` prune well.
pub fn sort_spans(batch: &RecordBatch) -> Result<RecordBatch> {
    let col = |name: &str| {
        batch.column_by_name(name).cloned().ok_or_else(|| {
            Error::Arrow(arrow::error::ArrowError::SchemaError(format!(
                "span batch has no column {name}"
            )))
        })
    };
    let sort = [
        SortColumn {
            values: col(columns::TRACE_ID)?,
            options: None,
        },
        SortColumn {
            values: col(columns::START_TIME_UNIX_NANO)?,
            options: None,
        },
    ];
    let indices = lexsort_to_indices(&sort, None)?;
    Ok(take_record_batch(batch, &indices)?)
}

/// Opens the Delta table at `url`, creating it with the span schema if it does not exist.
pub async fn open_or_create_span_table(
    url: &Url,
    options: &HashMap<String, String>,
) -> Result<DeltaTable> {
    open_or_create_table(
        url,
        options,
        &span_schema(),
        "spans",
        "tracelake spans: one row per span",
    )
    .await
}

/// Opens the Delta table at `url`, creating it with `schema` (partitioned by
/// [`PARTITION_COLUMNS`], which `schema` must hold) if it does not exist.
pub async fn open_or_create_table(
    url: &Url,
    options: &HashMap<String, String>,
    schema: &SchemaRef,
    name: &str,
    comment: &str,
) -> Result<DeltaTable> {
    let table = DeltaTable::try_from_url_with_storage_options(url.clone(), options.clone())
        .await
        .map_err(|e| Error::delta(url, e))?;
    if table.version().is_some() {
        return Ok(table);
    }
    let schema: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| Error::delta(url, DeltaTableError::from(e)))?;
    table
        .create()
        .with_columns(schema.fields().cloned())
        .with_partition_columns(PARTITION_COLUMNS)
        .with_save_mode(SaveMode::Ignore)
        .with_table_name(name)
        .with_comment(comment)
        .await
        .map_err(|e| Error::delta(url, e))
}

/// The WAL sequence number committed to `table` by the writer `app_id`, from Delta's `txn`
/// action (0 when none).
pub async fn committed_wal_seq(table: &DeltaTable, app_id: &str) -> Result<u64> {
    let version = table
        .snapshot()
        .map_err(|e| Error::delta(table.table_url(), e))?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| Error::delta(table.table_url(), e))?;
    Ok(version.map_or(0, |v| v.max(0) as u64))
}

/// Appends sorted span batches to `table` in one Delta commit that also records
/// `txn(app_id, wal_seq)`. Returns the updated table.
///
/// When another writer with the same `app_id` committed concurrently (possible only if two
/// processes share one WAL identity), the table is refreshed and, if the txn already covers
/// `wal_seq`, the batch is treated as committed rather than written twice.
pub async fn append_spans(
    table: &DeltaTable,
    batches: Vec<RecordBatch>,
    app_id: &str,
    wal_seq: u64,
) -> Result<DeltaTable> {
    append_with_txn(table, batches, app_id, wal_seq, span_writer_properties()).await
}

/// [`append_spans`] for any table, with its writer properties.
pub async fn append_with_txn(
    table: &DeltaTable,
    batches: Vec<RecordBatch>,
    app_id: &str,
    wal_seq: u64,
    properties: WriterProperties,
) -> Result<DeltaTable> {
    let url = table.table_url().clone();
    let commit = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id, wal_seq as i64));
    let result = table
        .clone()
        .write(batches)
        .with_save_mode(SaveMode::Append)
        .with_writer_properties(properties)
        .with_commit_properties(commit)
        .await;
    match result {
        Ok(table) => Ok(table),
        // A conflicting concurrent commit with our app id: refresh and skip if it covers us.
        Err(e) if matches!(e, DeltaTableError::Transaction { .. }) => {
            if !already_committed(table, app_id, wal_seq).await? {
                return Err(Error::delta(&url, e));
            }
            let mut fresh = table.clone();
            fresh
                .update_incremental(None)
                .await
                .map_err(|e| Error::delta(&url, e))?;
            Ok(fresh)
        }
        Err(e) => Err(Error::delta(&url, e)),
    }
}

async fn already_committed(table: &DeltaTable, app_id: &str, wal_seq: u64) -> Result<bool> {
    let mut fresh = table.clone();
    fresh
        .update_incremental(None)
        .await
        .map_err(|e| Error::delta(table.table_url(), e))?;
    Ok(committed_wal_seq(&fresh, app_id).await? >= wal_seq)
}

/// `(min start, max start, rows)` of every file of `table` whose Delta statistics have them
/// (`start_time_unix_nano`): where in time the table's rows are, for planning scans.
pub fn file_start_ranges(table: &DeltaTable) -> Result<Vec<(i64, i64, u64)>> {
    let start = |v| long_stat(v, columns::START_TIME_UNIX_NANO);
    let state = table
        .snapshot()
        .map_err(|e| Error::delta(table.table_url(), e))?;
    Ok(state
        .log_data()
        .iter()
        .filter_map(|f| {
            let rows = f.num_records()? as u64;
            Some((start(f.min_values())?, start(f.max_values())?, rows))
        })
        .collect())
}

/// The int64 statistic of `column` in a file's Delta min or max values, if present.
pub(crate) fn long_stat(
    values: Option<delta_kernel::expressions::Scalar>,
    column: &str,
) -> Option<i64> {
    use delta_kernel::expressions::Scalar;
    let Some(Scalar::Struct(data)) = values else {
        return None;
    };
    let i = data.fields().iter().position(|f| f.name() == column)?;
    match data.values().get(i)? {
        Scalar::Long(v) => Some(*v),
        _ => None,
    }
}
