//! tracelake query layer: DataFusion over each tenant's spans.
//!
//! ```text
//!  SQL text ──> guard::check (read-only) ──> SessionContext (per tenant) ──> collect
//!                                               │
//!                     spans = Delta table (pruned by partition, stats, bloom filter)
//!                             ∪ write buffer (spans acknowledged but not yet flushed)
//! ```
//!
//! The guard is usable on its own:
//!
//! ```
//! use tracelake_query::guard;
//! assert!(guard::check("SELECT count(*) FROM spans").is_ok());
//! assert!(guard::check("DROP TABLE spans").is_err());
//! ```

mod engine;
mod error;
mod functions;
pub mod guard;
pub mod jaeger;
pub mod metrics;
mod percentile;
mod pg_catalog;
mod provider;
pub mod red;
pub mod search;
pub mod sketch;
pub mod slo;
pub mod tags;
pub mod traceql;
mod views;

pub use engine::{parse_trace_id, QueryConfig, QueryEngine, QueryOutput, SqlStream, TimeRange};
pub use error::{Error, Result};
pub use pg_catalog::server_setting;
