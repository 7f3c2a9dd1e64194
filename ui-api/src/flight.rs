//! Arrow Flight SQL on `--flight-addr`: read-only SQL through the engine's guard.
//!
//! ```text
//!  GetFlightInfo(CommandStatementQuery)  plan (guard) ──> FlightInfo { schema, ticket }
//!  DoGet(ticket)                          QueryEngine::sql_stream ──> Arrow batches as they come
//!  DoAction(CreatePreparedStatement)      plan ──> handle, dataset schema, parameter schema
//!  DoPut(CommandPreparedStatementQuery)   one row of parameters ──> a new handle carrying them
//!  GetCatalogs, GetDbSchemas, GetTables, GetTableTypes, GetSqlInfo   the tenant's catalog
//! ```
//!
//! - **Tenant**: the `x-scope-orgid` header of each call (default `default`), as on HTTP.
//!   Tickets and prepared-statement handles carry the tenant they were made for, and are
//!   refused under another one.
//! - **Stateless statements**: a ticket or handle is the tenant, the SQL and the bound
//!   parameters (an Arrow IPC row), so nothing is kept per client; binding parameters answers
//!   with a new handle (Flight SQL's `DoPutPreparedStatementResult`), which clients use from
//!   then on.
//! - **Read-only**: updates, bulk ingest, Substrait plans and transactions are refused with a
//!   message saying so; every query passes [`QueryEngine::sql_stream`]'s guard and limits.
//! - **Authentication** ([`SqlAuth`]): when tokens are configured, every call carries
//!   `authorization: Bearer <token>`; `Handshake` also takes basic auth (any user, the token as
//!   password) and answers with the bearer token in its `authorization` header.
//! - **Errors**: the one mapping of [`ApiError`] (its HTTP status becomes the gRPC code), so a
//!   Flight client reads the same message as an HTTP one, and internal details stay in the log.

// tonic's `Status`, the error of every gRPC call, is larger than clippy likes errors to be.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    ActionEndSavepointRequest, ActionEndTransactionRequest, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementSubstraitPlan, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, SqlSupportedTransaction,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::catalog::SchemaProvider;
use datafusion::common::{ParamValues, TableReference};
use datafusion::datasource::TableType;
use datafusion::scalar::ScalarValue;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::InterceptorLayer;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracelake_query::QueryEngine;

use crate::{ApiError, SqlAuth, TENANT_HEADER};

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<QueryEngine>,
    auth: SqlAuth,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = FlightSql {
        engine,
        auth: auth.clone(),
    };
    let authenticate = move |req: Request<()>| authenticate(&auth, req);
    // Refused calls are the client's business (internal errors are logged where they happen).
    let trace = tower_http::trace::TraceLayer::new_for_grpc()
        .make_span_with(|req: &http::Request<tonic::body::Body>| {
            tracing::debug_span!("request", listener = "flight", method = %req.uri().path())
        })
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG));
    let layers = tower::ServiceBuilder::new()
        .layer(trace)
        .map_request(mark_handshake)
        .layer(InterceptorLayer::new(authenticate));
    let service = FlightServiceServer::new(service).accept_compressed(CompressionEncoding::Gzip);
    tonic::transport::Server::builder()
        .layer(layers)
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(std::io::Error::other)
}

/// The Flight SQL service over the query engine.
struct FlightSql {
    engine: Arc<QueryEngine>,
    auth: SqlAuth,
}

/// The stream [`FlightService::do_get`] answers with.
type DoGetStream = <FlightSql as FlightService>::DoGetStream;

// ---------------------------------------------------------------------------------------------
// Authentication and the tenant

/// The gRPC path of `Handshake`, the one call that takes basic auth.
const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// Marks a `Handshake` call (tonic requests do not keep their path for interceptors).
#[derive(Debug, Clone, Copy)]
struct IsHandshake;

fn mark_handshake(mut req: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
    if req.uri().path() == HANDSHAKE_PATH {
        req.extensions_mut().insert(IsHandshake);
    }
    req
}

const HOW_TO_AUTHENTICATE: &str = "send `authorization: Bearer <token>` with a token from the \
     server's [auth] tokens, or handshake first with basic auth (any user name, the token as \
     password)";

/// The `authorization` header of a call.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    /// `Bearer <token>`.
    Bearer(String),
    /// `Basic base64(user:password)`: the password.
    Basic(String),
}

