//! The ingest pipeline behind the receivers: WAL append (the ack point), sampling, buffering.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use prost::Message;
use tracelake_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use tracelake_proto::resource_spans_to_batch;
use tracelake_storage::wal::WalRecord;
use tracelake_storage::Storage;
use tracing::error;

use crate::sampling::TailSampler;
use crate::{SinkError, SpanSink};

/// How long clients are asked to wait when the buffer is over its memory limit.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(2);

/// The [`SpanSink`] of a running server: every exported request is converted to Arrow and split
/// by trace, written to the WAL (the request is acknowledged only once that is fsynced), and
/// handed to the tail sampler, which buffers decided spans for commit.
pub struct Pipeline {
    storage: Arc<Storage>,
    sampler: Arc<TailSampler>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline writing to `storage` through `sampler`.
    pub fn new(storage: Arc<Storage>, sampler: Arc<TailSampler>) -> Self {
        Self { storage, sampler }
    }

    /// The function that replays WAL records on start: logged decisions are remembered, and
    /// spans go through the sampler again (a trace decided before the crash gets the same
    /// decision).
    pub fn replay_fn(
        sampler: Arc<TailSampler>,
    ) -> impl FnMut(&WalRecord) -> tracelake_storage::Result<Option<RecordBatch>> + Send {
        move |record: &WalRecord| sampler.replay(record)
    }
}

#[async_trait::async_trait]
impl SpanSink for Pipeline {
    async fn export(
        &self,
        tenant: &str,
        request: ExportTraceServiceRequest,
    ) -> Result<(), SinkError> {
        if self.storage.overloaded() || self.sampler.overloaded() {
            return Err(SinkError::Overloaded {
                retry_after: OVERLOAD_RETRY_AFTER,
            });
        }
        // Encoding and Arrow conversion are CPU work: keep them off the IO threads.
        let sampler = Arc::clone(&self.sampler);
        let owned_tenant = tenant.to_string();
        let prepare_sampler = Arc::clone(&sampler);
        let converted = tokio::task::spawn_blocking(move || {
            let batch = resource_spans_to_batch(&request.resource_spans)?;
            let prepared = prepare_sampler.prepare(batch)?;
            Ok::<_, tracelake_proto::Error>((request.encode_to_vec(), prepared))
        })
        .await;
        let (wal_data, prepared) = match converted {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(SinkError::Internal(format!("converting spans: {e}"))),
            Err(e) => return Err(SinkError::Internal(format!("conversion task: {e}"))),
        };
        let admit = Box::new(move |seq| sampler.admit(&owned_tenant, seq, prepared));
        match self.storage.append_with(tenant, wal_data, admit).await {
            Ok(_) => Ok(()),
            Err(tracelake_storage::Error::ShuttingDown) => {
                Err(SinkError::Unavailable("server is shutting down".into()))
            }
            Err(e) => {
                error!(error = %e, tenant, "write-ahead log append failed");
                Err(SinkError::Unavailable(
                    "write-ahead log unavailable; retry later".into(),
                ))
            }
        }
    }
}
