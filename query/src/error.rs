//! The query crate's error type.

use datafusion::error::DataFusionError;

/// Errors from the query layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL guard refused the statement.
    #[error("{0}")]
    Refused(String),
    /// The SQL text does not parse.
    #[error("sql parse error: {0}")]
    Parse(String),
    /// Planning or execution failed because of the query (unknown column, type error, ...).
    #[error("{0}")]
    Query(DataFusionError),
    /// The query ran longer than the configured timeout.
    #[error("query exceeded the {0:?} timeout: narrow the time range or add filters")]
    Timeout(std::time::Duration),
    /// Reading storage failed.
    #[error("storage: {0}")]
    Storage(#[from] tracelake_storage::Error),
    /// A TraceQL query does not parse.
    #[error("invalid TraceQL: {0}")]
    TraceQl(#[from] crate::traceql::ParseError),
    /// A valid query asks for something tracelake cannot do (yet), or compares values that
    /// cannot be compared.
    #[error("unsupported query: {0}")]
    Unsupported(String),
    /// A request's parameters are out of range; the message says which and why.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A SQL result has more rows than the configured limit; the rows before the cut were
    /// delivered.
    #[error(
        "the result has more than {0} rows (query.max_rows): add a LIMIT, filter or aggregate"
    )]
    RowLimit(usize),
    /// A query needed more memory than one query may hold.
    #[error("{0}")]
    OutOfMemory(String),
    /// Too many queries at once; retry later.
    #[error("{0}")]
    Busy(String),
    /// The request names something that does not exist (an SLO, ...).
    #[error("{0}")]
    NotFound(String),
    /// A trace id is not 1-32 hex digits.
    #[error("invalid trace id {0:?}: expected up to 32 hex digits")]
    InvalidTraceId(String),
    /// Something broke inside the query engine.
    #[error("internal query error: {0}")]
    Internal(String),
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        match e {
            DataFusionError::SQL(e, _) => Error::Parse(e.to_string()),
            DataFusionError::External(inner) => {
                match inner.downcast::<tracelake_storage::Error>() {
                    Ok(storage) => Error::Storage(*storage),
                    Err(other) => Error::Query(DataFusionError::External(other)),
                }
            }
            DataFusionError::Context(ctx, inner) => match Error::from(*inner) {
                Error::Query(q) => Error::Query(DataFusionError::Context(ctx, Box::new(q))),
                other => other,
            },
            other => Error::Query(other),
        }
    }
}

impl Error {
    /// True when the client's request is at fault (a 4xx), false for server faults.
    pub fn is_client_error(&self) -> bool {
        match self {
            Error::Refused(_)
            | Error::Parse(_)
            | Error::TraceQl(_)
            | Error::Unsupported(_)
            | Error::InvalidTraceId(_)
            | Error::InvalidRequest(_)
            | Error::RowLimit(_)
            | Error::OutOfMemory(_)
            | Error::Timeout(_) => true,
            Error::Query(e) => matches!(
                e.find_root(),
                DataFusionError::Plan(_)
                    | DataFusionError::SchemaError(..)
                    | DataFusionError::NotImplemented(_)
                    | DataFusionError::SQL(..)
                    | DataFusionError::ResourcesExhausted(_)
            ),
            Error::Storage(tracelake_storage::Error::InvalidTenant(_)) => true,
            Error::Storage(_) | Error::Internal(_) => false,
            Error::NotFound(_) | Error::Busy(_) => true,
        }
    }
}

/// Result alias for the query crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
