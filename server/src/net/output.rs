//! Replies: pending until their shards answer, then rendered into the
//! bytes a connection writes, in request order.
//!
//! Every reply of a batch is rendered into one [`Output`], so the batch
//! goes out in one `write`; a large body is spliced in rather than copied,
//! and a storage error becomes a reply line in one place
//! ([`server_error`]).

use std::sync::Arc;

use smallvec::SmallVec;

use crate::access::Perms;

use crate::protocol::reply;
use crate::shard::{all_queue_lines, all_stats, OpFuture, OpReply};
use crate::shared::Shared;
use crate::stats::Counters;
use crate::store::{Body, LogError};

/// Reply bytes gathered before they are written even though more replies
/// are still to come.
pub(super) const FLUSH_AT: usize = 256 * 1024;

/// A reply in the making: ready now, or waiting for one or more shards.
pub(super) enum Pending {
    Ready(Vec<u8>),
    Set(OpFuture),
    Delete(OpFuture),
    /// `pops` pairs each key as sent (a `VALUE` line echoes it) with its
    /// pop; `waits` when one of them is a blocking get.
    Get {
        pops: SmallVec<[(Vec<u8>, OpFuture); 1]>,
        with_seq: bool,
        waits: bool,
    },
    /// `flush` (one shard, `END`) and `flush_all` (every shard, `OK`).
    Flush {
        parts: Vec<OpFuture>,
        ok: &'static str,
    },
    /// `stats`: each shard's counters, then its first `limit` queues'
    /// (of which the first `limit` overall are listed).
    ///
    /// `only`: the permissions of a user who may read only some queues:
    /// only those are listed (`queues` then has every queue, and the first
    /// `limit` of the readable ones are listed).
    Stats {
        general: Vec<OpFuture>,
        queues: Vec<OpFuture>,
        limit: usize,
        only: Option<Arc<Perms>>,
    },
    /// `stats queue`; `only` as for `Stats`.
    StatsQueue {
        parts: Vec<OpFuture>,
        only: Option<Arc<Perms>>,
    },
}

impl Pending {
    /// A reply of one line, known already.
    pub(super) fn line(line: &str) -> Pending {
        let mut out = Vec::new();
        reply::line(&mut out, line);
        Pending::Ready(out)
    }
}

/// Replies waiting to be written: their bytes, with the bodies of large
/// `VALUE`s kept in the messages they came in rather than copied in (an
/// 8 MiB copy held the executor for milliseconds while small requests
/// waited; see issue 8's fairness notes in `bench-results/`).
#[derive(Default)]
pub(super) struct Output {
    bytes: Vec<u8>,
    /// Each body goes before `bytes[offset..]`, in order.
    bodies: Vec<(usize, Body)>,
}

/// Bodies at least this large are kept out of [`Output::bytes`].
const SPLICE_AT: usize = 64 << 10;

impl Output {
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
            + self
                .bodies
                .iter()
                .map(|(_, body)| body.len())
                .sum::<usize>()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A `VALUE` reply for `body`.
    fn value(&mut self, queue: &[u8], flags: u32, seq: Option<u64>, body: Body) {
        if body.len() < SPLICE_AT {
            return reply::value(&mut self.bytes, queue, flags, seq, &body);
        }
        reply::value_header(&mut self.bytes, queue, flags, body.len(), seq);
        self.bodies.push((self.bytes.len(), body));
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// The bytes to write, in order (no allocation: this runs per flush).
    pub(super) fn runs(&self) -> impl Iterator<Item = &[u8]> {
        let offsets = || self.bodies.iter().map(|(offset, _)| *offset);
        let starts = std::iter::once(0).chain(offsets());
        let ends = offsets().chain(std::iter::once(self.bytes.len()));
        let bodies = self.bodies.iter().map(|(_, body)| Some(&body[..]));
        starts
            .zip(ends)
            .zip(bodies.chain(std::iter::once(None)))
            .flat_map(|((start, end), body)| std::iter::once(&self.bytes[start..end]).chain(body))
            .filter(|run| !run.is_empty())
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.bodies.clear();
        if self.bytes.capacity() > 4 * FLUSH_AT {
            self.bytes.shrink_to(FLUSH_AT);
        }
    }
}

impl std::ops::Deref for Output {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.bytes
    }
}

impl std::ops::DerefMut for Output {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }
}

