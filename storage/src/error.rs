//! The storage crate's error type.

use crate::wal::WalError;

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage URL or its options are unusable.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] WalError),
    /// A Delta Lake operation failed.
    #[error("delta table {table}: {source}")]
    Delta {
        /// The table URL.
        table: String,
        /// The underlying error.
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
    /// Converting spans between OTLP and Arrow failed.
    #[error("span conversion: {0}")]
    Proto(#[from] tracelake_proto::Error),
    /// An Arrow compute kernel failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Decoding a WAL record's payload failed.
    #[error("wal record {seq} is not a valid OTLP request: {message}")]
    Decode {
        /// The record's sequence number.
        seq: u64,
        /// What went wrong.
        message: String,
    },
    /// The tenant id is not acceptable.
    #[error("invalid tenant id {0:?}: use 1-64 characters from [A-Za-z0-9_-]")]
    InvalidTenant(String),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The storage engine is shutting down.
    #[error("storage is shutting down")]
    ShuttingDown,
}

/// Result alias for the storage crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn delta(table: &url::Url, source: deltalake::DeltaTableError) -> Self {
        Error::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }
}
