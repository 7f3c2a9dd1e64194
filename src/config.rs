//! Configuration: CLI flags (each also `TRACELAKE_<NAME>`) over a TOML file over defaults,
//! validated once into [`Config`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use tracelake_ingest::sampling::{Rules, SamplingConfig};
use tracelake_query::slo::SloConfig;
use tracelake_storage::CompactionConfig;

/// Flags of `tracelake serve`. Every flag is optional; unset flags fall back to the config file,
/// then to the defaults.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct ServeArgs {
    /// TOML config file (see `tracelake config example`).
    #[arg(long, env = "TRACELAKE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Local directory for the write-ahead log and, by default, the tables. Default ./data
    #[arg(long, env = "TRACELAKE_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Where the Delta tables live: file:///path, s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix. Default: the data directory.
    #[arg(long, env = "TRACELAKE_STORAGE_URL")]
    pub(crate) storage_url: Option<String>,
    /// OTLP/gRPC listen address (port 0 picks a free port). Default 127.0.0.1:4317
    #[arg(long, env = "TRACELAKE_OTLP_GRPC_ADDR")]
    pub(crate) otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address. Default 127.0.0.1:4318
    #[arg(long, env = "TRACELAKE_OTLP_HTTP_ADDR")]
    pub(crate) otlp_http_addr: Option<SocketAddr>,
    /// Tempo API, SQL over HTTP, /metrics and /ready. Default 127.0.0.1:3200
    #[arg(long, env = "TRACELAKE_HTTP_ADDR")]
    pub(crate) http_addr: Option<SocketAddr>,
    /// Jaeger query API (v1 and api_v3). Default 127.0.0.1:16686
    #[arg(long, env = "TRACELAKE_JAEGER_ADDR")]
    pub(crate) jaeger_addr: Option<SocketAddr>,
    /// PostgreSQL wire protocol (read-only SQL; the database name selects the tenant).
    /// Default 127.0.0.1:5433
    #[arg(long, env = "TRACELAKE_PG_ADDR")]
    pub(crate) pg_addr: Option<SocketAddr>,
    /// Arrow Flight SQL (read-only SQL). Default 127.0.0.1:8815
    #[arg(long, env = "TRACELAKE_FLIGHT_ADDR")]
    pub(crate) flight_addr: Option<SocketAddr>,
    /// How often buffered spans are flushed to the table, e.g. 5s, 500ms. Default 5s
    #[arg(long, env = "TRACELAKE_FLUSH_INTERVAL", value_parser = humantime::parse_duration)]
    pub(crate) flush_interval: Option<Duration>,
    /// How often closed hours are compacted into large trace-id-sorted files; 0 turns the
    /// background compactor off. Default 5m
    #[arg(long, env = "TRACELAKE_COMPACTION_INTERVAL", value_parser = humantime::parse_duration)]
    pub(crate) compaction_interval: Option<Duration>,
}

