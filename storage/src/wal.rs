//! The write-ahead log: every accepted request is made durable here before it is acknowledged.
//!
//! ```text
//!  append() ──channel──> writer thread: drain all pending ──> write ──> on_sequenced hooks
//!  (async, many tasks)                 (one group)                        (seq order)
//!                                                                              │
//!  appenders <──oneshot── complete the whole group <── one sync_data (group commit)
//! ```
//!
//! # On-disk format
//!
//! A WAL is a directory of segment files named `wal-<n>.seg`, `<n>` being the 20-digit,
//! zero-padded sequence number of the segment's first record. Names are unique and increase with
//! the sequence numbers they hold, and every existing name is below the next sequence number to be
//! assigned, so an empty segment left after truncation keeps the sequence high-water mark across a
//! restart. Each segment starts with a 12-byte header (`b"TLWALSEG"`, then a `u32` LE format
//! version, currently 1), followed by records:
//!
//! ```text
//! [u32 LE payload_len][u32 LE crc32 (IEEE) of payload][payload]
//! payload = [u64 LE seq][u16 LE tenant_len][tenant, utf-8][data]
//! ```
//!
//! # Guarantees
//!
//! - Sequence numbers are strictly increasing (not necessarily consecutive) across restarts;
//!   an empty WAL starts at 1.
//! - [`Wal::append`] resolves only after its record has been fsynced. Its `on_sequenced` hook runs
//!   on the writer thread, in sequence order, after the record is written and before the fsync.
//! - A failed write or fsync fails every append of its group, and the WAL then refuses all further
//!   writes ([`WalError::Poisoned`]) until it is reopened: after a failed fsync the file's contents
//!   are unknown.
//! - Replay never fails because of corrupt data: a torn or corrupt record ends the replay of its
//!   segment (logged with `tracing::warn!`, counted in [`ReplayInfo`]) and replay continues with
//!   the next segment. New appends always go to a new segment, never after a torn tail.
//!
//! # Example
//!
//! ```
//! use tracelake_storage::wal::{Wal, WalOptions};
//!
//! # let dir = std::env::temp_dir().join(format!("tracelake-wal-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let (wal, replay) = Wal::open(&dir, WalOptions::default()).unwrap();
//! assert!(replay.records.is_empty());
//! let seq = rt
//!     .block_on(wal.append("tenant-a", b"payload".to_vec(), Box::new(|_seq| {})))
//!     .unwrap();
//! assert_eq!(seq, 1);
//! wal.close().unwrap();
//!
//! let (wal, replay) = Wal::open(&dir, WalOptions::default()).unwrap();
//! assert_eq!(replay.records[0].data, b"payload");
//! wal.truncate_through(seq).unwrap();
//! # drop(wal);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Segment header magic.
const MAGIC: [u8; 8] = *b"TLWALSEG";
/// Segment format version written by this code.
const FORMAT_VERSION: u32 = 1;
/// Segment header length: magic + version.
const SEGMENT_HEADER_LEN: u64 = 12;
/// Record header: payload length + crc.
const RECORD_HEADER_LEN: usize = 8;
/// Fixed part of a payload: seq + tenant length.
const PAYLOAD_FIXED_LEN: usize = 10;
/// Group writes are handed to the file in chunks of about this size, so that a large group does
/// not hold a second copy of all its data in memory.
const WRITE_CHUNK_BYTES: usize = 1 << 20;
/// The group buffer is shrunk back to this capacity after a large group.
const RETAINED_BUFFER_BYTES: usize = 4 << 20;

/// Errors of the write-ahead log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// A file system operation failed.
    #[error(
        "wal {op} failed for {}: {source}; check free disk space, permissions and the file system",
        path.display()
    )]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A record is larger than [`WalOptions::max_record_bytes`].
    #[error(
        "wal record payload is {size} bytes but the limit is {max} bytes; send smaller requests or \
         raise max_record_bytes"
    )]
    RecordTooLarge {
        /// Payload size (sequence number, tenant and data).
        size: u64,
        /// The configured limit.
        max: u32,
    },
    /// A tenant name does not fit the record format.
    #[error(
        "tenant name is {len} bytes but the wal allows at most 65535; use a shorter tenant name"
    )]
    TenantTooLong {
        /// Length of the tenant name in bytes.
        len: usize,
    },
    /// The options are unusable.
    #[error("invalid wal options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
    /// An `on_sequenced` hook panicked; the WAL stops accepting writes.
    #[error("the on_sequenced hook of wal record {seq} panicked; restart to replay the wal")]
    HookPanicked {
        /// The record whose hook panicked.
        seq: u64,
    },
    /// An earlier failure left the WAL in an unknown state; it refuses writes until reopened.
    #[error(
        "wal refuses writes after an earlier failure ({cause}); fix the cause and restart to \
         reopen and replay the wal"
    )]
    Poisoned {
        /// The failure that poisoned the WAL.
        #[source]
        cause: Arc<WalError>,
    },
    /// The WAL was closed or its writer thread is gone.
    #[error("wal is closed; reopen it to write")]
    Closed,
}

impl WalError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }
}

/// WAL settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// Start a new segment once the current one would grow past this size (a segment always
    /// takes at least one record, so a single larger record makes a larger segment).
    pub segment_bytes: u64,
    /// Largest accepted payload (sequence number, tenant and data). Replay treats a longer
    /// length field as corruption, so do not lower this below the size of records already in
    /// the WAL.
    pub max_record_bytes: u32,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            max_record_bytes: 64 * 1024 * 1024 + 1024,
        }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<(), WalError> {
        if self.segment_bytes == 0 {
            return Err(WalError::InvalidOptions {
                reason: "segment_bytes must be greater than 0".into(),
            });
        }
        if (self.max_record_bytes as usize) < PAYLOAD_FIXED_LEN {
            return Err(WalError::InvalidOptions {
                reason: format!("max_record_bytes must be at least {PAYLOAD_FIXED_LEN}"),
            });
        }
        Ok(())
    }
}

