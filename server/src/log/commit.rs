//! Group commit: the task that turns appended records into acknowledged
//! ones, the `--sync interval` syncer, and the future a request awaits.
//!
//! Appending a record only copies it into the shard's tail buffer and gives
//! it the next lsn; it is synchronous. The committer takes everything
//! appended so far as one batch, writes it (whole blocks, in concurrent
//! writes of at most 256 KiB) and, with `--sync always`, fdatasyncs it, and
//! only then acknowledges it and wakes every waiter it covers. While a batch
//! is in flight, new records gather; a second batch may start beside the
//! first (under load only once enough records wait, see `commit_loop`), and
//! batches complete strictly in order. So the batch size follows the load
//! by itself.
//!
//! A failed write or fdatasync is never retried and never acknowledged: the
//! log fails (see [`super::writer`]) and every waiter gets the error.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::error::{IoFailure, LogError};
use super::tail::Part;
use super::writer::{Batch, CutWhen, SegFile, SharedLog};
use super::SyncMode;
use crate::disk::{DiskFile, Started};
use crate::turn;

/// Batches in flight at once. Two keep the disk busy while the next batch
/// gathers and while acknowledged writers submit again.
const MAX_INFLIGHT: usize = 2;

/// Writes larger than this are split into concurrent writes of this size:
/// the device sees a deeper queue, which most SSDs and virtual disks need to
/// reach their bandwidth.
pub(super) const WRITE_CHUNK: usize = 256 << 10;

/// Resolves when `lsn` is acknowledged under the sync mode.
pub struct Acked {
    pub log: SharedLog,
    pub lsn: u64,
}

impl Future for Acked {
    type Output = Result<(), LogError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.log.borrow_mut().poll_acked(self.lsn, cx)
    }
}

/// The group-commit task of one shard. Runs until the log is failed, or
/// closed with everything appended acknowledged.
pub async fn committer(log: SharedLog) {
    log.borrow_mut().task_started();
    commit_loop(&log).await;
    log.borrow_mut().task_ended();
}

struct InFlight {
    batch: Batch,
    records: u64,
    /// Every write of the batch has been started. A batch whose writes
    /// start over several turns (see `write_part`) holds the next batch
    /// until then: a later batch's writes are never submitted before an
    /// earlier one's, so a kill -9 (which lets submitted writes complete)
    /// cannot leave a later batch on disk after a gap.
    started: Rc<Cell<bool>>,
    task: Pin<Box<glommio::Task<Result<(), IoFailure>>>>,
}

