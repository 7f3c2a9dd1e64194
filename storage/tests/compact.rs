//! Compaction of closed hours: same rows, fewer files, each sorted by trace id and covering a
//! trace-id range of its own; open hours and large files are left alone; the WAL watermark
//! survives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{AsArray, RecordBatch};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use tracelake_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracelake_storage::table::committed_wal_seq;
use tracelake_storage::{
    CompactionConfig, Storage, StorageConfig, StorageLocation, StorageMetrics,
};

/// 2026-01-01T00:00:00Z, long closed.
const OLD_HOUR_NANOS: u64 = 1_767_225_600_000_000_000;

/// A splitmix64 step: deterministic, well-spread ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` spans starting at `start`, with trace ids drawn from `seed` (two spans per trace).
fn spans(seed: u64, n: u64, start: u64) -> RecordBatch {
    let spans = (0..n)
        .map(|i| {
            let t = mix(seed * 1_000_003 + i / 2);
            let mut trace_id = t.to_be_bytes().to_vec();
            trace_id.extend(mix(t).to_be_bytes());
            Span {
                trace_id,
                span_id: mix(seed * 7_777_777 + i).to_be_bytes().to_vec(),
                name: format!("op-{}", i % 7),
                start_time_unix_nano: start + i * 1_000_000,
                end_time_unix_nano: start + i * 1_000_000 + 500_000,
                ..Default::default()
            }
        })
        .collect();
    let rs = ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    tracelake_proto::resource_spans_to_batch(&[rs]).unwrap()
}

fn config(dir: &std::path::Path) -> StorageConfig {
    let location =
        StorageLocation::parse(dir.join("tables").to_str().unwrap(), HashMap::new()).unwrap();
    StorageConfig::for_location(location, dir.join("wal"))
}

/// A storage engine under `dir` (no WAL replay work: records carry no spans).
async fn open(dir: &std::path::Path) -> Arc<Storage> {
    Storage::open(
        config(dir),
        Arc::new(StorageMetrics::default()),
        &mut |_| Ok(None),
    )
    .await
    .unwrap()
}

/// `(date, hour, path, size)` of every file in the table.
fn files(table: &DeltaTable) -> Vec<(String, String, String, u64)> {
    let state = table.snapshot().unwrap();
    let mut out: Vec<_> = state
        .log_data()
        .iter()
        .map(|f| {
            let pv = f.partition_values_map();
            (
                pv["date"].clone().unwrap(),
                pv["hour"].clone().unwrap(),
                f.path().to_string(),
                f.size() as u64,
            )
        })
        .collect();
    out.sort();
    out
}

/// Every `(trace_id, span_id)` in the table, sorted.
async fn rows(table: &DeltaTable) -> Vec<(Vec<u8>, Vec<u8>)> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("spans", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql("SELECT trace_id, span_id FROM spans")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let binary = |a: &arrow::array::ArrayRef| {
        arrow::compute::cast(a, &arrow::datatypes::DataType::Binary)
            .unwrap()
            .as_binary::<i32>()
            .iter()
            .map(|v| v.unwrap().to_vec())
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for b in batches {
        out.extend(binary(b.column(0)).into_iter().zip(binary(b.column(1))));
    }
    out.sort();
    out
}

/// A `(min, max)` trace-id range.
type Range = (Vec<u8>, Vec<u8>);

/// Min and max `trace_id` of each row group of a local Parquet file, and whether the rows are
/// sorted by trace id.
fn trace_ranges(path: &std::path::Path) -> (Vec<Range>, bool) {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let meta = reader.metadata();
    let col = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "trace_id")
        .unwrap();
    let ranges = meta
        .row_groups()
        .iter()
        .map(|rg| match rg.column(col).statistics() {
            Some(Statistics::ByteArray(s)) => (
                s.min_opt().unwrap().data().to_vec(),
                s.max_opt().unwrap().data().to_vec(),
            ),
            other => panic!("no trace_id statistics: {other:?}"),
        })
        .collect();
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(path).unwrap(),
    )
    .unwrap();
    let mask = parquet::arrow::ProjectionMask::leaves(builder.parquet_schema(), [col]);
    let mut last: Option<Vec<u8>> = None;
    let mut sorted = true;
    for batch in builder.with_projection(mask).build().unwrap() {
        let batch = batch.unwrap();
        let ids =
            arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Binary).unwrap();
        for id in ids.as_binary::<i32>().iter().flatten() {
            if last.as_deref().is_some_and(|l| l > id) {
                sorted = false;
            }
            last = Some(id.to_vec());
        }
    }
    (ranges, sorted)
}