/// One replayed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// Sequence number.
    pub seq: u64,
    /// Tenant the record belongs to.
    pub tenant: String,
    /// The appended bytes.
    pub data: Vec<u8>,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayInfo {
    /// Every valid record, in sequence order.
    pub records: Vec<WalRecord>,
    /// Segments with a torn or corrupt record (or header), whose rest was skipped.
    pub corrupt_segments: usize,
    /// Bytes skipped in those segments.
    pub skipped_bytes: u64,
}

type Hook = Box<dyn FnOnce(u64) + Send>;

struct AppendRequest {
    tenant: String,
    data: Vec<u8>,
    hook: Option<Hook>,
    reply: oneshot::Sender<Result<u64, WalError>>,
    /// Encoded size (record header + payload).
    bytes: u64,
    /// Assigned by the writer.
    seq: u64,
}

enum Command {
    Append(AppendRequest),
    Rotate(mpsc::SyncSender<Result<(), WalError>>),
    Truncate(u64, mpsc::SyncSender<Result<usize, WalError>>),
    Shutdown(mpsc::SyncSender<Result<(), WalError>>),
}

/// State read by [`Wal`] handles and written by the writer thread.
#[derive(Default)]
struct Shared {
    last_seq: AtomicU64,
    pending_bytes: AtomicU64,
    disk_bytes: AtomicU64,
    fsync_count: AtomicU64,
    poisoned: AtomicBool,
    poison_cause: Mutex<Option<Arc<WalError>>>,
}

impl Shared {
    fn check_poison(&self) -> Result<(), WalError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.poison_cause.lock().as_ref() {
            Some(cause) => Err(WalError::Poisoned {
                cause: Arc::clone(cause),
            }),
            None => Ok(()),
        }
    }

    fn poison(&self, cause: &WalError) {
        let mut slot = self.poison_cause.lock();
        if slot.is_none() {
            *slot = Some(Arc::new(cause.clone()));
            self.poisoned.store(true, Ordering::Release);
        }
    }
}

/// The write-ahead log. `Send + Sync`; share it behind an `Arc`.
///
/// All file operations happen on one dedicated writer thread; [`Wal::rotate`] and
/// [`Wal::truncate_through`] are serialized with appends through the same channel.
pub struct Wal {
    dir: PathBuf,
    max_record_bytes: u32,
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("last_seq", &self.last_seq())
            .field("pending_bytes", &self.pending_bytes())
            .field("disk_bytes", &self.disk_bytes())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, replays it and starts the writer thread.
    ///
    /// Blocking: call it at start-up or from `spawn_blocking`. Fails only on I/O errors (or bad
    /// options), never because of corrupt data.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, ReplayInfo), WalError> {
        opts.validate()?;
        fs::create_dir_all(dir).map_err(|e| WalError::io("creating the directory", dir, e))?;
        let (segments, info) = replay_dir(dir, opts.max_record_bytes)?;

        // The next sequence number exceeds every replayed record and every segment name, so new
        // segment names never collide with existing (possibly corrupt) files.
        let high_water = segments
            .iter()
            .map(|s| s.last_seq.unwrap_or(0).max(s.name_seq))
            .max()
            .unwrap_or(0);
        let next_seq = high_water
            .checked_add(1)
            .ok_or_else(|| WalError::InvalidOptions {
                reason: "the wal's sequence numbers are exhausted".into(),
            })?;
        let disk_bytes = segments.iter().map(|s| s.len).sum();
        info!(
            dir = %dir.display(),
            segments = segments.len(),
            records = info.records.len(),
            corrupt_segments = info.corrupt_segments,
            skipped_bytes = info.skipped_bytes,
            next_seq,
            "opened write-ahead log"
        );

