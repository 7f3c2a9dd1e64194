//! Encoding export requests (on the generator thread) and sending them (on the runtime).
//!
//! Requests are fully encoded before they reach the runtime: protobuf bytes for gRPC, a built
//! `reqwest::Request` for OTLP/HTTP. Sending then only does IO, and a retry re-sends the same
//! bytes without re-encoding. gRPC goes through tonic's generic client with a pass-through codec
//! to the standard `TraceService/Export` method; tonic still applies gzip itself.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::Bytes;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::gzip::gzip;
use super::Protocol;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const TENANT_HEADER: &str = "x-scope-orgid";
/// Longest server-requested retry delay we honour.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An encoded export request.
pub(crate) enum Payload {
    Grpc(Bytes),
    Http(Box<reqwest::Request>),
}

/// Turns resource spans into [`Payload`]s; runs on the generator thread.
pub(crate) struct RequestEncoder {
    protocol: Protocol,
    gzip: bool,
    tenant: Option<String>,
    url: String,
    client: reqwest::Client,
}

impl RequestEncoder {
    pub(crate) fn new(
        protocol: Protocol,
        gzip: bool,
        tenant: Option<String>,
        url: String,
        client: reqwest::Client,
    ) -> Self {
        RequestEncoder {
            protocol,
            gzip,
            tenant,
            url,
            client,
        }
    }

    /// Encodes one request; returns it with its size in bytes as sent (for gRPC: before gzip).
    pub(crate) fn encode(
        &self,
        resource_spans: Vec<ResourceSpans>,
    ) -> anyhow::Result<(Payload, u64)> {
        let request = ExportTraceServiceRequest { resource_spans };
        let builder = self.client.post(&self.url);
        let builder = match &self.tenant {
            Some(tenant) => builder.header(TENANT_HEADER, tenant),
            None => builder,
        };
        let mut http = match self.protocol {
            Protocol::Grpc => {
                let bytes = Bytes::from(request.encode_to_vec());
                let len = bytes.len() as u64;
                return Ok((Payload::Grpc(bytes), len));
            }
            Protocol::HttpProto => builder
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(request.encode_to_vec())
                .build(),
            Protocol::HttpJson => builder.json(&request).build(),
        }
        .context("cannot build the OTLP/HTTP request; check --endpoint")?;
        if self.gzip {
            let compressed = http.body().and_then(|b| b.as_bytes()).map(gzip);
            if let Some(compressed) = compressed {
                *http.body_mut() = Some(compressed.into());
                http.headers_mut().insert(
                    reqwest::header::CONTENT_ENCODING,
                    reqwest::header::HeaderValue::from_static("gzip"),
                );
            }
        }
        let len = http
            .body()
            .and_then(|b| b.as_bytes())
            .map_or(0, |b| b.len() as u64);
        Ok((Payload::Http(Box::new(http)), len))
    }
}

/// Why an export attempt failed.
#[derive(Debug)]
pub(crate) enum ExportError {
    /// Worth retrying, after `delay` if the server said so.
    Retryable {
        delay: Option<Duration>,
        reason: String,
    },
    Permanent(String),
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExportError::Retryable { reason, .. } | ExportError::Permanent(reason) => {
                f.write_str(reason)
            }
        }
    }
}

/// Sends encoded payloads; cheap to share between tasks.
pub(crate) enum Exporter {
    Grpc {
        channel: Channel,
        gzip: bool,
        tenant: Option<AsciiMetadataValue>,
    },
    Http {
        client: reqwest::Client,
    },
}