#[tokio::test]
async fn closed_hours_merge_into_sorted_files_with_their_own_trace_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    // An hour that cannot close while the test runs.
    let young = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        + 2 * 3_600_000_000_000;
    // 12 flushes, each with spans in the closed hour and in a young one; one more closed hour
    // gets a single file.
    for i in 0..12u64 {
        storage
            .append(
                "default",
                vec![],
                Some(spans(i, 400, OLD_HOUR_NANOS + i * 60_000_000_000)),
            )
            .await
            .unwrap();
        storage
            .append("default", vec![], Some(spans(100 + i, 5, young)))
            .await
            .unwrap();
        storage.flush().await.unwrap();
    }
    storage
        .append(
            "default",
            vec![],
            Some(spans(999, 50, OLD_HOUR_NANOS + 3_600_000_000_000)),
        )
        .await
        .unwrap();
    storage.flush().await.unwrap();
    // Spans still in the buffer must be seen once, compaction or not.
    storage
        .append("default", vec![], Some(spans(555, 3, young)))
        .await
        .unwrap();

    let before = storage.snapshot("default").await.unwrap().table.unwrap();
    let before_files = files(&before);
    let before_rows = rows(&before).await;
    let watermark = committed_wal_seq(&before, storage.app_id()).await.unwrap();
    assert_eq!(before_rows.len(), 12 * 400 + 12 * 5 + 50);
    let old_files: Vec<_> = before_files
        .iter()
        .filter(|f| f.0 == "2026-01-01" && f.1 == "00")
        .collect();
    assert_eq!(old_files.len(), 12, "one file per flush: {before_files:?}");
    let largest = old_files.iter().map(|f| f.3).max().unwrap();

    // Target two input files' worth, so that a bucket of five inputs makes several outputs.
    let compaction = CompactionConfig {
        grace: Duration::ZERO,
        bucket: Duration::from_secs(300),
        target_file_bytes: largest * 2,
        max_inputs: 128,
        batch_rows: 100,
        vacuum_retention: None,
    };
    let stats = storage.compact(&compaction).await.unwrap();
    assert_eq!(stats.partitions, 2, "both closed hours: {stats:?}");
    assert_eq!(stats.files_removed, 13);
    assert_eq!(stats.spans, 12 * 400 + 50);
    assert!(
        (4..13).contains(&stats.files_added),
        "three buckets in hour 00, several outputs of about the target size: {stats:?}"
    );

    // Queries now see the compacted table, and the buffered spans exactly once.
    let snap = storage.snapshot("default").await.unwrap();
    let after = snap.table.clone().unwrap();
    assert!(after.version() > before.version());
    assert_eq!(
        snap.buffered
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>(),
        3
    );
    assert_eq!(
        rows(&after).await,
        before_rows,
        "the same rows, none lost or doubled"
    );
    assert_eq!(
        committed_wal_seq(&after, storage.app_id()).await.unwrap(),
        watermark,
        "the WAL watermark is untouched"
    );

    let after_files = files(&after);
    let young_files = |fs: &[(String, String, String, u64)]| -> Vec<String> {
        fs.iter()
            .filter(|f| f.0 != "2026-01-01")
            .map(|f| f.2.clone())
            .collect()
    };
    assert_eq!(
        young_files(&after_files),
        young_files(&before_files),
        "the open hour is not rewritten"
    );

    // Each output is sorted; within a bucket the outputs cover disjoint trace-id ranges; and
    // the buckets of hour 00 are minutes 0-4, 5-9 and 10-11.
    let table_dir = dir.path().join("tables/tenants/default/spans");
    let by_bucket = bucket_ranges(&after, &table_dir);
    let hour00 = (OLD_HOUR_NANOS / 1_000_000_000) as i64;
    assert_eq!(
        by_bucket.keys().copied().collect::<Vec<_>>(),
        vec![hour00, hour00 + 300, hour00 + 600, hour00 + 3600]
    );
    for (bucket, ranges) in &by_bucket {
        for pair in ranges.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "bucket {bucket}: files overlap in trace id: {:02x?} > {:02x?}",
                pair[0].1,
                pair[1].0
            );
        }
    }

    // A second pass finds nothing to do: every file of a closed hour is compacted.
    let again = storage.compact(&compaction).await.unwrap();
    assert_eq!(again, Default::default());

    // Late spans for minute 7 rewrite that bucket only.
    storage
        .append(
            "default",
            vec![],
            Some(spans(77, 30, OLD_HOUR_NANOS + 7 * 60_000_000_000)),
        )
        .await
        .unwrap();
    storage.flush().await.unwrap();
    let before_late = storage.snapshot("default").await.unwrap().table.unwrap();
    let late = storage.compact(&compaction).await.unwrap();
    let table = storage.snapshot("default").await.unwrap().table.unwrap();
    let late_by_bucket = bucket_ranges(&table, &table_dir);
    assert_eq!(late.partitions, 1);
    assert_eq!(
        late.spans,
        30 + by_bucket_rows(&before_late, hour00 + 300),
        "the late file and bucket 5-9 only: {late:?}"
    );
    for bucket in [hour00, hour00 + 600, hour00 + 3600] {
        assert_eq!(
            late_by_bucket[&bucket], by_bucket[&bucket],
            "bucket {bucket} untouched"
        );
    }
    let now_rows = rows(&table).await;
    // The late spans, and the three that were buffered (the flush committed them too).
    assert_eq!(now_rows.len(), before_rows.len() + 30 + 3);
    assert!(
        before_rows
            .iter()
            .all(|r| now_rows.binary_search(r).is_ok()),
        "every earlier span is still there"
    );

    // The vacuum deletes the replaced files (here at once), and only those.
    let on_disk = |dir: &std::path::Path| {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() && !p.ends_with("_delta_log") {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "parquet") {
                    out.push(p.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, &mut out);
        out.len()
    };
    assert!(on_disk(&table_dir) > tagged_files(&table).len());
    let vacuum = storage
        .compact(&CompactionConfig {
            vacuum_retention: Some(Duration::ZERO),
            ..compaction.clone()
        })
        .await
        .unwrap();
    assert!(vacuum.files_vacuumed > 0, "{vacuum:?}");
    let table = storage.snapshot("default").await.unwrap().table.unwrap();
    assert_eq!(on_disk(&table_dir), tagged_files(&table).len());
    assert_eq!(rows(&table).await, now_rows);

    // After a restart the compacted table is what is read, and the buffer replays.
    drop(storage);
    let storage = open(dir.path()).await;
    let reopened = storage.snapshot("default").await.unwrap().table.unwrap();
    assert_eq!(reopened.version(), table.version());
}

