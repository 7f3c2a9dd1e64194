//! The storage engine: WAL append, the per-tenant write buffer, periodic flushes to Delta, and
//! WAL truncation once spans are committed.
//!
//! Invariants that make "an acknowledged span is never lost, and never committed twice" hold:
//! - A WAL record is inserted into the buffer on the WAL writer thread, in sequence order, before
//!   its fsync; `inserted_through` is the highest sequence number inserted so far.
//! - A flush commits everything buffered for a tenant together with `txn(app_id, max_seq)`, so
//!   on replay every record of that tenant with `seq <= txn` is known to be in the table.
//! - The WAL is truncated through `min(oldest seq still buffered) - 1`, bounded by
//!   `inserted_through`, and only after the commits that hold everything older.
//! - Spans may also be held outside the buffer (the tail sampler keeps undecided traces). The
//!   holder reports the oldest sequence number it still holds through [`Storage::set_hold`], and
//!   a flush commits only the buffered spans of records below it, with `txn` at that watermark:
//!   every record at or below a committed `txn` is fully resolved (kept spans committed, dropped
//!   spans decided), so replay skips exactly those.
//! - Records of a *system stream* (a name starting with [`SYSTEM_STREAM_PREFIX`], such as the
//!   sampler's decisions) never hold spans; they are replayed first, all of them, whatever the
//!   tables hold.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use deltalake::DeltaTable;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracelake_proto::span_schema;
use tracing::{info, warn};

use crate::compact::{compact_and_vacuum, vacuum_table, CompactionConfig, CompactionStats};
use crate::error::{Error, Result};
use crate::metrics::StorageMetrics;
use crate::rollup::{
    compact_rollups, rollup, rollup_schema, rollup_writer_properties, ROLLUP_DATASET,
};
use crate::store::{validate_tenant, StorageLocation};
use crate::table::{
    append_spans, append_with_txn, committed_wal_seq, open_or_create_span_table,
    open_or_create_table, sort_spans,
};
use crate::trace_index::{index_and_vacuum, open_index_table, TRACE_INDEX_DATASET};
use crate::wal::{Wal, WalOptions, WalRecord};

/// The dataset name of the span table under each tenant.
pub const SPANS_DATASET: &str = "spans";

/// WAL records whose tenant field starts with this are system records, not spans. Tenant ids
/// cannot contain `#`, so the two never collide.
pub const SYSTEM_STREAM_PREFIX: &str = "#";

/// Reports the oldest WAL sequence number whose spans are held outside the write buffer.
pub type HoldFn = dyn Fn() -> Option<u64> + Send + Sync;

/// Storage engine settings.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Where the Delta tables live.
    pub location: StorageLocation,
    /// Local directory of the write-ahead log.
    pub wal_dir: PathBuf,
    /// WAL segment settings.
    pub wal: WalOptions,
    /// Flush the buffer at least this often.
    pub flush_interval: Duration,
    /// Flush a tenant early once its buffer holds this many bytes.
    pub flush_bytes: usize,
    /// Refuse new spans (backpressure) while buffered plus unsynced WAL bytes exceed this.
    pub max_buffer_bytes: usize,
}

impl StorageConfig {
    /// Defaults for a data directory: WAL in `<dir>/wal`, tables under `<dir>`.
    pub fn for_location(location: StorageLocation, wal_dir: PathBuf) -> Self {
        Self {
            location,
            wal_dir,
            wal: WalOptions::default(),
            flush_interval: Duration::from_secs(5),
            flush_bytes: 64 * 1024 * 1024,
            max_buffer_bytes: 512 * 1024 * 1024,
        }
    }
}

/// What a query sees of one tenant at one instant: the committed table and the spans still in
/// memory. The two never overlap and never miss a span between them.
#[derive(Clone)]
pub struct TenantSnapshot {
    /// The Delta table at its latest committed version, if the table exists.
    pub table: Option<DeltaTable>,
    /// Buffered spans not yet in `table`.
    pub buffered: Vec<RecordBatch>,
    /// The tenant's trace index, if compaction has built one (see [`crate::trace_index`];
    /// which hours it may answer for is decided against `table`).
    pub index: Option<DeltaTable>,
    /// The `span_metrics_1m` rollups (see [`crate::rollup`]), once a flush has written some.
    pub rollups: Option<DeltaTable>,
}

