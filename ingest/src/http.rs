//! OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, optionally gzipped.
//!
//! Limits are enforced twice: on the bytes read from the connection, and while inflating gzip
//! (a bounded streaming decoder, so a gzip bomb never allocates past the limit). Errors carry a
//! `google.rpc.Status` body in the request's content type.

use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use ::http::header::{
    HeaderMap, HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    RETRY_AFTER, VARY,
};
use ::http::StatusCode;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use prost::Message;
use tower_http::trace::TraceLayer;
use tracelake_proto::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::error::{truncate_for_message, Error, Reply, Result, SinkError};
use crate::metrics::{IngestMetrics, Protocol};
use crate::validate::{resolve_tenant, validate, Validation, TENANT_HEADER};
use crate::{deliver, Receiver, ReceiverConfig, SpanSink};

/// Path of the OTLP/HTTP trace endpoint.
pub const TRACES_PATH: &str = "/v1/traces";

/// Bodies larger than this (and all gzipped bodies) are decoded on the blocking pool.
const INLINE_DECODE_MAX_BYTES: usize = 64 * 1024;

/// After rejecting an oversized body, read and discard up to this much more of it so that the
/// client sees the 413 instead of a connection reset.
const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

const PROTOBUF: &str = "application/x-protobuf";
const PROTOBUF_ALT: &str = "application/protobuf";
const JSON: &str = "application/json";

/// The router with `POST /v1/traces`. Nest or merge it into a larger app as needed.
pub fn http_router(
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: Arc<IngestMetrics>,
) -> Router {
    let receiver = Arc::new(Receiver::new(sink, &cfg, metrics));
    Router::new()
        .route(TRACES_PATH, post(export_traces))
        .route_layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("", MatchedPath::as_str);
            tracing::info_span!(
                "otlp_http",
                method = %req.method(),
                route,
                tenant = tracing::field::Empty
            )
        }))
        .with_state(receiver)
}

/// Serves the OTLP/HTTP receiver (HTTP/1.1 and h2c) on an already bound listener until
/// `shutdown` completes, then lets in-flight requests finish.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    sink: Arc<dyn SpanSink>,
    cfg: ReceiverConfig,
    metrics: Arc<IngestMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, http_router(sink, cfg, metrics))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Serve {
            protocol: "http",
            source: Box::new(e),
        })
}

/// Body format, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Binary protobuf; the reply echoes the content type the client used.
    Protobuf {
        content_type: &'static str,
    },
    Json,
}

impl Format {
    fn from_headers(headers: &HeaderMap) -> Result<Format> {
        let raw = headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        let essence = raw
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            PROTOBUF => Ok(Format::Protobuf {
                content_type: PROTOBUF,
            }),
            PROTOBUF_ALT => Ok(Format::Protobuf {
                content_type: PROTOBUF_ALT,
            }),
            JSON => Ok(Format::Json),
            _ => Err(Error::UnsupportedContentType(truncate_for_message(
                &raw, 100,
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf { content_type } => content_type,
            Format::Json => JSON,
        }
    }
}

/// Request body compression, from `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    fn from_headers(headers: &HeaderMap) -> Result<Encoding> {
        let mut tokens = Vec::new();
        for value in headers.get_all(CONTENT_ENCODING) {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            for token in value.split(',') {
                let token = token.trim().to_ascii_lowercase();
                if !token.is_empty() && token != "identity" {
                    tokens.push(token);
                }
            }
        }
        match tokens.as_slice() {
            [] => Ok(Encoding::Identity),
            [one] if one == "gzip" || one == "x-gzip" => Ok(Encoding::Gzip),
            _ => Err(Error::UnsupportedContentEncoding(truncate_for_message(
                &tokens.join(", "),
                100,
            ))),
        }
    }
}

/// Whether `Accept-Encoding` allows a gzipped reply.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
}

async fn export_traces(State(receiver): State<Arc<Receiver>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let gzip_reply = accepts_gzip(&parts.headers);
    let format = match Format::from_headers(&parts.headers) {
        Ok(format) => format,
        Err(e) => {
            drain(body.into_data_stream()).await;
            return reject(&receiver.metrics, Format::Json, gzip_reply, e);
        }
    };
    match export(&receiver, format, &parts.headers, body).await {
        Ok(response) => {
            let body = match format {
                Format::Protobuf { .. } => response.encode_to_vec(),
                Format::Json => encode_json_response(&response),
            };
            reply(StatusCode::OK, format, gzip_reply, body)
        }
        Err(e) => reject(&receiver.metrics, format, gzip_reply, e),
    }
}

