//! End-to-end tests: the real `tracelake` binary on port-0 listeners, driven by real clients
//! (the OpenTelemetry SDK's OTLP exporters, the generated OTLP gRPC client, HTTP).

#[allow(dead_code)]
#[path = "../../benches/common/mod.rs"]
mod common;
mod compaction;
mod data;
mod defaults;
mod delta_readers;
mod durability;
mod errors;
mod flight;
mod jaeger;
mod metrics;
mod openapi;
mod otlp;
mod pg;
mod python_clients;
mod red;
mod s3;
mod sampling;
mod server;
mod slo;
mod sql_guard;
mod sql_http;
mod sql_tables;
mod tempo;
mod traceql;