/// The compacted files' trace-id ranges by bucket tag (unix seconds), sorted; asserts each
/// file is sorted by trace id.
fn bucket_ranges(
    table: &DeltaTable,
    table_dir: &std::path::Path,
) -> std::collections::BTreeMap<i64, Vec<Range>> {
    let mut out: std::collections::BTreeMap<i64, Vec<Range>> = Default::default();
    for (path, bucket) in tagged_files(table) {
        let Some(bucket) = bucket else { continue };
        let (groups, sorted) = trace_ranges(&table_dir.join(&path));
        assert!(sorted, "{path} is sorted by trace id");
        let min = groups.iter().map(|g| g.0.clone()).min().unwrap();
        let max = groups.iter().map(|g| g.1.clone()).max().unwrap();
        out.entry(bucket).or_default().push((min, max));
    }
    for ranges in out.values_mut() {
        ranges.sort();
    }
    out
}

/// Rows in the compacted files of `bucket`, from the Delta stats.
fn by_bucket_rows(table: &DeltaTable, bucket: i64) -> u64 {
    let state = table.snapshot().unwrap();
    state
        .log_data()
        .iter()
        .filter(|f| bucket_tag(f) == Some(bucket))
        .map(|f| f.num_records().unwrap() as u64)
        .sum()
}