        let shared = Arc::new(Shared {
            last_seq: AtomicU64::new(high_water),
            disk_bytes: AtomicU64::new(disk_bytes),
            ..Shared::default()
        });
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment_bytes: opts.segment_bytes,
            shared: Arc::clone(&shared),
            closed: segments,
            active: None,
            next_seq,
            buf: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("tracelake-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| WalError::io("starting the writer thread", dir, e))?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            max_record_bytes: opts.max_record_bytes,
            shared,
            tx: Some(tx),
            writer: Some(handle),
        };
        Ok((wal, info))
    }

    /// Appends one record; resolves with its sequence number once it is fsynced.
    ///
    /// `on_sequenced(seq)` runs on the writer thread, in sequence order, after the record is
    /// written and before the fsync; keep it cheap, and never call back into the `Wal` from it
    /// (that would deadlock the writer). If the fsync then fails, the hook has run but the append
    /// returns an error (and the WAL is poisoned). A panicking hook poisons the WAL.
    ///
    /// The record is submitted on the first poll: dropping the future afterwards does not cancel
    /// it.
    pub async fn append(
        &self,
        tenant: &str,
        data: Vec<u8>,
        on_sequenced: Box<dyn FnOnce(u64) + Send>,
    ) -> Result<u64, WalError> {
        let reply = self.submit(tenant, data, on_sequenced)?;
        reply.await.unwrap_or(Err(WalError::Closed))
    }

    fn submit(
        &self,
        tenant: &str,
        data: Vec<u8>,
        hook: Hook,
    ) -> Result<oneshot::Receiver<Result<u64, WalError>>, WalError> {
        if tenant.len() > usize::from(u16::MAX) {
            return Err(WalError::TenantTooLong { len: tenant.len() });
        }
        let payload = (PAYLOAD_FIXED_LEN + tenant.len()) as u64 + data.len() as u64;
        if payload > u64::from(self.max_record_bytes) {
            return Err(WalError::RecordTooLarge {
                size: payload,
                max: self.max_record_bytes,
            });
        }
        self.shared.check_poison()?;
        let tx = self.tx.as_ref().ok_or(WalError::Closed)?;
        let bytes = RECORD_HEADER_LEN as u64 + payload;
        let (reply, rx) = oneshot::channel();
        self.shared.pending_bytes.fetch_add(bytes, Ordering::AcqRel);
        let request = AppendRequest {
            tenant: tenant.to_owned(),
            data,
            hook: Some(hook),
            reply,
            bytes,
            seq: 0,
        };
        if tx.send(Command::Append(request)).is_err() {
            self.shared.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(WalError::Closed);
        }
        Ok(rx)
    }

    /// Closes the current segment if it holds any record, so that the next append starts a new
    /// one. Blocks until the writer thread has done it (after any appends already submitted).
    pub fn rotate(&self) -> Result<(), WalError> {
        self.request(Command::Rotate)
    }

    /// Deletes every segment whose records all have a sequence number `<= seq` (closing the
    /// current segment first if it qualifies). Never deletes a segment holding a larger sequence
    /// number. Returns how many segments were deleted. Blocks until the writer thread has done it.
    pub fn truncate_through(&self, seq: u64) -> Result<usize, WalError> {
        self.request(|reply| Command::Truncate(seq, reply))
    }

    fn request<T>(
        &self,
        command: impl FnOnce(mpsc::SyncSender<Result<T, WalError>>) -> Command,
    ) -> Result<T, WalError> {
        let tx = self.tx.as_ref().ok_or(WalError::Closed)?;
        let (reply, rx) = mpsc::sync_channel(1);
        tx.send(command(reply)).map_err(|_| WalError::Closed)?;
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// The highest sequence number assigned or reserved so far (replayed records included; 0 for
    /// a new WAL). The next append gets a larger one.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    /// Bytes handed to [`Wal::append`] whose fsync has not completed yet.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.pending_bytes.load(Ordering::Acquire)
    }

    /// Total size of the segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.shared.disk_bytes.load(Ordering::Acquire)
    }

    /// Number of data fsyncs (`sync_data`) of segment files so far: one per group commit, plus
    /// one when a group spills over into a new segment.
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsync_count.load(Ordering::Acquire)
    }

    /// The WAL directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Completes pending appends, fsyncs and stops the writer thread. Dropping a `Wal` does the
    /// same, logging instead of returning errors; both block until the writer thread has exited.
    /// Returns the poisoning error if the WAL had failed.
    pub fn close(mut self) -> Result<(), WalError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WalError> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let (reply, rx) = mpsc::sync_channel(1);
        let result = match tx.send(Command::Shutdown(reply)) {
            Ok(()) => rx.recv().unwrap_or(Err(WalError::Closed)),
            Err(_) => Err(WalError::Closed),
        };
        drop(tx);
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                return Err(WalError::Closed);
            }
        }
        result
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            warn!(dir = %self.dir.display(), error = %e, "closing the write-ahead log failed");
        }
    }
}

/// A segment that is no longer written to.
#[derive(Debug)]
struct ClosedSegment {
    path: PathBuf,
    name_seq: u64,
    last_seq: Option<u64>,
    len: u64,
}

impl ClosedSegment {
    /// The segment holds no record above this sequence number.
    fn covered_through(&self) -> u64 {
        self.last_seq
            .unwrap_or_else(|| self.name_seq.saturating_sub(1))
    }
}

struct ActiveSegment {
    file: File,
    path: PathBuf,
    name_seq: u64,
    last_seq: Option<u64>,
    len: u64,
    dirty: bool,
}