/// The config file, as written. Unknown keys are an error, so typos are caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    pub(crate) server: ServerSection,
    pub(crate) storage: StorageSection,
    pub(crate) ingest: IngestSection,
    pub(crate) query: QuerySection,
    pub(crate) compaction: CompactionSection,
    pub(crate) auth: AuthSection,
    pub(crate) sampling: SamplingConfig,
    pub(crate) slo: Vec<SloConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CompactionSection {
    #[serde(with = "humantime_serde")]
    pub(crate) interval: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub(crate) grace: Option<Duration>,
    #[serde(with = "humantime_serde")]
    pub(crate) bucket: Option<Duration>,
    pub(crate) target_file_bytes: Option<u64>,
    pub(crate) max_inputs: Option<usize>,
    #[serde(with = "humantime_serde")]
    pub(crate) vacuum_retention: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerSection {
    pub(crate) otlp_grpc_addr: Option<SocketAddr>,
    pub(crate) otlp_http_addr: Option<SocketAddr>,
    pub(crate) http_addr: Option<SocketAddr>,
    pub(crate) jaeger_addr: Option<SocketAddr>,
    pub(crate) pg_addr: Option<SocketAddr>,
    pub(crate) flight_addr: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthSection {
    pub(crate) tokens: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StorageSection {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) url: Option<String>,
    #[serde(with = "humantime_serde")]
    pub(crate) flush_interval: Option<Duration>,
    pub(crate) flush_bytes: Option<usize>,
    pub(crate) max_buffer_bytes: Option<usize>,
    pub(crate) wal_segment_bytes: Option<u64>,
    /// object_store options, e.g. AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP.
    pub(crate) options: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct IngestSection {
    pub(crate) max_request_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct QuerySection {
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_rows: Option<usize>,
    pub(crate) memory_limit_bytes: Option<usize>,
    pub(crate) sql_memory_limit_bytes: Option<usize>,
    pub(crate) sql_max_concurrent: Option<usize>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) data_dir: PathBuf,
    pub(crate) storage_url: String,
    pub(crate) storage_options: HashMap<String, String>,
    pub(crate) otlp_grpc_addr: SocketAddr,
    pub(crate) otlp_http_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    pub(crate) jaeger_addr: SocketAddr,
    pub(crate) pg_addr: SocketAddr,
    pub(crate) flight_addr: SocketAddr,
    /// Tokens SQL clients must present (PostgreSQL password, Flight SQL bearer token); empty
    /// means no authentication.
    pub(crate) auth_tokens: Vec<String>,
    pub(crate) flush_interval: Duration,
    pub(crate) flush_bytes: usize,
    pub(crate) max_buffer_bytes: usize,
    pub(crate) wal_segment_bytes: u64,
    pub(crate) max_request_bytes: usize,
    pub(crate) query_timeout: Duration,
    pub(crate) query_max_rows: usize,
    pub(crate) query_memory_limit: usize,
    pub(crate) sql_memory_limit: usize,
    pub(crate) sql_max_concurrent: usize,
    /// How often the background compactor runs; zero means never.
    pub(crate) compaction_interval: Duration,
    pub(crate) compaction: CompactionConfig,
    /// The config file, read again on `POST /api/sampling/reload` and when it changes.
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) sampling: Rules,
    /// `[[slo]]` definitions, validated.
    pub(crate) slos: Vec<SloConfig>,
}

const MAX_REQUEST_CEILING: usize = 64 * 1024 * 1024;

impl Config {
    /// Layers flags over the file over defaults, and validates the result.
    pub(crate) fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                parse_file(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.storage.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let storage_url = args
            .storage_url
            .clone()
            .or(file.storage.url)
            .unwrap_or_else(|| data_dir.to_string_lossy().into_owned());
        let addr = |flag: Option<SocketAddr>, file: Option<SocketAddr>, default: &str| {
            flag.or(file)
                .unwrap_or_else(|| default.parse().expect("valid default address"))
        };
        let flush_interval = args
            .flush_interval
            .or(file.storage.flush_interval)
            .unwrap_or(Duration::from_secs(5));
        if flush_interval < Duration::from_millis(10) {
            bail!("flush_interval {flush_interval:?} is too short: use at least 10ms");
        }
        let max_request_bytes = file.ingest.max_request_bytes.unwrap_or(4 * 1024 * 1024);
        if max_request_bytes == 0 || max_request_bytes > MAX_REQUEST_CEILING {
            bail!("ingest.max_request_bytes must be between 1 and {MAX_REQUEST_CEILING}");
        }
        let compaction_interval = args
            .compaction_interval
            .or(file.compaction.interval)
            .unwrap_or(Duration::from_secs(5 * 60));
        let defaults = CompactionConfig::default();
        let compaction = CompactionConfig {
            grace: file.compaction.grace.unwrap_or(defaults.grace),
            bucket: file.compaction.bucket.unwrap_or(defaults.bucket),
            target_file_bytes: file
                .compaction
                .target_file_bytes
                .unwrap_or(defaults.target_file_bytes),
            max_inputs: file.compaction.max_inputs.unwrap_or(defaults.max_inputs),
            vacuum_retention: file
                .compaction
                .vacuum_retention
                .or(defaults.vacuum_retention),
            ..defaults
        };
        if compaction
            .vacuum_retention
            .is_some_and(|r| r < Duration::from_secs(60))
        {
            bail!(
                "compaction.vacuum_retention must be at least 1m: queries may still read replaced files"
            );
        }
        if compaction.target_file_bytes < 1024 * 1024 {
            bail!("compaction.target_file_bytes must be at least 1048576 (1 MiB)");
        }
        let bucket = compaction.bucket;
        if bucket.subsec_nanos() != 0 || bucket.as_secs() < 60 || 3600 % bucket.as_secs() != 0 {
            bail!(
                "compaction.bucket {bucket:?} must be whole seconds, at least 1m, and divide an hour (e.g. 1m, 5m, 10m, 15m, 30m, 1h)"
            );
        }
        if compaction.max_inputs < 2 {
            bail!("compaction.max_inputs must be at least 2");
        }
        let sql_memory_limit = file
            .query
            .sql_memory_limit_bytes
            .unwrap_or(256 * 1024 * 1024);
        if sql_memory_limit < 1024 * 1024 {
            bail!("query.sql_memory_limit_bytes must be at least 1048576 (1 MiB)");
        }
        let sql_max_concurrent = file.query.sql_max_concurrent.unwrap_or(4);
        if sql_max_concurrent == 0 {
            bail!("query.sql_max_concurrent must be at least 1");
        }
        let auth_tokens = file.auth.tokens;
        if let Some(i) = auth_tokens.iter().position(|t| t.len() < 16) {
            bail!("auth.tokens[{i}] is shorter than 16 characters: use long random tokens");
        }
        let sampling = file.sampling.compile().map_err(anyhow::Error::msg)?;
        tracelake_query::slo::compile_all(&file.slo).map_err(anyhow::Error::msg)?;
        let mut storage_options = file.storage.options;
        // The usual AWS_* variables configure S3 when the file does not.
        for key in [
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ALLOW_HTTP",
        ] {
            if let Ok(v) = std::env::var(key) {
                storage_options.entry(key.to_string()).or_insert(v);
            }
        }
        Ok(Self {
            data_dir,
            storage_url,
            storage_options,
            otlp_grpc_addr: addr(
                args.otlp_grpc_addr,
                file.server.otlp_grpc_addr,
                "127.0.0.1:4317",
            ),
            otlp_http_addr: addr(
                args.otlp_http_addr,
                file.server.otlp_http_addr,
                "127.0.0.1:4318",
            ),
            http_addr: addr(args.http_addr, file.server.http_addr, "127.0.0.1:3200"),
            jaeger_addr: addr(args.jaeger_addr, file.server.jaeger_addr, "127.0.0.1:16686"),
            pg_addr: addr(args.pg_addr, file.server.pg_addr, "127.0.0.1:5433"),
            flight_addr: addr(args.flight_addr, file.server.flight_addr, "127.0.0.1:8815"),
            auth_tokens,
            flush_interval,
            flush_bytes: file.storage.flush_bytes.unwrap_or(64 * 1024 * 1024),
            max_buffer_bytes: file.storage.max_buffer_bytes.unwrap_or(512 * 1024 * 1024),
            wal_segment_bytes: file.storage.wal_segment_bytes.unwrap_or(64 * 1024 * 1024),
            max_request_bytes,
            query_timeout: file.query.timeout.unwrap_or(Duration::from_secs(30)),
            query_max_rows: file.query.max_rows.unwrap_or(100_000),
            query_memory_limit: file.query.memory_limit_bytes.unwrap_or(1024 * 1024 * 1024),
            sql_memory_limit,
            sql_max_concurrent,
            compaction_interval,
            compaction,
            config_file: args.config.clone(),
            sampling,
            slos: file.slo,
        })
    }
}

fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

/// Reads the `[sampling]` section of a config file again, for a hot reload. The other sections
/// must still parse (a typo anywhere is reported), but changes to them need a restart.
pub(crate) fn read_sampling(path: &std::path::Path) -> Result<SamplingConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading config file {}: {e}", path.display()))?;
    parse_file(&text)
        .map(|f| f.sampling)
        .map_err(|e| format!("config file {}: {e}", path.display()))
}

/// Reads and validates the `[[slo]]` entries of a config file again, for a hot reload.
pub(crate) fn read_slos(path: &std::path::Path) -> Result<Vec<SloConfig>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading config file {}: {e}", path.display()))?;
    let slos = parse_file(&text)
        .map(|f| f.slo)
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    tracelake_query::slo::compile_all(&slos)?;
    Ok(slos)
}

