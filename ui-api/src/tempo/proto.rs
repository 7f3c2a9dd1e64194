//! The `tempopb` messages of `/api/v2/traces/{id}`, defined by hand after Tempo's
//! `pkg/tempopb/tempo.proto` (field numbers are the wire contract):
//!
//! ```text
//! message TraceByIDResponse { Trace trace = 1; TraceByIDMetrics metrics = 2;
//!                             PartialStatus status = 3; string message = 4; }
//! message Trace { repeated tempopb.trace.v1.ResourceSpans resourceSpans = 1; }
//! enum PartialStatus { COMPLETE = 0; PARTIAL = 1; }
//! ```
//!
//! `Trace` has the same bytes as OTLP `TracesData`.

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// `tempopb.Trace`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Trace {
    /// The spans, grouped by resource and scope.
    #[prost(message, repeated, tag = "1")]
    pub(crate) resource_spans: Vec<ResourceSpans>,
}

/// `tempopb.TraceByIDMetrics`: tracelake reports no per-lookup metrics, so it stays empty
/// (readers skip fields they do not know, and find none here).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct TraceByIdMetrics {}

/// `tempopb.PartialStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum PartialStatus {
    /// Every span of the trace that the store holds is in the response.
    Complete = 0,
    /// Some spans may be missing (never produced by tracelake today).
    Partial = 1,
}

impl PartialStatus {
    /// The protobuf-JSON spelling of the value.
    pub(crate) fn json_name(self) -> &'static str {
        match self {
            PartialStatus::Complete => "COMPLETE",
            PartialStatus::Partial => "PARTIAL",
        }
    }
}

/// `tempopb.TraceByIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TraceByIdResponse {
    /// The trace.
    #[prost(message, optional, tag = "1")]
    pub(crate) trace: Option<Trace>,
    /// Lookup metrics (empty).
    #[prost(message, optional, tag = "2")]
    pub(crate) metrics: Option<TraceByIdMetrics>,
    /// Whether the trace is complete.
    #[prost(enumeration = "PartialStatus", tag = "3")]
    pub(crate) status: i32,
    /// Why the trace is partial, when it is.
    #[prost(string, tag = "4")]
    pub(crate) message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, TracesData};
    use prost::Message;

    #[test]
    fn trace_has_the_bytes_of_traces_data_and_the_response_decodes() {
        let resource_spans = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![1; 8],
                    name: "GET /".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let trace = Trace {
            resource_spans: resource_spans.clone(),
        };
        let data = TracesData {
            resource_spans: resource_spans.clone(),
        };
        assert_eq!(trace.encode_to_vec(), data.encode_to_vec());

        let response = TraceByIdResponse {
            trace: Some(trace),
            metrics: Some(TraceByIdMetrics {}),
            status: PartialStatus::Partial as i32,
            message: "some blocks failed".into(),
        };
        let decoded = TraceByIdResponse::decode(response.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, response);
        assert_eq!(decoded.status(), PartialStatus::Partial);
        // Field 1 is the trace, a length-delimited message: tag byte 0x0a.
        assert_eq!(response.encode_to_vec()[0], 0x0a);
    }
}