impl Exporter {
    pub(crate) fn grpc(endpoint: &str, gzip: bool, tenant: Option<&str>) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .with_context(|| {
                format!("invalid gRPC endpoint {endpoint:?}; expected e.g. http://127.0.0.1:4317")
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .connect_lazy();
        let tenant = tenant
            .map(|t| t.parse::<AsciiMetadataValue>())
            .transpose()
            .context("--tenant must be printable ASCII")?;
        Ok(Exporter::Grpc {
            channel,
            gzip,
            tenant,
        })
    }

    pub(crate) fn http(client: reqwest::Client) -> Self {
        Exporter::Http { client }
    }

    /// One attempt; returns the number of spans the server rejected (partial success).
    pub(crate) async fn export(&self, payload: &Payload) -> Result<u64, ExportError> {
        match (self, payload) {
            (
                Exporter::Grpc {
                    channel,
                    gzip,
                    tenant,
                },
                Payload::Grpc(bytes),
            ) => export_grpc(channel.clone(), *gzip, tenant.as_ref(), bytes.clone()).await,
            (Exporter::Http { client }, Payload::Http(request)) => {
                let request = request.try_clone().ok_or_else(|| {
                    ExportError::Permanent("request body cannot be re-sent".to_owned())
                })?;
                export_http(client, request).await
            }
            _ => Err(ExportError::Permanent(
                "payload does not match the protocol".to_owned(),
            )),
        }
    }
}

async fn export_grpc(
    channel: Channel,
    gzip: bool,
    tenant: Option<&AsciiMetadataValue>,
    body: Bytes,
) -> Result<u64, ExportError> {
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready().await.map_err(|e| ExportError::Retryable {
        delay: None,
        reason: format!("gRPC channel not ready: {e}"),
    })?;
    let mut request = tonic::Request::new(body);
    if let Some(tenant) = tenant {
        request.metadata_mut().insert(TENANT_HEADER, tenant.clone());
    }
    let path = PathAndQuery::from_static(EXPORT_PATH);
    match grpc.unary(request, path, PassThroughCodec).await {
        Ok(response) => Ok(rejected(response.get_ref())),
        Err(status) => Err(grpc_error(&status)),
    }
}

fn rejected(response: &ExportTraceServiceResponse) -> u64 {
    response
        .partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

/// OTLP/gRPC retry rules: UNAVAILABLE and RESOURCE_EXHAUSTED (throttling) are retried,
/// honouring a `google.rpc.RetryInfo` delay.
fn grpc_error(status: &Status) -> ExportError {
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted => ExportError::Retryable {
            delay: retry_info_delay(status.details()),
            reason,
        },
        _ => ExportError::Permanent(reason),
    }
}

/// The subset of `google.rpc.Status` / `RetryInfo` needed to read a retry delay.
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Status {
        #[prost(int32, tag = "1")]
        pub(super) code: i32,
        #[prost(string, tag = "2")]
        pub(super) message: String,
        #[prost(message, repeated, tag = "3")]
        pub(super) details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Any {
        #[prost(string, tag = "1")]
        pub(super) type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub(super) retry_delay: Option<Duration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Duration {
        #[prost(int64, tag = "1")]
        pub(super) seconds: i64,
        #[prost(int32, tag = "2")]
        pub(super) nanos: i32,
    }
}

fn retry_info_delay(details: &[u8]) -> Option<Duration> {
    use prost::Message as _;
    let status = rpc::Status::decode(details).ok()?;
    let any = status
        .details
        .iter()
        .find(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let delay = rpc::RetryInfo::decode(any.value.as_slice())
        .ok()?
        .retry_delay?;
    let secs = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?;
    Some(Duration::new(secs, nanos.min(999_999_999)).min(MAX_RETRY_DELAY))
}

async fn export_http(
    client: &reqwest::Client,
    request: reqwest::Request,
) -> Result<u64, ExportError> {
    let response = client.execute(request).await.map_err(|e| {
        let reason = format!("OTLP/HTTP request failed: {e}");
        if e.is_connect() || e.is_timeout() {
            ExportError::Retryable {
                delay: None,
                reason,
            }
        } else {
            ExportError::Permanent(reason)
        }
    })?;
    let status = response.status();
    if status.is_success() {
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if json {
            // An unreadable or empty body means nothing was reported rejected.
            return Ok(response
                .json::<JsonResponse>()
                .await
                .map_or(0, |r| r.rejected()));
        }
        let body = response.bytes().await.map_err(|e| ExportError::Retryable {
            delay: None,
            reason: format!("reading the OTLP/HTTP response failed: {e}"),
        })?;
        return Ok(ExportTraceServiceResponse::decode(body).map_or(0, |r| rejected(&r)));
    }
    let delay = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_DELAY));
    let text = response.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    let reason = format!("OTLP/HTTP {status}: {text}");
    // OTLP/HTTP: 429, 502, 503 and 504 are retryable.
    if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        Err(ExportError::Retryable { delay, reason })
    } else {
        Err(ExportError::Permanent(reason))
    }
}

/// An OTLP/JSON export response. `rejectedSpans` is an int64, which OTLP/JSON encodes as a
/// string; a number is accepted too.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonResponse {
    partial_success: Option<JsonPartialSuccess>,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsonPartialSuccess {
    rejected_spans: Option<IntOrString>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u64),
    String(String),
}

impl JsonResponse {
    fn rejected(&self) -> u64 {
        match self
            .partial_success
            .as_ref()
            .and_then(|p| p.rejected_spans.as_ref())
        {
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(s)) => s.parse().unwrap_or(0),
            None => 0,
        }
    }
}

/// Passes pre-encoded request bytes through and decodes the standard export response.
struct PassThroughCodec;

impl Codec for PassThroughCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PassThroughCodec;
    type Decoder = PassThroughCodec;

    fn encoder(&mut self) -> Self::Encoder {
        PassThroughCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        PassThroughCodec
    }
}

impl Encoder for PassThroughCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::bytes::BufMut as _;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for PassThroughCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the export response: {e}")))
    }
}