async fn export(
    receiver: &Receiver,
    format: Format,
    headers: &HeaderMap,
    body: Body,
) -> Result<ExportTraceServiceResponse> {
    let checked = Encoding::from_headers(headers).and_then(|encoding| {
        let tenant = resolve_tenant(
            headers.get(TENANT_HEADER).map(HeaderValue::as_bytes),
            &receiver.default_tenant,
        )?;
        Ok((encoding, tenant))
    });
    let (encoding, tenant) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            drain(body.into_data_stream()).await;
            return Err(e);
        }
    };
    tracing::Span::current().record("tenant", tenant.as_str());
    let limit = receiver.max_request_bytes;
    let content_length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let raw = read_body(body, limit, content_length).await?;
    let (request, validation) =
        if encoding == Encoding::Identity && raw.len() <= INLINE_DECODE_MAX_BYTES {
            decode_and_validate(format, encoding, raw, limit)?
        } else {
            tokio::task::spawn_blocking(move || decode_and_validate(format, encoding, raw, limit))
                .await
                .map_err(|e| SinkError::Internal(format!("decode task failed: {e}")))??
        };
    deliver(
        receiver.sink.as_ref(),
        &receiver.metrics,
        Protocol::Http,
        &tenant,
        request,
        validation,
    )
    .await
}