/// Reads the `authorization` header: none, bearer or basic; anything else is refused.
fn credentials(metadata: &MetadataMap) -> Result<Option<Credentials>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let unreadable = || {
        Status::unauthenticated(format!(
            "the authorization header is neither `Bearer <token>` nor basic auth: \
             {HOW_TO_AUTHENTICATE}"
        ))
    };
    let value = value.to_str().map_err(|_| unreadable())?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(unreadable)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(Credentials::Bearer(rest.to_string())))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest).ok_or_else(unreadable)?;
        let decoded = String::from_utf8(decoded).map_err(|_| unreadable())?;
        let (_user, password) = decoded.split_once(':').ok_or_else(unreadable)?;
        Ok(Some(Credentials::Basic(password.to_string())))
    } else {
        Err(unreadable())
    }
}

/// The interceptor of every call: with tokens configured, a call must present an accepted
/// bearer token (or, for `Handshake`, basic auth with the token as password).
fn authenticate(auth: &SqlAuth, req: Request<()>) -> Result<Request<()>, Status> {
    if !auth.required() {
        return Ok(req);
    }
    let handshake = req.extensions().get::<IsHandshake>().is_some();
    match credentials(req.metadata())? {
        Some(Credentials::Bearer(token)) if auth.accepts(&token) => Ok(req),
        Some(Credentials::Basic(password)) if handshake && auth.accepts(&password) => Ok(req),
        Some(Credentials::Basic(_)) if !handshake => Err(Status::unauthenticated(format!(
            "basic auth is only for the handshake: {HOW_TO_AUTHENTICATE}"
        ))),
        Some(_) => Err(Status::unauthenticated(format!(
            "the token is not accepted: {HOW_TO_AUTHENTICATE}"
        ))),
        None => Err(Status::unauthenticated(format!(
            "this server requires a token: {HOW_TO_AUTHENTICATE}"
        ))),
    }
}

/// Decodes standard or URL-safe base64, padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The tenant named by the call's `x-scope-orgid` header, or `default`.
fn tenant(metadata: &MetadataMap) -> Result<String, Status> {
    let tenant = match metadata.get(TENANT_HEADER) {
        None => "default",
        Some(v) => v
            .to_str()
            .map_err(|_| {
                Status::invalid_argument(format!(
                    "the {TENANT_HEADER} header is not ASCII: use 1-64 characters from \
                     [A-Za-z0-9_-]"
                ))
            })?
            .trim(),
    };
    let tenant = if tenant.is_empty() { "default" } else { tenant };
    tracelake_storage::validate_tenant(tenant)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(tenant.to_string())
}

/// A query error as a gRPC status: the HTTP API's mapping (one place decides what is the
/// client's fault), its status turned into the matching code. An internal error's detail is
/// logged under a request id, which is all the client sees.
fn status(e: tracelake_query::Error) -> Status {
    use http::StatusCode;
    let (http_status, message) = ApiError::from(e).status_and_message();
    let code = match http_status {
        StatusCode::BAD_REQUEST => tonic::Code::InvalidArgument,
        StatusCode::NOT_FOUND => tonic::Code::NotFound,
        StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
        StatusCode::GATEWAY_TIMEOUT => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::Internal,
    };
    Status::new(code, message)
}

