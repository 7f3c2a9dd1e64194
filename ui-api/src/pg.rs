//! The PostgreSQL wire protocol on `--pg-addr`: read-only SQL through the engine's guard.
//!
//! - The database name of the connection selects the tenant (`psql -d acme`); without one,
//!   the tenant is `default`.
//! - Statements are parsed with PostgreSQL compatibility rewrites (`datafusion-pg-catalog`) and
//!   run by [`QueryEngine::sql_stream`]: the same guard, limits and answers as `POST /api/sql`.
//!   Rows are encoded on the query runtime and streamed as they come.
//! - The simple and the extended query protocol both work; `$n` parameters get their types from
//!   the plan.
//! - Session statements clients send on their own are answered here: `BEGIN`, `COMMIT` and
//!   `ROLLBACK` (every transaction is read-only), `SET` of the client settings in [`SETTABLE`],
//!   `SHOW` of those and of the server's settings, `DISCARD ALL` and `DEALLOCATE`. Every other
//!   `SET` is refused.
//! - With `[auth] tokens`, clients log in with a token as their password (any user name).

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value};
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt, Stream, StreamExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type, METADATA_DATABASE,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tracelake_query::{Error, QueryEngine, SqlStream};
use tracing::{debug, warn};

use crate::SqlAuth;

/// The settings a client may `SET` (they only affect how this session's results are shown,
/// or not at all): their values are kept for `SHOW`.
pub const SETTABLE: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "default_transaction_isolation",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "lock_timeout",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
];

/// The tenant of a connection without a database name.
const DEFAULT_TENANT: &str = "default";

/// Serves the PostgreSQL protocol on `listener` until `shutdown` resolves; open sessions are
/// then closed (they only read).
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<QueryEngine>,
    auth: SqlAuth,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let queries = Arc::new(Queries {
        engine: Arc::clone(&engine),
        parser: Arc::new(Parser {
            engine,
            sql: PostgresCompatibilityParser::new(),
        }),
    });
    let handlers = Arc::new(Handlers {
        startup: Arc::new(Startup {
            auth,
            pids: RandomPidSecretKeyGenerator::default(),
        }),
        queries,
    });
    let mut sessions = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let handlers = Arc::clone(&handlers);
                    sessions.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                            debug!(%peer, error = %e, "postgresql session ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    warn!(error = %e, "accepting a postgresql connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.shutdown().await;
    Ok(())
}

struct Handlers {
    startup: Arc<Startup>,
    queries: Arc<Queries>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.queries)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }
}

/// The tenant a session reads: its database name.
fn tenant<C: ClientInfo + ?Sized>(client: &C) -> String {
    client
        .metadata()
        .get(METADATA_DATABASE)
        .filter(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_TENANT.to_string())
}

fn error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message.into(),
    )))
}

// ---------------------------------------------------------------------------------------------
// Startup and authentication

struct Startup {
    auth: SqlAuth,
    pids: RandomPidSecretKeyGenerator,
}

impl Startup {
    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, secret) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret);
        let mut params = DefaultServerParameterProvider::default();
        if let Some(version) = tracelake_query::server_setting("server_version") {
            params.server_version = version.to_string();
        }
        params.is_superuser = false;
        params.default_transaction_read_only = true;
        finish_authentication(client, &params).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let tenant = tenant(client);
                if let Err(e) = tracelake_storage::validate_tenant(&tenant) {
                    return Err(error(
                        "FATAL",
                        "3D000",
                        format!("database {tenant:?} does not name a tenant: {e}"),
                    ));
                }
                if self.auth.required() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                } else {
                    self.finish(client).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                if !self.auth.accepts(&password.password) {
                    return Err(error(
                        "FATAL",
                        "28P01",
                        "password authentication failed: use one of the tokens in the \
                         server's [auth] tokens as the password",
                    ));
                }
                self.finish(client).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Statements

/// A statement answered by the session itself rather than the query engine.
#[derive(Debug, Clone)]
enum Session {
    Begin,
    Commit,
    Rollback,
    Set { name: String, value: String },
    Show { name: String },
    Discard,
    Deallocate,
}

/// A parsed statement, kept for the extended protocol.
#[derive(Debug, Clone)]
pub struct PgStatement {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Session(Session),
    Query {
        /// The statement after the PostgreSQL compatibility rewrites.
        sql: String,
        schema: SchemaRef,
        /// The types of `$1`, `$2`, ... as planned (None when the plan leaves one open).
        params: Vec<Option<DataType>>,
    },
}

/// Sorts out session statements; `None` for statements the engine runs.
fn session_statement(statement: &Statement) -> PgWireResult<Option<Session>> {
    Ok(Some(match statement {
        Statement::StartTransaction { .. } => Session::Begin,
        Statement::Commit { .. } => Session::Commit,
        Statement::Rollback { .. } => Session::Rollback,
        Statement::Discard { .. } => Session::Discard,
        Statement::Deallocate { .. } => Session::Deallocate,
        Statement::Set(set) => return set_statement(set).map(Some),
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            let name = match name.as_str() {
                "time zone" => "timezone".to_string(),
                "transaction isolation level" => "transaction_isolation".to_string(),
                _ => name,
            };
            if show_value(&name, &Default::default()).is_none() {
                // Not a PostgreSQL setting we know: DataFusion's SHOW answers or refuses.
                return Ok(None);
            }
            Session::Show { name }
        }
        _ => return Ok(None),
    }))
}

