//! The crate's error type.

use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// Everything that can go wrong converting spans between OTLP, Arrow and OTLP/JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Arrow rejected an array or batch while building or reading one.
    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),

    /// The spans would overflow Arrow's 2 GiB limit for one variable-length column.
    #[error(
        "span data of about {bytes} bytes does not fit in one arrow batch (2 GiB per column); \
         split it into smaller export requests"
    )]
    BatchTooLarge {
        /// Estimated protobuf bytes of the spans, resources and scopes (repeated per span).
        bytes: usize,
    },

    /// A column that decoding cannot do without is absent from the batch.
    #[error("batch has no `{column}` column; select it (and the other span columns) before converting rows back to OTLP")]
    MissingColumn {
        /// Name of the missing column.
        column: &'static str,
    },

    /// A column exists but its type cannot be converted to the canonical one.
    #[error("column `{column}` has type {found}, which cannot be read as {expected}: {reason}")]
    ColumnType {
        /// Column path, nested fields joined with `.`.
        column: String,
        /// The type in the batch.
        found: DataType,
        /// The canonical type from the span schema.
        expected: DataType,
        /// Why the conversion failed.
        reason: String,
    },

    /// A stored value cannot be turned back into OTLP.
    #[error("column `{column}`, row {row}: {reason}")]
    InvalidValue {
        /// Column path.
        column: String,
        /// Row index within its batch.
        row: usize,
        /// What is wrong with the value.
        reason: String,
    },

    /// An OTLP/JSON body could not be decoded; the message says where and why.
    #[error("invalid OTLP/JSON request: {0}")]
    Json(#[from] serde_json::Error),

    /// Protobuf-encoding a nested attribute value failed (only if memory runs out).
    #[error("could not encode an attribute value: {0}")]
    ProtobufEncode(#[from] prost::EncodeError),
}

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
