//! End-to-end tests of the OTLP receivers: real servers on 127.0.0.1:0, real clients.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tracelake_ingest::{
    serve_grpc, serve_http, IngestMetrics, Outcome, Protocol, ReceiverConfig, SinkError, SpanSink,
};
use tracelake_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use tracelake_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tracelake_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use tracelake_proto::otlp::resource::v1::Resource;
use tracelake_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

// ---------------------------------------------------------------------------------------------
// Harness

#[derive(Default)]
struct RecordingSink {
    calls: Mutex<Vec<(String, ExportTraceServiceRequest)>>,
    fail_with: Mutex<Option<SinkError>>,
}

impl RecordingSink {
    fn calls(&self) -> Vec<(String, ExportTraceServiceRequest)> {
        self.calls.lock().unwrap().clone()
    }

    fn fail_with(&self, error: SinkError) {
        *self.fail_with.lock().unwrap() = Some(error);
    }
}

#[async_trait::async_trait]
impl SpanSink for RecordingSink {
    async fn export(
        &self,
        tenant: &str,
        request: ExportTraceServiceRequest,
    ) -> Result<(), SinkError> {
        if let Some(error) = self.fail_with.lock().unwrap().clone() {
            return Err(error);
        }
        self.calls
            .lock()
            .unwrap()
            .push((tenant.to_owned(), request));
        Ok(())
    }
}

/// Both receivers on ephemeral ports; shut down on drop.
struct Servers {
    grpc: SocketAddr,
    http: SocketAddr,
    sink: Arc<RecordingSink>,
    metrics: Arc<IngestMetrics>,
    shutdown: watch::Sender<bool>,
}

impl Servers {
    async fn start(cfg: ReceiverConfig) -> Servers {
        let sink = Arc::new(RecordingSink::default());
        let metrics = IngestMetrics::unregistered();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let http = http_listener.local_addr().unwrap();
        let (shutdown, rx) = watch::channel(false);
        let stop = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        tokio::spawn(serve_grpc(
            grpc_listener,
            sink.clone(),
            cfg.clone(),
            metrics.clone(),
            stop(rx.clone()),
        ));
        tokio::spawn(serve_http(
            http_listener,
            sink.clone(),
            cfg,
            metrics.clone(),
            stop(rx),
        ));
        Servers {
            grpc,
            http,
            sink,
            metrics,
            shutdown,
        }
    }

    async fn default() -> Servers {
        Self::start(ReceiverConfig::default()).await
    }

    async fn grpc_client(&self) -> TraceServiceClient<tonic::transport::Channel> {
        TraceServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn span(trace: u8, id: u8) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: format!("op-{id}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        kind: 2,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("cart".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A valid request whose protobuf encoding is larger than `bytes`.
fn big_request(bytes: usize) -> ExportTraceServiceRequest {
    let mut s = span(1, 1);
    s.attributes.push(KeyValue {
        key: "payload".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("a".repeat(bytes))),
        }),
        ..Default::default()
    });
    request(vec![s])
}

/// 3 valid spans and 2 invalid ones (the first invalid one ends before it starts).
fn mixed_request() -> ExportTraceServiceRequest {
    let mut ends_early = span(7, 0x0a);
    ends_early.end_time_unix_nano = ends_early.start_time_unix_nano - 1;
    request(vec![
        span(1, 1),
        ends_early,
        span(1, 2),
        span(0, 3), // all-zero trace id
        span(1, 3),
    ])
}

const MIXED_MESSAGE: &str = "2 spans rejected: span 0a0a0a0a0a0a0a0a in trace \
    07070707070707070707070707070707: end_time_unix_nano is before start_time_unix_nano";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
    out
}