fn set_statement(set: &Set) -> PgWireResult<Session> {
    let refuse = |what: &str| {
        error(
            "ERROR",
            "25006",
            format!(
                "SET {what} is not allowed: tracelake's SQL is read-only, and a session may \
                 only set: {}",
                SETTABLE.join(", ")
            ),
        )
    };
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = variable.to_string().to_ascii_lowercase();
            if !SETTABLE.contains(&name.as_str()) {
                return Err(refuse(&name));
            }
            let value = values
                .iter()
                .map(|v| match v {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                        other => other.to_string(),
                    },
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            Ok(Session::Set { name, value })
        }
        Set::SetTimeZone { value, .. } => Ok(Session::Set {
            name: "timezone".into(),
            value: value.to_string().trim_matches('\'').to_string(),
        }),
        // SET TRANSACTION ... / SET SESSION CHARACTERISTICS: every transaction is read-only.
        Set::SetTransaction { .. } => Ok(Session::Set {
            name: String::new(),
            value: String::new(),
        }),
        other => Err(refuse(&other.to_string())),
    }
}

/// The value `SHOW name` gives: what the session set, else the server's setting.
fn show_value(name: &str, metadata: &std::collections::HashMap<String, String>) -> Option<String> {
    metadata
        .get(name)
        .cloned()
        .or_else(|| tracelake_query::server_setting(name).map(str::to_string))
}

fn show_schema(name: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]))
}

/// Runs a session statement.
fn run_session<C: ClientInfo + ?Sized>(
    client: &mut C,
    session: &Session,
) -> PgWireResult<Response> {
    Ok(match session {
        Session::Begin => Response::TransactionStart(Tag::new("BEGIN")),
        Session::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
        Session::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
        Session::Discard => Response::Execution(Tag::new("DISCARD ALL")),
        Session::Deallocate => Response::Execution(Tag::new("DEALLOCATE")),
        Session::Set { name, value } => {
            if !name.is_empty() {
                client.metadata_mut().insert(name.clone(), value.clone());
            }
            Response::Execution(Tag::new("SET"))
        }
        Session::Show { name } => {
            let value = show_value(name, client.metadata()).unwrap_or_default();
            let fields = Arc::new(arrow_schema_to_pg_fields(
                &show_schema(name),
                &Format::UnifiedText,
                None,
            )?);
            let batch = arrow::array::RecordBatch::try_new(
                show_schema(name),
                vec![Arc::new(arrow::array::StringArray::from(vec![value]))],
            )
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            let rows: Vec<_> = encode_recordbatch(Arc::clone(&fields), batch).collect();
            Response::Query(QueryResponse::new(fields, futures::stream::iter(rows)))
        }
    })
}

/// The engine's error as a PostgreSQL error: SQLSTATE, and the engine's message (which says
/// why and what to do).
fn query_error(e: Error, sql: Option<&str>) -> PgWireError {
    let code = match &e {
        Error::Refused(_) => "25006",
        Error::Parse(_) => "42601",
        Error::RowLimit(_) => "54000",
        Error::OutOfMemory(_) => "53200",
        Error::Busy(_) => "53300",
        Error::Timeout(_) => "57014",
        Error::NotFound(_) => "42704",
        Error::Unsupported(_) => "0A000",
        Error::InvalidRequest(_) | Error::InvalidTraceId(_) | Error::TraceQl(_) => "22023",
        Error::Storage(tracelake_storage::Error::InvalidTenant(_)) => "3D000",
        Error::Query(q) => match q.find_root() {
            datafusion::error::DataFusionError::SchemaError(..) => "42703",
            _ if e.is_client_error() => "42000",
            _ => "XX000",
        },
        Error::Storage(_) | Error::Internal(_) => "XX000",
    };
    if code == "XX000" {
        warn!(error = %e, "postgresql query failed");
    }
    let message = e.to_string();
    let mut info = ErrorInfo::new("ERROR".to_string(), code.to_string(), message.clone());
    if let (Some(sql), Some(at)) = (sql, crate::openapi::ErrorPosition::find(&message)) {
        info.position = char_position(sql, at.line, at.column).map(|p| p.to_string());
    }
    PgWireError::UserError(Box::new(info))
}

