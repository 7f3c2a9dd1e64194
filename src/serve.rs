//! `tracelake serve`: wires storage, ingest, query and the HTTP APIs together, and shuts them
//! down in order: stop accepting, drain in-flight requests, flush and commit, exit.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracelake_ingest::pipeline::Pipeline;
use tracelake_ingest::sampling::TailSampler;
use tracelake_ingest::{IngestMetrics, ReceiverConfig, SpanSink};
use tracelake_query::{QueryConfig, QueryEngine};
use tracelake_storage::{Storage, StorageConfig, StorageLocation, StorageMetrics};
use tracelake_ui_api::{ApiState, SamplingControl, SqlAuth};
use tracing::{error, info, warn};

/// How long shutdown waits for in-flight requests before closing connections.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

use crate::config::Config;

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let storage_metrics = StorageMetrics::register(&mut registry);
    let ingest_metrics = IngestMetrics::register(&mut registry);

    let location = StorageLocation::parse(&config.storage_url, config.storage_options.clone())
        .context("storage url")?;
    info!(storage = ?location, data_dir = %config.data_dir.display(), "opening storage");
    let mut storage_config = StorageConfig::for_location(location, config.data_dir.join("wal"));
    storage_config.flush_interval = config.flush_interval;
    storage_config.flush_bytes = config.flush_bytes;
    storage_config.max_buffer_bytes = config.max_buffer_bytes;
    storage_config.wal.segment_bytes = config.wal_segment_bytes;

    let sampler = TailSampler::new(config.sampling.clone(), &mut registry);
    let mut replay = Pipeline::replay_fn(Arc::clone(&sampler));
    let storage = Storage::open(storage_config, storage_metrics, &mut replay)
        .await
        .context("opening storage")?;
    storage
        .set_hold(sampler.hold())
        .context("connecting the sampler to storage")?;
    if config.sampling.config.enabled {
        info!(
            decision_wait = ?config.sampling.config.decision_wait,
            "tail sampling is on"
        );
    }
    let engine = Arc::new(
        QueryEngine::new(
            Arc::clone(&storage),
            QueryConfig {
                timeout: config.query_timeout,
                max_rows: config.query_max_rows,
                memory_limit: config.query_memory_limit,
                sql_memory_limit: config.sql_memory_limit,
                sql_max_concurrent: config.sql_max_concurrent,
                ..QueryConfig::default()
            },
        )
        .context("starting the query engine")?,
    );
    let slos = engine
        .slos()
        .replace(&config.slos)
        .map_err(anyhow::Error::msg)?;
    if slos > 0 {
        info!(slos, "SLOs loaded");
        tokio::spawn(warm_slos(Arc::clone(&engine)));
    }
    let sink: Arc<dyn SpanSink> =
        Arc::new(Pipeline::new(Arc::clone(&storage), Arc::clone(&sampler)));
    let receiver = ReceiverConfig {
        max_request_bytes: config.max_request_bytes,
        ..ReceiverConfig::default()
    };

    let grpc = bind("otlp-grpc", config.otlp_grpc_addr).await?;
    let http = bind("otlp-http", config.otlp_http_addr).await?;
    let api = bind("http", config.http_addr).await?;
    let jaeger = bind("jaeger", config.jaeger_addr).await?;
    let pg = bind("pg", config.pg_addr).await?;
    let flight = bind("flight", config.flight_addr).await?;
    let sql_auth = SqlAuth::new(config.auth_tokens.clone());

    let stop_accepting = CancellationToken::new();
    let stop_flusher = CancellationToken::new();
    let flusher =
        tokio::spawn(Arc::clone(&storage).run_flusher(stop_flusher.clone().cancelled_owned()));
    let stop_compactor = CancellationToken::new();
    let compactor = (!config.compaction_interval.is_zero()).then(|| {
        tokio::spawn(Arc::clone(&storage).run_compactor(
            config.compaction.clone(),
            config.compaction_interval,
            stop_compactor.clone().cancelled_owned(),
        ))
    });
    let stop_sampler = CancellationToken::new();
    let sampler_task = tokio::spawn(
        Arc::clone(&sampler).run(Arc::clone(&storage), stop_sampler.clone().cancelled_owned()),
    );
    let control = Arc::new(SamplerControl {
        sampler: Arc::clone(&sampler),
        engine: Arc::clone(&engine),
        config_file: config.config_file.clone(),
    });
    if let Some(path) = config.config_file.clone() {
        tokio::spawn(watch_config(
            path,
            Arc::clone(&control),
            stop_sampler.clone(),
        ));
    }
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(named(
        "otlp grpc server",
        tracelake_ingest::serve_grpc(
            grpc,
            Arc::clone(&sink),
            receiver.clone(),
            Arc::clone(&ingest_metrics),
            stop_accepting.clone().cancelled_owned(),
        ),
    ));
    servers.spawn(named(
        "otlp http server",
        tracelake_ingest::serve_http(
            http,
            Arc::clone(&sink),
            receiver,
            ingest_metrics,
            stop_accepting.clone().cancelled_owned(),
        ),
    ));
    servers.spawn(named(
        "postgresql server",
        tracelake_ui_api::pg::serve(
            pg,
            Arc::clone(&engine),
            sql_auth.clone(),
            stop_accepting.clone().cancelled_owned(),
        ),
    ));
    servers.spawn(named(
        "flight sql server",
        tracelake_ui_api::flight::serve(
            flight,
            Arc::clone(&engine),
            sql_auth,
            stop_accepting.clone().cancelled_owned(),
        ),
    ));
    let state = ApiState {
        engine,
        registry: Arc::new(registry),
        sampling: Some(control.clone()),
        slo_reload: Some(Arc::new(move || control.reload_slos())),
    };
    servers.spawn(named(
        "jaeger api server",
        tracelake_ui_api::jaeger::serve(
            jaeger,
            state.clone(),
            stop_accepting.clone().cancelled_owned(),
        ),
    ));
    servers.spawn(named(
        "http api server",
        tracelake_ui_api::serve(api, state, stop_accepting.clone().cancelled_owned()),
    ));
    info!("tracelake is ready");

    let mut failure = None;
    tokio::select! {
        signal = shutdown_signal() => info!(signal, "shutting down: no longer accepting requests"),
        Some(result) = servers.join_next() => {
            failure = Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("a server stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a server task failed: {e}"),
            });
        }
    }
    stop_accepting.cancel();
    // Drain in-flight requests, but never wait forever on idle or stuck client connections.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(result) = servers.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(error = %e, "server error during shutdown"),
                Err(e) => error!(error = %e, "server task failed during shutdown"),
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            timeout = ?DRAIN_TIMEOUT,
            "client connections still open after the drain timeout; closing them"
        );
        servers.shutdown().await;
    }
    stop_compactor.cancel();
    if let Some(compactor) = compactor {
        let _ = compactor.await;
    }
    // Decide every buffered trace, so the final flush commits them and the WAL can go.
    stop_sampler.cancel();
    let _ = sampler_task.await;
    sampler.decide_all(&storage).await;
    stop_flusher.cancel();
    let _ = flusher.await;
    let stats = storage
        .shutdown()
        .await
        .context("final flush (the spans are kept in the write-ahead log for the next start)")?;
    info!(
        spans = stats.spans,
        commits = stats.commits,
        "final flush done"
    );
    if stats.failed > 0 {
        anyhow::bail!(
            "{} tenant(s) could not be flushed; their spans stay in the write-ahead log",
            stats.failed
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The sampler as the HTTP API sees it: status, and reload from the config file.
struct SamplerControl {
    sampler: Arc<TailSampler>,
    engine: Arc<QueryEngine>,
    config_file: Option<std::path::PathBuf>,
}

impl SamplerControl {
    /// Reads the `[[slo]]` entries of the config file again and puts them in force.
    fn reload_slos(&self) -> Result<usize, String> {
        let path = self.config_file.as_ref().ok_or(
            "tracelake was started without --config, so there is no file to reload SLOs from",
        )?;
        let slos = crate::config::read_slos(path)?;
        let n = self.engine.slos().replace(&slos)?;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(warm_slos(Arc::clone(&self.engine)));
        }
        Ok(n)
    }
}

impl SamplingControl for SamplerControl {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.sampler.status())
            .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn reload(&self) -> Result<serde_json::Value, String> {
        let path = self.config_file.as_ref().ok_or(
            "tracelake was started without --config, so there is no file to reload the rules from",
        )?;
        let config = crate::config::read_sampling(path)?;
        self.sampler.reload(&config)?;
        Ok(serde_json::json!({ "reloaded": true, "config": config }))
    }
}

