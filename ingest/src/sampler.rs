//! The sampling seam. Spans pass through a [`Sampler`] after they are durable in the WAL and
//! before they reach the write buffer; the sampler stamps every kept span with its
//! `adjusted_count` (1 / keep probability) and `sampling_rule`.
//!
//! Until tail sampling lands, [`KeepAll`] keeps every span with `adjusted_count = 1`.

use arrow::array::RecordBatch;

/// Decides which spans are kept.
pub trait Sampler: Send + Sync + 'static {
    /// Returns the kept spans of one request (for one tenant), stamped with their adjusted
    /// counts. Must be deterministic for a WAL replay to reach the same decisions.
    fn sample(&self, tenant: &str, spans: RecordBatch) -> RecordBatch;
}

/// Keeps every span, each counting once.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepAll;

impl Sampler for KeepAll {
    fn sample(&self, _tenant: &str, spans: RecordBatch) -> RecordBatch {
        // `resource_spans_to_batch` already sets adjusted_count = 1.0 and sampling_rule = null.
        spans
    }
}
