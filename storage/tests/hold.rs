//! Spans held outside the buffer (by the tail sampler) bound what a flush commits and what the
//! WAL keeps, and a replay resumes exactly after the committed watermark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use tracelake_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracelake_storage::table::committed_wal_seq;
use tracelake_storage::{Storage, StorageConfig, StorageLocation, StorageMetrics};

/// One span of trace `n`; the WAL record data is `n` as text.
fn batch(n: u64) -> RecordBatch {
    let rs = ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: [n as u8 + 1; 16].to_vec(),
                span_id: [n as u8 + 1; 8].to_vec(),
                name: format!("op-{n}"),
                start_time_unix_nano: 1_767_225_600_000_000_000 + n,
                end_time_unix_nano: 1_767_225_600_000_000_000 + n + 1_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    tracelake_proto::resource_spans_to_batch(&[rs]).unwrap()
}

fn config(dir: &std::path::Path) -> StorageConfig {
    let location =
        StorageLocation::parse(dir.join("tables").to_str().unwrap(), HashMap::new()).unwrap();
    StorageConfig::for_location(location, dir.join("wal"))
}

fn buffered_rows(s: &tracelake_storage::TenantSnapshot) -> usize {
    s.buffered.iter().map(RecordBatch::num_rows).sum()
}

fn hold_from(held: &Arc<AtomicU64>) -> Box<tracelake_storage::HoldFn> {
    let h = Arc::clone(held);
    Box::new(move || match h.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    })
}

#[tokio::test]
async fn flushes_stop_below_held_records_and_replay_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(StorageMetrics::default());
    let storage = Storage::open(config(dir.path()), metrics, &mut |_| Ok(None))
        .await
        .unwrap();
    let held = Arc::new(AtomicU64::new(0));
    storage.set_hold(hold_from(&held)).unwrap();
    assert!(storage.set_hold(Box::new(|| None)).is_err(), "set once");

    // Records 1, 2 and 4 are buffered at once; record 3 is held back (an undecided trace).
    for n in 1..=4u64 {
        let hold_this = n == 3;
        let seq = storage
            .append_with(
                "default",
                n.to_string().into_bytes(),
                Box::new(move |_| (!hold_this).then(|| batch(n))),
            )
            .await
            .unwrap();
        assert_eq!(seq, n);
        if hold_this {
            held.store(3, Ordering::SeqCst);
        }
    }
    let stats = storage.flush().await.unwrap();
    assert_eq!(stats.spans, 2, "records 1 and 2 only");
    let snap = storage.snapshot("default").await.unwrap();
    let table = snap.table.as_ref().unwrap();
    assert_eq!(committed_wal_seq(table, storage.app_id()).await.unwrap(), 2);
    assert_eq!(
        buffered_rows(&snap),
        1,
        "record 4 waits behind the held record 3"
    );
    let app_id = storage.app_id().to_string();
    // A crash now: nothing but the WAL and the table survive.
    drop(storage);

    let replayed = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&replayed);
    let metrics = Arc::new(StorageMetrics::default());
    let storage = Storage::open(config(dir.path()), metrics, &mut |rec| {
        r.lock().unwrap().push(rec.seq);
        let n: u64 = std::str::from_utf8(&rec.data).unwrap().parse().unwrap();
        Ok(Some(batch(n)))
    })
    .await
    .unwrap();
    assert_eq!(
        *replayed.lock().unwrap(),
        vec![3, 4],
        "exactly the records after txn 2"
    );
    assert_eq!(storage.app_id(), app_id);
    assert_eq!(storage.flush().await.unwrap().spans, 2);
    let snap = storage.snapshot("default").await.unwrap();
    let table = snap.table.as_ref().unwrap();
    assert_eq!(committed_wal_seq(table, storage.app_id()).await.unwrap(), 4);
    assert_eq!(buffered_rows(&snap), 0);
}

#[tokio::test]
async fn released_spans_keep_their_record_seq() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(StorageMetrics::default());
    let storage = Storage::open(config(dir.path()), metrics, &mut |_| Ok(None))
        .await
        .unwrap();
    let held = Arc::new(AtomicU64::new(1));
    storage.set_hold(hold_from(&held)).unwrap();
    storage
        .append_with("default", b"1".to_vec(), Box::new(|_| None))
        .await
        .unwrap();
    storage
        .append_with("default", b"2".to_vec(), Box::new(|_| Some(batch(2))))
        .await
        .unwrap();
    assert_eq!(
        storage.flush().await.unwrap().spans,
        0,
        "nothing at or above the hold"
    );
    // The sampler decides record 1's trace: its spans enter the buffer with seq 1.
    storage.insert("default", 1, batch(1));
    held.store(0, Ordering::SeqCst);
    assert_eq!(storage.flush().await.unwrap().spans, 2);
    assert!(
        storage.append_system("default", vec![]).await.is_err(),
        "system streams start with #"
    );
    storage.append_system("#test", vec![1]).await.unwrap();
}
