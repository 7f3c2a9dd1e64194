//! Prometheus counters of the receivers.
//!
//! Exposed as `tracelake_ingest_spans_{received,accepted,rejected}_total{protocol}` and
//! `tracelake_ingest_requests_total{protocol,outcome}`.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Which receiver handled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP (protobuf or JSON).
    Http,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every span was accepted (or the request was empty).
    Success,
    /// Some spans were invalid and dropped; the rest were accepted.
    PartialSuccess,
    /// Bad tenant or undecodable body.
    Invalid,
    /// Over the size limit.
    TooLarge,
    /// Unsupported content type or encoding (HTTP only).
    Unsupported,
    /// The sink was overloaded; the client was told to retry later.
    Overloaded,
    /// The sink was temporarily unavailable.
    Unavailable,
    /// A server-side failure.
    Internal,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::PartialSuccess => "partial_success",
            Outcome::Invalid => "invalid",
            Outcome::TooLarge => "too_large",
            Outcome::Unsupported => "unsupported",
            Outcome::Overloaded => "overloaded",
            Outcome::Unavailable => "unavailable",
            Outcome::Internal => "internal",
        }
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    protocol: Protocol,
    outcome: Outcome,
}

/// Counters shared by both receivers. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    spans_received: Family<ProtocolLabels, Counter>,
    spans_accepted: Family<ProtocolLabels, Counter>,
    spans_rejected: Family<ProtocolLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
}

impl IngestMetrics {
    /// Creates the counters and registers them under the `tracelake_ingest` prefix.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("tracelake_ingest");
        registry.register(
            "spans_received",
            "Spans decoded from export requests, valid or not",
            metrics.spans_received.clone(),
        );
        registry.register(
            "spans_accepted",
            "Spans handed to the pipeline and acknowledged",
            metrics.spans_accepted.clone(),
        );
        registry.register(
            "spans_rejected",
            "Spans dropped by validation (reported as partial success)",
            metrics.spans_rejected.clone(),
        );
        registry.register(
            "requests",
            "Export requests by protocol and outcome",
            metrics.requests.clone(),
        );
        Arc::new(metrics)
    }

    /// Counters that are not exported anywhere (tests, tools).
    pub fn unregistered() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Spans decoded by `protocol`, valid or not.
    pub fn spans_received(&self, protocol: Protocol) -> u64 {
        self.spans_received
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    /// Spans accepted by the sink via `protocol`.
    pub fn spans_accepted(&self, protocol: Protocol) -> u64 {
        self.spans_accepted
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    /// Spans dropped by validation via `protocol`.
    pub fn spans_rejected(&self, protocol: Protocol) -> u64 {
        self.spans_rejected
            .get_or_create(&ProtocolLabels { protocol })
            .get()
    }

    /// Requests via `protocol` that ended with `outcome`.
    pub fn requests(&self, protocol: Protocol, outcome: Outcome) -> u64 {
        self.requests
            .get_or_create(&RequestLabels { protocol, outcome })
            .get()
    }

    pub(crate) fn record_validation(&self, protocol: Protocol, accepted: u64, rejected: u64) {
        let labels = ProtocolLabels { protocol };
        self.spans_received
            .get_or_create(&labels)
            .inc_by(accepted + rejected);
        if rejected > 0 {
            self.spans_rejected.get_or_create(&labels).inc_by(rejected);
        }
    }

    pub(crate) fn record_accepted(&self, protocol: Protocol, accepted: u64) {
        self.spans_accepted
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(accepted);
    }

    pub(crate) fn record_request(&self, protocol: Protocol, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels { protocol, outcome })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_counters_are_exposed_with_labels() {
        let mut registry = Registry::default();
        let metrics = IngestMetrics::register(&mut registry);
        metrics.record_validation(Protocol::Grpc, 3, 2);
        metrics.record_accepted(Protocol::Grpc, 3);
        metrics.record_request(Protocol::Http, Outcome::PartialSuccess);

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("tracelake_ingest_spans_received_total{protocol=\"grpc\"} 5"));
        assert!(text.contains("tracelake_ingest_spans_accepted_total{protocol=\"grpc\"} 3"));
        assert!(text.contains("tracelake_ingest_spans_rejected_total{protocol=\"grpc\"} 2"));
        assert!(text.contains(
            "tracelake_ingest_requests_total{protocol=\"http\",outcome=\"partial_success\"} 1"
        ));
        assert_eq!(metrics.requests(Protocol::Http, Outcome::PartialSuccess), 1);
    }
}