async fn commit_loop(log: &SharedLog) {
    let notify = log.borrow().committer();
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut last_cut = log.borrow().last_lsn();
    loop {
        // Start another batch if allowed. Batches are written concurrently
        // but completed (acknowledged) strictly in order.
        let may_start =
            inflight.len() < MAX_INFLIGHT && !inflight.iter().any(|b| b.batch.creates_file);
        let can_start = may_start && inflight.back().is_none_or(|b| b.started.get());
        let mut timer = None;
        if can_start {
            let mut l = log.borrow_mut();
            if l.failed() {
                return;
            }
            // Under load (a batch of 16 records or more in flight) a
            // durable rung starts the second batch only once half as many
            // records as the first carries are waiting: fewer, fuller
            // writes (at 256 connections 118 requests per device write
            // instead of 84-93, 59 sets per flush with `always` instead of
            // 42), each one device write less of CPU. Below that, waiting
            // costs a closed loop more than the write it saves.
            let durable = !matches!(l.sync_mode(), SyncMode::None { .. });
            let waiting = l.last_lsn().saturating_sub(last_cut);
            let hold = durable
                && inflight.len() == 1
                && !l.stopped()
                && inflight[0].records >= 16
                && waiting * 2 < inflight[0].records;
            match l.cut_when() {
                CutWhen::Now if hold => {}
                CutWhen::Now => {
                    if let Some(batch) = l.cut_batch() {
                        let records = batch.last.saturating_sub(last_cut);
                        last_cut = batch.last;
                        drop(l);
                        let parts = batch.parts.clone();
                        // One write, started in the task's first poll,
                        // before any later batch's task runs.
                        let one_write = matches!(&parts[..], [p] if p.data.len() <= WRITE_CHUNK);
                        let started = Rc::new(Cell::new(one_write));
                        let write = write_batch(log.clone(), parts, started.clone());
                        let task = Box::pin(glommio::spawn_local(write));
                        inflight.push_back(InFlight {
                            batch,
                            task,
                            records,
                            started,
                        });
                        continue;
                    }
                }
                CutWhen::At(when) => timer = Some(when),
                CutWhen::Idle => {}
            }
        }
        if inflight.is_empty() && timer.is_none() && log.borrow().stopped() {
            return;
        }
        // Wait for the oldest batch; for new records when another batch
        // could start beside it; for the flush timer of `--sync none`.
        let woken = async {
            if may_start {
                notify.wait().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let timed = async {
            match timer {
                Some(when) => {
                    glommio::timer::sleep(when.saturating_duration_since(std::time::Instant::now()))
                        .await
                }
                None => std::future::pending::<()>().await,
            }
        };
        let done = match inflight.front_mut() {
            Some(front) => {
                futures_lite::future::or(async { Some((&mut front.task).await) }, async {
                    futures_lite::future::or(woken, timed).await;
                    None
                })
                .await
            }
            None => {
                futures_lite::future::or(woken, timed).await;
                None
            }
        };
        let Some(result) = done else { continue };
        let b = inflight.pop_front().expect("front exists");
        let mut l = log.borrow_mut();
        match result {
            // Failed meanwhile (a failed fdatasync elsewhere, or a crash):
            // nothing more is acknowledged, even what was written.
            Ok(()) if l.failed() => return,
            Ok(()) => l.batch_done(b.batch),
            Err(why) => {
                l.fail(why);
                return;
            }
        }
    }
}

/// Writes one batch and, with `--sync always` (and for a segment's final
/// bytes always), fdatasyncs every file it touched.
/// `started` is set (and the committer told) once its last write has been
/// started.
///
/// A sealed segment followed by parts of the next one is synced before the
/// next segment's file is put in place: on disk a newer segment never
/// exists beside an older one whose end is not durable. Recovery treats
/// only the newest segment as possibly interrupted (records after a hole
/// there are cut); a sealed one is trusted, so a lost write at its end
/// followed by one that landed would otherwise bring back a pop without
/// its set (the crash-point explorer found this: `MCQ_CRASH_ITERS=6`,
/// seed 2004).
async fn write_batch(
    log: SharedLog,
    parts: Rc<Vec<Part>>,
    started: Rc<Cell<bool>>,
) -> Result<(), IoFailure> {
    let always = log.borrow().sync_mode() == SyncMode::Always;
    // (segment, file, sealed, synced already)
    let mut touched: Vec<(u32, Rc<dyn DiskFile>, bool, bool)> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = (i + 1 == parts.len()).then_some(&started);
        let file = write_part(&log, part, last).await?;
        let synced = part.seal && last.is_none();
        if synced {
            sync(&log, &*file).await?;
        }
        match touched.iter_mut().find(|(ord, ..)| *ord == part.ord) {
            Some(t) => {
                t.2 |= part.seal;
                t.3 |= synced;
            }
            None => touched.push((part.ord, file, part.seal, synced)),
        }
    }
    for (_, file, sealed, synced) in &touched {
        if (always || *sealed) && !synced {
            sync(&log, &**file).await?;
        }
    }
    Ok(())
}

/// fdatasyncs `file`, unless its writes were durable when they completed
/// (O_DSYNC).
async fn sync(log: &SharedLog, file: &dyn DiskFile) -> Result<(), IoFailure> {
    if file.durable_writes() {
        return Ok(());
    }
    file.fdatasync()
        .await
        .map_err(|e| IoFailure::new("fdatasync", &e))?;
    log.borrow_mut().count_fsync();
    Ok(())
}

/// The file of segment `ord`: for a just-rolled segment, the spare renamed
/// into place and the directory fsync'd so the name survives a power cut.
async fn segment_file(log: &SharedLog, ord: u32) -> Result<Rc<dyn DiskFile>, IoFailure> {
    let (job, disk, dir) = {
        let mut l = log.borrow_mut();
        (l.seg_file(ord), l.disk().clone(), l.dir().to_path_buf())
    };
    match job {
        Some(SegFile::Ready(f)) => Ok(f),
        Some(SegFile::Rename { spare, to }) => {
            disk.rename(&spare.path, &to)
                .await
                .map_err(|e| IoFailure::new("renaming the spare segment", &e))?;
            disk.sync_dir(&dir)
                .await
                .map_err(|e| IoFailure::new("directory fsync", &e))?;
            log.borrow_mut().set_file(ord, spare.file.clone());
            Ok(spare.file)
        }
        None => Err(IoFailure {
            op: "segment write",
            errno: None,
            message: format!("segment {ord} has no file"),
        }),
    }
}

/// `started`, for a batch's last part: set once every write is started.
async fn write_part(
    log: &SharedLog,
    part: &Part,
    started: Option<&Rc<Cell<bool>>>,
) -> Result<Rc<dyn DiskFile>, IoFailure> {
    let file = segment_file(log, part.ord).await?;
    // Each write copies its chunk into a DMA buffer when it starts: a large
    // part starts them one by one with a pause between (see `turn`), the
    // earlier ones already in flight.
    let mut writes = Vec::new();
    for (i, chunk) in part.data.chunks(WRITE_CHUNK).enumerate() {
        if i > 0 {
            turn::pause().await;
        }
        let pos = part.base + (i * WRITE_CHUNK) as u64;
        let file = file.clone();
        let write = async move { (file.write_at(pos, chunk).await, chunk.len()) };
        writes.push(Started::start(write).await);
    }
    if let Some(started) = started {
        if !started.replace(true) {
            log.borrow().committer().notify();
        }
    }
    let writes = writes.into_iter().map(Started::finish);
    // Await every write, even after a failure: none may still be in flight
    // when the batch is declared failed.
    let results = join_all(writes.collect()).await;
    let mut first_err = None;
    for done in results {
        if let Err(e) = count_written(log, &*file, "segment write", done) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(file),
    }
}

/// Counts one completed write of `n` bytes to `file`, or says why it
/// failed (`op` names it).
pub(super) fn count_written(
    log: &SharedLog,
    file: &dyn DiskFile,
    op: &'static str,
    (res, n): (std::io::Result<usize>, usize),
) -> Result<(), IoFailure> {
    match res {
        Ok(written) if written == n => {
            let mut l = log.borrow_mut();
            l.count_write(n as u64);
            if file.durable_writes() {
                // Each O_DSYNC write is a device flush: `log_fsyncs` counts
                // it as one.
                l.count_fsync();
            }
            Ok(())
        }
        // A short O_DIRECT write: treat like any failed write.
        Ok(written) => Err(IoFailure {
            op,
            errno: None,
            message: format!("short write: {written} of {n} bytes"),
        }),
        Err(e) => Err(IoFailure::new(op, &e)),
    }
}

/// Polls every future until all are done; results in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all done")).collect()
}