/// An Arrow or encoding failure on the server's side: logged, the client gets a request id.
fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    status(tracelake_query::Error::Internal(format!("{what}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Statements: tickets and prepared-statement handles

/// A statement ticket and prepared-statement handle: everything needed to run it.
#[derive(Clone, PartialEq, prost::Message)]
struct Statement {
    /// The tenant it was planned for.
    #[prost(string, tag = "1")]
    tenant: String,
    /// The SQL text.
    #[prost(string, tag = "2")]
    sql: String,
    /// One row of values for `$1`, `$2`, ... as an Arrow IPC stream; empty when none are bound.
    #[prost(bytes = "vec", tag = "3")]
    params: Vec<u8>,
}

impl Statement {
    /// Decodes a ticket or handle, and checks that the call is for the same tenant.
    fn open(bytes: &[u8], tenant: &str) -> Result<Self, Status> {
        let statement = Statement::parse(bytes)?;
        if statement.tenant != tenant {
            return Err(Status::invalid_argument(format!(
                "this statement was made for tenant {:?}, the call is for {tenant:?}: send the \
                 same {TENANT_HEADER} header on every call",
                statement.tenant
            )));
        }
        Ok(statement)
    }

    fn parse(bytes: &[u8]) -> Result<Self, Status> {
        match <Statement as Message>::decode(bytes) {
            Ok(statement) if !statement.tenant.is_empty() => Ok(statement),
            _ => Err(Status::invalid_argument(
                "not a ticket or prepared statement handle of this server: use the ones it \
                 answered with",
            )),
        }
    }

    /// The bound parameters, if any.
    fn param_values(&self) -> Result<Option<ParamValues>, Status> {
        if self.params.is_empty() {
            return Ok(None);
        }
        let bad = |e: &dyn std::fmt::Display| {
            Status::invalid_argument(format!(
                "the prepared statement handle's parameters are unreadable ({e}): bind them \
                 again"
            ))
        };
        let reader = arrow::ipc::reader::StreamReader::try_new(self.params.as_slice(), None)
            .map_err(|e| bad(&e))?;
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| bad(&e))?;
            if batch.num_rows() != 1 {
                return Err(bad(&format!("{} rows", batch.num_rows())));
            }
            for column in batch.columns() {
                values.push(ScalarValue::try_from_array(column, 0).map_err(|e| bad(&e))?);
            }
        }
        Ok(Some(ParamValues::from(values)))
    }

    /// A ticket that runs this statement.
    fn ticket(&self) -> Ticket {
        let ticket = TicketStatementQuery {
            statement_handle: self.encode_to_vec().into(),
        };
        Ticket::new(ticket.as_any().encode_to_vec())
    }
}

/// The schema the Flight encoder sends for batches of `schema` (dictionaries hydrated), so a
/// `FlightInfo` announces what `DoGet` delivers.
fn flight_schema(schema: SchemaRef) -> SchemaRef {
    let encoder = FlightDataEncoderBuilder::new()
        .with_schema(Arc::clone(&schema))
        .build(futures::stream::empty());
    encoder.known_schema().unwrap_or(schema)
}

/// `schema` as the IPC message Flight SQL carries schemas in.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| internal("encoding a schema", e))?;
    Ok(bytes)
}

/// A `FlightInfo` with one endpoint, on this server, that `ticket` redeems.
fn flight_info(
    schema: &Schema,
    ticket: Ticket,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| internal("encoding a schema", e))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// Streams `batches` as Flight data, the schema first (so an empty result still has one).
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// One metadata batch as Flight data.
fn encode_batch(batch: Result<RecordBatch, FlightError>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| internal("building a metadata result", e))?;
    Ok(encode(batch.schema(), futures::stream::iter([Ok(batch)])))
}

/// The placeholders of a planned statement, `$1`, `$2`, ... in order, with their types where
/// the planner inferred them.
fn parameters(plan: &datafusion::logical_expr::LogicalPlan) -> Result<Vec<Field>, Status> {
    let types = plan.get_parameter_types().map_err(|e| status(e.into()))?;
    let mut params: Vec<(String, Option<DataType>)> = types.into_iter().collect();
    params.sort_by_key(|(name, _)| {
        let n = name.strip_prefix('$').and_then(|n| n.parse::<u64>().ok());
        (n.unwrap_or(u64::MAX), name.clone())
    });
    Ok(params
        .into_iter()
        .map(|(name, t)| Field::new(name, t.unwrap_or(DataType::Null), true))
        .collect())
}