/// Sends raw bytes as an Export call, to test what tonic's generated client cannot send.
async fn grpc_raw_export(
    addr: SocketAddr,
    body: Vec<u8>,
) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
    #[derive(Clone, Copy)]
    struct RawCodec;
    struct RawEncoder;
    struct ResponseDecoder;
    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = ExportTraceServiceResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }
    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for ResponseDecoder {
        type Item = ExportTraceServiceResponse;
        type Error = Status;
        fn decode(
            &mut self,
            src: &mut DecodeBuf<'_>,
        ) -> Result<Option<ExportTraceServiceResponse>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            ExportTraceServiceResponse::decode(bytes)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(body),
            http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            ),
            RawCodec,
        )
        .await
}

fn http_client() -> reqwest::Client {
    // no_gzip: the tests look at Content-Encoding themselves.
    reqwest::Client::builder().no_gzip().build().unwrap()
}

async fn post(
    servers: &Servers,
    content_type: &str,
    body: Vec<u8>,
    extra_headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = http_client()
        .post(servers.traces_url())
        .header("content-type", content_type)
        .body(body);
    for (k, v) in extra_headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn decode_status(body: &[u8]) -> tonic_types::Status {
    tonic_types::Status::decode(body).unwrap()
}

fn retry_info_seconds(status: &tonic_types::Status) -> Option<i64> {
    status
        .details
        .iter()
        .find(|any| any.type_url == "type.googleapis.com/google.rpc.RetryInfo")
        .map(|any| {
            tonic_types::pb::RetryInfo::decode(any.value.as_slice())
                .unwrap()
                .retry_delay
                .unwrap()
                .seconds
        })
}

// ---------------------------------------------------------------------------------------------
// OTLP/gRPC

#[tokio::test]
async fn grpc_export_plain_and_gzip() {
    let servers = Servers::default().await;
    let req = request(vec![span(1, 1), span(1, 2)]);

    let reply = servers
        .grpc_client()
        .await
        .export(req.clone())
        .await
        .unwrap();
    assert_eq!(reply.into_inner().partial_success, None);

    let mut gzip_client = servers
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let reply = gzip_client.export(req.clone()).await.unwrap();
    assert_eq!(reply.into_inner().partial_success, None);

    let calls = servers.sink.calls();
    assert_eq!(calls.len(), 2);
    for (tenant, got) in calls {
        assert_eq!(tenant, "default");
        assert_eq!(got, req);
    }
    let m = &servers.metrics;
    assert_eq!(m.requests(Protocol::Grpc, Outcome::Success), 2);
    assert_eq!(m.spans_received(Protocol::Grpc), 4);
    assert_eq!(m.spans_accepted(Protocol::Grpc), 4);
    assert_eq!(m.spans_rejected(Protocol::Grpc), 0);
}

#[tokio::test]
async fn grpc_tenant_from_metadata() {
    let servers = Servers::default().await;
    let mut req = tonic::Request::new(request(vec![span(1, 1)]));
    req.metadata_mut()
        .insert("x-scope-orgid", MetadataValue::from_static("acme-1"));
    servers.grpc_client().await.export(req).await.unwrap();
    assert_eq!(servers.sink.calls()[0].0, "acme-1");
}

#[tokio::test]
async fn grpc_default_tenant_is_configurable() {
    let servers = Servers::start(ReceiverConfig {
        default_tenant: "fallback".into(),
        ..ReceiverConfig::default()
    })
    .await;
    servers
        .grpc_client()
        .await
        .export(request(vec![span(1, 1)]))
        .await
        .unwrap();
    assert_eq!(servers.sink.calls()[0].0, "fallback");
}

#[tokio::test]
async fn grpc_bad_tenant_is_invalid_argument() {
    let servers = Servers::default().await;
    let mut req = tonic::Request::new(request(vec![span(1, 1)]));
    req.metadata_mut()
        .insert("x-scope-orgid", MetadataValue::from_static("team/a"));
    let status = servers.grpc_client().await.export(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid tenant id \"team/a\": use 1-64 characters from [A-Za-z0-9_-]"
    );
    assert!(servers.sink.calls().is_empty());
    assert_eq!(
        servers.metrics.requests(Protocol::Grpc, Outcome::Invalid),
        1
    );
}

#[tokio::test]
async fn grpc_partial_success_counts_exactly() {
    let servers = Servers::default().await;
    let reply = servers
        .grpc_client()
        .await
        .export(mixed_request())
        .await
        .unwrap()
        .into_inner();
    let partial = reply.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(partial.error_message, MIXED_MESSAGE);

    let calls = servers.sink.calls();
    assert_eq!(calls.len(), 1);
    let kept: Vec<_> = calls[0].1.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.span_id[0])
        .collect();
    assert_eq!(kept, vec![1, 2, 3]);
    let m = &servers.metrics;
    assert_eq!(m.spans_received(Protocol::Grpc), 5);
    assert_eq!(m.spans_accepted(Protocol::Grpc), 3);
    assert_eq!(m.spans_rejected(Protocol::Grpc), 2);
    assert_eq!(m.requests(Protocol::Grpc, Outcome::PartialSuccess), 1);
}

