//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The service is written against `tonic::server::Grpc` rather than the generated
//! `TraceServiceServer` so that it can (1) decode the protobuf itself, off the IO threads for large
//! messages, and (2) turn tonic's pre-handler rejections into the codes OTLP asks for: a message
//! over the size limit is `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE` for uncompressed
//! messages) and an undecodable or corrupt-gzip message is `INVALID_ARGUMENT` (tonic says
//! `INTERNAL`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::future::BoxFuture;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tracelake_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::metrics::{IngestMetrics, Outcome, Protocol};
use crate::validate::{resolve_tenant, TENANT_HEADER};
use crate::{deliver, validate_off_thread, Receiver, ReceiverConfig, SpanSink};

const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Messages larger than this are decoded on the blocking pool.
const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;

/// The OTLP/gRPC trace service. Add it to a `tonic::transport::Server` (it is a [`NamedService`]),
/// or use [`serve_grpc`].
#[derive(Clone)]
pub struct TraceGrpcService {
    receiver: Arc<Receiver>,
}

impl std::fmt::Debug for TraceGrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceGrpcService")
            .field("max_request_bytes", &self.receiver.max_request_bytes)
            .field("default_tenant", &self.receiver.default_tenant)
            .finish_non_exhaustive()
    }
}

/// Builds the OTLP/gRPC trace service: gzip accepted (and used for replies when the client
/// accepts it), messages limited to `cfg.max_request_bytes` after decompression.
pub fn grpc_service(
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: Arc<IngestMetrics>,
) -> TraceGrpcService {
    TraceGrpcService {
        receiver: Arc::new(Receiver::new(sink, &cfg, metrics)),
    }
}

/// Serves the OTLP/gRPC receiver on an already bound listener until `shutdown` completes, then
/// lets in-flight requests finish.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: Arc<IngestMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(grpc_service(sink, cfg, metrics))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Serve {
            protocol: "grpc",
            source: Box::new(e),
        })
}

impl NamedService for TraceGrpcService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower::Service<::http::Request<B>> for TraceGrpcService
where
    B: axum::body::HttpBody + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = ::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ::http::Request<B>) -> Self::Future {
        let receiver = Arc::clone(&self.receiver);
        Box::pin(async move {
            if req.uri().path() != EXPORT_PATH {
                return Ok(Status::unimplemented(format!(
                    "unknown method {}: this service only implements {EXPORT_PATH}",
                    req.uri().path()
                ))
                .into_http());
            }
            let reached_handler = Arc::new(AtomicBool::new(false));
            let method = ExportMethod {
                receiver: Arc::clone(&receiver),
                reached_handler: Arc::clone(&reached_handler),
            };
            let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(receiver.max_request_bytes);
            let response = grpc.unary(method, req).await;
            if reached_handler.load(Ordering::Acquire) {
                return Ok(response);
            }
            Ok(remap_transport_rejection(&receiver, response))
        })
    }
}

/// Rewrites tonic's rejections of a request that never reached the handler: frames over the
/// size limit (`OUT_OF_RANGE` or `RESOURCE_EXHAUSTED`) become `RESOURCE_EXHAUSTED` without
/// RetryInfo; undecompressable bodies (`INTERNAL`) become `INVALID_ARGUMENT`.
fn remap_transport_rejection(
    receiver: &Receiver,
    response: ::http::Response<tonic::body::Body>,
) -> ::http::Response<tonic::body::Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let error = match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => Error::TooLarge {
            limit: receiver.max_request_bytes,
        },
        Code::Internal => Error::Decode {
            format: "grpc message",
            detail: status.message().to_owned(),
        },
        Code::Unimplemented => {
            // e.g. an unsupported grpc-encoding: tonic's reply is already right.
            receiver
                .metrics
                .record_request(Protocol::Grpc, Outcome::Unsupported);
            return response;
        }
        _ => {
            receiver
                .metrics
                .record_request(Protocol::Grpc, Outcome::Invalid);
            return response;
        }
    };
    tracing::debug!(code = ?status.code(), message = status.message(), "grpc request rejected before decoding");
    receiver
        .metrics
        .record_request(Protocol::Grpc, error.outcome());
    error.to_grpc_status().into_http()
}

/// The unary handler; marks that tonic let the request through.
struct ExportMethod {
    receiver: Arc<Receiver>,
    reached_handler: Arc<AtomicBool>,
}

impl UnaryService<Bytes> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.reached_handler.store(true, Ordering::Release);
        let receiver = Arc::clone(&self.receiver);
        let span = tracing::info_span!("otlp_grpc_export", tenant = tracing::field::Empty);
        Box::pin(
            async move {
                match export(&receiver, request).await {
                    Ok(response) => Ok(tonic::Response::new(response)),
                    Err(e) => {
                        // Sink failures are counted by `deliver`.
                        if !matches!(e, Error::Sink(_)) {
                            receiver.metrics.record_request(Protocol::Grpc, e.outcome());
                        }
                        tracing::debug!(error = %e, "grpc export failed");
                        Err(e.to_grpc_status())
                    }
                }
            }
            .instrument(span),
        )
    }
}

async fn export(
    receiver: &Receiver,
    request: tonic::Request<Bytes>,
) -> Result<ExportTraceServiceResponse> {
    let tenant = resolve_tenant(
        request
            .metadata()
            .get(TENANT_HEADER)
            .map(|value| value.as_bytes()),
        &receiver.default_tenant,
    )?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let body = request.into_inner();
    let decoded = if body.len() <= INLINE_DECODE_MAX_BYTES {
        decode_request(body)
    } else {
        tokio::task::spawn_blocking(move || decode_request(body))
            .await
            .map_err(|e| crate::SinkError::Internal(format!("decode task failed: {e}")))?
    }?;
    let (request, validation) = validate_off_thread(decoded).await?;
    deliver(
        receiver.sink.as_ref(),
        &receiver.metrics,
        Protocol::Grpc,
        &tenant,
        request,
        validation,
    )
    .await
}

fn decode_request(body: Bytes) -> Result<ExportTraceServiceRequest> {
    ExportTraceServiceRequest::decode(body).map_err(|e| Error::Decode {
        format: "protobuf",
        detail: e.to_string(),
    })
}

/// Passes request bytes through undecoded (decoding happens in the handler) and prost-encodes
/// the response.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("could not encode the response: {e}")))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
