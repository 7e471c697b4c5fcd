//! The final drain of `--verify`: every queue emptied after the run.
//!
//! Loss can only be judged once nothing is left on the server: a message
//! still queued at the end was not lost. So after the threads finish, each
//! server's queues are read until empty on a fresh connection, and what
//! comes out is checked like any consumer's delivery.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::Plan;
use crate::protocol::{self, parse_reply, GetKind, GetOptions, Parsed, Reply};
use crate::schedule::now_ns;
use crate::transport::Stream;
use crate::verify::ConsumerLog;

/// Drains every server; returns the log of what came out and how many of
/// this run's messages that was. Each server's drain counts as a consumer
/// of its own, numbered down from `u32::MAX`.
pub fn drain_all(
    servers: &[(String, SocketAddr)],
    plan: &Plan,
    timeout: Duration,
) -> Result<(ConsumerLog, u64), String> {
    let mut drain_log = ConsumerLog::new(plan.run, plan.n_conns, plan.reliable);
    let mut drained = 0;
    for (si, (name, addr)) in servers.iter().enumerate() {
        drained += drain(
            name,
            addr,
            plan,
            timeout,
            u32::MAX - si as u32,
            &mut drain_log,
        )?;
    }
    Ok((drain_log, drained))
}

/// Pops every queue empty on one server, feeding what it finds to `log`.
/// Returns how many of our messages it found. With `--reliable` it reads
/// the way the consumers do: `/open`, then `/close/open` while messages
/// come, one get per queue in flight, and a `/close` for any queue it stops
/// with a message open.
fn drain(
    name: &str,
    addr: &SocketAddr,
    plan: &Plan,
    timeout: Duration,
    consumer_id: u32,
    log: &mut ConsumerLog,
) -> Result<u64, String> {
    let mut s = plan.connector.connect(addr, name, timeout)?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let n_queues = plan.names.len() as u32;
    let first = if plan.reliable {
        GetKind::Open
    } else {
        GetKind::Pop
    };
    // No --get-wait here: an empty queue ends the drain at once.
    let options = GetOptions::new(None);
    let mut todo: Vec<(u32, GetKind)> = (0..n_queues).map(|q| (q, first)).collect();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut last_body: HashMap<u32, u64> = HashMap::new();
    let mut out = Vec::new();
    let mut left_open = Vec::new();
    let before = log.received_count;
    while !todo.is_empty() {
        let batch: Vec<(u32, GetKind)> = todo.drain(..todo.len().min(256)).collect();
        out.clear();
        for &(q, kind) in &batch {
            protocol::encode_get(&mut out, &plan.names[q as usize], options.get(kind));
        }
        s.write_all(&out)
            .map_err(|e| format!("drain {name}: write: {e}"))?;
        let mut start = 0;
        for &(q, kind) in &batch {
            read_reply(&mut s, &mut buf, start, name)?;
            let (reply, len) = match parse_reply(&buf[start..]) {
                Parsed::Reply { reply, len } => (reply, len),
                Parsed::Desync(m) => return Err(format!("drain {name}: protocol desync: {m}")),
                Parsed::Incomplete { .. } => return Err(format!("drain {name}: reply cut short")),
            };
            match reply {
                Reply::End => {}
                Reply::Value { data, .. } if kind != GetKind::Close => {
                    let dups = log.duplicates;
                    log.check(consumer_id, q, data, &plan.pattern, now_ns());
                    // A server that hands the same message out again
                    // (memcached is not a queue) would never run dry: a
                    // duplicate, or the same foreign body twice in a row,
                    // ends that queue.
                    let mut h = DefaultHasher::new();
                    data.hash(&mut h);
                    let digest = h.finish();
                    let repeated = last_body.insert(q, digest) == Some(digest);
                    let next = if plan.reliable {
                        GetKind::CloseOpen
                    } else {
                        GetKind::Pop
                    };
                    if log.duplicates == dups && !repeated {
                        todo.push((q, next));
                    } else if plan.reliable {
                        left_open.push((q, GetKind::Close));
                    }
                }
                Reply::Value { .. } => {
                    return Err(format!("drain {name}: VALUE in reply to a /close"))
                }
                Reply::Error(_, line) => {
                    return Err(format!("drain {name}: {}", String::from_utf8_lossy(line)))
                }
                Reply::Stored => return Err(format!("drain {name}: STORED in reply to get")),
            }
            start += len;
        }
        buf.drain(..start);
        if todo.is_empty() {
            todo.append(&mut left_open);
        }
    }
    Ok(log.received_count - before)
}

/// Reads until `buf[start..]` begins with a whole reply (or garbage, which
/// the caller's parse reports).
fn read_reply(s: &mut Stream, buf: &mut Vec<u8>, start: usize, name: &str) -> Result<(), String> {
    while let Parsed::Incomplete { .. } = parse_reply(&buf[start..]) {
        let mut chunk = [0u8; 65536];
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("drain {name}: read: {e}"))?;
        if n == 0 {
            return Err(format!("drain {name}: server closed the connection"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
