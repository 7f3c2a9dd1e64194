//! TraceQL search over a real storage engine: answers from the buffer and the Delta table, and
//! the first phase's filters reach the Parquet scan while other hours' files are pruned.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{append, open};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracelake_query::search::SearchRequest;
use tracelake_query::{traceql, QueryConfig, QueryEngine};

const HOUR_NANOS: u64 = 3_600_000_000_000;
/// 2026-01-01T00:00:00Z
const BASE: u64 = 1_767_225_600_000_000_000;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Trace `n` in `hour`: a server root in `service` and `children` client spans under it.
fn trace(n: u64, hour: u64, service: &str, children: u64) -> ResourceSpans {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&n.to_be_bytes());
    trace_id[8..].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).to_be_bytes());
    let start = BASE + hour * HOUR_NANOS + n * 1_000_000;
    let root_id = (n << 8 | 1 << 62).to_be_bytes().to_vec();
    let mut spans = vec![Span {
        trace_id: trace_id.to_vec(),
        span_id: root_id.clone(),
        name: "GET /".into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 10_000_000,
        ..Default::default()
    }];
    spans.extend((0..children).map(|i| Span {
        trace_id: trace_id.to_vec(),
        span_id: (n << 8 | (i + 1) | 1 << 62).to_be_bytes().to_vec(),
        parent_span_id: root_id.clone(),
        name: format!("call-{i}"),
        kind: 3,
        start_time_unix_nano: start + 1_000 + i,
        end_time_unix_nano: start + 2_000_000,
        attributes: vec![string("peer", if i % 2 == 0 { "db" } else { "cache" })],
        ..Default::default()
    }));
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request(q: &str, hour: u64, limit: usize) -> SearchRequest {
    SearchRequest {
        query: traceql::parse(q).unwrap(),
        start_unix_nano: BASE + hour * HOUR_NANOS,
        end_unix_nano: BASE + (hour + 1) * HOUR_NANOS - 1,
        min_duration: None,
        max_duration: None,
        limit,
        spans_per_spanset: 3,
    }
}

async fn ids(engine: &QueryEngine, q: &str, hour: u64, limit: usize) -> BTreeSet<u64> {
    engine
        .search("default", request(q, hour, limit))
        .await
        .unwrap()
        .traces
        .iter()
        .map(|t| u64::from_be_bytes(t.trace_id[..8].try_into().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_reads_buffer_and_table_and_pushes_filters_into_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();
    // Two flushes per hour, hours 0 and 1; then some spans left in the buffer (hour 1).
    for flush in 0..4u64 {
        let hour = flush % 2;
        let traces = (0..20)
            .map(|i| {
                let n = flush * 100 + i;
                let service = if i % 5 == 0 { "cart" } else { "shop" };
                trace(n, hour, service, i % 4)
            })
            .collect();
        append(&storage, traces).await;
        storage.flush().await.unwrap();
    }
    append(
        &storage,
        (500..510).map(|n| trace(n, 1, "cart", 2)).collect(),
    )
    .await;

    // Hour 0 holds flushes 0 and 2; cart roots are i % 5 == 0.
    let cart_hour0: BTreeSet<u64> = [0, 5, 10, 15, 200, 205, 210, 215].into();
    assert_eq!(
        ids(&engine, r#"{ resource.service.name = "cart" }"#, 0, 100).await,
        cart_hour0
    );
    // Hour 1: flushed (1xx, 3xx) and buffered (5xx) traces.
    let cart_hour1 = ids(&engine, r#"{ resource.service.name = "cart" }"#, 1, 100).await;
    assert_eq!(cart_hour1.len(), 8 + 10, "{cart_hour1:?}");
    assert!(cart_hour1.contains(&505) && cart_hour1.contains(&300));
    // The limit keeps the newest: the buffered 500..510 start last.
    assert_eq!(
        ids(&engine, r#"{ resource.service.name = "cart" }"#, 1, 3).await,
        [507, 508, 509].into()
    );
    // Structural and pipeline queries decide per trace: a cart root with a "db" child (children
    // alternate db, cache: any trace with >= 1 child), and at least 3 client spans.
    let with_db = ids(
        &engine,
        r#"{ resource.service.name = "cart" && kind = server } > { span.peer = "db" }"#,
        0,
        100,
    )
    .await;
    assert_eq!(
        with_db,
        [5, 10, 15, 205, 210, 215].into(),
        "cart traces with i % 4 > 0 children"
    );
    let busy = ids(&engine, "{ kind = client } | count() >= 3", 0, 100).await;
    let expected: BTreeSet<u64> = (0..20)
        .filter(|i| i % 4 == 3)
        .flat_map(|i| [i, 200 + i])
        .collect();
    assert_eq!(busy, expected);

    // Hour 2: one trace every two minutes, so a search scans several time slices, newest
    // first. Each trace has two client children (db, cache).
    let spread: Vec<ResourceSpans> = (0..30u64)
        .map(|k| {
            let mut t = trace(600 + k, 2, "spread", 2);
            let shift = k * 120 * 1_000_000_000;
            for span in &mut t.scope_spans[0].spans {
                span.start_time_unix_nano += shift;
                span.end_time_unix_nano += shift;
            }
            t
        })
        .collect();
    append(&storage, spread).await;
    storage.flush().await.unwrap();
    let all: BTreeSet<u64> = (600..630).collect();
    assert_eq!(
        ids(&engine, r#"{ resource.service.name = "spread" }"#, 2, 100).await,
        all
    );
    assert_eq!(
        ids(&engine, r#"{ resource.service.name = "spread" }"#, 2, 4).await,
        (626..630).collect()
    );
    assert_eq!(
        ids(
            &engine,
            r#"{ resource.service.name = "spread" } > { span.peer = "cache" }"#,
            2,
            100
        )
        .await,
        all
    );
    assert_eq!(
        ids(
            &engine,
            r#"{ span.peer = "db" } && { span.peer = "cache" }"#,
            2,
            3
        )
        .await,
        (627..630).collect()
    );
    assert_eq!(
        ids(&engine, "{ kind = client } | count() = 2", 2, 100).await,
        all
    );

    // The first phase's plan: the filter is in the Parquet scan, and only hour 0's two files are
    // read.
    let plan = engine
        .search_plan(
            "default",
            request(r#"{ resource.service.name = "cart" }"#, 0, 20),
        )
        .await
        .unwrap();
    let scan = plan
        .lines()
        .find(|l| l.contains("DataSourceExec") && l.contains("parquet"))
        .unwrap_or_else(|| panic!("no Parquet scan in:\n{plan}"));
    assert!(
        scan.contains("predicate=") && scan.contains("service_name") && scan.contains("cart"),
        "filter not pushed into the scan:\n{plan}"
    );
    assert_eq!(
        scan.matches(".parquet").count(),
        2,
        "hour 1's files should be pruned:\n{plan}"
    );
}