/// The commented example printed by `tracelake config example`. Every key is listed with its
/// default.
pub(crate) const EXAMPLE: &str = r#"# tracelake configuration. Flags (and TRACELAKE_* variables) override this file.

[server]
# OTLP/gRPC receiver (flag --otlp-grpc-addr). Port 0 picks a free port.
otlp_grpc_addr = "127.0.0.1:4317"
# OTLP/HTTP receiver, POST /v1/traces (flag --otlp-http-addr).
otlp_http_addr = "127.0.0.1:4318"
# Tempo API, POST /api/sql, /metrics, /ready (flag --http-addr).
http_addr = "127.0.0.1:3200"
# Jaeger query API, v1 and api_v3 (flag --jaeger-addr).
jaeger_addr = "127.0.0.1:16686"
# PostgreSQL wire protocol, read-only SQL; the database name selects the tenant (flag --pg-addr).
pg_addr = "127.0.0.1:5433"
# Arrow Flight SQL, read-only SQL; the x-scope-orgid header selects the tenant (flag --flight-addr).
flight_addr = "127.0.0.1:8815"

[storage]
# Local directory for the write-ahead log and, by default, the tables (flag --data-dir).
data_dir = "./data"
# Where the Delta tables live (flag --storage-url): a path, file:///path, s3://bucket/prefix,
# gs://bucket/prefix or az://container/prefix. Default: data_dir.
# url = "s3://my-bucket/tracelake"
# Flush buffered spans to the table at least this often (flag --flush-interval).
flush_interval = "5s"
# Flush a tenant early once this many bytes are buffered.
flush_bytes = 67108864
# Refuse new spans (gRPC UNAVAILABLE / HTTP 503 with Retry-After) above this many buffered bytes.
max_buffer_bytes = 536870912
# Size at which the write-ahead log starts a new segment.
wal_segment_bytes = 67108864

