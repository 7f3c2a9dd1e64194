//! The query engine: one DataFusion `SessionContext` per tenant over that tenant's `spans`,
//! executed on a runtime of its own so query CPU never stalls the IO threads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, FieldRef, Int64Type, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Column;
use datafusion::common::ParamValues;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, GreedyMemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{cast, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{col, lit, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use futures::StreamExt;
use parking_lot::Mutex;
use tracelake_proto::columns;
use tracelake_storage::trace_index::{self, index_columns, IndexCoverage};
use tracelake_storage::{validate_tenant, Storage};

use crate::error::{Error, Result};
use crate::guard;
use crate::provider::{DeltaFilter, DeltaSnapshotTable, SpansTable};
use crate::search::Density;

/// Limits and tuning of the query engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// A query running longer than this is cancelled.
    pub timeout: Duration,
    /// At most this many rows are returned by a SQL query.
    pub max_rows: usize,
    /// Memory all running queries may hold, in bytes.
    pub memory_limit: usize,
    /// Memory one SQL query may hold, in bytes (nothing spills to disk: beyond this the query
    /// fails with a message saying so).
    pub sql_memory_limit: usize,
    /// SQL queries one tenant may run at once; more are refused (HTTP 429) until one ends.
    pub sql_max_concurrent: usize,
    /// Worker threads of the query runtime.
    pub threads: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            memory_limit: 1024 * 1024 * 1024,
            sql_memory_limit: 256 * 1024 * 1024,
            sql_max_concurrent: 4,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// The result of a SQL query.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    /// The result schema.
    pub schema: SchemaRef,
    /// The rows, at most `max_rows`.
    pub batches: Vec<RecordBatch>,
    /// True when rows beyond `max_rows` were cut off.
    pub truncated: bool,
}

/// An optional time window, in unix nanoseconds, that narrows the partitions read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start.
    pub start_unix_nano: u64,
    /// Inclusive end.
    pub end_unix_nano: u64,
}

/// The `date`/`hour` partitions of `range`, inclusive (hour granularity): prunes Delta files.
pub(crate) fn partition_filter(range: TimeRange) -> datafusion::logical_expr::Expr {
    let (d1, h1) = tracelake_proto::partition_values(range.start_unix_nano);
    let (d2, h2) = tracelake_proto::partition_values(range.end_unix_nano);
    let date = || col(columns::DATE);
    let hour = || col(columns::HOUR);
    if d1 == d2 {
        date().eq(lit(d1)).and(hour().between(lit(h1), lit(h2)))
    } else {
        date()
            .between(lit(d1.clone()), lit(d2.clone()))
            .and(date().gt(lit(d1)).or(hour().gt_eq(lit(h1))))
            .and(date().lt(lit(d2)).or(hour().lt_eq(lit(h2))))
    }
}

/// Spans starting within `range`: its partitions, and the start time, which prunes files and
/// row groups by their statistics.
pub(crate) fn window_filter(range: TimeRange) -> datafusion::logical_expr::Expr {
    let start = i64::try_from(range.start_unix_nano).unwrap_or(i64::MAX);
    let end = i64::try_from(range.end_unix_nano).unwrap_or(i64::MAX);
    partition_filter(range).and(col(columns::START_TIME_UNIX_NANO).between(lit(start), lit(end)))
}

/// A memory refusal that names the limit and what to do; other errors as they are.
fn over_memory(e: Error, limit: usize) -> Error {
    match &e {
        Error::Query(q)
            if matches!(
                q.find_root(),
                datafusion::error::DataFusionError::ResourcesExhausted(_)
            ) =>
        {
            Error::OutOfMemory(format!(
                "the query needs more than {limit} bytes of memory (query.sql_memory_limit_bytes; \
                 nothing spills to disk): add filters or a LIMIT, or aggregate before joining. \
                 {q}"
            ))
        }
        _ => e,
    }
}