impl std::fmt::Debug for TenantSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSnapshot")
            .field(
                "table_version",
                &self.table.as_ref().and_then(|t| t.version()),
            )
            .field(
                "index_version",
                &self.index.as_ref().and_then(|t| t.version()),
            )
            .field("buffered_batches", &self.buffered.len())
            .finish()
    }
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushStats {
    /// Spans committed.
    pub spans: u64,
    /// Delta commits made.
    pub commits: u64,
    /// Tenants whose commit failed (their spans stay buffered and in the WAL).
    pub failed: u64,
    /// WAL segments deleted.
    pub wal_segments_deleted: u64,
}

#[derive(Default)]
struct TenantState {
    table: Option<DeltaTable>,
    /// The trace index, once opened or built.
    index: Option<DeltaTable>,
    /// The rollup table, once opened or created.
    rollups: Option<DeltaTable>,
    /// The WAL seq through which rollups are committed (the rollup table's txn), once known.
    rollup_seq: Option<u64>,
    /// Inserted since the last flush started. Mostly in seq order, but spans released by the
    /// tail sampler arrive with their (older) record seqs.
    active: Vec<(u64, RecordBatch)>,
    /// Being committed by the running flush (or left over from a failed one).
    flushing: Vec<(u64, RecordBatch)>,
    bytes: usize,
}

impl TenantState {
    fn min_seq(&self) -> Option<u64> {
        self.flushing
            .iter()
            .chain(self.active.iter())
            .map(|(s, _)| *s)
            .min()
    }
}

struct Shared {
    tenants: Mutex<HashMap<String, TenantState>>,
    inserted_through: AtomicU64,
    buffered_bytes: AtomicU64,
    flush_bytes: usize,
    flush_wanted: Notify,
    metrics: Arc<StorageMetrics>,
    hold: std::sync::OnceLock<Box<HoldFn>>,
}

impl Shared {
    fn insert(&self, tenant: &str, seq: u64, batch: Option<RecordBatch>) {
        let mut tenants = self.tenants.lock();
        if let Some(batch) = batch.filter(|b| b.num_rows() > 0) {
            let size = batch.get_array_memory_size();
            let state = tenants.entry(tenant.to_string()).or_default();
            state.active.push((seq, batch));
            state.bytes += size;
            self.buffered_bytes
                .fetch_add(size as u64, Ordering::Relaxed);
            self.metrics
                .buffer_bytes
                .set(self.buffered_bytes.load(Ordering::Relaxed) as i64);
            if state.bytes >= self.flush_bytes {
                self.flush_wanted.notify_one();
            }
        }
        self.inserted_through.fetch_max(seq, Ordering::AcqRel);
    }
}

/// The storage engine. Cheap to share behind an `Arc`.
pub struct Storage {
    config: StorageConfig,
    app_id: String,
    wal: Wal,
    shared: Arc<Shared>,
    flush_lock: tokio::sync::Mutex<()>,
    flush_runtime: Option<tokio::runtime::Runtime>,
    /// Compaction's merges and Parquet encoding run here, off the IO threads and apart from
    /// flushes.
    compact_runtime: Option<tokio::runtime::Runtime>,
    /// Held for the process's lifetime: one process per WAL directory.
    _wal_lock: std::fs::File,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.config.location)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// Turns a replayed WAL record into the spans to buffer (decode, then sample).
pub type ReplayFn<'a> = dyn FnMut(&WalRecord) -> Result<Option<RecordBatch>> + Send + 'a;