[storage.options]
# object_store options for the storage URL. The AWS_* environment variables are used when unset.
# AWS_ENDPOINT_URL = "http://127.0.0.1:3900"
# AWS_REGION = "us-east-1"
# AWS_ACCESS_KEY_ID = "..."
# AWS_SECRET_ACCESS_KEY = "..."
# AWS_ALLOW_HTTP = "true"

[ingest]
# Largest OTLP request accepted, after decompression (max 64 MiB). Larger requests get
# RESOURCE_EXHAUSTED (gRPC) or 413 (HTTP).
max_request_bytes = 4194304

[query]
# Queries running longer are cancelled.
timeout = "30s"
# At most this many rows are returned by one SQL query.
max_rows = 100000
# Memory all running queries may hold together.
memory_limit_bytes = 1073741824
# Memory one SQL query (HTTP, PostgreSQL or Flight SQL) may hold. Nothing spills to
# disk: a query that needs more is refused with a message saying so.
sql_memory_limit_bytes = 268435456
# SQL queries one tenant may run at once; more are refused (HTTP 429) until one finishes.
sql_max_concurrent = 4

[auth]
# Tokens SQL clients must present: the PostgreSQL password (any user name) or the Flight SQL
# bearer token (or basic-auth password). Empty: no authentication. Each at least 16 characters.
tokens = []

[compaction]
# Once an hour has ended (plus `grace`, for late spans), its small files are merged into files
# of up to target_file_bytes, and a trace index of the hour is written (trace id -> first and
# last span start), so that a trace lookup reads one index page and the trace's bucket or two.
# How often the background compactor looks for work (flag --compaction-interval); "0s" = off.
# `tracelake compact` runs one pass by hand.
interval = "5m"
grace = "10m"
# Within an hour, spans are sorted by trace id inside time buckets of this width: a search's
# time slice reads only the buckets it overlaps.
bucket = "1m"
target_file_bytes = 134217728
# At most this many files are merged at once; memory is about one row group (a few MB) each.
max_inputs = 128
# Replaced files are deleted from storage this long after compaction (Delta vacuum, lite mode).
# Readers of an older table version need them until then; at least 1m.
vacuum_retention = "24h"