/// Evaluates every tenant's SLOs once, so the rollup totals are cached before the first
/// request (the first evaluation after a start reads every rollup file of the SLO windows).
async fn warm_slos(engine: Arc<QueryEngine>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for tenant in engine.slos().tenants() {
        let started = std::time::Instant::now();
        match engine.slo_status(&tenant, None, now).await {
            Ok(s) => info!(
                tenant,
                slos = s.len(),
                secs = started.elapsed().as_secs_f64(),
                "SLO caches warmed"
            ),
            Err(e) => {
                warn!(tenant, error = %e, "warming the SLO caches failed; the first request will read the rollups")
            }
        }
    }
}

/// How often the config file is checked for changes.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reloads the sampling rules when the config file's contents change.
async fn watch_config(
    path: std::path::PathBuf,
    control: Arc<SamplerControl>,
    stop: CancellationToken,
) {
    let read = |p: std::path::PathBuf| async move { tokio::fs::read(&p).await.ok() };
    let mut last = read(path.clone()).await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CONFIG_POLL) => {}
        }
        let now = read(path.clone()).await;
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        let c = Arc::clone(&control);
        match tokio::task::spawn_blocking(move || (c.reload(), c.reload_slos())).await {
            Ok((sampling, slos)) => {
                match sampling {
                    Ok(_) => {
                        info!(file = %path.display(), "config file changed: sampling rules reloaded")
                    }
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "config file changed but the sampling rules are invalid; the previous ones stay in force")
                    }
                }
                match slos {
                    Ok(n) => {
                        info!(file = %path.display(), slos = n, "config file changed: SLOs reloaded")
                    }
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "config file changed but the SLOs are invalid; the previous ones stay in force")
                    }
                }
            }
            Err(e) => warn!(error = %e, "config reload task failed"),
        }
    }
}

