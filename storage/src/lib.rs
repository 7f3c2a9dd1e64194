//! tracelake storage: the write-ahead log, the per-tenant write buffer, Parquet writing and
//! Delta Lake commits.
//!
//! ```text
//! request ──> Wal::append (group-commit fsync) ──> ack
//!                  │ (in seq order, before fsync)
//!                  v
//!        per-tenant buffer (Arrow, queryable at once)
//!                  │ every flush_interval or flush_bytes
//!                  v
//!   sort by (trace_id, start) ──> Parquet (zstd, bloom filter on trace_id, page index)
//!                  │ one Delta commit per tenant, carrying txn(app_id, max wal seq)
//!                  v
//!        <root>/tenants/<tenant>/spans   ──> WAL truncated through the committed seq
//! ```
//!
//! A storage location comes from a URL:
//!
//! ```
//! use std::collections::HashMap;
//! use tracelake_storage::StorageLocation;
//!
//! let loc = StorageLocation::parse("s3://bucket/traces", HashMap::new()).unwrap();
//! let url = loc.table_url("default", "spans").unwrap();
//! assert_eq!(url.as_str(), "s3://bucket/traces/tenants/default/spans");
//! ```

pub mod compact;
mod engine;
mod error;
mod metrics;
pub mod rollup;
pub mod sketch;
mod store;
pub mod table;
pub mod trace_index;
pub mod wal;

pub use compact::{CompactionConfig, CompactionStats};
pub use engine::{
    FlushStats, HoldFn, ReplayFn, Storage, StorageConfig, TenantSnapshot, SPANS_DATASET,
    SYSTEM_STREAM_PREFIX,
};
pub use error::{Error, Result};
pub use metrics::StorageMetrics;
pub use store::{validate_tenant, StorageLocation};