/// Runs queries for every tenant.
pub struct QueryEngine {
    storage: Arc<Storage>,
    config: QueryConfig,
    runtime_env: Arc<RuntimeEnv>,
    /// Per tenant: the session of the engine's own queries, and the SQL front-ends' one.
    contexts: Mutex<HashMap<(String, Session), SessionContext>>,
    coverage: Arc<CoverageCache>,
    densities: Arc<DensityCache>,
    pub(crate) slo_registry: Arc<crate::slo::SloRegistry>,
    pub(crate) slo_cache: Arc<crate::slo::SloCache>,
    /// SQL queries running per tenant.
    sql_running: Arc<Mutex<HashMap<String, usize>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// One running SQL query of a tenant: counted until dropped.
struct SqlSlot {
    running: Arc<Mutex<HashMap<String, usize>>>,
    tenant: String,
}

impl Drop for SqlSlot {
    fn drop(&mut self) {
        let mut running = self.running.lock();
        if let Some(n) = running.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.tenant);
            }
        }
    }
}

/// A value per tenant, with the table version(s) it was computed from.
type PerTenant<K, V> = Mutex<HashMap<String, (K, Arc<V>)>>;

/// `(min start, max start, rows)` per file of a span table.
type StartRanges = Vec<(i64, i64, u64)>;

/// Where each tenant's spans are in time, for sizing search slices; the files' part is
/// computed once per table version.
pub(crate) struct DensityCache {
    storage: Arc<Storage>,
    entries: PerTenant<Option<u64>, StartRanges>,
}

impl DensityCache {
    pub(crate) async fn get(&self, tenant: &str) -> Result<Density> {
        let snapshot = self.storage.snapshot(tenant).await?;
        let Some(table) = &snapshot.table else {
            return Ok(Density::new(Arc::default(), &snapshot.buffered));
        };
        let cached = self
            .entries
            .lock()
            .get(tenant)
            .filter(|(v, _)| *v == table.version())
            .map(|(_, r)| Arc::clone(r));
        let ranges = match cached {
            Some(r) => r,
            None => {
                let r = Arc::new(
                    tracelake_storage::table::file_start_ranges(table)
                        .map_err(|e| Error::Internal(format!("span table statistics: {e}")))?,
                );
                self.entries
                    .lock()
                    .insert(tenant.to_string(), (table.version(), Arc::clone(&r)));
                r
            }
        };
        Ok(Density::new(ranges, &snapshot.buffered))
    }
}

/// Versions of a tenant's span table and trace index.
type Versions = (Option<u64>, Option<u64>);

/// Index coverage per tenant, computed once per (span table, index) version pair: it walks
/// every file of both logs.
#[derive(Default)]
struct CoverageCache {
    entries: PerTenant<Versions, IndexCoverage>,
}

impl CoverageCache {
    fn get(
        &self,
        tenant: &str,
        table: &DeltaTable,
        index: &DeltaTable,
    ) -> Result<Arc<IndexCoverage>> {
        let versions = (table.version(), index.version());
        if let Some((v, c)) = self.entries.lock().get(tenant) {
            if *v == versions {
                return Ok(Arc::clone(c));
            }
        }
        let covered = Arc::new(
            trace_index::coverage(table, Some(index))
                .map_err(|e| Error::Internal(format!("trace index coverage: {e}")))?,
        );
        self.entries
            .lock()
            .insert(tenant.to_string(), (versions, Arc::clone(&covered)));
        Ok(covered)
    }
}

/// At most this many hours outside the index are listed in a lookup's narrowing; with more,
/// the lookup scans by trace id alone.
const MAX_UNINDEXED_HOURS: usize = 48;