#[tokio::test]
async fn grpc_all_invalid_is_partial_success_without_sink_call() {
    let servers = Servers::default().await;
    let reply = servers
        .grpc_client()
        .await
        .export(request(vec![span(0, 1), span(1, 0)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.partial_success.unwrap().rejected_spans, 2);
    assert!(servers.sink.calls().is_empty());
}

#[tokio::test]
async fn grpc_empty_request_is_full_success() {
    let servers = Servers::default().await;
    let reply = servers
        .grpc_client()
        .await
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.partial_success, None);
    assert!(servers.sink.calls().is_empty());
    assert_eq!(
        servers.metrics.requests(Protocol::Grpc, Outcome::Success),
        1
    );
}

#[tokio::test]
async fn grpc_oversize_is_resource_exhausted_without_retry_info() {
    let limit = 64 * 1024;
    let servers = Servers::start(ReceiverConfig {
        max_request_bytes: limit,
        ..ReceiverConfig::default()
    })
    .await;
    let big = big_request(100 * 1024);

    // Uncompressed: tonic rejects the frame before reading it (it says OUT_OF_RANGE).
    let status = servers
        .grpc_client()
        .await
        .export(big.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("65536-byte limit"), "{status:?}");
    assert!(status.get_details_retry_info().is_none());

    // Gzipped: small on the wire, over the limit once inflated.
    let status = servers
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .export(big)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_retry_info().is_none());

    // Just under the limit still works.
    servers
        .grpc_client()
        .await
        .export(big_request(60 * 1024))
        .await
        .unwrap();
    assert_eq!(servers.sink.calls().len(), 1);
    assert_eq!(
        servers.metrics.requests(Protocol::Grpc, Outcome::TooLarge),
        2
    );
}

#[tokio::test]
async fn grpc_malformed_protobuf_is_invalid_argument() {
    let servers = Servers::default().await;
    let status = grpc_raw_export(servers.grpc, vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("protobuf"), "{status:?}");
    assert!(servers.sink.calls().is_empty());

    // And a well-formed body through the same raw path works.
    let ok = grpc_raw_export(servers.grpc, request(vec![span(1, 1)]).encode_to_vec())
        .await
        .unwrap();
    assert_eq!(ok.into_inner().partial_success, None);
}

