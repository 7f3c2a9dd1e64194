//! Storage metrics, registered into the process's Prometheus registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Counters and gauges of the storage engine.
#[derive(Debug)]
pub struct StorageMetrics {
    /// Spans committed to Delta tables.
    pub spans_flushed: Counter,
    /// Flushes that failed for a tenant.
    pub flush_errors: Counter,
    /// Seconds per flush (all tenants).
    pub flush_seconds: Histogram,
    /// Bytes appended to the WAL.
    pub wal_bytes_written: Counter,
    /// Bytes of live WAL segments on disk.
    pub wal_disk_bytes: Gauge,
    /// Bytes of spans buffered in memory.
    pub buffer_bytes: Gauge,
    /// Files removed from tables by compaction.
    pub compaction_files_removed: Counter,
    /// Files written by compaction.
    pub compaction_files_added: Counter,
    /// Spans rewritten by compaction.
    pub compaction_spans: Counter,
    /// Tenant compactions that failed.
    pub compaction_errors: Counter,
    /// Seconds per tenant compaction that rewrote something.
    pub compaction_seconds: Histogram,
    /// Background compaction passes finished.
    pub compaction_passes: Counter,
    /// Replaced files deleted from storage by the vacuum.
    pub compaction_files_vacuumed: Counter,
    /// Hours whose trace index was built.
    pub compaction_hours_indexed: Counter,
    /// Rows written to span_metrics_1m.
    pub rollup_rows: Counter,
}

impl Default for StorageMetrics {
    fn default() -> Self {
        Self {
            spans_flushed: Counter::default(),
            flush_errors: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            wal_bytes_written: Counter::default(),
            wal_disk_bytes: Gauge::default(),
            buffer_bytes: Gauge::default(),
            compaction_files_removed: Counter::default(),
            compaction_files_added: Counter::default(),
            compaction_spans: Counter::default(),
            compaction_errors: Counter::default(),
            compaction_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            compaction_passes: Counter::default(),
            compaction_files_vacuumed: Counter::default(),
            compaction_hours_indexed: Counter::default(),
            rollup_rows: Counter::default(),
        }
    }
}

impl StorageMetrics {
    /// Creates the metrics and registers them under `tracelake_`.
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Self> {
        let m = Self::default();
        registry.register(
            "tracelake_spans_flushed",
            "Spans committed to Delta tables",
            m.spans_flushed.clone(),
        );
        registry.register(
            "tracelake_flush_errors",
            "Tenant flushes that failed (spans stay buffered and in the WAL)",
            m.flush_errors.clone(),
        );
        registry.register(
            "tracelake_flush_duration_seconds",
            "Duration of one flush of all tenants",
            m.flush_seconds.clone(),
        );
        registry.register(
            "tracelake_wal_written_bytes",
            "Bytes appended to the write-ahead log",
            m.wal_bytes_written.clone(),
        );
        registry.register(
            "tracelake_wal_disk_bytes",
            "Bytes of live write-ahead log segments",
            m.wal_disk_bytes.clone(),
        );
        registry.register(
            "tracelake_buffer_bytes",
            "Bytes of spans buffered in memory, not yet flushed",
            m.buffer_bytes.clone(),
        );
        registry.register(
            "tracelake_compaction_files_removed",
            "Files removed from span tables by compaction (kept on storage until vacuum)",
            m.compaction_files_removed.clone(),
        );
        registry.register(
            "tracelake_compaction_files_added",
            "Files written by compaction",
            m.compaction_files_added.clone(),
        );
        registry.register(
            "tracelake_compaction_spans",
            "Spans rewritten by compaction",
            m.compaction_spans.clone(),
        );
        registry.register(
            "tracelake_compaction_errors",
            "Tenant compactions that failed (the table is left unchanged)",
            m.compaction_errors.clone(),
        );
        registry.register(
            "tracelake_compaction_duration_seconds",
            "Duration of one tenant's compaction that rewrote files",
            m.compaction_seconds.clone(),
        );
        registry.register(
            "tracelake_compaction_passes",
            "Background compaction passes finished (over every tenant)",
            m.compaction_passes.clone(),
        );
        registry.register(
            "tracelake_compaction_files_vacuumed",
            "Files replaced by compaction and then deleted from storage after their retention",
            m.compaction_files_vacuumed.clone(),
        );
        registry.register(
            "tracelake_compaction_hours_indexed",
            "Hours whose trace index was built or rebuilt after compaction",
            m.compaction_hours_indexed.clone(),
        );
        registry.register(
            "tracelake_rollup_rows",
            "Rows written to span_metrics_1m (per-minute RED rollups) by flushes",
            m.rollup_rows.clone(),
        );
        std::sync::Arc::new(m)
    }
}
