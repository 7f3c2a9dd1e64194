//! `span_metrics_1m`: the rollups every flush writes equal the same aggregation over the raw
//! spans (weights, error classes, routes, sketches), late spans add rows that queries merge,
//! and a restart that replays the WAL counts nothing twice.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, Float64Array, RecordBatch};
use arrow::util::pretty::pretty_format_batches;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracelake_query::{QueryConfig, QueryEngine};
use tracelake_storage::{Storage, StorageConfig, StorageLocation, StorageMetrics};

/// 2026-01-01T00:00:00Z
const BASE: u64 = 1_767_225_600_000_000_000;
const SECOND: u64 = 1_000_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Span `i` of a deterministic mix: 3 services, 4 names, 2 kinds, statuses, HTTP codes,
/// routes (some absent), weights 1, 10 and 2.5, durations 1-40 ms.
fn span(i: u64, start: u64) -> ResourceSpans {
    let service = ["checkout", "cart", "payment"][(i % 3) as usize];
    let mut attributes = Vec::new();
    if !i.is_multiple_of(5) {
        let code = [200, 201, 404, 500, 503][(i % 7 % 5) as usize];
        attributes.push(kv(
            "http.response.status_code",
            any_value::Value::IntValue(code),
        ));
        attributes.push(kv(
            "http.route",
            any_value::Value::StringValue(["/a", "/b/{id}"][(i % 2) as usize].into()),
        ));
    }
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue(service.into()),
            )],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: (i + 1).to_be_bytes().repeat(2),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: format!("op-{}", i % 4),
                kind: (i % 2 + 1) as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + (i % 40 + 1) * 1_000_000,
                attributes,
                status: Some(Status {
                    code: if i.is_multiple_of(11) {
                        2
                    } else {
                        (i % 2) as i32
                    },
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The weight the tail sampler would stamp on span `i` (1, 10 or 2.5).
fn weight(i: u64) -> f64 {
    [1.0, 10.0, 2.5][(i % 3) as usize]
}

/// The spans of `traces` as a batch, each with its weight as `adjusted_count`.
fn weighted(traces: &[ResourceSpans]) -> RecordBatch {
    let batch = tracelake_proto::resource_spans_to_batch(traces).unwrap();
    let ids = batch.column_by_name("span_id").unwrap().as_binary::<i32>();
    let weights: Float64Array = ids
        .iter()
        .map(|id| {
            Some(weight(
                u64::from_be_bytes(id.unwrap().try_into().unwrap()) - 1,
            ))
        })
        .collect();
    let index = batch.schema().index_of("adjusted_count").unwrap();
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(weights);
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// Appends `traces` through the WAL, weighted.
async fn append(storage: &Storage, traces: Vec<ResourceSpans>) {
    let batch = weighted(&traces);
    let wal = ExportTraceServiceRequest {
        resource_spans: traces,
    }
    .encode_to_vec();
    storage.append("default", wal, Some(batch)).await.unwrap();
}

/// A storage engine whose WAL replay decodes and weighs the records, as the server's does.
async fn open(dir: &std::path::Path) -> Arc<Storage> {
    let location =
        StorageLocation::parse(dir.join("tables").to_str().unwrap(), HashMap::new()).unwrap();
    let config = StorageConfig::for_location(location, dir.join("wal"));
    Storage::open(config, Arc::new(StorageMetrics::default()), &mut |record| {
        let request = ExportTraceServiceRequest::decode(record.data.as_slice())
            .map_err(|e| tracelake_storage::Error::Config(e.to_string()))?;
        Ok(Some(weighted(&request.resource_spans)))
    })
    .await
    .unwrap()
}

async fn table(engine: &QueryEngine, sql: &str) -> String {
    let out = engine.sql("default", sql).await.unwrap();
    pretty_format_batches(&out.batches).unwrap().to_string()
}

const FROM_ROLLUPS: &str = "SELECT minute, service_name, span_name, span_kind, status_class, \
     http_route, sum(count) AS weighted, sum(error_count) AS errors, \
     sum(duration_sum_nanos) AS duration, CAST(sum(spans) AS BIGINT) AS stored, \
     CAST(ddsketch_count(ddsketch_merge(duration_sketch)) AS BIGINT) AS sketched \
     FROM span_metrics_1m GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6";

const FROM_SPANS: &str = "SELECT start_time_unix_nano - start_time_unix_nano % 60000000000 \
     AS minute, service_name, name AS span_name, kind AS span_kind, \
     CASE WHEN status_code = 2 THEN 'error' \
          WHEN http_response_status_code >= 500 THEN '5xx' \
          WHEN http_response_status_code >= 400 THEN '4xx' \
          WHEN http_response_status_code >= 300 THEN '3xx' \
          WHEN http_response_status_code >= 200 THEN '2xx' \
          WHEN http_response_status_code >= 100 THEN '1xx' \
          WHEN status_code = 1 THEN 'ok' ELSE 'unset' END AS status_class, \
     http_route, sum(coalesce(adjusted_count, 1.0)) AS weighted, \
     sum(CASE WHEN status_code = 2 OR http_response_status_code >= 500 \
         THEN coalesce(adjusted_count, 1.0) ELSE 0.0 END) AS errors, \
     sum(coalesce(adjusted_count, 1.0) * CAST(duration_nano AS DOUBLE)) AS duration, \
     count(*) AS stored, \
     CAST(sum(round(coalesce(adjusted_count, 1.0))) AS BIGINT) AS sketched \
     FROM spans GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_equal_the_spans_aggregation_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();
    // Three flushes over three minutes, then late spans for minute 0.
    for flush in 0..3u64 {
        let batch = (0..200)
            .map(|i| span(flush * 200 + i, BASE + flush * 60 * SECOND + i * SECOND / 5))
            .collect();
        append(&storage, batch).await;
        storage.flush().await.unwrap();
    }
    append(
        &storage,
        (600..650).map(|i| span(i, BASE + 7 * SECOND)).collect(),
    )
    .await;
    storage.flush().await.unwrap();

    let weights = table(
        &engine,
        "SELECT DISTINCT adjusted_count FROM spans ORDER BY 1 NULLS FIRST",
    )
    .await;
    assert!(
        weights.contains("10.0") && weights.contains("2.5"),
        "{weights}"
    );
    let expected = table(&engine, FROM_SPANS).await;
    assert_eq!(table(&engine, FROM_ROLLUPS).await, expected);
    assert!(
        expected.contains("| 5xx") && expected.contains("| error"),
        "{expected}"
    );
    let late = table(
        &engine,
        &format!("SELECT count(*) AS rows FROM span_metrics_1m WHERE minute = {BASE}"),
    )
    .await;
    let distinct = table(
        &engine,
        &format!(
            "SELECT count(*) AS rows FROM (SELECT DISTINCT service_name, span_name, \
             span_kind, status_class, http_route FROM span_metrics_1m WHERE minute = {BASE})"
        ),
    )
    .await;
    assert_ne!(late, distinct, "the late flush added rows to minute 0");

    // p99 of a service from the merged sketches is within 1 % of the exact value.
    let p99 = engine
        .sql(
            "default",
            "SELECT ddsketch_quantile(ddsketch_merge(duration_sketch), 0.99) FROM \
             span_metrics_1m WHERE service_name = 'cart'",
        )
        .await
        .unwrap();
    let p99 = p99.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Float64Array>()
        .unwrap()
        .value(0);
    assert!((39_000_000.0..=40_400_000.0).contains(&p99), "{p99}");

    // Compaction folds the hour's rollup files (one per flush) into one, same answers.
    let compaction = tracelake_storage::CompactionConfig {
        grace: std::time::Duration::ZERO,
        vacuum_retention: None,
        ..Default::default()
    };
    assert_eq!(rollup_files(&storage).await, 4);
    let stats = storage.compact(&compaction).await.unwrap();
    assert_eq!(stats.rollup_hours, 1, "{stats:?}");
    assert_eq!(rollup_files(&storage).await, 1);
    assert_eq!(table(&engine, FROM_ROLLUPS).await, expected);
    let rows = table(&engine, "SELECT count(*) AS n FROM span_metrics_1m").await;
    assert_eq!(
        rows,
        distinct_rows(&engine).await,
        "one row per dimension now"
    );

    // Spans acknowledged but not flushed are replayed after a restart and rolled up once.
    append(
        &storage,
        (700..760).map(|i| span(i, BASE + 90 * SECOND)).collect(),
    )
    .await;
    drop(engine);
    drop(storage);
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();
    storage.flush().await.unwrap();
    let expected = table(&engine, FROM_SPANS).await;
    assert!(expected.contains(&(BASE + 60 * SECOND).to_string()));
    assert_eq!(table(&engine, FROM_ROLLUPS).await, expected);
    let stored = table(&engine, "SELECT count(*) AS n FROM spans").await;
    assert!(stored.contains("| 710"), "{stored}");
    // The late flush's rollup file is folded in by the next pass.
    assert_eq!(rollup_files(&storage).await, 2);
    assert_eq!(storage.compact(&compaction).await.unwrap().rollup_hours, 1);
    assert_eq!(rollup_files(&storage).await, 1);
    assert_eq!(table(&engine, FROM_ROLLUPS).await, expected);
}

/// Files in the current version of the rollup table.
async fn rollup_files(storage: &Storage) -> usize {
    let snapshot = storage.snapshot("default").await.unwrap();
    let table = snapshot.rollups.expect("rollups exist");
    table.snapshot().unwrap().log_data().iter().count()
}

/// Rows of `span_metrics_1m` if each dimension had one.
async fn distinct_rows(engine: &QueryEngine) -> String {
    table(
        engine,
        "SELECT count(*) AS n FROM (SELECT DISTINCT minute, service_name, span_name, \
         span_kind, status_class, http_route FROM span_metrics_1m)",
    )
    .await
}

/// (Σ spans in the rollups, count(*) of spans).
async fn totals(engine: &QueryEngine) -> (i64, i64) {
    let one = |sql: &'static str| async move {
        let out = engine.sql("default", sql).await.unwrap();
        out.batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    (
        one("SELECT CAST(sum(spans) AS BIGINT) FROM span_metrics_1m").await,
        one("SELECT count(*) FROM spans").await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_commit_that_fails_after_its_rollups_is_not_rolled_up_twice() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();
    append(
        &storage,
        (0..100).map(|i| span(i, BASE + i * SECOND)).collect(),
    )
    .await;
    assert_eq!(storage.flush().await.unwrap().commits, 1);

    // The span table's next commit file is taken by garbage, so the next span commit fails
    // after the rollups committed.
    let log = dir.path().join("tables/tenants/default/spans/_delta_log");
    let mut versions: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json")?.parse::<u64>().ok())
        .collect();
    versions.sort();
    let blocker = log.join(format!("{:020}.json", versions.last().unwrap() + 1));
    std::fs::write(&blocker, "not a delta commit").unwrap();
    append(
        &storage,
        (100..150).map(|i| span(i, BASE + i * SECOND)).collect(),
    )
    .await;
    let failed = storage.flush().await.unwrap();
    assert_eq!((failed.failed, failed.commits), (1, 0), "{failed:?}");
    assert_eq!(
        totals(&engine).await,
        (150, 150),
        "rollups committed, spans still buffered"
    );

    // The retry commits the spans and no rollup again.
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(storage.flush().await.unwrap().commits, 1);
    assert_eq!(totals(&engine).await, (150, 150));

    // Again, but the process dies after the failed flush: the WAL replays the spans, and
    // their flush still adds no rollup.
    let log_versions = std::fs::read_dir(&log).unwrap().count();
    let blocker = log.join(format!("{:020}.json", versions.last().unwrap() + 2));
    assert!(!blocker.exists(), "{log_versions} files in the log");
    std::fs::write(&blocker, "not a delta commit").unwrap();
    append(
        &storage,
        (150..170).map(|i| span(i, BASE + i * SECOND)).collect(),
    )
    .await;
    assert_eq!(storage.flush().await.unwrap().failed, 1);
    drop(engine);
    drop(storage);
    std::fs::remove_file(&blocker).unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();
    assert_eq!(storage.flush().await.unwrap().commits, 1);
    assert_eq!(totals(&engine).await, (170, 170));
}
