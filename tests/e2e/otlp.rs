//! Spans sent over every OTLP transport come back identical from the trace API and SQL.

use std::time::Duration;

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue as OtelKv;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde_json::Value;

use crate::data::{flatten, request, rich_trace, trace_id};
use crate::server::{run_loadgen, TestServer};

pub(crate) async fn get_trace_proto(server: &TestServer, id: &str) -> TracesData {
    let resp = reqwest::Client::new()
        .get(server.url(&format!("/api/traces/{id}")))
        .header("Accept", "application/protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "trace {id}");
    TracesData::decode(resp.bytes().await.unwrap()).unwrap()
}

async fn get_trace_json(server: &TestServer, id: &str) -> Value {
    let resp = reqwest::get(server.url(&format!("/api/traces/{id}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "trace {id}");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn raw_grpc_and_http_requests_round_trip_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;

    // gRPC, gzip-compressed.
    let t1 = trace_id(1);
    let sent1 = rich_trace(&t1, "grpc-svc", 4);
    let mut client = TraceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let resp = client
        .export(request(vec![sent1.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.partial_success.is_none(), "{resp:?}");

    // HTTP protobuf.
    let t2 = trace_id(2);
    let sent2 = rich_trace(&t2, "http-proto-svc", 3);
    let resp = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("Content-Type", "application/x-protobuf")
        .body(request(vec![sent2.clone()]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // HTTP JSON, encoded by the same OTLP/JSON codec the server documents.
    let t3 = trace_id(3);
    let sent3 = rich_trace(&t3, "http-json-svc", 2);
    let body = serde_json::json!({
        "resourceSpans": tracelake_proto::json::resource_spans_to_json(std::slice::from_ref(&sent3))
    });
    let resp = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    for (tid, sent) in [(&t1, &sent1), (&t2, &sent2), (&t3, &sent3)] {
        let id = hex::encode(tid);
        // Queryable at once, from the buffer.
        let got = get_trace_proto(&server, &id).await;
        assert_eq!(
            flatten(&got.resource_spans),
            flatten(std::slice::from_ref(sent)),
            "trace {id} differs (protobuf)"
        );
        // The JSON form carries the same spans.
        let json = get_trace_json(&server, &id).await;
        let decoded = tracelake_proto::json::decode_export_request(
            serde_json::json!({ "resourceSpans": json["batches"] })
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            flatten(&decoded.resource_spans),
            flatten(std::slice::from_ref(sent))
        );
        // And SQL sees them, with the dedicated columns filled in.
        let rows = server
            .sql(&format!(
                "SELECT name, service_name, http_route, http_response_status_code, adjusted_count \
                 FROM spans WHERE trace_id = X'{id}' ORDER BY start_time_unix_nano"
            ))
            .await;
        let spans = &sent.scope_spans[0].spans;
        assert_eq!(rows.len(), spans.len());
        for (row, span) in rows.iter().zip(spans) {
            assert_eq!(row["name"], span.name.as_str());
            assert_eq!(row["http_route"], "/api/items/{id}");
            assert_eq!(row["adjusted_count"], 1.0);
        }
        assert_eq!(rows[0]["http_response_status_code"], 200);
    }

    // After a flush the same spans come back from Parquet in the Delta table.
    let mut server = server;
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    let server = TestServer::start(dir.path(), &[]).await;
    for (tid, sent) in [(&t1, &sent1), (&t2, &sent2), (&t3, &sent3)] {
        let got = get_trace_proto(&server, &hex::encode(tid)).await;
        assert_eq!(
            flatten(&got.resource_spans),
            flatten(std::slice::from_ref(sent))
        );
    }
}

/// The OpenTelemetry SDK's own exporters, over gRPC, HTTP/protobuf and HTTP/JSON.
// The SDK's simple processor blocks on each export: it needs a second worker to drive the IO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opentelemetry_sdk_exporters_over_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    for transport in ["grpc", "http-proto", "http-json"] {
        let exporter = match transport {
            "grpc" => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(server.grpc_url())
                .with_timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            "http-proto" => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(server.otlp_http_url())
                .build()
                .unwrap(),
            _ => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(server.otlp_http_url())
                .build()
                .unwrap(),
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(format!("sdk-{transport}"))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("e2e");
        let (trace_id, parent_id, child_id) = tracer.in_span("parent-op", |cx| {
            let span = cx.span();
            span.set_attribute(OtelKv::new("http.route", "/api/checkout/{id}"));
            span.set_attribute(OtelKv::new("http.response.status_code", 503i64));
            span.set_attribute(OtelKv::new("ratio", 0.5f64));
            span.set_attribute(OtelKv::new("flag", true));
            span.add_event("cache-miss", vec![OtelKv::new("key", "k1")]);
            let parent = span.span_context().clone();
            let mut child = tracer.start("child-op");
            child.set_attribute(OtelKv::new("db.system", "postgresql"));
            let child_id = child.span_context().span_id();
            child.end();
            (parent.trace_id(), parent.span_id(), child_id)
        });
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();

        let id = format!("{trace_id:032x}");
        let got = get_trace_proto(&server, &id).await;
        let spans: Vec<_> = got
            .resource_spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
            .collect();
        assert_eq!(spans.len(), 2, "{transport}: {spans:?}");
        let parent = spans.iter().find(|s| s.name == "parent-op").unwrap();
        let child = spans.iter().find(|s| s.name == "child-op").unwrap();
        assert_eq!(parent.span_id, parent_id.to_bytes().to_vec(), "{transport}");
        assert_eq!(child.span_id, child_id.to_bytes().to_vec(), "{transport}");
        assert_eq!(child.parent_span_id, parent.span_id, "{transport}");
        assert_eq!(parent.events.len(), 1);
        assert_eq!(parent.events[0].name, "cache-miss");
        let attr = |key: &str| {
            parent
                .attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        assert_eq!(attr("http.response.status_code"), Some(V::IntValue(503)));
        assert_eq!(attr("ratio"), Some(V::DoubleValue(0.5)));
        assert_eq!(attr("flag"), Some(V::BoolValue(true)));
        let service = got.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .unwrap();
        assert_eq!(
            service.value.as_ref().unwrap().value,
            Some(V::StringValue(format!("sdk-{transport}")))
        );
        let rows = server
            .sql(&format!(
                "SELECT service_name, http_response_status_code, db_system FROM spans \
                 WHERE trace_id = X'{id}' ORDER BY name"
            ))
            .await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["db_system"], "postgresql"); // child-op
        assert_eq!(rows[1]["http_response_status_code"], 503); // parent-op
        assert_eq!(rows[1]["service_name"], format!("sdk-{transport}"));
    }
}

/// The opentelemetry-proto repository's examples/trace.json, as published.
#[tokio::test]
async fn opentelemetry_proto_example_json_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let example = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span","startTimeUnixNano":1544712660000000000,"endTimeUnixNano":1544712661000000000,"kind":2,"attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}}]}]}]}]}"#;
    let resp = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("Content-Type", "application/json")
        .body(example)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body.get("partialSuccess").is_none(), "{body}");

    let json = get_trace_json(&server, "5b8efff798038103d269b633813fc60c").await;
    let span = &json["batches"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["name"], "I'm a server span");
    assert_eq!(span["spanId"], "eee19b7ec3c1b174");
    assert_eq!(span["parentSpanId"], "eee19b7ec3c1b173");
    assert_eq!(span["kind"], 2);
    assert_eq!(
        json["batches"][0]["scopeSpans"][0]["scope"]["name"],
        "my.library"
    );
    let rows = server
        .sql("SELECT service_name, date, hour, duration_nano FROM spans")
        .await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["service_name"], "my.service");
    assert_eq!(rows[0]["date"], "2018-12-13");
    assert_eq!(rows[0]["hour"], "14");
    assert_eq!(rows[0]["duration_nano"], 1_000_000_000i64);
}

/// `tracelake loadgen` drives a realistic workload; every acknowledged span is queryable.
#[tokio::test]
async fn loadgen_spans_are_all_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "500ms"]).await;
    for (protocol, endpoint) in [
        ("grpc", server.grpc_url()),
        ("http-proto", format!("http://{}", server.otlp_http)),
    ] {
        let summary = run_loadgen(&[
            "--traces",
            "150",
            "--rate",
            "0",
            "--seed",
            "7",
            "--protocol",
            protocol,
            "--endpoint",
            &endpoint,
        ]);
        assert_eq!(summary["spans_acked"], summary["spans_sent"], "{summary}");
    }
    let rows = server
        .sql("SELECT count(*) AS n, count(DISTINCT service_name) AS services, count(DISTINCT trace_id) AS traces FROM spans")
        .await;
    // The same seed twice: every trace id is sent twice, each copy stored.
    assert_eq!(rows[0]["traces"], 150);
    assert!(rows[0]["services"].as_u64().unwrap() >= 8, "{rows:?}");
    let n = rows[0]["n"].as_u64().unwrap();
    assert!(n >= 2 * 150 * 3, "{n}");
}
