//! `POST /api/sql`: the body is one read-only SQL statement.
//!
//! `format=json` (the default) answers one JSON array, cut at the row limit with
//! `X-Tracelake-Truncated: true`. `jsonl`, `csv` and `arrow` stream: rows go out as the query
//! produces them, encoded on the query runtime. A streamed query that fails after its first rows
//! (the row limit, the timeout) ends a `jsonl` body with an `{"error": ...}` line and cuts a
//! `csv` or `arrow` body short, so the client sees a broken transfer rather than a silent cut.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
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
    /// One JSON object per line, streamed.
    Jsonl,
    /// CSV with a header row, streamed.
    Csv,
    /// An Arrow IPC stream, streamed.
    Arrow,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SqlParams {
    /// `json` (an array of row objects, the default; cut at the row limit), or streamed:
    /// `jsonl` (one object per line), `csv` (with a header row) or `arrow` (an Arrow IPC stream).
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
                   SQL). `format=json` results are capped by the configured row limit; the \
                   `X-Tracelake-Truncated` header says whether rows were left out. `jsonl`, \
                   `csv` and `arrow` stream rows as they are produced; a query failing \
                   midway (more rows than the limit, the timeout) ends a `jsonl` stream \
                   with an `{\"error\": ...}` line and cuts a `csv` or `arrow` stream short.",
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
            (String = "application/x-ndjson", example = "{\"service_name\":\"cart\",\"spans\":1234}\n"),
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
    if params.format != Format::Json {
        return stream(&state, &tenant, &body, params.format).await;
    }
    let out = state.engine.sql(&tenant, &body).await?;
    let truncated = if out.truncated { "true" } else { "false" };
    let encoded = tokio::task::spawn_blocking(move || encode_json(&out.batches))
        .await
        .map_err(|e| ApiError::Internal(format!("encoding task: {e}")))?
        .map_err(|e| ApiError::Internal(format!("encoding result: {e}")))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type(params.format)),
            (
                header::HeaderName::from_static("x-tracelake-truncated"),
                truncated,
            ),
        ],
        encoded,
    )
        .into_response())
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Jsonl => "application/x-ndjson",
        Format::Csv => "text/csv",
        Format::Arrow => "application/vnd.apache.arrow.stream",
    }
}

/// A piece of a streamed result.
enum Part {
    Start,
    Batch(RecordBatch),
}

/// Encodes one streamed format batch by batch.
struct StreamEncoder {
    format: Format,
    rows: usize,
    arrow: Option<arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl StreamEncoder {
    fn new(format: Format, schema: &arrow::datatypes::SchemaRef) -> Result<Self, ArrowError> {
        let arrow = match format {
            Format::Arrow => Some(arrow::ipc::writer::StreamWriter::try_new(
                Vec::new(),
                schema,
            )?),
            _ => None,
        };
        Ok(Self {
            format,
            rows: 0,
            arrow,
        })
    }

    /// The bytes before the first batch: the CSV header (even for no rows), the Arrow schema.
    fn start(&mut self, schema: &arrow::datatypes::SchemaRef) -> Result<Vec<u8>, ArrowError> {
        match self.format {
            Format::Csv => {
                let mut buf = Vec::new();
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf)
                    .write(&RecordBatch::new_empty(Arc::clone(schema)))?;
                Ok(buf)
            }
            Format::Arrow => Ok(self.take_arrow()),
            Format::Json | Format::Jsonl => Ok(Vec::new()),
        }
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
        self.rows += batch.num_rows();
        let mut buf = Vec::new();
        match self.format {
            Format::Jsonl | Format::Json => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                w.write(batch)?;
                w.finish()?;
            }
            Format::Csv => {
                arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .build(&mut buf)
                    .write(batch)?;
            }
            Format::Arrow => {
                if let Some(w) = self.arrow.as_mut() {
                    w.write(batch)?;
                }
                buf = self.take_arrow();
            }
        }
        Ok(buf)
    }

    fn finish(&mut self) -> Result<Vec<u8>, ArrowError> {
        if let Some(w) = self.arrow.as_mut() {
            w.finish()?;
            return Ok(self.take_arrow());
        }
        Ok(Vec::new())
    }

    /// The end of a stream the query broke off: a `jsonl` error line; the other formats cut
    /// the transfer, so it does not look complete.
    fn fail(&self, message: String) -> Result<Bytes, std::io::Error> {
        tracing::info!(error = %message, rows = self.rows, "sql stream ended early");
        if self.format != Format::Jsonl {
            return Err(std::io::Error::other(message));
        }
        let mut line =
            serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
        line.push(b'\n');
        Ok(Bytes::from(line))
    }

    fn take_arrow(&mut self) -> Vec<u8> {
        self.arrow
            .as_mut()
            .map(|w| std::mem::take(w.get_mut()))
            .unwrap_or_default()
    }
}

/// Streams a query's rows in `format`; errors before the first byte are ordinary error
/// responses.
async fn stream(
    state: &ApiState,
    tenant: &str,
    sql: &str,
    format: Format,
) -> Result<Response, ApiError> {
    let batches = state.engine.sql_stream(tenant, sql, None).await?;
    let schema = batches.schema();
    let encoder = StreamEncoder::new(format, &schema)
        .map_err(|e| ApiError::Internal(format!("encoding result: {e}")))?;
    // The start (the CSV header or the Arrow schema), then the batches, then the end: the
    // Arrow end-of-stream marker, or the error that stopped the query.
    let parts = futures::stream::once(futures::future::ready(Ok(Part::Start)))
        .chain(batches.map(|b| b.map(Part::Batch)));
    let chunks = futures::stream::unfold(Some((encoder, Box::pin(parts))), move |state| {
        let schema = Arc::clone(&schema);
        async move {
            let (mut encoder, mut parts) = state?;
            let chunk = match parts.next().await {
                Some(Ok(Part::Start)) => encoder.start(&schema),
                Some(Ok(Part::Batch(batch))) => encoder.batch(&batch),
                Some(Err(e)) => return Some((encoder.fail(e.to_string()), None)),
                None => {
                    let end = encoder.finish().map(Bytes::from).map_err(encoding);
                    return Some((end, None));
                }
            };
            match chunk {
                Ok(c) => Some((Ok(Bytes::from(c)), Some((encoder, parts)))),
                Err(e) => Some((Err(encoding(e)), None)),
            }
        }
    });
    let body = state.engine.drive(chunks)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type(format))],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

fn encoding(e: ArrowError) -> std::io::Error {
    std::io::Error::other(format!("encoding result: {e}"))
}

/// The JSON array of `format=json`.
fn encode_json(batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut buf = Vec::new();
    let mut w = arrow::json::ArrayWriter::new(&mut buf);
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    if buf.is_empty() {
        buf.extend_from_slice(b"[]");
    }
    Ok(buf)
}