/// The Delta-side narrowing of a lookup (`filter` selects the trace id and the partitions):
/// each indexed hour only within the trace's time range there, or not at all when the trace
/// is not in its index; unindexed hours whole.
async fn index_narrowing(
    ctx: &SessionContext,
    index: &DeltaTable,
    covered: &IndexCoverage,
    filter: Expr,
) -> Result<DeltaFilter> {
    if covered.indexed.is_empty() || covered.unindexed.len() > MAX_UNINDEXED_HOURS {
        return Ok(DeltaFilter::None);
    }
    let table = DeltaSnapshotTable::new(index.clone(), trace_index::index_schema());
    let hits = ctx
        .read_table(Arc::new(table))?
        .filter(filter)?
        .select_columns(&[
            columns::DATE,
            columns::HOUR,
            index_columns::START_MIN,
            index_columns::START_MAX,
        ])?
        .collect()
        .await?;
    let hour = |d: &str, h: &str| {
        col(columns::DATE)
            .eq(lit(d.to_string()))
            .and(col(columns::HOUR).eq(lit(h.to_string())))
    };
    let mut terms: Vec<Expr> = covered.unindexed.iter().map(|(d, h)| hour(d, h)).collect();
    for batch in &hits {
        let dates = batch.column(0).as_string::<i32>();
        let hours = batch.column(1).as_string::<i32>();
        let mins = batch.column(2).as_primitive::<Int64Type>();
        let maxs = batch.column(3).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let key = (dates.value(i).to_string(), hours.value(i).to_string());
            if !covered.indexed.contains(&key) {
                continue;
            }
            let start = col(columns::START_TIME_UNIX_NANO);
            let mut term = hour(&key.0, &key.1);
            if mins.is_valid(i) && maxs.is_valid(i) {
                term = term.and(start.between(lit(mins.value(i)), lit(maxs.value(i))));
            }
            terms.push(term);
        }
    }
    Ok(match terms.into_iter().reduce(Expr::or) {
        Some(narrowing) => DeltaFilter::Narrow(narrowing),
        None => DeltaFilter::Skip,
    })
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// A query engine over `storage`.
    pub fn new(storage: Arc<Storage>, config: QueryConfig) -> Result<Self> {
        let runtime_env = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(config.memory_limit)))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("tracelake-query")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("starting the query runtime: {e}")))?;
        let densities = Arc::new(DensityCache {
            storage: Arc::clone(&storage),
            entries: Mutex::default(),
        });
        Ok(Self {
            storage,
            config,
            runtime_env,
            contexts: Mutex::new(HashMap::new()),
            coverage: Arc::default(),
            densities,
            slo_registry: Arc::default(),
            slo_cache: Arc::default(),
            sql_running: Arc::default(),
            runtime: Some(runtime),
        })
    }

    /// The DataFusion session of `tenant`, with its `spans` table registered.
    pub fn context(&self, tenant: &str) -> Result<SessionContext> {
        self.session(tenant, Session::Engine)
    }

    /// The session of `tenant` for one of its kinds, made once.
    fn session(&self, tenant: &str, kind: Session) -> Result<SessionContext> {
        validate_tenant(tenant)?;
        let key = (tenant.to_string(), kind);
        if let Some(ctx) = self.contexts.lock().get(&key) {
            return Ok(ctx.clone());
        }
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("tracelake", "public");
        let opts = config.options_mut();
        opts.execution.parquet.pushdown_filters = true;
        opts.execution.parquet.reorder_filters = true;
        opts.execution.parquet.bloom_filter_on_read = true;
        opts.execution.parquet.schema_force_view_types = false;
        let ctx = SessionContext::new_with_config_rt(config, Arc::clone(&self.runtime_env));
        crate::sketch::register(&ctx);
        crate::percentile::register(&ctx);
        crate::pg_catalog::register(&ctx, tenant)?;
        crate::functions::register(&ctx);
        ctx.register_udtf(
            "slo_status",
            Arc::new(crate::slo::SloStatusFunction {
                eval: self.slo_eval(),
                tenant: tenant.to_string(),
            }),
        );
        let (storage, name) = (Arc::clone(&self.storage), tenant.to_string());
        let spans: Arc<dyn datafusion::catalog::TableProvider> = match kind {
            Session::Engine => Arc::new(SpansTable::new(storage, name)),
            Session::Sql => Arc::new(SpansTable::with_view_types(storage, name)),
        };
        ctx.register_table("spans", Arc::clone(&spans))?;
        crate::views::register(&ctx, spans)?;
        ctx.register_table(
            tracelake_storage::rollup::ROLLUP_DATASET,
            Arc::new(DeltaSnapshotTable::rollups(
                Arc::clone(&self.storage),
                tenant.to_string(),
            )),
        )?;
        self.contexts.lock().entry(key).or_insert(ctx.clone());
        Ok(ctx)
    }

    /// The tenant's session with a memory pool of its own, for one SQL query.
    fn sql_context(&self, tenant: &str) -> Result<SessionContext> {
        let ctx = self.session(tenant, Session::Sql)?;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(
                self.config.sql_memory_limit,
            )))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .with_object_store_registry(Arc::clone(&self.runtime_env.object_store_registry))
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(ctx.state())
            .with_runtime_env(runtime)
            .build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Counts a SQL query of `tenant` as running, or refuses it when the tenant's limit is
    /// reached.
    fn sql_slot(&self, tenant: &str) -> Result<SqlSlot> {
        let limit = self.config.sql_max_concurrent.max(1);
        let mut running = self.sql_running.lock();
        let n = running.entry(tenant.to_string()).or_default();
        if *n >= limit {
            return Err(Error::Busy(format!(
                "tenant {tenant:?} already runs {limit} SQL queries (query.sql_max_concurrent): \
                 retry when one finishes"
            )));
        }
        *n += 1;
        Ok(SqlSlot {
            running: Arc::clone(&self.sql_running),
            tenant: tenant.to_string(),
        })
    }

    /// Runs `stream` on the query runtime, at most two items ahead of its reader: for the
    /// CPU-heavy end of a query (encoding its rows for a client), so that it never runs on the
    /// IO threads. The stream stops when it ends or when the returned stream is dropped.
    pub fn drive<T: Send + 'static>(
        &self,
        stream: impl futures::Stream<Item = T> + Send + 'static,
    ) -> Result<impl futures::Stream<Item = T> + Send + 'static> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Internal("query engine is shut down".into()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        runtime.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    pub(crate) fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    pub(crate) fn densities(&self) -> Arc<DensityCache> {
        Arc::clone(&self.densities)
    }

    /// Runs one read-only SQL statement for `tenant` and collects its rows, at most
    /// [`QueryConfig::max_rows`] of them ([`QueryOutput::truncated`] says when rows were cut).
    ///
    /// The guard of every SQL front-end (see [`QueryEngine::sql_stream`]).
    pub async fn sql(&self, tenant: &str, sql: &str) -> Result<QueryOutput> {
        let mut stream = self.sql_stream(tenant, sql, None).await?;
        let schema = stream.schema();
        let mut batches = Vec::new();
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            match batch {
                Ok(b) => batches.push(b),
                Err(Error::RowLimit(_)) => truncated = true,
                Err(e) => return Err(e),
            }
        }
        Ok(QueryOutput {
            schema,
            batches,
            truncated,
        })
    }

    /// The plan of one read-only SQL statement for `tenant`, without running it: its result
    /// schema and the types of its `$n` parameters, for prepared statements.
    pub async fn sql_plan(&self, tenant: &str, sql: &str) -> Result<LogicalPlan> {
        guard::check(sql)?;
        let ctx = self.session(tenant, Session::Sql)?;
        let sql = sql.to_string();
        self.run(async move { Ok(classic_output(sql_logical_plan(&ctx, &sql).await?)?) })
            .await
    }

    /// Starts one read-only SQL statement for `tenant`, with values for its `$n` parameters.
    ///
    /// The guard of every SQL front-end: [`guard::check`], at most
    /// [`QueryConfig::sql_max_concurrent`] queries per tenant at once, the per-query memory limit
    /// (no spilling), the timeout (from the start to the last row handed over) and the row
    /// limit: after [`QueryConfig::max_rows`] rows the stream ends with [`Error::RowLimit`].
    ///
    /// The query runs on the query runtime; batches are handed over as they are produced, two
    /// at most waiting. Dropping the stream cancels the query.
    pub async fn sql_stream(
        &self,
        tenant: &str,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<SqlStream> {
        guard::check(sql)?;
        let ctx = self.sql_context(tenant)?;
        let slot = self.sql_slot(tenant)?;
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Internal("query engine is shut down".into()))?;
        let sql = sql.to_string();
        let max_rows = self.config.max_rows;
        let memory = self.config.sql_memory_limit;
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let started = runtime.spawn(async move {
            let run = async move {
                let plan = sql_logical_plan(&ctx, &sql).await?;
                let mut df = ctx.execute_logical_plan(plan).await?;
                if let Some(params) = params {
                    df = df.with_param_values(params)?;
                }
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let classic = classic_schema(&schema);
                let stream = df.execute_stream().await?;
                Ok::<_, Error>((schema, classic, stream))
            };
            match tokio::time::timeout_at(deadline, run).await {
                Ok(r) => r.map_err(|e| over_memory(e, memory)),
                Err(_) => Err(Error::Timeout(timeout)),
            }
        });
        let (schema, classic, mut batches) = started
            .await
            .map_err(|e| Error::Internal(format!("query task failed: {e}")))??;
        let out_schema = classic.clone().unwrap_or(schema);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let fail = Arc::clone(&failure);
        runtime.spawn(async move {
            let produce = async {
                let mut rows = 0usize;
                while let Some(batch) = batches.next().await {
                    let batch = batch.map_err(|e| over_memory(e.into(), memory))?;
                    let batch = match &classic {
                        Some(schema) => crate::provider::cast_batch(&batch, schema)?,
                        None => batch,
                    };
                    if rows + batch.num_rows() > max_rows {
                        let keep = max_rows - rows;
                        if keep > 0 && tx.send(batch.slice(0, keep)).await.is_err() {
                            return Ok(());
                        }
                        return Err(Error::RowLimit(max_rows));
                    }
                    rows += batch.num_rows();
                    if tx.send(batch).await.is_err() {
                        // The reader went away: dropping the stream cancels the query.
                        return Ok(());
                    }
                }
                Ok(())
            };
            let outcome = match tokio::time::timeout_at(deadline, produce).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout(timeout)),
            };
            // The query's state (and the storage it reads) goes before the reader learns the
            // end, so a caller done with the stream is done with the query.
            drop(batches);
            drop(slot);
            if let Err(e) = outcome {
                *fail.lock() = Some(e);
            }
            drop(tx);
        });
        Ok(SqlStream {
            schema: out_schema,
            batches: rx,
            failure,
        })
    }

    /// All spans of one trace, ordered by start time. Empty when the trace is unknown.
    ///
    /// Hours covered by the trace index (see [`tracelake_storage::trace_index`]) are read only
    /// within the trace's time range there; the other hours and the buffer are searched by
    /// trace id (file and row-group statistics, bloom filters).
    pub async fn trace_by_id(
        &self,
        tenant: &str,
        trace_id: [u8; 16],
        range: Option<TimeRange>,
    ) -> Result<Vec<RecordBatch>> {
        let ctx = self.context(tenant)?;
        let storage = Arc::clone(&self.storage);
        let coverage = Arc::clone(&self.coverage);
        let tenant = tenant.to_string();
        self.run(async move {
            let id =
                || col(columns::TRACE_ID).eq(lit(ScalarValue::Binary(Some(trace_id.to_vec()))));
            let mut filter = id();
            if let Some(r) = range {
                filter = filter.and(partition_filter(r));
            }
            let snapshot = storage.snapshot(&tenant).await?;
            let narrowing = match (&snapshot.table, &snapshot.index) {
                (Some(table), Some(index)) => {
                    let covered = coverage.get(&tenant, table, index)?;
                    index_narrowing(&ctx, index, &covered, filter.clone()).await?
                }
                _ => DeltaFilter::None,
            };
            let spans = SpansTable::pinned(storage, tenant, snapshot, narrowing);
            let df = ctx
                .read_table(Arc::new(spans))?
                .filter(filter)?
                .sort(vec![col(columns::START_TIME_UNIX_NANO).sort(true, true)])?;
            Ok(df.collect().await?)
        })
        .await
    }

    /// Runs `fut` on the query runtime with the configured timeout.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| Error::Internal("query engine is shut down".into()))?;
        let timeout = self.config.timeout;
        let handle = runtime.spawn(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout(timeout)),
            }
        });
        match handle.await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("query task failed: {e}"))),
        }
    }
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        for ctx in self.contexts.lock().values() {
            crate::pg_catalog::unregister(ctx);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The kinds of session a tenant has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Session {
    /// The engine's own queries (lookups, searches, metrics, SLOs): text columns as `Utf8`.
    Engine,
    /// The SQL front-ends: text columns of `spans` read as `Utf8View` (see
    /// [`SpansTable::with_view_types`]), results and parameters in the classic types.
    Sql,
}

/// The plan of one read-only SQL statement in a [`Session::Sql`] session, checked by
/// [`read_only`], with its parameters in the classic types ([`classic_parameters`]).
async fn sql_logical_plan(ctx: &SessionContext, sql: &str) -> Result<LogicalPlan> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    read_only().verify_plan(&plan)?;
    Ok(classic_parameters(plan)?)
}

