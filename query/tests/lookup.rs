//! Trace lookups through the trace index: every span of a trace comes back whether it lives
//! in an indexed hour, in late files the index does not cover yet, in an unindexed hour or in
//! the write buffer.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use common::{append, open};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracelake_query::{QueryConfig, QueryEngine};
use tracelake_storage::trace_index::coverage;
use tracelake_storage::CompactionConfig;

/// 2026-01-01T00:00:00Z
const BASE: u64 = 1_767_225_600_000_000_000;
const MINUTE: u64 = 60_000_000_000;

fn trace_id(t: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&t.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    id[8..].copy_from_slice(&t.to_be_bytes());
    id
}

/// One span of trace `t`, numbered `n`, starting at `start`.
fn span(t: u64, n: u64, start: u64) -> ResourceSpans {
    ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: trace_id(t).to_vec(),
                span_id: (t * 1000 + n + 1).to_be_bytes().to_vec(),
                name: format!("op-{n}"),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The span ids of a lookup's result.
fn span_ids(batches: &[RecordBatch]) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for b in batches {
        let ids = arrow::compute::cast(
            b.column_by_name("span_id").unwrap(),
            &arrow::datatypes::DataType::Binary,
        )
        .unwrap();
        out.extend(ids.as_binary::<i32>().iter().map(|v| v.unwrap().to_vec()));
    }
    out
}

fn expected(t: u64, spans: impl IntoIterator<Item = u64>) -> BTreeSet<Vec<u8>> {
    spans
        .into_iter()
        .map(|n| (t * 1000 + n + 1).to_be_bytes().to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_through_the_trace_index_miss_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();

    // 120 traces in hour 00, each with spans 0 and 1 at minute t % 50 and span 2 eight minutes
    // later (another bucket); trace 7 also has a span in hour 01; eight flushes.
    for flush in 0..8u64 {
        let mut batch = Vec::new();
        for t in (flush * 15)..(flush * 15 + 15) {
            let at = BASE + (t % 50) * MINUTE + t * 1_000_000;
            batch.extend([span(t, 0, at), span(t, 1, at + 5_000_000)]);
            batch.push(span(t, 2, at + 8 * MINUTE));
        }
        if flush == 3 {
            batch.push(span(7, 3, BASE + 65 * MINUTE));
        }
        append(&storage, batch).await;
        storage.flush().await.unwrap();
    }
    let compaction = CompactionConfig {
        grace: Duration::ZERO,
        bucket: Duration::from_secs(60),
        vacuum_retention: None,
        ..CompactionConfig::default()
    };
    let stats = storage.compact(&compaction).await.unwrap();
    assert_eq!(stats.hours_indexed, 2, "{stats:?}");
    let snap = storage.snapshot("default").await.unwrap();
    let covered = coverage(snap.table.as_ref().unwrap(), snap.index.as_ref()).unwrap();
    assert_eq!(covered.indexed.len(), 2, "both hours indexed: {covered:?}");

    for t in 0..120u64 {
        let want = if t == 7 {
            expected(t, 0..4)
        } else {
            expected(t, 0..3)
        };
        let got = engine
            .trace_by_id("default", trace_id(t), None)
            .await
            .unwrap();
        assert_eq!(span_ids(&got), want, "trace {t}");
    }
    let absent = engine
        .trace_by_id("default", trace_id(999), None)
        .await
        .unwrap();
    assert!(span_ids(&absent).is_empty());

    // A late span of trace 5 at minute 55 (outside its indexed range), committed; one of
    // trace 6 still buffered; trace 8 gets a span in a new, unindexed hour 02.
    append(&storage, vec![span(5, 10, BASE + 55 * MINUTE)]).await;
    storage.flush().await.unwrap();
    append(
        &storage,
        vec![
            span(6, 11, BASE + 20 * MINUTE),
            span(8, 12, BASE + 130 * MINUTE),
        ],
    )
    .await;
    let lookup = |t: u64| {
        let engine = &engine;
        async move {
            span_ids(
                &engine
                    .trace_by_id("default", trace_id(t), None)
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(lookup(5).await, expected(5, [0, 1, 2, 10]));
    assert_eq!(lookup(6).await, expected(6, [0, 1, 2, 11]));
    assert_eq!(lookup(8).await, expected(8, [0, 1, 2, 12]));
    storage.flush().await.unwrap();
    assert_eq!(lookup(6).await, expected(6, [0, 1, 2, 11]));
    assert_eq!(lookup(8).await, expected(8, [0, 1, 2, 12]));

    // The next pass re-indexes hour 00 (and indexes hour 02); nothing changes for readers.
    let again = storage.compact(&compaction).await.unwrap();
    assert_eq!(again.hours_indexed, 2, "{again:?}");
    for (t, want) in [
        (5, expected(5, [0, 1, 2, 10])),
        (6, expected(6, [0, 1, 2, 11])),
        (7, expected(7, 0..4)),
        (8, expected(8, [0, 1, 2, 12])),
        (9, expected(9, 0..3)),
    ] {
        assert_eq!(lookup(t).await, want, "trace {t}");
    }

    // A time range narrows the hours read, through the index too.
    let range = tracelake_query::TimeRange {
        start_unix_nano: BASE + 60 * MINUTE,
        end_unix_nano: BASE + 119 * MINUTE,
    };
    let got = engine
        .trace_by_id("default", trace_id(7), Some(range))
        .await
        .unwrap();
    assert_eq!(span_ids(&got), expected(7, [3]));
}