/// The 1-based character index of a 1-based line and column, as PostgreSQL reports positions.
fn char_position(sql: &str, line: u64, column: u64) -> Option<usize> {
    let line = usize::try_from(line).ok()?.checked_sub(1)?;
    let column = usize::try_from(column).ok()?;
    let before: usize = sql
        .split('\n')
        .take(line)
        .map(|l| l.chars().count() + 1)
        .sum();
    (sql.split('\n').count() > line).then_some(before + column)
}

/// True when PostgreSQL has no type for `data_type`: maps, and lists or structs holding one.
fn holds_map(data_type: &DataType) -> bool {
    match data_type {
        DataType::Map(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => holds_map(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| holds_map(f.data_type())),
        _ => false,
    }
}

/// The schema PostgreSQL clients see: columns holding maps (attributes, events, links) are
/// JSON text.
fn pg_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if holds_map(f.data_type()) {
                    Arc::new(Field::new(f.name(), DataType::Utf8, true))
                } else {
                    Arc::clone(f)
                }
            })
            .collect::<Vec<_>>(),
    ))
}

/// `batch` with its map-holding columns as JSON text (see [`pg_schema`]).
fn pg_batch(
    batch: arrow::array::RecordBatch,
    schema: &SchemaRef,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| holds_map(f.data_type()))
    {
        return Ok(batch);
    }
    let options = arrow::json::writer::EncoderOptions::default();
    let columns = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if !holds_map(field.data_type()) {
                return Ok(Arc::clone(column));
            }
            let mut encoder = arrow::json::writer::make_encoder(field, column, &options)?;
            let mut text = arrow::array::StringBuilder::new();
            let mut buf = Vec::new();
            for i in 0..column.len() {
                if encoder.is_null(i) {
                    text.append_null();
                } else {
                    buf.clear();
                    encoder.encode(i, &mut buf);
                    text.append_value(String::from_utf8_lossy(&buf));
                }
            }
            Ok(Arc::new(text.finish()) as arrow::array::ArrayRef)
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    arrow::array::RecordBatch::try_new(Arc::clone(schema), columns)
}

/// The rows of a running query as PostgreSQL data rows, encoded on the query runtime.
fn data_rows(
    engine: &QueryEngine,
    batches: SqlStream,
    schema: SchemaRef,
    fields: Arc<Vec<FieldInfo>>,
) -> PgWireResult<impl Stream<Item = PgWireResult<DataRow>> + Send + 'static> {
    let chunks = batches.map(move |batch| -> PgWireResult<Vec<DataRow>> {
        let batch = batch.map_err(|e| query_error(e, None))?;
        let batch = pg_batch(batch, &schema).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        encode_recordbatch(Arc::clone(&fields), batch).collect()
    });
    let chunks = engine.drive(chunks).map_err(|e| query_error(e, None))?;
    Ok(chunks.flat_map(|chunk| {
        let rows: Vec<PgWireResult<DataRow>> = match chunk {
            Ok(rows) => rows.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(rows)
    }))
}

// ---------------------------------------------------------------------------------------------
// Query handlers

struct Queries {
    engine: Arc<QueryEngine>,
    parser: Arc<Parser>,
}

