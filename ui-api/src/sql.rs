//! `POST /api/sql`: the body is one read-only SQL statement.

use arrow::array::RecordBatch;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::openapi::{ErrorBody, QueryErrors, TenantHeader};
use crate::{tenant_from_headers, ApiError, ApiState};

/// Output format of `/api/sql`.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq, ToSchema)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SqlParams {
    /// `json` (an array of row objects, the default), `csv` (with a header row) or `arrow`
    /// (an Arrow IPC stream).
    #[serde(default)]
    #[param(inline)]
    format: Format,
}

/// `POST /api/sql`.
#[utoipa::path(
    post,
    path = "/api/sql",
    tag = "sql",
    summary = "Read-only SQL over the tenant's spans",
    description = "The body is one read-only SQL statement over the `spans` table (DataFusion \
                   SQL). Results are capped by the configured row limit; the \
                   `X-Tracelake-Truncated` header says whether rows were left out.",
    params(SqlParams, TenantHeader),
    request_body(
        content = String,
        content_type = "text/plain",
        description = "One read-only SQL statement",
        example = "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name"
    ),
    responses(
        (status = 200, description = "The result rows in the requested format",
         headers(("X-Tracelake-Truncated" = String, description = "`true` when the row limit cut the result, else `false`")),
         content(
            (Vec<Object> = "application/json", example = json!([{"service_name": "cart", "spans": 1234}])),
            (String = "text/csv", example = "service_name,spans\ncart,1234\n"),
            (Vec<u8> = "application/vnd.apache.arrow.stream")
         )),
        (status = 400, description = "Not one read-only statement, a SQL error (with its `position` when the parser gives one), or over the memory limit; the message says which", body = ErrorBody),
        (status = 429, description = "The tenant already runs `query.sql_max_concurrent` queries; retry after the `Retry-After` seconds", body = ErrorBody),
        QueryErrors,
    )
)]
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