/// `--sync interval=<ms>`: fdatasync the open segment on a timer when
/// something was written since the last sync.
pub async fn interval_syncer(log: SharedLog, every: Duration) {
    log.borrow_mut().task_started();
    let stop = log.borrow().stop_signal();
    loop {
        futures_lite::future::or(glommio::timer::sleep(every), stop.wait()).await;
        if log.borrow().stopped() || sync_open(&log).await.is_err() {
            break;
        }
    }
    log.borrow_mut().task_ended();
}

/// fdatasyncs the open segment if anything written is not yet synced.
/// Sealed segments are synced when sealed, so this covers the whole log.
/// A failure fails the log.
pub async fn sync_open(log: &SharedLog) -> Result<(), LogError> {
    let job = {
        let l = log.borrow();
        if let Err(e @ LogError::Failed(_)) = l.check() {
            return Err(e);
        }
        l.sync_job()
    };
    let Some((file, target)) = job else {
        return Ok(());
    };
    let res = file.fdatasync().await;
    let mut l = log.borrow_mut();
    match res {
        Ok(()) => {
            l.synced(target);
            Ok(())
        }
        Err(e) => {
            let why = IoFailure::new("fdatasync", &e);
            l.fail(why.clone());
            Err(LogError::Failed(why))
        }
    }
}