/// Awaits one reply and appends it to `out`.
pub(super) async fn finish(
    out: &mut Output,
    shared: &Shared,
    counters: &Counters,
    pending: Pending,
) {
    match pending {
        Pending::Ready(bytes) => out.extend_from_slice(&bytes),
        Pending::Set(done) => match done.await {
            OpReply::Set(Ok(true)) => reply::line(out, "STORED"),
            OpReply::Set(Ok(false)) => reply::line(out, "NOT_STORED"),
            other => reply::line(out, &server_error(other)),
        },
        Pending::Delete(done) => match done.await {
            OpReply::Delete(Ok(true)) => reply::line(out, "DELETED"),
            OpReply::Delete(Ok(false)) => reply::line(out, "NOT_FOUND"),
            other => reply::line(out, &server_error(other)),
        },
        Pending::Get { pops, with_seq, .. } => {
            let mut failure = None;
            for (key, done) in pops {
                match done.await {
                    OpReply::Get(Ok(Some(message))) => {
                        counters.add(&counters.get_hits, 1);
                        let seq = with_seq.then_some(message.seq);
                        out.value(&key, message.flags, seq, message.body);
                    }
                    OpReply::Get(Ok(None)) => counters.add(&counters.get_misses, 1),
                    OpReply::Refused(line) => failure = Some(line.to_string()),
                    other => failure = Some(server_error(other)),
                }
            }
            match failure {
                // Messages already popped in this request were written
                // above: they are gone from their queues, so they must
                // reach the client.
                Some(error) => reply::line(out, &error),
                None => reply::line(out, "END"),
            }
        }
        Pending::Flush { parts, ok } => {
            let mut failure = None;
            for part in parts {
                match part.await {
                    OpReply::Flushed(Ok(())) => {}
                    other => failure = Some(server_error(other)),
                }
            }
            reply::line(out, failure.as_deref().unwrap_or(ok));
        }
        Pending::Stats {
            general,
            queues,
            limit,
            only,
        } => {
            let (total, mut queues) = all_stats(general, queues).await;
            let of = match only {
                Some(perms) => {
                    queues.retain(|q| perms.read.matches(&q.name));
                    queues.len() as u64
                }
                None => total.queues,
            };
            queues.truncate(limit);
            crate::stats::write_stats(out, shared, &total, &queues, of);
        }
        Pending::StatsQueue { parts, only } => {
            let mut lines = all_queue_lines(parts).await;
            if let Some(perms) = only {
                for shard in &mut lines {
                    *shard = shard.retain(|name| perms.read.matches(name));
                }
            }
            crate::stats::write_queue_lines(out, &lines);
        }
    }
}

/// The one place a storage error becomes a reply line.
pub(super) fn server_error(reply: OpReply) -> String {
    let error = match reply {
        OpReply::Set(Err(e))
        | OpReply::Delete(Err(e))
        | OpReply::Get(Err(e))
        | OpReply::Flushed(Err(e)) => e,
        OpReply::Unrouted(why) => return format!("SERVER_ERROR {why}"),
        other => return format!("SERVER_ERROR unexpected reply {other:?}"),
    };
    let line = match &error {
        LogError::OutOfSpace => "SERVER_ERROR out of space".to_string(),
        LogError::Failed(why) => format!("SERVER_ERROR storage failed: {why}"),
        LogError::Read(why) => format!("SERVER_ERROR {why}"),
        LogError::Corrupt { seq } => format!("SERVER_ERROR corrupt message {seq} skipped"),
        LogError::Closed => "SERVER_ERROR shutting down".to_string(),
    };
    line.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::{Output, SPLICE_AT};
    use crate::store::Body;

    /// What goes out is exactly what one buffer would have held: small
    /// values copied in, large ones spliced between the other bytes.
    #[test]
    fn output_writes_spliced_bodies_in_order() {
        let big = |c: u8| vec![c; SPLICE_AT];
        let mut out = Output::default();
        let mut plain = Vec::new();
        out.value(b"a", 1, None, Body::from(big(b'a')));
        crate::protocol::reply::value(&mut plain, b"a", 1, None, &big(b'a'));
        out.value(b"b", 2, Some(9), Body::from(b"small".to_vec()));
        crate::protocol::reply::value(&mut plain, b"b", 2, Some(9), b"small");
        let record = [b"header".to_vec(), big(b'c'), b"pad".to_vec()].concat();
        out.value(b"c", 3, None, Body::within(record, 6, SPLICE_AT));
        crate::protocol::reply::value(&mut plain, b"c", 3, None, &big(b'c'));
        out.extend_from_slice(b"END\r\n");
        plain.extend_from_slice(b"END\r\n");
        assert_eq!(out.len(), plain.len());
        assert_eq!(out.bodies.len(), 2, "the large bodies are not copied");
        let written: Vec<u8> = out.runs().flatten().copied().collect();
        assert!(written == plain, "the runs differ from one buffer");
        out.clear();
        assert!(out.is_empty() && out.runs().next().is_none());
    }
}