/// A server future whose error names the server.
async fn named<E: std::fmt::Display>(
    name: &'static str,
    server: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<()> {
    server.await.map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

async fn bind(name: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {name} listener on {addr}"))?;
    let local = listener.local_addr()?;
    // One stdout line per listener: tests and scripts read the bound port from it.
    println!("listening {name} {local}");
    info!(listener = name, addr = %local, "listening");
    Ok(listener)
}

/// `tracelake compact`: one compaction pass over every tenant's span table, then exit. Safe
/// next to a running server: the commits are Delta rewrites without data change.
pub(crate) async fn compact_once(config: Config) -> anyhow::Result<()> {
    let location = StorageLocation::parse(&config.storage_url, config.storage_options.clone())
        .context("storage url")?;
    let started = std::time::Instant::now();
    let done = tracelake_storage::compact::compact_location(&location, &config.compaction)
        .await
        .context("compaction")?;
    for (tenant, stats) in &done {
        println!(
            "tenant={tenant} hours={} files_removed={} bytes_removed={} files_added={} bytes_added={} spans={} files_vacuumed={} hours_indexed={} rollup_hours={}",
            stats.partitions,
            stats.files_removed,
            stats.bytes_removed,
            stats.files_added,
            stats.bytes_added,
            stats.spans,
            stats.files_vacuumed,
            stats.hours_indexed,
            stats.rollup_hours,
        );
    }
    println!(
        "compacted {} tenant(s) in {:.1}s",
        done.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    ctrl_c.await;
                    return "SIGINT";
                }
            };
        tokio::select! {
            _ = ctrl_c => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await;
        "SIGINT"
    }
}