/// Reads the parameter row a client sends with `DoPut`: at most one row in all (none clears
/// the binding), one column per placeholder, each cast to its placeholder's type.
async fn read_parameters(
    stream: PeekableFlightDataStream,
    expected: &[Field],
) -> Result<Option<RecordBatch>, Status> {
    // The first message may carry only the descriptor.
    let messages = stream
        .try_filter(|data| std::future::ready(!data.data_header.is_empty()))
        .map_err(FlightError::from);
    let mut batches = FlightRecordBatchStream::new_from_flight_data(messages);
    let mut row: Option<RecordBatch> = None;
    while let Some(batch) = batches.try_next().await.map_err(|e| match e {
        FlightError::Tonic(status) => *status,
        e => Status::invalid_argument(format!("the parameters are not an Arrow stream: {e}")),
    })? {
        if batch.num_rows() == 0 {
            continue;
        }
        if row.is_some() || batch.num_rows() > 1 {
            return Err(Status::invalid_argument(
                "bind exactly one row of parameters: run the statement once per row",
            ));
        }
        row = Some(batch);
    }
    let Some(row) = row else {
        return Ok(None);
    };
    if row.num_columns() != expected.len() {
        return Err(Status::invalid_argument(format!(
            "the statement has {} parameter(s), the bound row has {} column(s): send one \
             column per placeholder ($1, $2, ...)",
            expected.len(),
            row.num_columns()
        )));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(expected.len());
    for (column, field) in row.columns().iter().zip(expected) {
        let want = field.data_type();
        if *want == DataType::Null || column.data_type() == want {
            columns.push(Arc::clone(column));
            continue;
        }
        // Not `safe`: a value that does not convert is an error, not a null.
        let options = arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        let cast = arrow::compute::cast_with_options(column, want, &options).map_err(|e| {
            Status::invalid_argument(format!(
                "parameter {} is {}, and it takes {want}: {e}",
                field.name(),
                column.data_type()
            ))
        })?;
        columns.push(cast);
    }
    let fields: Vec<Field> = expected
        .iter()
        .zip(&columns)
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map(Some)
        .map_err(|e| internal("binding parameters", e))
}

/// `batch` as an Arrow IPC stream.
fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>, Status> {
    let mut buf = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())
        .map_err(|e| internal("encoding parameters", e))?;
    writer
        .write(batch)
        .and_then(|()| writer.finish())
        .map_err(|e| internal("encoding parameters", e))?;
    drop(writer);
    Ok(buf)
}

/// Refuses to run a statement whose placeholders have no values.
fn require_parameters(params: &[Field], bound: bool, prepared: bool) -> Result<(), Status> {
    if params.is_empty() || bound {
        return Ok(());
    }
    let names: Vec<&str> = params.iter().map(|f| f.name().as_str()).collect();
    let how = if prepared {
        "bind one row of values with DoPut before executing"
    } else {
        "prepare the statement and bind one row of values with DoPut, or write the values \
         into the SQL"
    };
    Err(Status::invalid_argument(format!(
        "the statement has parameters ({}) without values: {how}",
        names.join(", ")
    )))
}

const READ_ONLY: &str = "tracelake is read-only over SQL: spans arrive over OTLP \
     (gRPC or HTTP), SQL only reads them";

// ---------------------------------------------------------------------------------------------
// The catalog

/// Flight SQL's (JDBC's) name of a table type.
fn table_type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// A schema of a catalog.
struct CatalogSchema {
    catalog: String,
    name: String,
    provider: Arc<dyn SchemaProvider>,
}

/// Every schema of the tenant's session, `information_schema` included when it is on
/// (DataFusion serves it outside the catalogs' own schema lists).
fn schemas(ctx: &datafusion::prelude::SessionContext) -> Result<Vec<CatalogSchema>, Status> {
    let state = ctx.state();
    let information_schema = state.config().information_schema();
    let mut out = Vec::new();
    let mut catalogs = ctx.catalog_names();
    catalogs.sort();
    for catalog_name in catalogs {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        let mut names = catalog.schema_names();
        if information_schema && !names.iter().any(|n| n == "information_schema") {
            names.push("information_schema".to_string());
        }
        names.sort();
        for schema_name in names {
            let reference = TableReference::full(catalog_name.as_str(), schema_name.as_str(), "_");
            let provider = state
                .schema_for_ref(reference)
                .map_err(|e| status(e.into()))?;
            out.push(CatalogSchema {
                catalog: catalog_name.clone(),
                name: schema_name,
                provider,
            });
        }
    }
    Ok(out)
}

/// What `GetSqlInfo` answers.
fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "tracelake");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.build()
            .expect("the SqlInfo values have their documented types")
    })
}

// ---------------------------------------------------------------------------------------------
// The service

impl FlightSql {
    /// Plans `sql` for `tenant` (through the guard): the result schema as sent, and the
    /// placeholders.
    async fn plan(&self, tenant: &str, sql: &str) -> Result<(SchemaRef, Vec<Field>), Status> {
        let plan = self.engine.sql_plan(tenant, sql).await.map_err(status)?;
        let schema = flight_schema(Arc::new(plan.schema().as_arrow().clone()));
        let params = parameters(&plan)?;
        Ok((schema, params))
    }

