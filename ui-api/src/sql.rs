//! `POST /api/sql`: the body is one read-only SQL statement.

use arrow::array::RecordBatch;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::{tenant_from_headers, ApiError, ApiState};

/// Output format of `/api/sql`.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// A JSON array of row objects.
    #[default]
    Json,
    /// CSV with a header row.
    Csv,
    /// An Arrow IPC stream.
    Arrow,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SqlParams {
    #[serde(default)]
    format: Format,
}

pub(crate) async fn sql(
    State(state): State<ApiState>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, ApiError> {
    let tenant = tenant_from_headers(&headers);
    let out = state.engine.sql(&tenant, &body).await?;
    let truncated = if out.truncated { "true" } else { "false" };
    let encoded =
        tokio::task::spawn_blocking(move || encode(params.format, &out.schema, &out.batches))
            .await
            .map_err(|e| ApiError::Internal(format!("encoding task: {e}")))?
            .map_err(|e| ApiError::Internal(format!("encoding result: {e}")))?;
    let content_type = match params.format {
        Format::Json => "application/json",
        Format::Csv => "text/csv",
        Format::Arrow => "application/vnd.apache.arrow.stream",
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::HeaderName::from_static("x-tracelake-truncated"),
                truncated,
            ),
        ],
        encoded,
    )
        .into_response())
}

fn encode(
    format: Format,
    schema: &arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    match format {
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(buf)
}
