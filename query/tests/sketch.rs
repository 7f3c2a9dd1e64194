//! DDSketch functions: merging per-chunk sketches equals the sketch of the union, quantiles stay
//! within the relative-error guarantee, and the SQL functions work over real spans (buffered and
//! committed) with weights, grouping and clear errors.

mod common;

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Float64Type;
use common::{append, open};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use tracelake_query::sketch::{decode, encode, new_sketch, RELATIVE_ACCURACY};
use tracelake_query::{QueryConfig, QueryEngine};

/// The value at the rank DDSketch reads for `q`: `floor(q * (n - 1))` of the sorted values.
fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

fn within(estimate: f64, truth: f64) -> bool {
    (estimate - truth).abs() <= RELATIVE_ACCURACY * truth * (1.0 + 1e-9)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Per-minute sketches merged equal the sketch of all the values, through the byte
    /// encoding, and every quantile is within 1 % of the exact one.
    #[test]
    fn merged_chunks_equal_the_union(
        values in prop::collection::vec(1e3f64..1e11, 1..2000),
        cuts in prop::collection::vec(0usize..2000, 0..20),
    ) {
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % values.len()).collect();
        bounds.push(0);
        bounds.push(values.len());
        bounds.sort_unstable();
        let mut merged = new_sketch();
        for w in bounds.windows(2) {
            let mut chunk = new_sketch();
            for v in &values[w[0]..w[1]] {
                chunk.add(*v);
            }
            let chunk = decode(&encode(&chunk)).unwrap();
            merged.merge(&chunk).unwrap();
        }
        let merged = decode(&encode(&merged)).unwrap();
        let mut union = new_sketch();
        for v in &values {
            union.add(*v);
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        prop_assert_eq!(merged.count(), values.len());
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let m = merged.quantile(q).unwrap().unwrap();
            let u = union.quantile(q).unwrap().unwrap();
            prop_assert!((m - u).abs() <= 1e-9 * u, "q {}: merged {} union {}", q, m, u);
            prop_assert!(within(m, exact(&sorted, q)), "q {}: {} vs exact {}", q, m, exact(&sorted, q));
        }
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// 2026-01-01T00:00:00Z
const BASE: u64 = 1_767_225_600_000_000_000;

/// Span `i` of `service`: minute `i % 10`, duration `(i + 1)` ms.
fn spans(service: &str, n: u64) -> ResourceSpans {
    let spans = (0..n)
        .map(|i| {
            let start = BASE + (i % 10) * 60_000_000_000 + i;
            let mut trace_id = service.as_bytes().to_vec();
            trace_id.resize(8, 0);
            trace_id.extend(i.to_be_bytes());
            Span {
                trace_id,
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "op".into(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + (i + 1) * 1_000_000,
                ..Default::default()
            }
        })
        .collect();
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn floats(engine: &QueryEngine, sql: &str) -> Vec<Option<f64>> {
    let out = engine.sql("default", sql).await.unwrap();
    out.batches
        .iter()
        .flat_map(|b: &RecordBatch| {
            let c = b.column(0).as_primitive::<Float64Type>();
            (0..c.len())
                .map(|i| (!arrow::array::Array::is_null(c, i)).then(|| c.value(i)))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn sketch_functions_over_spans() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    append(&storage, vec![spans("api", 1000), spans("db", 10)]).await;
    storage.flush().await.unwrap();
    // More after the flush: the buffer and the table are read together.
    append(&storage, vec![spans("web", 100)]).await;
    let engine = QueryEngine::new(Arc::clone(&storage), QueryConfig::default()).unwrap();

    // api durations are 1..=1000 ms: p50 and p99 within 1 %.
    let api: Vec<f64> = (1..=1000).map(|ms| ms as f64 * 1e6).collect();
    let mut got = Vec::new();
    for q in [0.5, 0.99] {
        let sql = format!(
            "SELECT ddsketch_quantile(ddsketch(duration_nano), {q}) FROM spans \
             WHERE service_name = 'api'"
        );
        got.extend(floats(&engine, &sql).await);
    }
    assert!(within(got[0].unwrap(), exact(&api, 0.5)), "{got:?}");
    assert!(within(got[1].unwrap(), exact(&api, 0.99)), "{got:?}");

    // Per-minute sketches, merged, give the same p99 as one sketch over everything.
    let merged = floats(
        &engine,
        "SELECT ddsketch_quantile(ddsketch_merge(s), 0.99) FROM (\
           SELECT date_trunc('minute', to_timestamp_nanos(start_time_unix_nano)) AS m, \
                  service_name, ddsketch(duration_nano) AS s \
           FROM spans GROUP BY 1, 2)",
    )
    .await;
    let direct = floats(
        &engine,
        "SELECT ddsketch_quantile(ddsketch(duration_nano), 0.99) FROM spans",
    )
    .await;
    assert_eq!(merged, direct);
    let counts = floats(
        &engine,
        "SELECT ddsketch_count(ddsketch(duration_nano)) FROM spans",
    )
    .await;
    assert_eq!(counts, vec![Some(1110.0)]);

    // Weights: each span counted adjusted_count times (1 here) or by an explicit weight.
    let weighted = floats(
        &engine,
        "SELECT ddsketch_count(ddsketch(duration_nano, adjusted_count * 10)) FROM spans \
         WHERE service_name = 'db'",
    )
    .await;
    assert_eq!(weighted, vec![Some(100.0)]);

    // Empty input: NULL quantile, zero count.
    let empty = floats(
        &engine,
        "SELECT ddsketch_quantile(ddsketch(duration_nano), 0.5) FROM spans WHERE service_name = 'none'",
    )
    .await;
    assert_eq!(empty, vec![None]);

    // Clear errors.
    for (sql, expected) in [
        ("SELECT ddsketch_quantile(X'0001', 0.5)", "not a DDSketch"),
        (
            "SELECT ddsketch_quantile(ddsketch(duration_nano), 1.5) FROM spans",
            "q must be between 0 and 1, got 1.5",
        ),
        (
            "SELECT ddsketch(duration_nano, -1) FROM spans",
            "weight -1 is not a count",
        ),
        ("SELECT ddsketch('x')", "ddsketch"),
    ] {
        let err = engine.sql("default", sql).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{sql}: {err}");
    }
}