#[allow(deprecated)] // tags are only reachable through the Add action
fn bucket_tag(f: &deltalake::kernel::LogicalFileView) -> Option<i64> {
    f.add_action()
        .tags?
        .get(tracelake_storage::compact::BUCKET_TAG)?
        .as_ref()?
        .parse()
        .ok()
}

/// `(path, bucket tag)` of every file.
fn tagged_files(table: &DeltaTable) -> Vec<(String, Option<i64>)> {
    let state = table.snapshot().unwrap();
    state
        .log_data()
        .iter()
        .map(|f| (f.path().to_string(), bucket_tag(&f)))
        .collect()
}

#[tokio::test]
async fn compact_location_reports_per_tenant_and_skips_young_hours() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let location = cfg.location.clone();
    let storage = Storage::open(cfg, Arc::new(StorageMetrics::default()), &mut |_| Ok(None))
        .await
        .unwrap();
    for i in 0..3u64 {
        for tenant in ["acme", "beta"] {
            storage
                .append(tenant, vec![], Some(spans(i, 50, OLD_HOUR_NANOS)))
                .await
                .unwrap();
        }
        storage.flush().await.unwrap();
    }
    drop(storage);

    // A grace period longer than the data's age leaves everything alone.
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH + Duration::from_nanos(OLD_HOUR_NANOS))
        .unwrap();
    let patient = CompactionConfig {
        grace: age + Duration::from_secs(3600),
        ..CompactionConfig::default()
    };
    let done = tracelake_storage::compact::compact_location(&location, &patient)
        .await
        .unwrap();
    assert_eq!(
        done.iter()
            .map(|(t, s)| (t.as_str(), s.files_removed))
            .collect::<Vec<_>>(),
        vec![("acme", 0), ("beta", 0)]
    );

    let done =
        tracelake_storage::compact::compact_location(&location, &CompactionConfig::default())
            .await
            .unwrap();
    for (tenant, stats) in &done {
        assert_eq!((stats.files_removed, stats.files_added), (3, 1), "{tenant}");
        assert_eq!(stats.spans, 150);
    }
    assert_eq!(done.len(), 2);
}

/// `(trace_id, start_min, start_max)` of every row of `table` (the trace index) in one hour,
/// in file order.
async fn index_rows(table: &DeltaTable, date: &str, hour: &str) -> Vec<(Vec<u8>, i64, i64)> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("idx", table.table_provider().await.unwrap())
        .unwrap();
    let sql = format!(
        "SELECT trace_id, start_min, start_max FROM idx WHERE date = '{date}' AND hour = '{hour}'"
    );
    let mut out = Vec::new();
    for b in ctx.sql(&sql).await.unwrap().collect().await.unwrap() {
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Binary).unwrap();
        let ids = ids.as_binary::<i32>();
        let lo = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        let hi = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            out.push((ids.value(i).to_vec(), lo.value(i), hi.value(i)));
        }
    }
    out
}

/// The same, computed from the spans with SQL, sorted by trace id.
async fn expected_index(table: &DeltaTable, date: &str, hour: &str) -> Vec<(Vec<u8>, i64, i64)> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    ctx.register_table("spans", table.table_provider().await.unwrap())
        .unwrap();
    let sql = format!(
        "SELECT CAST(trace_id AS BYTEA), min(start_time_unix_nano), max(start_time_unix_nano) \
         FROM spans WHERE date = '{date}' AND hour = '{hour}' GROUP BY 1 ORDER BY 1"
    );
    let mut out = Vec::new();
    for b in ctx.sql(&sql).await.unwrap().collect().await.unwrap() {
        let ids = b.column(0).as_binary::<i32>();
        let lo = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        let hi = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            out.push((ids.value(i).to_vec(), lo.value(i), hi.value(i)));
        }
    }
    out
}