[sampling]
# Dynamic weighted tail sampling. Off by default: every span is kept (adjusted_count = 1).
# Rules reload on POST /api/sampling/reload and when this file changes.
enabled = false
# A trace is decided this long after its last span arrives...
decision_wait = "5s"
# ...but at most this long after its first span.
max_trace_wait = "30s"
# Traces and bytes held undecided; beyond either, the oldest traces are decided early
# (never dropped undecided). At twice either, new spans are refused with a retry hint.
max_traces = 100000
max_buffer_bytes = 268435456
# Bands over the trace weight (the highest span weight, in [0, 1]):
# above high_threshold every trace is kept; above low_threshold, mid_probability;
# at or below low_threshold, low_probability (0 drops them all).
high_threshold = 0.8
low_threshold = 0.3
mid_probability = 0.1
low_probability = 0.001
# A span longer than this scores as "slow" (a route rule can set its own threshold).
slow_threshold = "1s"
# Adapt the middle band's probability, per (service, route, status class) key with
# logarithmic shares, so that about this many spans per second are kept. The high band and
# forced keeps are never reduced. Unset: mid_probability is used as is.
# budget_spans_per_sec = 20000
# How often the adaptive probabilities are recomputed.
adjust_interval = "1s"
# Decisions remembered for spans that arrive after their trace was decided:
# kept trace ids (exact) and dropped trace ids (8-byte fingerprints).
kept_cache_size = 100000
dropped_cache_size = 1000000
# Span attributes holding an upstream sample rate N (the span stands for N spans). An OTel
# `th` value in tracestate is honoured too. Upstream and tracelake probabilities multiply.
upstream_rate_attributes = ["SampleRate"]

[sampling.dimension_weights]
# span weight = status * status_score + route * route_score + tier * tier_score, clamped to [0, 1]
status = 0.5
route = 0.3
tier = 0.2

[sampling.status_scores]
# The highest that applies: HTTP status class ("1xx" to "5xx"), OTLP span status ("error",
# "ok", "unset"), "slow" (duration over the slow threshold). Unlisted keys score 0.
"4xx" = 0.4
"5xx" = 1.0
error = 1.0
slow = 1.0

# Route rules: the first whose regex matches the span's http.route (else url.path, else the
# span name) gives the route score (no match scores 0). force = "keep" keeps the trace;
# force = "drop" drops it unless a span errored (OTLP ERROR or HTTP 5xx). `name` is recorded
# in sampling_rule (default "route:<regex>").
# [[sampling.routes]]
# regex = "^/api/(checkout|payment)/.*"
# score = 1.0
# slow_threshold = "300ms"
#
# [[sampling.routes]]
# regex = "^/(healthz|readyz|metrics)$"
# score = 0.0
# force = "drop"

[sampling.tiers]
# Service SLA tiers by service.name; unlisted services get `default`.
default = "standard"
scores = { best_effort = 0.0, critical = 1.0, standard = 0.5 }
services = {}
# services = { "payment" = "critical", "recommendation" = "best_effort" }

# Conditions on one span that keep the whole trace: `<field> <op> <value>` joined with `and`.
# Fields: status (error|ok|unset), http.status_code, duration, service, name, route, kind.
# Operators: = != =~ (regex) > >= < <=. `name` is recorded in sampling_rule.
[[sampling.force_keep]]
when = "status = error"
# [[sampling.force_keep]]
# when = "service = payment and duration > 2s"
# name = "slow-payment"

