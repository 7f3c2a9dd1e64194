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

fn hex_to(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for i in 0..16 {
        out[i] = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}
