//! WAL append throughput: 1 KiB and 64 KiB records, 1 and 16 concurrent appenders.
//!
//! Each iteration makes every appender append one record, so the reported throughput is the
//! durable (fsynced) byte rate. With 16 appenders, group commit shares one fsync between many
//! records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tracelake_storage::wal::{Wal, WalOptions};

fn append_throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("wal_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for size in [1024usize, 64 * 1024] {
        for appenders in [1usize, 16] {
            let dir = tempfile::tempdir().expect("temp dir");
            let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open wal");
            let wal = Arc::new(wal);
            group.throughput(Throughput::Bytes((size * appenders) as u64));
            let id = BenchmarkId::new(format!("{}KiB", size / 1024), appenders);
            group.bench_function(id, |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let wal = Arc::clone(&wal);
                    async move { run(wal, size, appenders, iters).await }
                })
            });
        }
    }
    group.finish();
}

/// `appenders` tasks each append `iters` records of `size` bytes; returns the time taken.
async fn run(wal: Arc<Wal>, size: usize, appenders: usize, iters: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let wal = Arc::clone(&wal);
            tokio::spawn(async move {
                for _ in 0..iters {
                    wal.append("bench", vec![0xa5; size], Box::new(|_| {}))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender task");
    }
    let elapsed = start.elapsed();
    // Keep disk use bounded; not timed.
    tokio::task::spawn_blocking(move || {
        wal.rotate()?;
        wal.truncate_through(wal.last_seq())
    })
    .await
    .expect("truncate task")
    .expect("truncate");
    elapsed
}

criterion_group!(benches, append_throughput);
criterion_main!(benches);