#[tokio::test]
async fn grpc_overload_is_unavailable_with_retry_info() {
    let servers = Servers::default().await;
    servers.sink.fail_with(SinkError::Overloaded {
        retry_after: Duration::from_millis(2500),
    });
    let status = servers
        .grpc_client()
        .await
        .export(request(vec![span(1, 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_millis(2500)));
    assert_eq!(
        servers
            .metrics
            .requests(Protocol::Grpc, Outcome::Overloaded),
        1
    );
    assert_eq!(servers.metrics.spans_accepted(Protocol::Grpc), 0);
}

#[tokio::test]
async fn grpc_sink_unavailable_and_internal() {
    let servers = Servers::default().await;
    servers
        .sink
        .fail_with(SinkError::Unavailable("shutting down".into()));
    let status = servers
        .grpc_client()
        .await
        .export(request(vec![span(1, 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_none());

    servers
        .sink
        .fail_with(SinkError::Internal("wal segment 17 corrupt".into()));
    let status = servers
        .grpc_client()
        .await
        .export(request(vec![span(1, 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().starts_with("internal error"), "{status:?}");
    assert!(!status.message().contains("wal"), "{status:?}");
}

// ---------------------------------------------------------------------------------------------
// OTLP/HTTP

#[tokio::test]
async fn http_protobuf_export_with_tenant_header() {
    let servers = Servers::default().await;
    let req = request(vec![span(1, 1), span(1, 2)]);
    let resp = post(
        &servers,
        "application/x-protobuf",
        req.encode_to_vec(),
        &[("X-Scope-OrgID", "acme")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let reply = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(reply.partial_success, None);
    assert_eq!(servers.sink.calls(), vec![("acme".to_owned(), req)]);
    assert_eq!(servers.metrics.spans_accepted(Protocol::Http), 2);
    assert_eq!(
        servers.metrics.requests(Protocol::Http, Outcome::Success),
        1
    );
}

#[tokio::test]
async fn http_protobuf_alias_content_type_is_echoed() {
    let servers = Servers::default().await;
    let resp = post(
        &servers,
        "application/protobuf",
        request(vec![span(1, 1)]).encode_to_vec(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/protobuf");
    assert_eq!(servers.sink.calls().len(), 1);
}

#[tokio::test]
async fn http_bad_tenant_is_400() {
    let servers = Servers::default().await;
    let resp = post(
        &servers,
        "application/json",
        b"{}".to_vec(),
        &[("x-scope-orgid", "no spaces allowed")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert_eq!(
        body["message"],
        "invalid tenant id \"no spaces allowed\": use 1-64 characters from [A-Za-z0-9_-]"
    );
}

const JSON_REQUEST: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
    "scopeSpans": [{
      "scope": {"name": "manual"},
      "spans": [
        {
          "traceId": "5B8EFFF798038103D269B633813FC60C",
          "spanId": "EEE19B7EC3C1B174",
          "parentSpanId": "eee19b7ec3c1b173",
          "name": "GET /cart",
          "kind": 2,
          "startTimeUnixNano": "1544712660000000000",
          "endTimeUnixNano": "1544712661000000000",
          "attributes": [
            {"key": "http.status_code", "value": {"intValue": "200"}},
            {"key": "blob", "value": {"bytesValue": "AAEC"}}
          ],
          "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "0102030405060708"}],
          "status": {"code": 1},
          "someUnknownField": true
        },
        {
          "traceId": "00000000000000000000000000000000",
          "spanId": "0102030405060708",
          "name": "zero trace id",
          "startTimeUnixNano": "1",
          "endTimeUnixNano": "2"
        }
      ]
    }]
  }]
}"#;

#[tokio::test]
async fn http_json_export_with_hex_ids() {
    let servers = Servers::default().await;
    let resp = post(
        &servers,
        "application/json; charset=utf-8",
        JSON_REQUEST.as_bytes().to_vec(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    let partial = &body["partialSuccess"];
    let rejected = &partial["rejectedSpans"];
    assert!(rejected == "1" || rejected == 1, "{body}");
    assert!(
        partial["errorMessage"]
            .as_str()
            .unwrap()
            .starts_with("1 span rejected: span 0102030405060708 in trace 0000"),
        "{body}"
    );

    let calls = servers.sink.calls();
    assert_eq!(calls.len(), 1);
    let spans = &calls[0].1.resource_spans[0].scope_spans[0].spans;
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(
        s.trace_id,
        hex::decode("5b8efff798038103d269b633813fc60c").unwrap()
    );
    assert_eq!(s.span_id, hex::decode("eee19b7ec3c1b174").unwrap());
    assert_eq!(s.parent_span_id, hex::decode("eee19b7ec3c1b173").unwrap());
    assert_eq!(s.links[0].span_id, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(s.kind, 2);
    assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(
        s.attributes[1].value.as_ref().unwrap().value,
        Some(any_value::Value::BytesValue(vec![0, 1, 2]))
    );
}

#[tokio::test]
async fn http_gzip_request() {
    let servers = Servers::default().await;
    let req = request(vec![span(1, 1)]);
    let resp = post(
        &servers,
        "application/x-protobuf",
        gzip(&req.encode_to_vec()),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(servers.sink.calls()[0].1, req);

    let resp = post(
        &servers,
        "application/json",
        gzip(JSON_REQUEST.as_bytes()),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(servers.sink.calls().len(), 2);
}

#[tokio::test]
async fn http_gzip_response_only_when_accepted() {
    let servers = Servers::default().await;
    let body = mixed_request().encode_to_vec();

    let resp = post(
        &servers,
        "application/x-protobuf",
        body.clone(),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let reply = ExportTraceServiceResponse::decode(gunzip(&resp.bytes().await.unwrap()).as_slice())
        .unwrap();
    let partial = reply.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(partial.error_message, MIXED_MESSAGE);

    let resp = post(&servers, "application/x-protobuf", body, &[]).await;
    assert!(resp.headers().get("content-encoding").is_none());
    let reply = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(reply.partial_success.unwrap().rejected_spans, 2);
}

#[tokio::test]
async fn http_malformed_protobuf_is_400_with_status() {
    let servers = Servers::default().await;
    let resp = post(
        &servers,
        "application/x-protobuf",
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
        &[],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let status = decode_status(&resp.bytes().await.unwrap());
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("protobuf"), "{status:?}");
    assert!(servers.sink.calls().is_empty());
    assert_eq!(
        servers.metrics.requests(Protocol::Http, Outcome::Invalid),
        1
    );
}

#[tokio::test]
async fn http_malformed_json_is_400_with_status() {
    let servers = Servers::default().await;
    let resp = post(
        &servers,
        "application/json",
        br#"{"resourceSpans": [{"scopeSpans": 7}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("could not decode the request body as OTLP JSON"),
        "{body}"
    );
    assert_eq!(body["details"], serde_json::json!([]));
}

#[tokio::test]
async fn http_corrupt_gzip_is_400() {
    let servers = Servers::default().await;
    let resp = post(
        &servers,
        "application/x-protobuf",
        b"definitely not gzip".to_vec(),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(resp.status(), 400);
    let status = decode_status(&resp.bytes().await.unwrap());
    assert!(status.message.contains("gzip"), "{status:?}");
}

#[tokio::test]
async fn http_wrong_content_type_or_encoding_is_415() {
    let servers = Servers::default().await;
    let resp = post(&servers, "text/plain", b"hello".to_vec(), &[]).await;
    assert_eq!(resp.status(), 415);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["message"],
        "unsupported content type \"text/plain\": use application/x-protobuf or application/json"
    );

    let resp = post(
        &servers,
        "application/x-protobuf",
        b"hello".to_vec(),
        &[("content-encoding", "br")],
    )
    .await;
    assert_eq!(resp.status(), 415);
    let status = decode_status(&resp.bytes().await.unwrap());
    assert_eq!(
        status.message,
        "unsupported content encoding \"br\": use gzip or identity"
    );

    // A large unread body is drained, so the client still gets the 415 (not a reset).
    let resp = post(&servers, "text/plain", vec![b'x'; 2 * 1024 * 1024], &[]).await;
    assert_eq!(resp.status(), 415);

    assert!(servers.sink.calls().is_empty());
    assert_eq!(
        servers
            .metrics
            .requests(Protocol::Http, Outcome::Unsupported),
        3
    );
}

#[tokio::test]
async fn http_oversize_raw_body_is_413() {
    let servers = Servers::start(ReceiverConfig {
        max_request_bytes: 64 * 1024,
        ..ReceiverConfig::default()
    })
    .await;
    let resp = post(
        &servers,
        "application/x-protobuf",
        big_request(1024 * 1024).encode_to_vec(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 413);
    let status = decode_status(&resp.bytes().await.unwrap());
    assert_eq!(status.code, Code::ResourceExhausted as i32);
    assert!(status.message.contains("65536-byte limit"), "{status:?}");
    assert!(retry_info_seconds(&status).is_none());
    assert!(servers.sink.calls().is_empty());
}

/// A chunked body has no Content-Length, so the limit is enforced while reading.
#[tokio::test]
async fn http_oversize_chunked_body_is_413() {
    let servers = Servers::start(ReceiverConfig {
        max_request_bytes: 64 * 1024,
        ..ReceiverConfig::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(servers.http).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-protobuf\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        servers.http
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 16 * 1024];
    for _ in 0..8 {
        tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        tcp.write_all(&chunk).await.unwrap();
        tcp.write_all(b"\r\n").await.unwrap();
    }
    tcp.write_all(b"0\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test]
async fn http_gzip_bomb_is_413_fast() {
    let servers = Servers::default().await; // 4 MiB limit
                                            // 100 MiB of zeros, about 100 KiB compressed.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1024 * 1024];
    for _ in 0..100 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 4 * 1024 * 1024);

    let started = Instant::now();
    let resp = post(
        &servers,
        "application/x-protobuf",
        bomb,
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(resp.status(), 413);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let status = decode_status(&resp.bytes().await.unwrap());
    assert!(status.message.contains("4194304-byte limit"), "{status:?}");
    assert_eq!(
        servers.metrics.requests(Protocol::Http, Outcome::TooLarge),
        1
    );
}

#[tokio::test]
async fn http_overload_is_503_with_retry_after() {
    let servers = Servers::default().await;
    servers.sink.fail_with(SinkError::Overloaded {
        retry_after: Duration::from_millis(2500),
    });

    let resp = post(
        &servers,
        "application/x-protobuf",
        request(vec![span(1, 1)]).encode_to_vec(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "3");
    let status = decode_status(&resp.bytes().await.unwrap());
    assert_eq!(status.code, Code::Unavailable as i32);
    assert_eq!(retry_info_seconds(&status), Some(3));

    let resp = post(
        &servers,
        "application/json",
        JSON_REQUEST.as_bytes().to_vec(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "3");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 14);
    assert_eq!(
        body["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    assert_eq!(body["details"][0]["retryDelay"], "3s");
    assert_eq!(
        servers
            .metrics
            .requests(Protocol::Http, Outcome::Overloaded),
        2
    );
}

#[tokio::test]
async fn http_internal_error_hides_detail() {
    let servers = Servers::default().await;
    servers
        .sink
        .fail_with(SinkError::Internal("wal segment 17 corrupt".into()));
    let resp = post(
        &servers,
        "application/json",
        JSON_REQUEST.as_bytes().to_vec(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 500);
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("internal error (request id "), "{body}");
    assert!(!message.contains("wal"), "{body}");
}

#[tokio::test]
async fn http_empty_request_is_success() {
    let servers = Servers::default().await;
    let resp = post(&servers, "application/x-protobuf", Vec::new(), &[]).await;
    assert_eq!(resp.status(), 200);
    let reply = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(reply.partial_success, None);

    let resp = post(&servers, "application/json", b"{}".to_vec(), &[]).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body.get("partialSuccess").is_none_or(|p| p.is_null()),
        "{body}"
    );
    assert!(servers.sink.calls().is_empty());
    assert_eq!(
        servers.metrics.requests(Protocol::Http, Outcome::Success),
        2
    );
}

#[tokio::test]
async fn http2_prior_knowledge_works() {
    let servers = Servers::default().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(servers.traces_url())
        .header("content-type", "application/x-protobuf")
        .body(request(vec![span(1, 1)]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(servers.sink.calls().len(), 1);
}

#[tokio::test]
async fn http_get_is_method_not_allowed() {
    let servers = Servers::default().await;
    let resp = http_client()
        .get(servers.traces_url())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}
