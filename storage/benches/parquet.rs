//! Flush-path CPU cost: sorting 10k spans by (trace_id, start) and encoding them to Parquet with
//! the span writer properties (zstd, dictionaries, page statistics, trace_id bloom filter).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tracelake_proto::otlp::common::v1::{any_value::Value, AnyValue, KeyValue};
use tracelake_proto::otlp::resource::v1::Resource;
use tracelake_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracelake_storage::table::{sort_spans, span_writer_properties};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// 10k spans: 1000 traces of 10 spans over 8 services, arrival-ordered (not sorted).
fn spans() -> arrow::array::RecordBatch {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut resource_spans = Vec::new();
    for t in 0..1000u64 {
        let mut trace_id = next().to_be_bytes().to_vec();
        trace_id.extend_from_slice(&next().to_be_bytes());
        let service = format!("service-{}", t % 8);
        let spans = (0..10u64)
            .map(|i| Span {
                trace_id: trace_id.clone(),
                span_id: (next() | 1).to_be_bytes().to_vec(),
                name: format!("GET /api/route/{}", (t + i) % 20),
                kind: 2,
                start_time_unix_nano: 1_767_225_600_000_000_000 + t * 1_000_000 + i,
                end_time_unix_nano: 1_767_225_600_000_000_000
                    + t * 1_000_000
                    + i
                    + next() % 50_000_000,
                attributes: vec![
                    kv("http.request.method", Value::StringValue("GET".into())),
                    kv("http.response.status_code", Value::IntValue(200)),
                    kv(
                        "http.route",
                        Value::StringValue(format!("/api/route/{}", (t + i) % 20)),
                    ),
                    kv(
                        "user.id",
                        Value::StringValue(format!("user-{}", next() % 100_000)),
                    ),
                ],
                ..Default::default()
            })
            .collect();
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    tracelake_proto::resource_spans_to_batch(&resource_spans).expect("spans")
}

fn flush_path(c: &mut Criterion) {
    let batch = spans();
    let mut group = c.benchmark_group("flush");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(batch.num_rows() as u64));
    group.bench_function("sort_10k_spans", |b| {
        b.iter(|| sort_spans(&batch).expect("sort"))
    });
    let sorted = sort_spans(&batch).expect("sort");
    group.bench_function("parquet_encode_10k_spans", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(1 << 20);
            let mut w = parquet::arrow::ArrowWriter::try_new(
                &mut buf,
                sorted.schema(),
                Some(span_writer_properties()),
            )
            .expect("writer");
            w.write(&sorted).expect("write");
            w.close().expect("close");
            buf.len()
        })
    });
    group.finish();
}

criterion_group!(benches, flush_path);
criterion_main!(benches);