impl Storage {
    /// Opens the WAL and replays every record not yet committed to its tenant's table, through
    /// `replay` (which decodes and samples it) into the buffer.
    pub async fn open(
        config: StorageConfig,
        metrics: Arc<StorageMetrics>,
        replay: &mut ReplayFn<'_>,
    ) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&config.wal_dir).map_err(|source| Error::Io {
            context: format!("creating wal directory {}", config.wal_dir.display()),
            source,
        })?;
        let lock = lock_wal_dir(&config.wal_dir)?;
        let app_id = format!("tracelake-wal-{}", node_id(&config.wal_dir)?);
        let (wal_dir, wal_opts) = (config.wal_dir.clone(), config.wal.clone());
        let (wal, info) = tokio::task::spawn_blocking(move || Wal::open(&wal_dir, wal_opts))
            .await
            .map_err(|e| Error::Config(format!("wal open task failed: {e}")))??;
        if info.corrupt_segments > 0 {
            warn!(
                corrupt_segments = info.corrupt_segments,
                skipped_bytes = info.skipped_bytes,
                "write-ahead log had torn or corrupt records; the valid ones were replayed"
            );
        }
        let flush_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tracelake-flush")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                context: "starting the flush runtime".into(),
                source,
            })?;
        let compact_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tracelake-compact")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                context: "starting the compaction runtime".into(),
                source,
            })?;
        let shared = Arc::new(Shared {
            tenants: Mutex::new(HashMap::new()),
            inserted_through: AtomicU64::new(wal.last_seq()),
            buffered_bytes: AtomicU64::new(0),
            flush_bytes: config.flush_bytes,
            flush_wanted: Notify::new(),
            metrics,
            hold: std::sync::OnceLock::new(),
        });
        let storage = Arc::new(Self {
            config,
            app_id,
            wal,
            shared,
            flush_lock: tokio::sync::Mutex::new(()),
            flush_runtime: Some(flush_runtime),
            compact_runtime: Some(compact_runtime),
            _wal_lock: lock,
        });

        storage.probe_store().await?;

        // Replay: system records first, then every record its tenant table does not hold yet
        // (txn >= seq).
        for record in info
            .records
            .iter()
            .filter(|r| r.tenant.starts_with(SYSTEM_STREAM_PREFIX))
        {
            replay(record)?;
        }
        let mut committed: HashMap<String, u64> = HashMap::new();
        let (mut replayed, mut skipped) = (0u64, 0u64);
        for record in &info.records {
            if record.tenant.starts_with(SYSTEM_STREAM_PREFIX) {
                continue;
            }
            if !committed.contains_key(&record.tenant) {
                let table = storage.table(&record.tenant, true).await?;
                let seq = match &table {
                    Some(t) => committed_wal_seq(t, &storage.app_id).await?,
                    None => 0,
                };
                committed.insert(record.tenant.clone(), seq);
            }
            if record.seq <= committed[&record.tenant] {
                skipped += 1;
                continue;
            }
            let batch = replay(record)?;
            storage.shared.insert(&record.tenant, record.seq, batch);
            replayed += 1;
        }
        if replayed + skipped > 0 {
            info!(
                replayed,
                already_committed = skipped,
                "replayed write-ahead log"
            );
        }
        Ok(storage)
    }

    /// Checks at start-up that the store is reachable (a missing bucket or bad credentials fail
    /// here, with a clear message, not at the first flush), and warns when the store ignores
    /// conditional writes, where only one writer process is safe.
    async fn probe_store(&self) -> Result<()> {
        let url = self.config.location.table_url("default", SPANS_DATASET)?;
        let options = self.config.location.options().clone();
        let root = self.config.location.root().to_string();
        self.on_flush_runtime(async move {
            let table = deltalake::DeltaTable::try_from_url_with_storage_options(url.clone(), options)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot use storage {root}: {e}: check that the bucket exists and the credentials and endpoint are right"
                    ))
                })?;
            let store = table.object_store();
            let path = object_store::path::Path::from(format!(
                "_tracelake_probe/{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            ));
            let create = || object_store::PutOptions {
                mode: object_store::PutMode::Create,
                ..Default::default()
            };
            store
                .put_opts(&path, object_store::PutPayload::from_static(b"probe"), create())
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "cannot write to storage {root}: {e}: check that the bucket exists and the credentials allow writes"
                    ))
                })?;
            match store
                .put_opts(&path, object_store::PutPayload::from_static(b"probe"), create())
                .await
            {
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Ok(_) => warn!(
                    storage = %root,
                    "this store ignores conditional writes (If-None-Match): concurrent Delta commits can be lost, so run only one tracelake writer process against it"
                ),
                Err(e) => warn!(storage = %root, error = %e, "conditional-write probe failed"),
            }
            let _ = object_store::ObjectStoreExt::delete(store.as_ref(), &path).await;
            Ok(())
        })
        .await
    }

    /// This process's WAL identity, recorded in Delta `txn` actions.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The configured storage location.
    pub fn location(&self) -> &StorageLocation {
        &self.config.location
    }

    /// True while the buffer and unsynced WAL are over their memory limit: refuse new spans.
    pub fn overloaded(&self) -> bool {
        let bytes = self.shared.buffered_bytes.load(Ordering::Relaxed) + self.wal.pending_bytes();
        bytes as usize > self.config.max_buffer_bytes
    }

    /// Appends one request to the WAL and, once sequenced, its spans to the buffer. Resolves when
    /// the record is durable (fsynced): only then may the client be acknowledged.
    pub async fn append(
        &self,
        tenant: &str,
        wal_data: Vec<u8>,
        spans: Option<RecordBatch>,
    ) -> Result<u64> {
        self.append_with(tenant, wal_data, Box::new(move |_| spans))
            .await
    }

    /// Like [`Storage::append`], but the spans to buffer come from `on_sequenced`, called with
    /// the record's sequence number on the WAL writer thread, in sequence order, before the
    /// fsync. It must be quick. Spans it keeps back (an undecided trace) must be reported
    /// through [`Storage::set_hold`] until they are [`Storage::insert`]ed.
    pub async fn append_with(
        &self,
        tenant: &str,
        wal_data: Vec<u8>,
        on_sequenced: Box<dyn FnOnce(u64) -> Option<RecordBatch> + Send>,
    ) -> Result<u64> {
        validate_tenant(tenant)?;
        let bytes = wal_data.len() as u64;
        let shared = Arc::clone(&self.shared);
        let owned_tenant = tenant.to_string();
        let seq = self
            .wal
            .append(
                tenant,
                wal_data,
                Box::new(move |seq| {
                    let spans = on_sequenced(seq);
                    shared.insert(&owned_tenant, seq, spans)
                }),
            )
            .await?;
        self.shared.metrics.wal_bytes_written.inc_by(bytes);
        self.shared
            .metrics
            .wal_disk_bytes
            .set(self.wal.disk_bytes() as i64);
        Ok(seq)
    }

    /// Appends a system record (`stream` must start with [`SYSTEM_STREAM_PREFIX`]). Resolves
    /// when it is durable.
    pub async fn append_system(&self, stream: &str, data: Vec<u8>) -> Result<u64> {
        if !stream.starts_with(SYSTEM_STREAM_PREFIX) {
            return Err(Error::Config(format!(
                "system stream {stream:?} must start with {SYSTEM_STREAM_PREFIX:?}"
            )));
        }
        let bytes = data.len() as u64;
        let seq = self.wal.append(stream, data, Box::new(|_| {})).await?;
        self.shared.metrics.wal_bytes_written.inc_by(bytes);
        Ok(seq)
    }

    /// Buffers spans of WAL record `seq` that were held back (see [`Storage::append_with`]).
    pub fn insert(&self, tenant: &str, seq: u64, spans: RecordBatch) {
        self.shared.insert(tenant, seq, Some(spans));
    }

    /// Installs the function that reports the oldest sequence number held outside the buffer.
    /// Flushes commit, and the WAL is truncated, only below it. Can be set once.
    pub fn set_hold(&self, hold: Box<HoldFn>) -> Result<()> {
        self.shared
            .hold
            .set(hold)
            .map_err(|_| Error::Config("the storage hold is already set".into()))
    }

    /// Every record at or below this sequence number is resolved: its spans are buffered,
    /// committed or dropped, none are held elsewhere.
    fn resolved_through(&self) -> u64 {
        // Read `inserted_through` before the hold: a record at or below it is then either still
        // held (and bounds the hold) or already in the buffer.
        let inserted = self.shared.inserted_through.load(Ordering::Acquire);
        match self.shared.hold.get().and_then(|h| h()) {
            Some(held) => inserted.min(held.saturating_sub(1)),
            None => inserted,
        }
    }

    /// The tenants that have buffered spans or an opened table.
    pub fn tenants(&self) -> Vec<String> {
        let mut t: Vec<_> = self.shared.tenants.lock().keys().cloned().collect();
        t.sort();
        t
    }

    /// A consistent view of a tenant for queries. Opens (never creates) the table on first use.
    pub async fn snapshot(&self, tenant: &str) -> Result<TenantSnapshot> {
        validate_tenant(tenant)?;
        let known = {
            let tenants = self.shared.tenants.lock();
            tenants.get(tenant).map(|s| s.table.is_some())
        };
        if known != Some(true) {
            // Load the table outside the lock; a concurrent flush may install a newer one.
            let _ = self.table(tenant, false).await?;
        }
        let tenants = self.shared.tenants.lock();
        Ok(match tenants.get(tenant) {
            Some(state) => TenantSnapshot {
                table: state.table.clone(),
                buffered: state
                    .flushing
                    .iter()
                    .chain(state.active.iter())
                    .map(|(_, b)| b.clone())
                    .collect(),
                index: state.index.clone(),
                rollups: state.rollups.clone(),
            },
            None => TenantSnapshot {
                table: None,
                buffered: Vec::new(),
                index: None,
                rollups: None,
            },
        })
    }

    /// The tenant's table, opening it (and creating it when `create`) if not yet loaded.
    async fn table(&self, tenant: &str, create: bool) -> Result<Option<DeltaTable>> {
        if let Some(t) = self
            .shared
            .tenants
            .lock()
            .get(tenant)
            .and_then(|s| s.table.clone())
        {
            return Ok(Some(t));
        }
        let url = self.config.location.table_url(tenant, SPANS_DATASET)?;
        let options = self.config.location.options().clone();
        let table = if create {
            let t = self
                .on_flush_runtime(async move { open_or_create_span_table(&url, &options).await })
                .await?;
            Some(t)
        } else {
            let t = self
                .on_flush_runtime(async move {
                    deltalake::DeltaTable::try_from_url_with_storage_options(url.clone(), options)
                        .await
                        .map_err(|e| Error::delta(&url, e))
                })
                .await?;
            t.version().is_some().then_some(t)
        };
        if let Some(t) = &table {
            // The index is optional: a tenant without one (or one that fails to open) is
            // read through the span files alone.
            let index_url = self
                .config
                .location
                .table_url(tenant, TRACE_INDEX_DATASET)?;
            let rollup_url = self.config.location.table_url(tenant, ROLLUP_DATASET)?;
            let options = self.config.location.options().clone();
            let (index, rollups) = self
                .on_flush_runtime(async move {
                    Ok((
                        open_index_table(&index_url, &options, false).await,
                        open_existing(&rollup_url, &options).await,
                    ))
                })
                .await?;
            let index = index.unwrap_or_else(|e| {
                warn!(tenant, error = %e, "the trace index could not be opened; lookups scan");
                None
            });
            let rollups = rollups.unwrap_or_else(|e| {
                warn!(tenant, error = %e, "span_metrics_1m could not be opened");
                None
            });
            let mut tenants = self.shared.tenants.lock();
            let state = tenants.entry(tenant.to_string()).or_default();
            if state.table.is_none() {
                state.table = Some(t.clone());
            }
            if state.index.is_none() {
                state.index = index;
            }
            if state.rollups.is_none() {
                state.rollups = rollups;
            }
        }
        Ok(table)
    }

    async fn on_flush_runtime<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let rt = self.flush_runtime.as_ref().ok_or(Error::ShuttingDown)?;
        rt.spawn(fut)
            .await
            .map_err(|e| Error::Config(format!("flush task failed: {e}")))?
    }

    /// Commits every tenant's buffered spans, then truncates the WAL as far as is safe.
    pub async fn flush(&self) -> Result<FlushStats> {
        let _guard = self.flush_lock.lock().await;
        let started = Instant::now();
        let mut stats = FlushStats::default();
        let resolved = self.resolved_through();
        let tenants: Vec<String> = self.shared.tenants.lock().keys().cloned().collect();
        for tenant in tenants {
            match self.flush_tenant(&tenant, resolved).await {
                Ok(spans) if spans > 0 => {
                    stats.spans += spans;
                    stats.commits += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    stats.failed += 1;
                    self.shared.metrics.flush_errors.inc();
                    warn!(tenant, error = %e, "flush failed; spans stay buffered and in the WAL");
                }
            }
        }
        let through = {
            let resolved = self.resolved_through();
            let tenants = self.shared.tenants.lock();
            tenants
                .values()
                .filter_map(TenantState::min_seq)
                .map(|s| s - 1)
                .min()
                .map_or(resolved, |m| m.min(resolved))
        };
        if through > 0 {
            stats.wal_segments_deleted = self.wal.truncate_through(through)? as u64;
        }
        if stats.spans > 0 {
            self.shared.metrics.spans_flushed.inc_by(stats.spans);
            self.shared
                .metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.shared
            .metrics
            .wal_disk_bytes
            .set(self.wal.disk_bytes() as i64);
        Ok(stats)
    }

    /// Commits the tenant's buffered spans of records at or below `resolved`, with
    /// `txn = resolved`.
    async fn flush_tenant(&self, tenant: &str, resolved: u64) -> Result<u64> {
        let batches = {
            let mut tenants = self.shared.tenants.lock();
            let Some(state) = tenants.get_mut(tenant) else {
                return Ok(0);
            };
            let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut state.active)
                .into_iter()
                .partition(|(seq, _)| *seq <= resolved);
            state.active = later;
            state.flushing.extend(ready);
            if state.flushing.is_empty() {
                return Ok(0);
            }
            state.flushing.clone()
        };
        // Everything at or below `resolved` is buffered or dropped, and `flushing` only holds
        // such records (a failed earlier flush used an older, lower watermark).
        let max_seq = resolved;
        let table = match self.table(tenant, true).await? {
            Some(t) => t,
            None => return Err(Error::Config(format!("table for tenant {tenant} missing"))),
        };
        let app_id = self.app_id.clone();
        let spans: u64 = batches.iter().map(|(_, b)| b.num_rows() as u64).sum();
        let (rollups, rollup_seq) = {
            let tenants = self.shared.tenants.lock();
            tenants
                .get(tenant)
                .map(|s| (s.rollups.clone(), s.rollup_seq))
                .unwrap_or_default()
        };
        let rollup_url = self.config.location.table_url(tenant, ROLLUP_DATASET)?;
        let options = self.config.location.options().clone();
        let (rollups, rollup_seq, rollup_rows, appended) = self
            .on_flush_runtime(async move {
                // Rollups first, from the records they do not hold yet (see crate::rollup).
                let rollups = match rollups {
                    Some(t) => t,
                    None => {
                        open_or_create_table(
                            &rollup_url,
                            &options,
                            &rollup_schema(),
                            ROLLUP_DATASET,
                            "tracelake per-minute RED rollups of the spans",
                        )
                        .await?
                    }
                };
                let done = match rollup_seq {
                    Some(seq) => seq,
                    None => committed_wal_seq(&rollups, &app_id).await?,
                };
                let fresh: Vec<RecordBatch> = batches
                    .iter()
                    .filter(|(seq, _)| *seq > done)
                    .map(|(_, b)| b.clone())
                    .collect();
                let (rollups, rollup_seq, rollup_rows) = match rollup(&fresh)? {
                    Some(rows) => {
                        let n = rows.num_rows() as u64;
                        let t = append_with_txn(
                            &rollups,
                            vec![rows],
                            &app_id,
                            max_seq,
                            rollup_writer_properties(),
                        )
                        .await?;
                        (t, max_seq, n)
                    }
                    None => (rollups, done, 0),
                };
                let appended = async {
                    let batches: Vec<RecordBatch> = batches.into_iter().map(|(_, b)| b).collect();
                    let all = concat_batches(&span_schema(), &batches)?;
                    let sorted = sort_spans(&all)?;
                    append_spans(&table, vec![sorted], &app_id, max_seq).await
                }
                .await;
                Ok((rollups, rollup_seq, rollup_rows, appended))
            })
            .await?;
        {
            // Recorded even when the span commit failed: those rollups are committed.
            let mut tenants = self.shared.tenants.lock();
            let state = tenants.entry(tenant.to_string()).or_default();
            state.rollups = Some(rollups);
            state.rollup_seq = Some(rollup_seq);
        }
        self.shared.metrics.rollup_rows.inc_by(rollup_rows);
        let new_table = appended?;
        let mut tenants = self.shared.tenants.lock();
        let state = tenants.entry(tenant.to_string()).or_default();
        let freed: usize = state
            .flushing
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum();
        state.flushing.clear();
        state.bytes = state.bytes.saturating_sub(freed);
        state.table = Some(new_table);
        let total = self
            .shared
            .buffered_bytes
            .fetch_sub(freed as u64, Ordering::Relaxed)
            .saturating_sub(freed as u64);
        self.shared.metrics.buffer_bytes.set(total as i64);
        Ok(spans)
    }

    /// Runs flushes every `flush_interval`, or sooner when a tenant's buffer is over
    /// `flush_bytes`, until `shutdown` resolves.
    pub async fn run_flusher(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(self.config.flush_interval) => {}
                _ = self.shared.flush_wanted.notified() => {}
            }
            if let Err(e) = self.flush().await {
                warn!(error = %e, "flush failed");
            }
        }
    }

    /// Final flush and WAL sync. Spans that cannot be committed stay in the WAL for the next
    /// start.
    pub async fn shutdown(&self) -> Result<FlushStats> {
        let stats = self.flush().await?;
        self.wal.rotate()?;
        Ok(stats)
    }

    /// Compacts the closed hours of every tenant's span table (see [`crate::compact`]), on the
    /// compaction runtime. A tenant whose compaction fails is logged and skipped.
    pub async fn compact(&self, config: &CompactionConfig) -> Result<CompactionStats> {
        let mut tenants = self.config.location.list_tenants().await?;
        tenants.extend(self.tenants());
        tenants.sort();
        tenants.dedup();
        let mut total = CompactionStats::default();
        for tenant in tenants {
            let Some(table) = self.table(&tenant, false).await? else {
                continue;
            };
            let rt = self.compact_runtime.as_ref().ok_or(Error::ShuttingDown)?;
            let task_config = config.clone();
            let started = Instant::now();
            let result = rt
                .spawn(async move {
                    compact_and_vacuum(&table, &task_config, std::time::SystemTime::now()).await
                })
                .await
                .map_err(|e| Error::Config(format!("compaction task failed: {e}")))?;
            match result {
                Ok((Some(table), stats)) => {
                    self.install_table(&tenant, table).await;
                    let m = &self.shared.metrics;
                    m.compaction_files_removed.inc_by(stats.files_removed);
                    m.compaction_files_added.inc_by(stats.files_added);
                    m.compaction_spans.inc_by(stats.spans);
                    m.compaction_files_vacuumed.inc_by(stats.files_vacuumed);
                    m.compaction_seconds
                        .observe(started.elapsed().as_secs_f64());
                    total += stats;
                }
                Ok((None, _)) => {}
                Err(e) => {
                    self.shared.metrics.compaction_errors.inc();
                    warn!(tenant, error = %e, "compaction failed; the table is unchanged");
                    continue;
                }
            }
            // Index the hours that are now compacted (also those compacted before an index
            // existed, or whose last index build failed).
            let Some(table) = self.table(&tenant, false).await? else {
                continue;
            };
            let index_url = self
                .config
                .location
                .table_url(&tenant, TRACE_INDEX_DATASET)?;
            let options = self.config.location.options().clone();
            let task_config = config.clone();
            let result =
                rt.spawn(async move {
                    index_and_vacuum(&table, &index_url, &options, &task_config).await
                })
                .await
                .map_err(|e| Error::Config(format!("trace index task failed: {e}")))?;
            match result {
                Ok((index, hours)) => {
                    if let Some(index) = index {
                        self.install_index(&tenant, index);
                    }
                    self.shared.metrics.compaction_hours_indexed.inc_by(hours);
                    total.hours_indexed += hours;
                }
                Err(e) => {
                    self.shared.metrics.compaction_errors.inc();
                    warn!(tenant, error = %e, "trace index build failed; lookups scan those hours");
                }
            }
            // Fold each closed hour's per-flush rollup files into one.
            let rollups = self
                .shared
                .tenants
                .lock()
                .get(&tenant)
                .and_then(|s| s.rollups.clone());
            let Some(rollups) = rollups else {
                continue;
            };
            let task_config = config.clone();
            let result = rt
                .spawn(async move {
                    let (compacted, hours) =
                        compact_rollups(&rollups, &task_config, std::time::SystemTime::now())
                            .await?;
                    let (vacuumed, _) =
                        vacuum_table(compacted.as_ref().unwrap_or(&rollups), &task_config).await?;
                    Ok::<_, Error>((vacuumed.or(compacted), hours))
                })
                .await
                .map_err(|e| Error::Config(format!("rollup compaction task failed: {e}")))?;
            match result {
                Ok((table, hours)) => {
                    if let Some(table) = table {
                        let mut tenants = self.shared.tenants.lock();
                        let state = tenants.entry(tenant.clone()).or_default();
                        if state
                            .rollups
                            .as_ref()
                            .is_none_or(|t| t.version() < table.version())
                        {
                            state.rollups = Some(table);
                        }
                    }
                    total.rollup_hours += hours;
                }
                Err(e) => {
                    self.shared.metrics.compaction_errors.inc();
                    warn!(tenant, error = %e, "rollup compaction failed; the table is unchanged");
                }
            }
        }
        Ok(total)
    }

    /// Makes `index` the tenant's trace index if it is newer.
    fn install_index(&self, tenant: &str, index: DeltaTable) {
        let mut tenants = self.shared.tenants.lock();
        let state = tenants.entry(tenant.to_string()).or_default();
        if state
            .index
            .as_ref()
            .is_none_or(|t| t.version() < index.version())
        {
            state.index = Some(index);
        }
    }

    /// Makes `table` the tenant's current table if it is newer. Waits for a running flush, so
    /// that a query never sees a flush's spans both in the table and in the buffer.
    async fn install_table(&self, tenant: &str, table: DeltaTable) {
        let _guard = self.flush_lock.lock().await;
        let mut tenants = self.shared.tenants.lock();
        let state = tenants.entry(tenant.to_string()).or_default();
        if state
            .table
            .as_ref()
            .is_none_or(|t| t.version() < table.version())
        {
            state.table = Some(table);
        }
    }

    /// Runs [`Storage::compact`] every `interval` until `shutdown` resolves.
    pub async fn run_compactor(
        self: Arc<Self>,
        config: CompactionConfig,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.compact(&config).await {
                Ok(stats) if stats.files_removed > 0 => info!(
                    partitions = stats.partitions,
                    files_removed = stats.files_removed,
                    files_added = stats.files_added,
                    spans = stats.spans,
                    "compaction pass done"
                ),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "compaction pass failed"),
            }
            self.shared.metrics.compaction_passes.inc();
        }
    }

    /// Bytes of buffered (unflushed) spans.
    pub fn buffered_bytes(&self) -> u64 {
        self.shared.buffered_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(rt) = self.flush_runtime.take() {
            rt.shutdown_background();
        }
        if let Some(rt) = self.compact_runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Takes an exclusive lock on `<wal_dir>/LOCK`, so two processes never share one WAL.
fn lock_wal_dir(wal_dir: &std::path::Path) -> Result<std::fs::File> {
    let path = wal_dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            context: format!("opening {}", path.display()),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Config(format!(
            "another tracelake process is using the write-ahead log in {}: stop it, or give this one its own --data-dir",
            wal_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            context: format!("locking {}", path.display()),
            source,
        }),
    }
}

/// A stable identity for this node's WAL, kept in `<wal_dir>/node_id`, so that Delta `txn`
/// versions of different ingest nodes sharing a table never mix.
fn node_id(wal_dir: &std::path::Path) -> Result<String> {
    let path = wal_dir.join("node_id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        }
    }
    let id = format!(
        "{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ u64::from(std::process::id()).rotate_left(32)
    );
    let tmp = wal_dir.join("node_id.tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
    Ok(id)
}

/// The Delta table at `url` if it exists.
async fn open_existing(
    url: &url::Url,
    options: &HashMap<String, String>,
) -> Result<Option<DeltaTable>> {
    let t = DeltaTable::try_from_url_with_storage_options(url.clone(), options.clone())
        .await
        .map_err(|e| Error::delta(url, e))?;
    Ok(t.version().is_some().then_some(t))
}