/// `data_type` with its view types (`Utf8View`, `BinaryView`, also inside lists and structs)
/// as the classic ones, or `None` when it has none.
fn classic_type(data_type: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| {
        classic_type(f.data_type()).map(|t| Arc::new(f.as_ref().clone().with_data_type(t)))
    };
    match data_type {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        DataType::List(f) => field(f).map(DataType::List),
        DataType::LargeList(f) => field(f).map(DataType::LargeList),
        DataType::FixedSizeList(f, n) => field(f).map(|f| DataType::FixedSizeList(f, *n)),
        DataType::Struct(fields) if fields.iter().any(|f| field(f).is_some()) => {
            Some(DataType::Struct(
                fields
                    .iter()
                    .map(|f| field(f).unwrap_or_else(|| Arc::clone(f)))
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// `plan` with its view-typed `$n` parameters taking classic values (cast where they are
/// used): clients bind `Utf8` and `Binary` whichever way the engine reads the table.
fn classic_parameters(plan: LogicalPlan) -> datafusion::common::Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::Placeholder(Placeholder {
                        id,
                        field: Some(field),
                    }) => match classic_type(field.data_type()) {
                        Some(classic) => {
                            let view = field.data_type().clone();
                            let field = Arc::new(field.as_ref().clone().with_data_type(classic));
                            let param = Expr::Placeholder(Placeholder {
                                id,
                                field: Some(field),
                            });
                            Ok(Transformed::yes(cast(param, view)))
                        }
                        None => Ok(Transformed::no(Expr::Placeholder(Placeholder {
                            id,
                            field: Some(field),
                        }))),
                    },
                    e => Ok(Transformed::no(e)),
                })
            })
        })?
        .data)
}