/// Owns the files; runs on the dedicated writer thread.
struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    shared: Arc<Shared>,
    closed: Vec<ClosedSegment>,
    active: Option<ActiveSegment>,
    next_seq: u64,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut group = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            batch.extend(rx.try_iter());
            // Appends queue up into one group; any other command first commits the group so
            // that it sees every append submitted before it.
            for command in batch.drain(..) {
                match command {
                    Command::Append(request) => group.push(request),
                    Command::Rotate(reply) => {
                        self.commit(&mut group);
                        let _ = reply.send(self.rotate());
                    }
                    Command::Truncate(seq, reply) => {
                        self.commit(&mut group);
                        let _ = reply.send(self.truncate_through(seq));
                    }
                    Command::Shutdown(reply) => {
                        self.commit(&mut group);
                        let _ = reply.send(self.finish());
                        return;
                    }
                }
            }
            self.commit(&mut group);
        }
        // Every handle is gone without a shutdown request: still leave the files synced.
        if let Err(e) = self.finish() {
            warn!(dir = %self.dir.display(), error = %e, "closing the write-ahead log failed");
        }
    }

    /// Writes, hooks, fsyncs and completes one group of appends.
    fn commit(&mut self, group: &mut Vec<AppendRequest>) {
        if group.is_empty() {
            return;
        }
        let bytes: u64 = group.iter().map(|r| r.bytes).sum();
        let result = self
            .shared
            .check_poison()
            .and_then(|()| self.write_group(group));
        if let Err(e) = &result {
            self.shared.poison(e);
            if !matches!(e, WalError::Poisoned { .. }) {
                warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    records = group.len(),
                    "write-ahead log group commit failed; refusing further writes"
                );
            }
        }
        self.shared.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
        for request in group.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(request.seq),
                Err(e) => Err(e.clone()),
            };
            // The appender may have gone away; the record is durable (or failed) regardless.
            let _ = request.reply.send(outcome);
        }
    }

    fn write_group(&mut self, group: &mut [AppendRequest]) -> Result<(), WalError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = self.encode_and_write(group, &mut buf);
        if buf.capacity() > RETAINED_BUFFER_BYTES {
            buf = Vec::new();
        }
        self.buf = buf;
        result?;
        for request in group.iter_mut() {
            if let Some(hook) = request.hook.take() {
                let seq = request.seq;
                if catch_unwind(AssertUnwindSafe(move || hook(seq))).is_err() {
                    return Err(WalError::HookPanicked { seq });
                }
            }
        }
        self.sync_active()
    }

    fn encode_and_write(
        &mut self,
        group: &mut [AppendRequest],
        buf: &mut Vec<u8>,
    ) -> Result<(), WalError> {
        for request in group.iter_mut() {
            let needs_new = match &self.active {
                None => true,
                Some(a) => {
                    a.last_seq.is_some()
                        && a.len + buf.len() as u64 + request.bytes > self.segment_bytes
                }
            };
            if needs_new {
                self.flush(buf)?;
                self.close_active()?;
                self.open_segment()?;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            request.seq = seq;
            encode_record(buf, seq, &request.tenant, &request.data);
            request.data = Vec::new();
            if let Some(active) = self.active.as_mut() {
                active.last_seq = Some(seq);
            }
            self.shared.last_seq.store(seq, Ordering::Release);
            if buf.len() >= WRITE_CHUNK_BYTES {
                self.flush(buf)?;
            }
        }
        self.flush(buf)
    }

    /// Writes `buf` to the active segment.
    fn flush(&mut self, buf: &mut Vec<u8>) -> Result<(), WalError> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            return Err(WalError::Closed);
        };
        active.dirty = true;
        active
            .file
            .write_all(buf)
            .map_err(|e| WalError::io("write", &active.path, e))?;
        active.len += buf.len() as u64;
        self.shared
            .disk_bytes
            .fetch_add(buf.len() as u64, Ordering::AcqRel);
        buf.clear();
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), WalError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if !active.dirty {
            return Ok(());
        }
        active
            .file
            .sync_data()
            .map_err(|e| WalError::io("fsync", &active.path, e))?;
        active.dirty = false;
        self.shared.fsync_count.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Creates a new active segment named after the next sequence number.
    fn open_segment(&mut self) -> Result<(), WalError> {
        let name_seq = self.next_seq;
        let path = self.dir.join(segment_file_name(name_seq));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| WalError::io("creating a segment", &path, e))?;
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        file.write_all(&header)
            .map_err(|e| WalError::io("writing a segment header", &path, e))?;
        self.shared
            .disk_bytes
            .fetch_add(SEGMENT_HEADER_LEN, Ordering::AcqRel);
        self.active = Some(ActiveSegment {
            file,
            path,
            name_seq,
            last_seq: None,
            len: SEGMENT_HEADER_LEN,
            dirty: true,
        });
        sync_dir(&self.dir)?;
        debug!(segment = %segment_file_name(name_seq), "started wal segment");
        Ok(())
    }

    /// Fsyncs (if needed) and closes the active segment.
    fn close_active(&mut self) -> Result<(), WalError> {
        self.sync_active()?;
        if let Some(active) = self.active.take() {
            self.closed.push(ClosedSegment {
                path: active.path,
                name_seq: active.name_seq,
                last_seq: active.last_seq,
                len: active.len,
            });
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        self.shared.check_poison()?;
        let holds_records = self.active.as_ref().is_some_and(|a| a.last_seq.is_some());
        if holds_records {
            self.close_active().inspect_err(|e| self.shared.poison(e))?;
        }
        Ok(())
    }

    fn truncate_through(&mut self, seq: u64) -> Result<usize, WalError> {
        self.shared.check_poison()?;
        let active_covered = self
            .active
            .as_ref()
            .is_some_and(|a| a.last_seq.is_some_and(|last| last <= seq));
        if active_covered {
            self.close_active().inspect_err(|e| self.shared.poison(e))?;
        }
        let mut deleted = 0;
        let mut result = Ok(());
        let mut kept = Vec::with_capacity(self.closed.len());
        for segment in std::mem::take(&mut self.closed) {
            if result.is_err() || segment.covered_through() > seq {
                kept.push(segment);
                continue;
            }
            match fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result = Err(WalError::io("deleting a segment", &segment.path, e));
                    kept.push(segment);
                    continue;
                }
            }
            debug!(segment = %segment.path.display(), "deleted wal segment");
            self.shared
                .disk_bytes
                .fetch_sub(segment.len, Ordering::AcqRel);
            deleted += 1;
        }
        self.closed = kept;
        result?;
        if deleted > 0 {
            if self.active.is_none() {
                // Keep the sequence high-water mark on disk: a restart must not reuse numbers.
                self.open_segment().inspect_err(|e| self.shared.poison(e))?;
                self.sync_active().inspect_err(|e| self.shared.poison(e))?;
            } else {
                sync_dir(&self.dir)?;
            }
        }
        Ok(deleted)
    }

    fn finish(&mut self) -> Result<(), WalError> {
        self.shared.check_poison()?;
        self.sync_active().inspect_err(|e| self.shared.poison(e))?;
        self.active = None;
        Ok(())
    }
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, tenant: &str, data: &[u8]) {
    // Lengths were checked against max_record_bytes (a u32) and u16::MAX in `Wal::submit`.
    let payload_len = (PAYLOAD_FIXED_LEN + tenant.len() + data.len()) as u32;
    let start = buf.len();
    buf.reserve(RECORD_HEADER_LEN + payload_len as usize);
    buf.extend_from_slice(&payload_len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    let payload_start = buf.len();
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    buf.extend_from_slice(tenant.as_bytes());
    buf.extend_from_slice(data);
    let crc = crc32fast::hash(&buf[payload_start..]);
    buf[start + 4..payload_start].copy_from_slice(&crc.to_le_bytes());
}

fn segment_file_name(name_seq: u64) -> String {
    format!("wal-{name_seq:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync of the directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), WalError> {
    Ok(())
}

/// Reads every segment of `dir` in order.
fn replay_dir(dir: &Path, max_record: u32) -> Result<(Vec<ClosedSegment>, ReplayInfo), WalError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| WalError::io("listing the directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("listing the directory", dir, e))?;
        let name = entry.file_name();
        let Some(name_seq) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let is_file = entry
            .file_type()
            .map_err(|e| WalError::io("inspecting a segment", &entry.path(), e))?
            .is_file();
        if is_file {
            found.push((name_seq, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(name_seq, _)| *name_seq);

    let mut info = ReplayInfo::default();
    let mut segments = Vec::with_capacity(found.len());
    let mut prev_seq = 0;
    for (name_seq, path) in found {
        let bytes = fs::read(&path).map_err(|e| WalError::io("reading a segment", &path, e))?;
        let scan = scan_segment(&bytes, max_record, prev_seq, &mut info.records);
        if let Some(last) = scan.last_seq {
            prev_seq = last;
        }
        if let Some(corrupt) = scan.corrupt {
            let skipped = bytes.len() as u64 - corrupt.offset;
            warn!(
                segment = %segment_file_name(name_seq),
                offset = corrupt.offset,
                reason = %corrupt.reason,
                skipped_bytes = skipped,
                "torn or corrupt wal record; skipping the rest of the segment"
            );
            info.corrupt_segments += 1;
            info.skipped_bytes += skipped;
        }
        segments.push(ClosedSegment {
            path,
            name_seq,
            last_seq: scan.last_seq,
            len: bytes.len() as u64,
        });
    }
    Ok((segments, info))
}

struct SegmentScan {
    last_seq: Option<u64>,
    corrupt: Option<Corruption>,
}

struct Corruption {
    offset: u64,
    reason: String,
}

fn le_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

/// Decodes the records of one segment into `out`, stopping at the first bad one.
fn scan_segment(
    bytes: &[u8],
    max_record: u32,
    mut prev_seq: u64,
    out: &mut Vec<WalRecord>,
) -> SegmentScan {
    let mut scan = SegmentScan {
        last_seq: None,
        corrupt: None,
    };
    let corrupt = |offset: usize, reason: String| {
        Some(Corruption {
            offset: offset as u64,
            reason,
        })
    };
    let header_len = SEGMENT_HEADER_LEN as usize;
    if bytes.len() < header_len {
        scan.corrupt = corrupt(
            0,
            format!("segment header is truncated ({} bytes)", bytes.len()),
        );
        return scan;
    }
    if bytes[..8] != MAGIC {
        scan.corrupt = corrupt(0, "bad segment magic".into());
        return scan;
    }
    let version = le_u32(&bytes[8..header_len]).unwrap_or(0);
    if version != FORMAT_VERSION {
        scan.corrupt = corrupt(0, format!("unsupported segment format version {version}"));
        return scan;
    }
    let mut offset = header_len;
    while offset < bytes.len() {
        match decode_record(&bytes[offset..], max_record, prev_seq) {
            Ok((record, len)) => {
                prev_seq = record.seq;
                scan.last_seq = Some(record.seq);
                out.push(record);
                offset += len;
            }
            Err(reason) => {
                scan.corrupt = corrupt(offset, reason);
                break;
            }
        }
    }
    scan
}

/// Decodes one record at the start of `b`; returns it and its encoded length.
fn decode_record(b: &[u8], max_record: u32, prev_seq: u64) -> Result<(WalRecord, usize), String> {
    let (Some(len), Some(crc)) = (le_u32(b), b.get(4..).and_then(le_u32)) else {
        return Err(format!("truncated record header ({} bytes)", b.len()));
    };
    if len > max_record {
        return Err(format!(
            "record length {len} exceeds the maximum of {max_record}"
        ));
    }
    let len = len as usize;
    if len < PAYLOAD_FIXED_LEN {
        return Err(format!("record length {len} is too short"));
    }
    let Some(payload) = b.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len) else {
        return Err(format!(
            "truncated record: {len} payload bytes expected, {} present",
            b.len() - RECORD_HEADER_LEN
        ));
    };
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(format!(
            "crc mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().map_err(|_| "short payload")?);
    let tenant_len = usize::from(u16::from_le_bytes(
        payload[8..10].try_into().map_err(|_| "short payload")?,
    ));
    let Some(tenant) = payload.get(PAYLOAD_FIXED_LEN..PAYLOAD_FIXED_LEN + tenant_len) else {
        return Err(format!("tenant length {tenant_len} exceeds the record"));
    };
    let tenant = std::str::from_utf8(tenant).map_err(|_| "tenant is not valid utf-8")?;
    if seq <= prev_seq {
        return Err(format!("sequence number {seq} does not follow {prev_seq}"));
    }
    let record = WalRecord {
        seq,
        tenant: tenant.to_owned(),
        data: payload[PAYLOAD_FIXED_LEN + tenant_len..].to_vec(),
    };
    Ok((record, RECORD_HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn noop() -> Hook {
        Box::new(|_| {})
    }

    fn segment_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| parse_segment_name(n).is_some())
            .collect();
        names.sort();
        names
    }

    fn segment_sizes(dir: &Path) -> u64 {
        segment_names(dir)
            .iter()
            .map(|n| fs::metadata(dir.join(n)).unwrap().len())
            .sum()
    }

    fn record(seq: u64, tenant: &str, data: &[u8]) -> WalRecord {
        WalRecord {
            seq,
            tenant: tenant.into(),
            data: data.to_vec(),
        }
    }

    /// Writes `count` records of `size` data bytes for tenant "t", one call each.
    async fn append_n(wal: &Wal, count: usize, size: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        for _ in 0..count {
            let seq = wal.last_seq() + 1;
            seqs.push(wal.append("t", data_for(seq, size), noop()).await.unwrap());
        }
        seqs
    }

    fn data_for(seq: u64, size: usize) -> Vec<u8> {
        let mut d = format!("record-{seq}-").into_bytes();
        d.resize(size, b'x');
        d
    }

    #[derive(Clone, Default)]
    struct LogBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for LogBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` on this thread with a subscriber that records log lines.
    fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
        let buf = LogBuf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let out = tracing::subscriber::with_default(subscriber, f);
        let logs = String::from_utf8_lossy(&buf.0.lock()).into_owned();
        (out, logs)
    }

    #[test]
    fn wal_is_send_sync_and_append_future_is_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        send_sync::<Wal>();
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let fut = wal.append("t", vec![], noop());
        send(&fut);
        drop(fut);
    }

    #[test]
    fn invalid_options_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let zero = WalOptions {
            segment_bytes: 0,
            ..WalOptions::default()
        };
        assert!(matches!(
            Wal::open(dir.path(), zero),
            Err(WalError::InvalidOptions { .. })
        ));
        let tiny = WalOptions {
            max_record_bytes: 9,
            ..WalOptions::default()
        };
        assert!(matches!(
            Wal::open(dir.path(), tiny),
            Err(WalError::InvalidOptions { .. })
        ));
    }

    #[tokio::test]
    async fn append_reopen_replay_roundtrip_and_seq_continues() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(info, ReplayInfo::default());
        assert_eq!(wal.last_seq(), 0);
        assert_eq!(wal.disk_bytes(), 0);
        assert_eq!(wal.append("a", b"one".to_vec(), noop()).await.unwrap(), 1);
        assert_eq!(wal.append("", vec![], noop()).await.unwrap(), 2);
        let big = vec![7u8; 100_000];
        assert_eq!(
            wal.append("tenant-β", big.clone(), noop()).await.unwrap(),
            3
        );
        assert_eq!(wal.last_seq(), 3);
        assert_eq!(wal.pending_bytes(), 0);
        assert_eq!(wal.disk_bytes(), segment_sizes(dir.path()));
        wal.close().unwrap();

        let expected = vec![
            record(1, "a", b"one"),
            record(2, "", b""),
            record(3, "tenant-β", &big),
        ];
        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(info.records, expected);
        assert_eq!((info.corrupt_segments, info.skipped_bytes), (0, 0));
        assert_eq!(wal.last_seq(), 3);
        assert_eq!(wal.disk_bytes(), segment_sizes(dir.path()));
        assert_eq!(wal.append("a", b"four".to_vec(), noop()).await.unwrap(), 4);
        // Dropping without close still leaves everything durable and readable.
        drop(wal);

        let (_wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(info.records.len(), 4);
        assert_eq!(info.records[..3], expected[..]);
        assert_eq!(info.records[3], record(4, "a", b"four"));
        // Each open writes to a fresh segment.
        assert_eq!(
            segment_names(dir.path()),
            vec![segment_file_name(1), segment_file_name(4)]
        );
    }

    #[test]
    fn unrelated_files_in_the_directory_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("node_id"), "abc").unwrap();
        fs::write(dir.path().join("wal-12.seg"), "not a segment name").unwrap();
        fs::create_dir(dir.path().join(segment_file_name(5))).unwrap();
        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(info, ReplayInfo::default());
        assert_eq!(wal.last_seq(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_get_unique_seqs_and_hooks_run_in_order() {
        const TASKS: usize = 16;
        const PER_TASK: usize = 25;
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let wal = Arc::new(wal);
        let hook_seqs = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let wal = Arc::clone(&wal);
            let hook_seqs = Arc::clone(&hook_seqs);
            tasks.push(tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..PER_TASK {
                    let data = format!("task-{task}-{i}").into_bytes();
                    let hook_seqs = Arc::clone(&hook_seqs);
                    let hook: Hook = Box::new(move |seq| hook_seqs.lock().push(seq));
                    let seq = wal.append("t", data.clone(), hook).await.unwrap();
                    written.push((seq, data));
                }
                written
            }));
        }
        let mut by_seq = HashMap::new();
        for task in tasks {
            for (seq, data) in task.await.unwrap() {
                assert!(by_seq.insert(seq, data).is_none(), "seq {seq} reused");
            }
        }
        let total = (TASKS * PER_TASK) as u64;
        let mut seqs: Vec<u64> = by_seq.keys().copied().collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
        assert_eq!(
            *hook_seqs.lock(),
            seqs,
            "hooks must run once each, in seq order"
        );
        assert_eq!(wal.pending_bytes(), 0);
        assert!(wal.fsync_count() >= 1 && wal.fsync_count() <= total);

        let wal = Arc::into_inner(wal).unwrap();
        wal.close().unwrap();
        let (_wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(info.records.len(), by_seq.len());
        for r in &info.records {
            assert_eq!(by_seq[&r.seq], r.data);
        }
    }

    #[tokio::test]
    async fn group_commit_batches_appends_into_one_fsync() {
        const N: usize = 64;
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let mut gate_rx = Some(gate_rx);
        let hook_seqs = Arc::new(Mutex::new(Vec::new()));
        let mut futures = Vec::new();
        for i in 0..N {
            let hook_seqs = Arc::clone(&hook_seqs);
            let gate = if i == 0 { gate_rx.take() } else { None };
            let hook: Hook = Box::new(move |seq| {
                if let Some(gate) = gate {
                    // Hold the writer inside the first group until all appends are queued.
                    gate.recv_timeout(Duration::from_secs(30)).unwrap();
                }
                hook_seqs.lock().push(seq);
            });
            futures.push(Box::pin(wal.append("t", vec![1; 100], hook)));
        }
        // The first poll submits each append; none can finish while the first hook is held.
        for f in &mut futures {
            assert!(futures::poll!(f.as_mut()).is_pending());
        }
        let record_bytes = (RECORD_HEADER_LEN + PAYLOAD_FIXED_LEN + 1 + 100) as u64;
        assert_eq!(wal.pending_bytes(), N as u64 * record_bytes);
        gate_tx.send(()).unwrap();
        let seqs: Vec<u64> = futures::future::join_all(futures)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());
        assert_eq!(*hook_seqs.lock(), seqs);
        // One fsync for the group holding the first record, and at most one more for everything
        // that was queued behind it while its hook was held.
        let fsyncs = wal.fsync_count();
        assert!((1..=2).contains(&fsyncs), "{fsyncs} fsyncs for {N} appends");
        assert_eq!(wal.pending_bytes(), 0);
    }

    #[derive(Debug, Clone, Copy)]
    enum Damage {
        TruncateMidRecord,
        FlipCrcByte,
        FlipDataByte,
        AppendGarbage,
        AppendShortGarbage,
        ZeroLength,
        TruncatedHeader,
        BadMagic,
        BadVersion,
        AbsurdLength,
    }

    /// Record size used by the damage tests: tenant "t", 100 data bytes.
    const REC: u64 = (RECORD_HEADER_LEN + PAYLOAD_FIXED_LEN + 1 + 100) as u64;

    /// Damages a 5-record segment; returns (valid records left, offset of the damage, reason).
    fn damage(path: &Path, how: Damage) -> (u64, u64, &'static str) {
        let mut bytes = fs::read(path).unwrap();
        assert_eq!(bytes.len() as u64, SEGMENT_HEADER_LEN + 5 * REC);
        let at = |i: u64| SEGMENT_HEADER_LEN + i * REC;
        let ix = |i: u64| at(i) as usize;
        let outcome = match how {
            Damage::TruncateMidRecord => {
                bytes.truncate(ix(4) + 50);
                (4, at(4), "truncated record: ")
            }
            Damage::FlipCrcByte => {
                bytes[ix(2) + 5] ^= 0xff;
                (2, at(2), "crc mismatch")
            }
            Damage::FlipDataByte => {
                bytes[ix(3) + 60] ^= 0x01;
                (3, at(3), "crc mismatch")
            }
            Damage::AppendGarbage => {
                bytes.extend_from_slice(&[0xab; 37]);
                (5, at(5), "exceeds the maximum")
            }
            Damage::AppendShortGarbage => {
                bytes.extend_from_slice(&[0; 3]);
                (5, at(5), "truncated record header")
            }
            Damage::ZeroLength => {
                bytes.clear();
                (0, 0, "segment header is truncated")
            }
            Damage::TruncatedHeader => {
                bytes.truncate(7);
                (0, 0, "segment header is truncated")
            }
            Damage::BadMagic => {
                bytes[0] = b'X';
                (0, 0, "bad segment magic")
            }
            Damage::BadVersion => {
                bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
                (0, 0, "unsupported segment format version 99")
            }
            Damage::AbsurdLength => {
                bytes[ix(1)..ix(1) + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                (1, at(1), "exceeds the maximum")
            }
        };
        fs::write(path, &bytes).unwrap();
        outcome
    }

    #[tokio::test]
    async fn torn_or_corrupt_segments_keep_the_valid_prefix() {
        for how in [
            Damage::TruncateMidRecord,
            Damage::FlipCrcByte,
            Damage::FlipDataByte,
            Damage::AppendGarbage,
            Damage::AppendShortGarbage,
            Damage::ZeroLength,
            Damage::TruncatedHeader,
            Damage::BadMagic,
            Damage::BadVersion,
            Damage::AbsurdLength,
        ] {
            check_damage(how).await;
        }
    }

    async fn check_damage(how: Damage) {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        append_n(&wal, 5, 100).await;
        wal.close().unwrap();
        let first = dir.path().join(segment_file_name(1));
        let (valid, offset, reason) = damage(&first, how);
        let damaged_len = fs::metadata(&first).unwrap().len();
        let skipped = damaged_len - offset;

        let ((wal, info), logs) =
            capture_logs(|| Wal::open(dir.path(), WalOptions::default()).unwrap());
        let expected: Vec<WalRecord> = (1..=valid)
            .map(|seq| record(seq, "t", &data_for(seq, 100)))
            .collect();
        assert_eq!(info.records, expected, "{how:?}");
        assert_eq!(info.corrupt_segments, 1, "{how:?}");
        assert_eq!(info.skipped_bytes, skipped, "{how:?}");
        let warn_line = logs
            .lines()
            .find(|l| l.contains("WARN"))
            .unwrap_or_else(|| panic!("{how:?}: no warning logged in {logs}"));
        assert!(
            warn_line.contains(&segment_file_name(1)),
            "{how:?}: {warn_line}"
        );
        assert!(warn_line.contains(reason), "{how:?}: {warn_line}");
        assert!(
            warn_line.contains(&format!("offset={offset}")),
            "{how:?}: {warn_line}"
        );

        // New records go to a new segment, with numbers above everything on disk.
        let next = valid.max(1) + 1;
        assert_eq!(
            wal.append("t", b"after".to_vec(), noop()).await.unwrap(),
            next
        );
        assert_eq!(fs::metadata(&first).unwrap().len(), damaged_len, "{how:?}");
        assert_eq!(
            segment_names(dir.path()),
            vec![segment_file_name(1), segment_file_name(next)],
            "{how:?}"
        );
        assert_eq!(wal.disk_bytes(), segment_sizes(dir.path()), "{how:?}");
        wal.close().unwrap();

        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let mut with_new = expected.clone();
        with_new.push(record(next, "t", b"after"));
        assert_eq!(info.records, with_new, "{how:?}");
        assert_eq!(info.corrupt_segments, 1, "{how:?}");
        // Truncating past the damaged segment removes it; the WAL then replays cleanly.
        assert_eq!(wal.truncate_through(next - 1).unwrap(), 1, "{how:?}");
        wal.close().unwrap();
        let ((_wal, info), logs) =
            capture_logs(|| Wal::open(dir.path(), WalOptions::default()).unwrap());
        assert_eq!(info.records, vec![record(next, "t", b"after")], "{how:?}");
        assert_eq!(
            (info.corrupt_segments, info.skipped_bytes),
            (0, 0),
            "{how:?}"
        );
        assert!(!logs.contains("WARN"), "{how:?}: {logs}");
    }

    #[tokio::test]
    async fn corrupt_middle_segment_skips_only_its_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        for _ in 0..3 {
            append_n(&wal, 3, 100).await;
            wal.rotate().unwrap();
        }
        wal.close().unwrap();
        let middle = dir.path().join(segment_file_name(4));
        let mut bytes = fs::read(&middle).unwrap();
        bytes[(SEGMENT_HEADER_LEN + REC + 20) as usize] ^= 0x10;
        fs::write(&middle, &bytes).unwrap();

        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let seqs: Vec<u64> = info.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 7, 8, 9]);
        assert_eq!(info.corrupt_segments, 1);
        assert_eq!(info.skipped_bytes, 2 * REC);
        assert_eq!(wal.append("t", vec![], noop()).await.unwrap(), 10);
    }

    #[tokio::test]
    async fn segments_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_bytes: 1024,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
        // 219-byte records: four fit in a 1 KiB segment after the 12-byte header.
        let rec = (RECORD_HEADER_LEN + PAYLOAD_FIXED_LEN + 1 + 200) as u64;
        let seqs = append_n(&wal, 20, 200).await;
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
        let names = segment_names(dir.path());
        let expected: Vec<String> = [1, 5, 9, 13, 17].map(segment_file_name).into();
        assert_eq!(names, expected);
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).unwrap().len();
            assert_eq!(len, SEGMENT_HEADER_LEN + 4 * rec, "{name}");
            assert!(len <= opts.segment_bytes);
        }
        assert_eq!(wal.disk_bytes(), segment_sizes(dir.path()));
        // A record larger than a segment gets a segment of its own.
        assert_eq!(wal.append("t", vec![0; 2000], noop()).await.unwrap(), 21);
        assert_eq!(wal.append("t", vec![0; 10], noop()).await.unwrap(), 22);
        assert_eq!(
            segment_names(dir.path())[5..],
            [segment_file_name(21), segment_file_name(22)]
        );
        wal.close().unwrap();

        let (_wal, info) = Wal::open(dir.path(), opts).unwrap();
        let seqs: Vec<u64> = info.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=22).collect::<Vec<_>>());
        assert_eq!(info.records[6], record(7, "t", &data_for(7, 200)));
    }

    #[tokio::test]
    async fn explicit_rotate_starts_a_new_segment_only_after_records() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        wal.rotate().unwrap();
        assert!(segment_names(dir.path()).is_empty());
        append_n(&wal, 3, 10).await;
        wal.rotate().unwrap();
        wal.rotate().unwrap();
        append_n(&wal, 1, 10).await;
        assert_eq!(
            segment_names(dir.path()),
            vec![segment_file_name(1), segment_file_name(4)]
        );
    }

    #[tokio::test]
    async fn truncate_deletes_only_fully_covered_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        append_n(&wal, 3, 50).await;
        wal.rotate().unwrap();
        append_n(&wal, 3, 50).await;
        wal.rotate().unwrap();
        append_n(&wal, 3, 50).await; // 7..=9 stay in the active segment

        assert_eq!(wal.truncate_through(0).unwrap(), 0);
        assert_eq!(wal.truncate_through(5).unwrap(), 1);
        assert_eq!(
            segment_names(dir.path()),
            vec![segment_file_name(4), segment_file_name(7)]
        );
        assert_eq!(wal.truncate_through(8).unwrap(), 1);
        assert_eq!(segment_names(dir.path()), vec![segment_file_name(7)]);
        assert_eq!(wal.disk_bytes(), segment_sizes(dir.path()));
        wal.close().unwrap();

        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let seqs: Vec<u64> = info.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![7, 8, 9]);
        assert_eq!(wal.last_seq(), 9);
        // Truncating everything keeps an empty segment carrying the sequence high-water mark.
        assert_eq!(wal.truncate_through(9).unwrap(), 1);
        assert_eq!(segment_names(dir.path()), vec![segment_file_name(10)]);
        assert_eq!(wal.disk_bytes(), SEGMENT_HEADER_LEN);
        wal.close().unwrap();

        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert!(info.records.is_empty());
        assert_eq!((info.corrupt_segments, info.skipped_bytes), (0, 0));
        let seq = wal.append("t", b"x".to_vec(), noop()).await.unwrap();
        assert!(seq > 9, "sequence number {seq} reused after truncation");
        assert_eq!(wal.last_seq(), seq);
    }

    #[tokio::test]
    async fn truncate_closes_a_covered_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        append_n(&wal, 3, 50).await;
        assert_eq!(wal.truncate_through(2).unwrap(), 0);
        assert_eq!(wal.truncate_through(3).unwrap(), 1);
        // The next record goes into the (already created) segment named after it.
        assert_eq!(segment_names(dir.path()), vec![segment_file_name(4)]);
        assert_eq!(wal.append("t", b"4".to_vec(), noop()).await.unwrap(), 4);
        assert_eq!(segment_names(dir.path()), vec![segment_file_name(4)]);
        assert_eq!(wal.disk_bytes(), segment_sizes(dir.path()));
        wal.close().unwrap();

        let (_wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(info.records, vec![record(4, "t", b"4")]);
    }

    #[tokio::test]
    async fn oversized_records_and_tenants_are_rejected_without_harm() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            max_record_bytes: 100,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), opts).unwrap();
        let err = wal.append("", vec![0; 91], noop()).await.unwrap_err();
        assert!(
            matches!(
                err,
                WalError::RecordTooLarge {
                    size: 101,
                    max: 100
                }
            ),
            "{err}"
        );
        let long_tenant = "x".repeat(70_000);
        let err = wal.append(&long_tenant, vec![], noop()).await.unwrap_err();
        assert!(
            matches!(err, WalError::TenantTooLong { len: 70_000 }),
            "{err}"
        );
        assert_eq!(wal.pending_bytes(), 0);
        assert_eq!(wal.append("", vec![0; 90], noop()).await.unwrap(), 1);
        wal.close().unwrap();
    }

    #[tokio::test]
    async fn a_panicking_hook_poisons_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(wal.append("t", b"ok".to_vec(), noop()).await.unwrap(), 1);
        let err = wal
            .append("t", b"boom".to_vec(), Box::new(|_| panic!("hook failure")))
            .await
            .unwrap_err();
        assert!(matches!(err, WalError::HookPanicked { seq: 2 }), "{err}");
        let err = wal
            .append("t", b"later".to_vec(), noop())
            .await
            .unwrap_err();
        assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
        assert!(matches!(wal.rotate(), Err(WalError::Poisoned { .. })));
        assert!(matches!(
            wal.truncate_through(1),
            Err(WalError::Poisoned { .. })
        ));
        assert_eq!(wal.pending_bytes(), 0);
        assert!(wal.close().is_err());

        // Reopening recovers; the record whose hook panicked was written and is replayed.
        let (wal, info) = Wal::open(dir.path(), WalOptions::default()).unwrap();
        let seqs: Vec<u64> = info.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(wal.append("t", b"again".to_vec(), noop()).await.unwrap(), 3);
    }
}
