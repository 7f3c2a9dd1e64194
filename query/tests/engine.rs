//! The query engine over a real storage engine on the local filesystem: the buffer and the Delta
//! table are one `spans` table, and trace lookups prune files and row groups.

mod common;

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use common::{append, open};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracelake_query::{QueryConfig, QueryEngine};

const HOUR_NANOS: u64 = 3_600_000_000_000;
/// 2026-01-01T00:00:00Z
const BASE: u64 = 1_767_225_600_000_000_000;

fn trace(n: u64, hour: u64, spans: u64) -> ResourceSpans {
    let mut trace_id = n.to_be_bytes().to_vec();
    trace_id.extend_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).to_be_bytes());
    // Random-looking ids, like real ones: min/max statistics cannot separate them.
    trace_id.rotate_left((n % 16) as usize);
    let start = BASE + hour * HOUR_NANOS + n * 1_000;
    ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: (0..spans)
                .map(|i| Span {
                    trace_id: trace_id.clone(),
                    span_id: (n << 8 | i | 1 << 62).to_be_bytes().to_vec(),
                    name: format!("op-{i}"),
                    start_time_unix_nano: start + i,
                    end_time_unix_nano: start + i + 1_000_000,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn trace_id_hex(n: u64) -> String {
    let rs = trace(n, 0, 1);
    hex(&rs.scope_spans[0].spans[0].trace_id)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn explain_text(batches: &[RecordBatch]) -> String {
    let mut out = String::new();
    for b in batches {
        let col = b.column(1);
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
        let plan = col.as_string::<i32>();
        for i in 0..plan.len() {
            out.push_str(plan.value(i));
            out.push('\n');
        }
    }
    out
}

/// Sums a pruning metric over an EXPLAIN ANALYZE text: `name=N` (pruned), or DataFusion's
/// `name=T total → M matched` (T - M pruned).
fn metric(plan: &str, name: &str) -> u64 {
    let number = |s: &str| -> u64 {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    plan.match_indices(&format!("{name}="))
        .map(|(i, m)| {
            let rest = &plan[i + m.len()..];
            let first = number(rest);
            match rest.split_once(" total → ") {
                Some((head, tail)) if !head.contains(',') => first - number(tail).min(first),
                _ => first,
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_and_table_form_one_table_and_lookups_prune() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();

    // Four flushes, two hours: several files per partition, each one row group. Each flush also
    // holds the smallest and largest possible trace ids, so min/max statistics cannot prune and
    // only bloom filters can.
    for flush in 0..4u64 {
        let mut traces: Vec<_> = (0..50)
            .map(|i| trace(flush * 50 + i, flush % 2, 3))
            .collect();
        for extreme in [0x00u8, 0xff] {
            let mut t = trace(1000 + flush, flush % 2, 1);
            t.scope_spans[0].spans[0].trace_id = vec![extreme; 16];
            t.scope_spans[0].spans[0].span_id[7] ^= extreme;
            traces.push(t);
        }
        append(&storage, traces).await;
        let stats = storage.flush().await.unwrap();
        assert_eq!(stats.spans, 152);
        assert_eq!(stats.commits, 1);
    }
    // Unflushed spans are visible too.
    append(&storage, (200..210).map(|i| trace(i, 1, 2)).collect()).await;
    let out = engine
        .sql("default", "SELECT count(*) AS n FROM spans")
        .await
        .unwrap();
    let n = out.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(n.value(0), 4 * 152 + 20);

    // Trace by id finds a flushed trace and a buffered one.
    let id: [u8; 16] = hex_to(&trace_id_hex(77));
    let found = engine.trace_by_id("default", id, None).await.unwrap();
    assert_eq!(rows(&found), 3);
    let id: [u8; 16] = hex_to(&trace_id_hex(205));
    assert_eq!(
        rows(&engine.trace_by_id("default", id, None).await.unwrap()),
        2
    );
    let absent: [u8; 16] = [0xAB; 16];
    assert_eq!(
        rows(&engine.trace_by_id("default", absent, None).await.unwrap()),
        0
    );

    // Pruning, as DataFusion reports it: the partition filter skips the other hour's files, and
    // the bloom filter skips row groups whose statistics cannot.
    let sql = format!(
        "EXPLAIN ANALYZE SELECT name FROM spans WHERE trace_id = X'{}' AND hour = '00'",
        trace_id_hex(77)
    );
    let plan = explain_text(&engine.sql("default", &sql).await.unwrap().batches);
    let bloom_pruned = metric(&plan, "row_groups_pruned_bloom_filter");
    assert!(
        plan.contains("row_groups_pruned_bloom_filter"),
        "no bloom filter metric in plan:\n{plan}"
    );
    // Trace 77 is in flush 1 (hour 01): every hour-00 row group is pruned by its bloom filter.
    assert!(bloom_pruned >= 1, "bloom filters pruned nothing:\n{plan}");
    let sql = format!(
        "EXPLAIN ANALYZE SELECT name FROM spans WHERE trace_id = X'{}'",
        trace_id_hex(77)
    );
    let plan = explain_text(&engine.sql("default", &sql).await.unwrap().batches);
    // Of the four files, the three without the trace are pruned by their bloom filters.
    assert!(
        metric(&plan, "row_groups_pruned_bloom_filter") >= 3,
        "expected 3 row groups pruned by bloom filter:\n{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_guard_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(
        Arc::clone(&storage),
        QueryConfig {
            max_rows: 5,
            ..QueryConfig::default()
        },
    )
    .unwrap();
    append(&storage, (0..4).map(|i| trace(i, 0, 3)).collect()).await;
    let out = engine
        .sql("default", "SELECT name FROM spans")
        .await
        .unwrap();
    assert!(out.truncated);
    assert_eq!(rows(&out.batches), 5);
    for sql in ["DROP TABLE spans", "INSERT INTO spans (name) VALUES ('x')"] {
        let err = engine.sql("default", sql).await.unwrap_err();
        assert!(
            matches!(err, tracelake_query::Error::Refused(_)),
            "{sql}: {err}"
        );
        assert!(err.is_client_error());
    }
    let err = engine.sql("bad tenant!", "SELECT 1").await.unwrap_err();
    assert!(err.is_client_error(), "{err}");
    // An unknown tenant has an empty table, not an error.
    let out = engine
        .sql("nobody", "SELECT count(*) FROM spans")
        .await
        .unwrap();
    assert_eq!(rows(&out.batches), 1);
}

/// SQL reads the text columns as views (the fast path), and clients still see `Utf8`:
/// results, parameters, the `traces` view; filters on views prune partitions and statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_text_as_views_and_answers_in_classic_types() {
    use arrow::datatypes::DataType;
    use datafusion::common::ParamValues;
    use datafusion::scalar::ScalarValue;

    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();
    // Hour 00 flushed, hour 01 flushed, and more of hour 01 in the buffer.
    append(&storage, (0..20).map(|i| trace(i, 0, 3)).collect()).await;
    append(&storage, (20..30).map(|i| trace(i, 1, 2)).collect()).await;
    storage.flush().await.unwrap();
    append(&storage, (30..35).map(|i| trace(i, 1, 3)).collect()).await;

    let text = |batches: &[RecordBatch], column: usize| -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let c = arrow::compute::cast(b.column(column), &DataType::Utf8).unwrap();
                let c = c.as_string::<i32>().clone();
                (0..c.len()).map(move |i| c.value(i).to_string())
            })
            .collect()
    };
    // Read as views: from the files and from the buffer alike.
    let out = engine
        .sql(
            "default",
            "SELECT DISTINCT arrow_typeof(name), arrow_typeof(date), hour FROM spans \
             ORDER BY hour",
        )
        .await
        .unwrap();
    assert_eq!(text(&out.batches, 0), ["Utf8View", "Utf8View"]);
    assert_eq!(text(&out.batches, 1), ["Utf8View", "Utf8View"]);
    assert_eq!(text(&out.batches, 2), ["00", "01"]);

    // Answered as Utf8, nested ones too.
    let out = engine
        .sql(
            "default",
            "SELECT name, date, count(*) AS n, array_agg(DISTINCT name) AS names FROM spans \
             GROUP BY name, date ORDER BY name",
        )
        .await
        .unwrap();
    let types: Vec<DataType> = out
        .schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(types[0], DataType::Utf8);
    assert_eq!(types[1], DataType::Utf8);
    assert!(
        matches!(&types[3], DataType::List(f) if f.data_type() == &DataType::Utf8),
        "{types:?}"
    );
    for b in &out.batches {
        assert_eq!(b.schema(), out.schema);
    }
    assert_eq!(text(&out.batches, 0), ["op-0", "op-1", "op-2"]);
    let out = engine
        .sql("default", "SELECT root_name, services FROM traces LIMIT 1")
        .await
        .unwrap();
    assert_eq!(out.schema.field(0).data_type(), &DataType::Utf8);

    // Filters on view columns are right, buffer included, and prune files.
    let count = |sql: &'static str| {
        let engine = &engine;
        async move {
            let out = engine.sql("default", sql).await.unwrap();
            out.batches[0]
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        }
    };
    assert_eq!(
        count("SELECT count(*) FROM spans WHERE hour = '01'").await,
        35
    );
    assert_eq!(
        count("SELECT count(*) FROM spans WHERE hour = '01' AND name = 'op-2'").await,
        5
    );
    assert_eq!(
        count("SELECT count(*) FROM spans WHERE name > 'op-0'").await,
        60
    );
    let plan = explain_text(
        &engine
            .sql(
                "default",
                "EXPLAIN ANALYZE SELECT count(*) FROM spans WHERE hour = '01' AND name = 'op-2'",
            )
            .await
            .unwrap()
            .batches,
    );
    // Hour 00's file by its partition, hour 01's by its statistics of `name` (op-0..op-1).
    assert!(plan.contains("count_files_scanned=0"), "{plan}");

    // A parameter compared with a view column is typed Utf8, and takes a Utf8 value.
    let sql = "SELECT count(*) FROM spans WHERE name = $1";
    let plan = engine.sql_plan("default", sql).await.unwrap();
    let types = plan.get_parameter_types().unwrap();
    assert_eq!(types["$1"], Some(DataType::Utf8), "{types:?}");
    let mut stream = engine
        .sql_stream(
            "default",
            sql,
            Some(ParamValues::from(vec![ScalarValue::Utf8(Some(
                "op-1".into(),
            ))])),
        )
        .await
        .unwrap();
    use futures::StreamExt;
    let batch = stream.next().await.unwrap().unwrap();
    let n = batch
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>();
    assert_eq!(n.value(0), 35);
}

fn hex_to(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for i in 0..16 {
        out[i] = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}