# Service level objectives, served at GET /api/slo and by slo_status() in SQL. They reload
# when this file changes (and on POST /api/slo/reload). Good events: for "availability", spans
# whose status is not ERROR and whose HTTP status (if any) is below 500; for "latency", spans
# no longer than `threshold`. Counts are weighted by adjusted_count (unbiased under sampling).
# [[slo]]
# name = "checkout-availability"       # letters, digits, - _ .
# tenant = "default"
# service = "checkout"
# filter = '{ span.http.route =~ "/api/checkout/.*" && kind = server }'   # optional
# objective = 0.999
# kind = "availability"
# window = "30d"
#
# [[slo]]
# name = "checkout-latency"
# service = "checkout"
# objective = 0.99
# kind = "latency"
# threshold = "300ms"   # exact from the rollups when one of their bounds, else from the spans
# window = "30d"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_matches_defaults() {
        let file = parse_file(EXAMPLE).unwrap();
        assert_eq!(file.storage.flush_interval, Some(Duration::from_secs(5)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let from_file = Config::load(&ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        let defaults = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(from_file.otlp_grpc_addr, defaults.otlp_grpc_addr);
        assert_eq!(from_file.jaeger_addr, defaults.jaeger_addr);
        assert_eq!(from_file.flush_bytes, defaults.flush_bytes);
        assert_eq!(from_file.max_request_bytes, defaults.max_request_bytes);
        assert_eq!(from_file.query_timeout, defaults.query_timeout);
        assert_eq!(from_file.compaction_interval, defaults.compaction_interval);
        assert_eq!(from_file.compaction.grace, defaults.compaction.grace);
        assert_eq!(from_file.compaction.bucket, defaults.compaction.bucket);
        assert_eq!(
            from_file.compaction.target_file_bytes,
            defaults.compaction.target_file_bytes
        );
        assert_eq!(
            from_file.compaction.max_inputs,
            defaults.compaction.max_inputs
        );
        assert_eq!(
            file.sampling,
            tracelake_ingest::sampling::SamplingConfig::default()
        );
    }

    #[test]
    fn every_sampling_key_is_in_the_example() {
        // Serialize the defaults and check each key is written out in the example.
        let defaults =
            toml::to_string(&tracelake_ingest::sampling::SamplingConfig::default()).unwrap();
        let value: toml::Value = toml::from_str(&defaults).unwrap();
        let mut keys = Vec::new();
        fn walk(v: &toml::Value, keys: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    keys.push(k.clone());
                    walk(v, keys);
                }
            }
        }
        walk(&value, &mut keys);
        keys.push("budget_spans_per_sec".into());
        keys.push("force".into());
        keys.push("slow_threshold".into());
        for key in keys {
            assert!(
                EXAMPLE.contains(&key),
                "config example does not document {key}"
            );
        }
    }

    #[test]
    fn flags_override_file_and_typos_fail() {
        assert!(parse_file("[storage]\nflush_intervall = \"1s\"").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[storage]\nflush_interval = \"9s\"\n").unwrap();
        let cfg = Config::load(&ServeArgs {
            config: Some(path),
            flush_interval: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn bad_compaction_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&ServeArgs {
                config: Some(path),
                ..Default::default()
            })
            .map_err(|e| format!("{e:#}"))
        };
        let err = load("[compaction]\nmax_inputs = 1\n").unwrap_err();
        assert!(err.contains("max_inputs must be at least 2"), "{err}");
        let err = load("[compaction]\ntarget_file_bytes = 1000\n").unwrap_err();
        assert!(err.contains("target_file_bytes must be at least"), "{err}");
        let err = load("[compaction]\ninterval = \"soon\"\n").unwrap_err();
        assert!(err.contains("interval"), "{err}");
        let err = load("[compaction]\nvacuum_retention = \"5s\"\n").unwrap_err();
        assert!(
            err.contains("vacuum_retention must be at least 1m"),
            "{err}"
        );
        for bad in ["7m", "30s", "11m"] {
            let err = load(&format!("[compaction]\nbucket = \"{bad}\"\n")).unwrap_err();
            assert!(
                err.contains("must be whole seconds, at least 1m"),
                "{bad}: {err}"
            );
        }
        let off = load("[compaction]\ninterval = \"0s\"\n").unwrap();
        assert!(off.compaction_interval.is_zero());
    }
}

#[cfg(test)]
mod readme_tests {
    /// The README shows the same example `tracelake config example` prints.
    #[test]
    fn readme_config_reference_matches_the_example() {
        let readme = include_str!("../README.md");
        assert!(
            readme.contains(super::EXAMPLE),
            "README.md's config block differs from config::EXAMPLE: paste `tracelake config example` into it"
        );
    }
}