/// The result schema clients see for `schema`: its view types as the classic ones, or `None`
/// when it has none. [`QueryEngine::sql_stream`] casts the batches to it.
fn classic_schema(schema: &SchemaRef) -> Option<SchemaRef> {
    let mut changed = false;
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match classic_type(f.data_type()) {
            Some(t) => {
                changed = true;
                Arc::new(f.as_ref().clone().with_data_type(t))
            }
            None => Arc::clone(f),
        })
        .collect();
    changed.then(|| Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// `plan` with its output described as clients get it ([`classic_schema`]): for describing a
/// statement only. Run, the casting projection on top would make DataFusion repartition the
/// rows before it (and buffer them there); [`QueryEngine::sql_stream`] casts its batches
/// instead.
fn classic_output(plan: LogicalPlan) -> datafusion::common::Result<LogicalPlan> {
    let schema = Arc::clone(plan.schema());
    let Some(classic) = classic_schema(schema.inner()) else {
        return Ok(plan);
    };
    let columns = schema
        .iter()
        .zip(classic.fields())
        .map(|((qualifier, field), want)| {
            let column = Expr::Column(Column::from((qualifier, field)));
            if want.data_type() == field.data_type() {
                column
            } else {
                cast(column, want.data_type().clone())
                    .alias_qualified(qualifier.cloned(), field.name())
            }
        })
        .collect::<Vec<_>>();
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

/// DataFusion's own check of a planned statement: no DDL, no DML, no `SET`.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// The result of a SQL query as it is produced (see [`QueryEngine::sql_stream`]).
pub struct SqlStream {
    schema: SchemaRef,
    batches: tokio::sync::mpsc::Receiver<RecordBatch>,
    failure: Arc<Mutex<Option<Error>>>,
}

impl SqlStream {
    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl futures::Stream for SqlStream {
    type Item = Result<RecordBatch>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.batches.poll_recv(cx) {
            std::task::Poll::Ready(Some(batch)) => std::task::Poll::Ready(Some(Ok(batch))),
            // The producer has ended: report how, once.
            std::task::Poll::Ready(None) => {
                std::task::Poll::Ready(self.failure.lock().take().map(Err))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// Parses a trace id of 1-32 hex digits (leading zeros may be trimmed, as Jaeger does).
pub fn parse_trace_id(s: &str) -> Result<[u8; 16]> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidTraceId(s.chars().take(64).collect()));
    }
    let padded = format!("{s:0>32}");
    let mut out = [0u8; 16];
    for (i, chunk) in padded.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).map_err(|_| Error::InvalidTraceId(s.into()))?;
        out[i] = u8::from_str_radix(hex, 16).map_err(|_| Error::InvalidTraceId(s.into()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids() {
        assert_eq!(parse_trace_id("1").unwrap()[15], 1);
        let full = parse_trace_id("5B8EFFF798038103D269B633813FC60C").unwrap();
        assert_eq!(full[0], 0x5b);
        assert_eq!(full[15], 0x0c);
        assert!(parse_trace_id("").is_err());
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"a".repeat(33)).is_err());
    }
}