#[tokio::test]
async fn compacted_hours_get_a_trace_index_that_late_spans_invalidate_until_rebuilt() {
    use tracelake_storage::trace_index::{coverage, open_index_table, TRACE_INDEX_DATASET};
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let location = config(dir.path()).location;
    let index_url = location.table_url("default", TRACE_INDEX_DATASET).unwrap();
    let open_index = || async {
        open_index_table(&index_url, &HashMap::new(), false)
            .await
            .unwrap()
    };
    // Six flushes over hour 00; each flush's traces also have spans a few minutes later
    // (`spans` gives two spans per trace, 1 ms apart; a second batch repeats the seed later).
    for i in 0..6u64 {
        let at = OLD_HOUR_NANOS + i * 7 * 60_000_000_000;
        storage
            .append("default", vec![], Some(spans(i, 300, at)))
            .await
            .unwrap();
        storage
            .append(
                "default",
                vec![],
                Some(spans(i, 40, at + 3 * 60_000_000_000)),
            )
            .await
            .unwrap();
        storage.flush().await.unwrap();
    }
    // An open hour is never indexed.
    let young = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    storage
        .append("default", vec![], Some(spans(50, 10, young)))
        .await
        .unwrap();
    storage.flush().await.unwrap();
    assert!(open_index().await.is_none(), "no index before compaction");

    let compaction = CompactionConfig {
        grace: Duration::ZERO,
        bucket: Duration::from_secs(60),
        vacuum_retention: None,
        ..CompactionConfig::default()
    };
    let stats = storage.compact(&compaction).await.unwrap();
    assert_eq!((stats.partitions, stats.hours_indexed), (1, 1), "{stats:?}");

    let snap = storage.snapshot("default").await.unwrap();
    let (table, index) = (snap.table.unwrap(), snap.index.expect("index installed"));
    let covered = coverage(&table, Some(&index)).unwrap();
    let hour00 = ("2026-01-01".to_string(), "00".to_string());
    assert_eq!(covered.indexed.iter().collect::<Vec<_>>(), vec![&hour00]);
    assert_eq!(covered.unindexed.len(), 1, "the open hour: {covered:?}");
    // One row per trace with its first and last start, in trace-id order.
    let expected = expected_index(&table, "2026-01-01", "00").await;
    assert_eq!(expected.len(), 6 * 150);
    assert!(expected
        .iter()
        .any(|(_, lo, hi)| hi - lo >= 3 * 60_000_000_000));
    assert_eq!(index_rows(&index, "2026-01-01", "00").await, expected);

    // Nothing new: no rebuild.
    let again = storage.compact(&compaction).await.unwrap();
    assert_eq!(again.hours_indexed, 0, "{again:?}");

    // A late span for minute 50 takes the hour out of the index's coverage at once...
    storage
        .append(
            "default",
            vec![],
            Some(spans(2, 2, OLD_HOUR_NANOS + 50 * 60_000_000_000)),
        )
        .await
        .unwrap();
    storage.flush().await.unwrap();
    let snap = storage.snapshot("default").await.unwrap();
    let table = snap.table.unwrap();
    let covered = coverage(&table, snap.index.as_ref()).unwrap();
    assert!(covered.indexed.is_empty(), "{covered:?}");
    assert!(covered.unindexed.contains(&hour00));

    // ...until the next pass compacts it and rebuilds the hour's index, with the late span.
    let late = storage.compact(&compaction).await.unwrap();
    assert_eq!((late.partitions, late.hours_indexed), (1, 1), "{late:?}");
    let snap = storage.snapshot("default").await.unwrap();
    let (table, index) = (snap.table.unwrap(), snap.index.unwrap());
    assert!(coverage(&table, Some(&index))
        .unwrap()
        .indexed
        .contains(&hour00));
    let expected = expected_index(&table, "2026-01-01", "00").await;
    assert_eq!(index_rows(&index, "2026-01-01", "00").await, expected);
    assert!(
        expected
            .iter()
            .any(|(_, _, hi)| *hi >= (OLD_HOUR_NANOS + 50 * 60_000_000_000) as i64),
        "the late span's trace reaches minute 50"
    );
    // The replaced index file is gone from the log: one file for the hour.
    let index_files = index.snapshot().unwrap().log_data().iter().count();
    assert_eq!(index_files, 1);

    // A restart opens the index with the table.
    drop(storage);
    let storage = open(dir.path()).await;
    let snap = storage.snapshot("default").await.unwrap();
    assert_eq!(snap.index.unwrap().version(), index.version());
}