    /// Runs a statement and streams its batches; a failure after the first batch (the row
    /// limit, the timeout) ends the stream with its status.
    async fn run(&self, statement: Statement) -> Result<Response<DoGetStream>, Status> {
        let params = statement.param_values()?;
        let stream = self
            .engine
            .sql_stream(&statement.tenant, &statement.sql, params)
            .await
            .map_err(status)?;
        let schema = stream.schema();
        let batches = stream.map_err(|e| FlightError::Tonic(Box::new(status(e))));
        // IPC encoding is CPU work: it runs on the query runtime, two messages ahead at most.
        let messages = self
            .engine
            .drive(encode(schema, batches).into_inner())
            .map_err(status)?;
        Ok(Response::new(Box::pin(messages)))
    }

    /// A `FlightInfo` for a statement (a plain query or a prepared one).
    async fn statement_info(
        &self,
        statement: Statement,
        descriptor: FlightDescriptor,
        prepared: bool,
    ) -> Result<Response<FlightInfo>, Status> {
        let (schema, params) = self.plan(&statement.tenant, &statement.sql).await?;
        require_parameters(&params, !statement.params.is_empty(), prepared)?;
        flight_info(&schema, statement.ticket(), descriptor)
    }

    /// A `FlightInfo` for a catalog command: its ticket is the command itself.
    fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: arrow_flight::sql::Any,
    ) -> Result<Response<FlightInfo>, Status> {
        tenant(request.metadata())?;
        let ticket = Ticket::new(command.encode_to_vec());
        flight_info(schema, ticket, request.into_inner())
    }

    /// The tenant's session, for its catalog.
    fn context(
        &self,
        metadata: &MetadataMap,
    ) -> Result<datafusion::prelude::SessionContext, Status> {
        self.engine.context(&tenant(metadata)?).map_err(status)
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// Authentication happened in the interceptor: answer with the bearer token to use.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = match credentials(request.metadata())? {
            Some(Credentials::Bearer(t) | Credentials::Basic(t)) if self.auth.required() => t,
            _ => String::new(),
        };
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Status::unauthenticated(format!(
                    "the token is not a valid header value: {HOW_TO_AUTHENTICATE}"
                ))
            })?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = Statement {
            tenant: tenant(request.metadata())?,
            sql: query.query,
            params: Vec::new(),
        };
        self.statement_info(statement, request.into_inner(), false)
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let tenant = tenant(request.metadata())?;
        let statement = Statement::open(&query.prepared_statement_handle, &tenant)?;
        self.statement_info(statement, request.into_inner(), true)
            .await
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(substrait())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let command = query.as_any();
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, command)
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let command = query.as_any();
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, command)
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let command = query.as_any();
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, command)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let command = query.as_any();
        let schema = query.into_builder().schema();
        self.metadata_info(request, &schema, command)
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let command = query.as_any();
        let schema = query.into_builder(sql_info()).schema();
        self.metadata_info(request, &schema, command)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = tenant(request.metadata())?;
        self.run(Statement::open(&ticket.statement_handle, &tenant)?)
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = tenant(request.metadata())?;
        let statement = Statement::open(&query.prepared_statement_handle, &tenant)?;
        let (_, params) = self.plan(&statement.tenant, &statement.sql).await?;
        require_parameters(&params, !statement.params.is_empty(), true)?;
        self.run(statement).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = self.context(request.metadata())?;
        let mut builder = query.into_builder();
        let mut names = ctx.catalog_names();
        names.sort();
        for name in names {
            builder.append(name);
        }
        encode_batch(builder.build())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = self.context(request.metadata())?;
        let mut builder = query.into_builder();
        for schema in schemas(&ctx)? {
            builder.append(schema.catalog, schema.name);
        }
        encode_batch(builder.build())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let ctx = self.context(request.metadata())?;
        let mut builder = query.into_builder();
        for schema in schemas(&ctx)? {
            let mut tables = schema.provider.table_names();
            tables.sort();
            for table in tables {
                let found = schema.provider.table(&table).await;
                let Some(provider) = found.map_err(|e| status(e.into()))? else {
                    continue;
                };
                builder
                    .append(
                        &schema.catalog,
                        &schema.name,
                        &table,
                        table_type_name(provider.table_type()),
                        &flight_schema(provider.schema()),
                    )
                    .map_err(|e| internal("listing tables", e))?;
            }
        }
        encode_batch(builder.build())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        tenant(request.metadata())?;
        let mut builder = query.into_builder();
        for t in [TableType::Base, TableType::View, TableType::Temporary] {
            builder.append(table_type_name(t));
        }
        encode_batch(builder.build())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        tenant(request.metadata())?;
        encode_batch(query.into_builder(sql_info()).build())
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        tenant(request.metadata())?;
        // The guard's own message says why a write is refused; a query sent as an update is
        // refused too.
        tracelake_query::guard::check(&ticket.query).map_err(status)?;
        Err(Status::invalid_argument(format!(
            "{READ_ONLY}: this statement is a query, run it as one (CommandStatementQuery)"
        )))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::invalid_argument(format!(
            "{READ_ONLY}: bulk ingestion is not supported"
        )))
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let tenant = tenant(request.metadata())?;
        let mut statement = Statement::open(&query.prepared_statement_handle, &tenant)?;
        let (_, expected) = self.plan(&tenant, &statement.sql).await?;
        statement.params = match read_parameters(request.into_inner(), &expected).await? {
            Some(row) => ipc_bytes(&row)?,
            None => Vec::new(),
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(statement.encode_to_vec().into()),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::invalid_argument(format!(
            "{READ_ONLY}: a prepared statement is a query, execute it as one \
             (CommandPreparedStatementQuery)"
        )))
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(substrait())
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        if query.transaction_id.is_some() {
            return Err(no_transactions());
        }
        let tenant = tenant(request.metadata())?;
        let (schema, params) = self.plan(&tenant, &query.query).await?;
        let statement = Statement {
            tenant,
            sql: query.query,
            params: Vec::new(),
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: statement.encode_to_vec().into(),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: schema_bytes(&Schema::new(params))?,
        })
    }

    /// Handles hold no server state: closing only checks the handle is one of ours.
    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let tenant = tenant(request.metadata())?;
        Statement::open(&query.prepared_statement_handle, &tenant)?;
        Ok(())
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        Err(substrait())
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(no_transactions())
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Err(no_transactions())
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(no_transactions())
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Err(no_transactions())
    }

    async fn do_action_cancel_query(
        &self,
        _query: ActionCancelQueryRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        Err(Status::unimplemented(
            "CancelQuery is not supported: close the DoGet stream, which cancels its query",
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn substrait() -> Status {
    Status::unimplemented("Substrait plans are not supported: send SQL text")
}

fn no_transactions() -> Status {
    Status::unimplemented(format!(
        "{READ_ONLY}, so there are no transactions: run statements without one"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn base64_as_clients_send_it() {
        assert_eq!(base64_decode("dXNlcjpzZWNyZXQ=").unwrap(), b"user:secret");
        assert_eq!(base64_decode("dXNlcjpzZWNyZXQ").unwrap(), b"user:secret");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("-_8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn credentials_bearer_and_basic() {
        assert_eq!(credentials(&metadata(&[])).unwrap(), None);
        assert_eq!(
            credentials(&metadata(&[("authorization", "Bearer abc")])).unwrap(),
            Some(Credentials::Bearer("abc".into()))
        );
        // "anyone:pa:ss": the password is everything after the first colon.
        assert_eq!(
            credentials(&metadata(&[("authorization", "Basic YW55b25lOnBhOnNz")])).unwrap(),
            Some(Credentials::Basic("pa:ss".into()))
        );
        for bad in ["Digest x", "Bearer", "Basic !!", "Basic bm9jb2xvbg=="] {
            let e = credentials(&metadata(&[("authorization", bad)])).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad}");
            assert!(e.message().contains("Bearer <token>"), "{bad}: {e}");
        }
    }

    #[test]
    fn basic_auth_only_opens_the_handshake() {
        let auth = SqlAuth::new(vec!["0123456789abcdef".into()]);
        let call = |pairs: &[(&'static str, &str)], handshake: bool| {
            let mut req = Request::new(());
            *req.metadata_mut() = metadata(pairs);
            if handshake {
                req.extensions_mut().insert(IsHandshake);
            }
            authenticate(&auth, req).map(|_| ()).map_err(|e| e.code())
        };
        let basic = "Basic dXNlcjowMTIzNDU2Nzg5YWJjZGVm"; // user:0123456789abcdef
        let bearer = "Bearer 0123456789abcdef";
        assert_eq!(call(&[("authorization", bearer)], false), Ok(()));
        assert_eq!(call(&[("authorization", bearer)], true), Ok(()));
        assert_eq!(call(&[("authorization", basic)], true), Ok(()));
        let denied = Err(tonic::Code::Unauthenticated);
        assert_eq!(call(&[("authorization", basic)], false), denied);
        assert_eq!(call(&[], false), denied);
        assert_eq!(call(&[], true), denied);
        assert_eq!(
            call(&[("authorization", "Bearer 0123456789abcdeF")], false),
            denied
        );
        // Without tokens everything passes.
        let open = authenticate(&SqlAuth::default(), Request::new(()));
        assert!(open.is_ok());
    }

    #[test]
    fn tenant_from_the_header() {
        assert_eq!(tenant(&metadata(&[])).unwrap(), "default");
        assert_eq!(
            tenant(&metadata(&[(TENANT_HEADER, " acme ")])).unwrap(),
            "acme"
        );
        assert_eq!(
            tenant(&metadata(&[(TENANT_HEADER, "")])).unwrap(),
            "default"
        );
        let e = tenant(&metadata(&[(TENANT_HEADER, "no such/tenant")])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("invalid tenant id"), "{e}");
    }

    #[test]
    fn statements_round_trip_and_stay_with_their_tenant() {
        let statement = Statement {
            tenant: "acme".into(),
            sql: "SELECT $1".into(),
            params: Vec::new(),
        };
        let bytes = statement.encode_to_vec();
        assert_eq!(Statement::open(&bytes, "acme").unwrap(), statement);
        let e = Statement::open(&bytes, "default").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("x-scope-orgid"), "{e}");
        for garbage in [&b"\xff\xff\xff"[..], b""] {
            let e = Statement::open(garbage, "acme").unwrap_err();
            assert!(e.message().contains("not a ticket"), "{e}");
        }
    }

    #[test]
    fn bound_parameters_become_param_values() {
        let row = RecordBatch::try_from_iter([
            (
                "$1",
                Arc::new(arrow::array::StringArray::from(vec!["cart"])) as ArrayRef,
            ),
            (
                "$2",
                Arc::new(arrow::array::Int64Array::from(vec![7])) as ArrayRef,
            ),
        ])
        .unwrap();
        let statement = Statement {
            tenant: "default".into(),
            sql: "SELECT $1, $2".into(),
            params: ipc_bytes(&row).unwrap(),
        };
        let Some(ParamValues::List(values)) = statement.param_values().unwrap() else {
            panic!("a list of values");
        };
        let values: Vec<ScalarValue> = values.into_iter().map(|v| v.value).collect();
        assert_eq!(
            values,
            [
                ScalarValue::Utf8(Some("cart".into())),
                ScalarValue::Int64(Some(7))
            ]
        );
        let none = Statement {
            params: Vec::new(),
            ..statement
        };
        assert!(none.param_values().unwrap().is_none());
    }

    #[test]
    fn errors_keep_their_class() {
        use tracelake_query::Error;
        let cases = [
            (
                Error::Refused("DROP is not allowed".into()),
                tonic::Code::InvalidArgument,
            ),
            (Error::Parse("x".into()), tonic::Code::InvalidArgument),
            (Error::RowLimit(10), tonic::Code::InvalidArgument),
            (Error::Busy("retry".into()), tonic::Code::ResourceExhausted),
            (
                Error::Timeout(std::time::Duration::from_secs(1)),
                tonic::Code::DeadlineExceeded,
            ),
            (Error::NotFound("x".into()), tonic::Code::NotFound),
            (
                Error::Internal("secret detail".into()),
                tonic::Code::Internal,
            ),
        ];
        for (e, code) in cases {
            let s = status(e);
            assert_eq!(s.code(), code, "{s}");
            assert!(!s.message().contains("secret detail"), "{s}");
        }
        assert!(status(Error::RowLimit(10))
            .message()
            .contains("query.max_rows"));
    }
}
