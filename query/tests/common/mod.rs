//! Helpers shared by the query crate's integration tests: a storage engine on a temporary
//! directory, and appending OTLP spans to it as a real export would.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use tracelake_storage::{Storage, StorageConfig, StorageLocation, StorageMetrics};

/// A storage engine with its tables and WAL under `dir`.
pub(crate) async fn open(dir: &std::path::Path) -> Arc<Storage> {
    let location =
        StorageLocation::parse(dir.join("tables").to_str().unwrap(), HashMap::new()).unwrap();
    let config = StorageConfig::for_location(location, dir.join("wal"));
    Storage::open(config, Arc::new(StorageMetrics::default()), &mut |_| {
        Ok(None)
    })
    .await
    .unwrap()
}

/// Appends `traces` for tenant `default`, through the WAL into the buffer.
pub(crate) async fn append(storage: &Storage, traces: Vec<ResourceSpans>) {
    let batch = tracelake_proto::resource_spans_to_batch(&traces).unwrap();
    let wal = ExportTraceServiceRequest {
        resource_spans: traces,
    }
    .encode_to_vec();
    storage.append("default", wal, Some(batch)).await.unwrap();
}