/// Reads the whole body, failing with [`Error::TooLarge`] once it passes `limit`.
async fn read_body(body: Body, limit: usize, content_length: Option<u64>) -> Result<Bytes> {
    let mut stream = body.into_data_stream();
    if content_length.is_some_and(|n| n > limit as u64) {
        drain(stream).await;
        return Err(Error::TooLarge { limit });
    }
    let capacity = content_length.map_or(0, |n| usize::try_from(n).unwrap_or(limit).min(limit));
    let mut buf = BytesMut::with_capacity(capacity);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::ReadBody(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            drain(stream).await;
            return Err(Error::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Discards what remains of a rejected body (bounded in bytes and time), so that HTTP/1.1
/// clients still writing it read the error reply rather than a reset connection (hyper itself
/// makes only one read attempt before closing).
async fn drain(mut stream: axum::body::BodyDataStream) {
    let discard = async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len();
            if drained > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _timed_out = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// Inflates (bounded by `limit`), decodes and validates a body. CPU-bound: large bodies run on
/// the blocking pool.
fn decode_and_validate(
    format: Format,
    encoding: Encoding,
    raw: Bytes,
    limit: usize,
) -> Result<(ExportTraceServiceRequest, Validation)> {
    let plain = match encoding {
        Encoding::Identity => raw,
        Encoding::Gzip => Bytes::from(gunzip_bounded(&raw, limit)?),
    };
    let mut request = match format {
        Format::Protobuf { .. } => {
            ExportTraceServiceRequest::decode(plain).map_err(|e| Error::Decode {
                format: "protobuf",
                detail: e.to_string(),
            })?
        }
        Format::Json => decode_json_request(&plain)?,
    };
    let validation = validate(&mut request);
    Ok((request, validation))
}

/// Inflates gzip (concatenated members allowed) without ever holding more than `limit` bytes.
fn gunzip_bounded(compressed: &[u8], limit: usize) -> Result<Vec<u8>> {
    const CHUNK: usize = 64 * 1024;
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Decode {
                    format: "gzip",
                    detail: e.to_string(),
                })
            }
        };
        let needed = out.len() + n;
        if needed > limit {
            return Err(Error::TooLarge { limit });
        }
        if out.capacity() < needed {
            // Grow geometrically, but never past the limit.
            let target = (out.capacity() * 2).max(needed).max(CHUNK).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn decode_json_request(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    tracelake_proto::json::decode_export_request(body).map_err(|e| Error::Decode {
        format: "OTLP JSON",
        detail: e.to_string(),
    })
}

fn encode_json_response(response: &ExportTraceServiceResponse) -> Vec<u8> {
    tracelake_proto::json::encode_export_response(response)
}

/// Counts and renders an error reply.
fn reject(metrics: &IngestMetrics, format: Format, gzip_reply: bool, error: Error) -> Response {
    // Sink failures are counted by `deliver`.
    if !matches!(error, Error::Sink(_)) {
        metrics.record_request(Protocol::Http, error.outcome());
    }
    tracing::debug!(error = %error, "http export failed");
    let reply_info = error.reply();
    let retry_after_secs = reply_info.retry_after.map(ceil_secs);
    let body = status_body(format, &reply_info, retry_after_secs);
    let mut response = reply(reply_info.http, format, gzip_reply, body);
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Whole seconds to wait, rounded up, at least 1.
fn ceil_secs(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.max(1)
}

/// A `google.rpc.Status` body in the request's format.
fn status_body(format: Format, reply: &Reply, retry_after_secs: Option<u64>) -> Vec<u8> {
    let code = reply.grpc as i32;
    match format {
        Format::Protobuf { .. } => {
            let details = retry_after_secs
                .map(|secs| {
                    let info = tonic_types::pb::RetryInfo {
                        retry_delay: Some(prost_types::Duration {
                            seconds: i64::try_from(secs).unwrap_or(i64::MAX),
                            nanos: 0,
                        }),
                    };
                    prost_types::Any {
                        type_url: tonic_types::RetryInfo::TYPE_URL.to_owned(),
                        value: info.encode_to_vec(),
                    }
                })
                .into_iter()
                .collect();
            tonic_types::Status {
                code,
                message: reply.message.clone(),
                details,
            }
            .encode_to_vec()
        }
        Format::Json => {
            let details: Vec<serde_json::Value> = retry_after_secs
                .map(|secs| {
                    serde_json::json!({
                        "@type": tonic_types::RetryInfo::TYPE_URL,
                        "retryDelay": format!("{secs}s"),
                    })
                })
                .into_iter()
                .collect();
            serde_json::json!({ "code": code, "message": reply.message, "details": details })
                .to_string()
                .into_bytes()
        }
    }
}

/// A reply with `body` in `format`, gzipped when the client accepts it.
fn reply(status: StatusCode, format: Format, gzip: bool, body: Vec<u8>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    let body = if gzip {
        match gzip_bytes(&body) {
            Ok(compressed) => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                compressed
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not gzip the reply; sending it uncompressed");
                body
            }
        }
    } else {
        body
    };
    (status, headers, body).into_response()
}

fn gzip_bytes(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn content_types() {
        let f = |v| Format::from_headers(&headers(&[("content-type", v)]));
        assert_eq!(
            f("application/x-protobuf").unwrap(),
            Format::Protobuf {
                content_type: PROTOBUF
            }
        );
        assert_eq!(
            f("Application/Protobuf").unwrap(),
            Format::Protobuf {
                content_type: PROTOBUF_ALT
            }
        );
        assert_eq!(f("application/json; charset=utf-8").unwrap(), Format::Json);
        assert!(matches!(
            f("text/plain"),
            Err(Error::UnsupportedContentType(_))
        ));
        assert!(Format::from_headers(&HeaderMap::new()).is_err());
    }

    #[test]
    fn content_encodings() {
        let f = |v| Encoding::from_headers(&headers(&[("content-encoding", v)]));
        assert_eq!(
            Encoding::from_headers(&HeaderMap::new()).unwrap(),
            Encoding::Identity
        );
        assert_eq!(f("identity").unwrap(), Encoding::Identity);
        assert_eq!(f("GZIP").unwrap(), Encoding::Gzip);
        assert!(matches!(f("br"), Err(Error::UnsupportedContentEncoding(_))));
        assert!(f("gzip, gzip").is_err());
    }

    #[test]
    fn accept_encoding() {
        let f = |v| accepts_gzip(&headers(&[("accept-encoding", v)]));
        assert!(f("gzip"));
        assert!(f("br, gzip;q=0.5"));
        assert!(!f("gzip;q=0"));
        assert!(!f("br, deflate"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let zeros = gzip_bytes(&vec![0u8; 10 * 1024 * 1024]).unwrap();
        assert!(matches!(
            gunzip_bounded(&zeros, 1024 * 1024),
            Err(Error::TooLarge { limit }) if limit == 1024 * 1024
        ));
        let exact = gzip_bytes(&[7u8; 1000]).unwrap();
        assert_eq!(gunzip_bounded(&exact, 1000).unwrap(), vec![7u8; 1000]);
        assert!(matches!(
            gunzip_bounded(b"not gzip at all", 1000),
            Err(Error::Decode { format: "gzip", .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            for format in [Format::Json, Format::Protobuf { content_type: PROTOBUF }] {
                let _ = decode_and_validate(format, Encoding::Identity, Bytes::from(body.clone()), 4096);
                let _ = decode_and_validate(format, Encoding::Gzip, Bytes::from(body.clone()), 4096);
                if let Ok(zipped) = gzip_bytes(&body) {
                    let _ = decode_and_validate(format, Encoding::Gzip, Bytes::from(zipped), 4096);
                }
            }
        }
    }
}