impl Queries {
    async fn run_query<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        sql: &str,
        params: Option<datafusion::common::ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response> {
        let tenant = tenant(client);
        let stream = self
            .engine
            .sql_stream(&tenant, sql, params)
            .await
            .map_err(|e| query_error(e, None))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let schema = pg_schema(&stream.schema());
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
        let rows = data_rows(&self.engine, stream, schema, Arc::clone(&fields))?;
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.parser.parse(query)?;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = match session_statement(&statement) {
                Ok(Some(session)) => run_session(client, &session),
                Ok(None) => {
                    self.run_query(client, &statement.to_string(), None, &Format::UnifiedText)
                        .await
                }
                Err(e) => Err(e),
            };
            match response {
                Ok(r) => responses.push(r),
                // The statements after a failed one are not run, as in PostgreSQL.
                Err(PgWireError::UserError(info)) => {
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if responses.is_empty() {
            responses.push(Response::EmptyQuery);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement.kind {
            Kind::Session(session) => run_session(client, session),
            Kind::Query { sql, params, .. } => {
                let types: Vec<Option<&DataType>> = params.iter().map(Option::as_ref).collect();
                let values = deserialize_parameters(portal, &types)?;
                let values = (!params.is_empty()).then_some(values);
                self.run_query(client, sql, values, &portal.result_column_format)
                    .await
            }
        }
    }
}

/// Parses statements with PostgreSQL's syntax and plans queries for `Describe`.
pub struct Parser {
    engine: Arc<QueryEngine>,
    sql: PostgresCompatibilityParser,
}

impl Parser {
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        tracelake_query::guard::check_size(sql).map_err(|e| query_error(e, None))?;
        self.sql.parse(sql).map_err(|e| {
            // DataFusion's parser tells where the error is; use its message when it has one.
            let message = match tracelake_query::guard::check(sql) {
                Err(Error::Parse(m)) => m,
                _ => e.to_string(),
            };
            query_error(Error::Parse(message), Some(sql))
        })
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.parse(sql)?;
        if statements.len() > 1 {
            return Err(error(
                "ERROR",
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        if let Some(session) = session_statement(&statement)? {
            return Ok(Some(PgStatement {
                kind: Kind::Session(session),
            }));
        }
        let sql = statement.to_string();
        let plan: LogicalPlan = self
            .engine
            .sql_plan(&tenant(client), &sql)
            .await
            .map_err(|e| query_error(e, None))?;
        let types = plan
            .get_parameter_types()
            .map_err(|e| query_error(e.into(), None))?;
        let mut ids: Vec<(usize, Option<DataType>)> = types
            .into_iter()
            .map(|(id, t)| {
                let n = id
                    .trim_start_matches('$')
                    .parse::<usize>()
                    .unwrap_or(usize::MAX);
                (n, t)
            })
            .collect();
        ids.sort_by_key(|(n, _)| *n);
        Ok(Some(PgStatement {
            kind: Kind::Query {
                sql,
                schema: pg_schema(plan.schema().as_arrow()),
                params: ids.into_iter().map(|(_, t)| t).collect(),
            },
        }))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        match &statement.kind {
            Kind::Session(_) => Ok(vec![]),
            // A parameter the plan leaves open is sent as text, which DataFusion coerces.
            Kind::Query { params, .. } => params
                .iter()
                .map(|t| t.as_ref().map_or(Ok(Type::TEXT), into_pg_type))
                .collect(),
        }
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        match &statement.kind {
            Kind::Session(Session::Show { name }) => {
                arrow_schema_to_pg_fields(&show_schema(name), format, None)
            }
            Kind::Session(_) => Ok(vec![]),
            Kind::Query { schema, .. } => arrow_schema_to_pg_fields(schema, format, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        PostgresCompatibilityParser::new()
            .parse(sql)
            .unwrap()
            .pop()
            .unwrap()
    }

    #[test]
    fn session_statements() {
        assert!(matches!(
            session_statement(&parse("BEGIN")).unwrap(),
            Some(Session::Begin)
        ));
        assert!(matches!(
            session_statement(&parse("COMMIT")).unwrap(),
            Some(Session::Commit)
        ));
        match session_statement(&parse("SET application_name = 'grafana'")).unwrap() {
            Some(Session::Set { name, value }) => {
                assert_eq!(
                    (name.as_str(), value.as_str()),
                    ("application_name", "grafana")
                );
            }
            other => panic!("{other:?}"),
        }
        match session_statement(&parse("SET extra_float_digits = 3")).unwrap() {
            Some(Session::Set { name, value }) => {
                assert_eq!((name.as_str(), value.as_str()), ("extra_float_digits", "3"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            session_statement(&parse("SHOW transaction isolation level")).unwrap(),
            Some(Session::Show { name }) if name == "transaction_isolation"
        ));
        assert!(session_statement(&parse("SELECT 1")).unwrap().is_none());
    }

    #[test]
    fn dangerous_settings_are_refused() {
        for sql in [
            "SET datafusion.execution.batch_size = 1",
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET work_mem = '1GB'",
            "SET ROLE postgres",
        ] {
            let err = session_statement(&parse(sql)).expect_err(sql);
            let PgWireError::UserError(info) = err else {
                panic!("{sql}: {err:?}")
            };
            assert_eq!(info.code, "25006", "{sql}");
            assert!(
                info.message.contains("read-only"),
                "{sql}: {}",
                info.message
            );
        }
    }

    #[test]
    fn positions_count_characters_from_one() {
        let sql = "SELECT 1\nFROM x WHER";
        assert_eq!(char_position(sql, 1, 8), Some(8));
        assert_eq!(char_position(sql, 2, 1), Some(10));
        assert_eq!(char_position(sql, 3, 1), None);
    }
}
