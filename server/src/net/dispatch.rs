//! Dispatch: each request becomes operations on the shards that own its
//! queues, submitted at once, and a pending reply to await later.
//!
//! Submitting changes queue state right away and only the reply waits, so
//! a `get` after a `set` in the same batch sees that `set`, and a whole
//! batch of `set`s shares one group commit.

use super::connection::Connection;
use super::output::{server_error, Pending};
use crate::logging;
use crate::protocol::{self, Command};
use crate::shard::{Op, OpFuture, OpReply, Settle};
use crate::store::Take;

impl Connection {
    /// Starts one request; `None` when it wants no reply at all.
    /// `body_crc` is a `set`'s `crc32c(body)` when computed already.
    pub(super) fn submit(&mut self, command: Command, body_crc: Option<u32>) -> Option<Pending> {
        // Without -Y and [user …] sections there is no session: this test
        // is all the request path pays.
        if self.session.is_some() && !self.permitted(&command) {
            return self.denied(&command);
        }
        let router = &self.router;
        let c = &self.counters;
        let ready = |line: &str| Some(Pending::line(line));
        match command {
            Command::Set {
                queue,
                flags,
                exptime,
                body,
                noreply,
            } => {
                c.add(&c.cmd_set, 1);
                let expires = match exptime {
                    0 => 0, // the usual case, without a clock read
                    t => protocol::expiry(t, crate::store::now_secs()),
                };
                let shard = router.shard_of(&queue);
                let op = Op::Set {
                    queue,
                    flags,
                    expires,
                    body,
                    body_crc,
                };
                let done = router.submit(shard, op);
                if noreply {
                    forget(done);
                    return None;
                }
                Some(Pending::Set(done))
            }
            Command::Get { keys, with_seq } => {
                c.add(&c.cmd_get, keys.len() as u64);
                let waits = keys.iter().any(|k| k.wait.is_some());
                let reader = self.reader;
                let open_on = &mut self.open_on;
                let pops = keys
                    .into_iter()
                    .map(|k| {
                        let shard = router.shard_of(&k.queue);
                        let settle = if k.close {
                            Some(Settle::Confirm)
                        } else if k.abort {
                            Some(Settle::Abort)
                        } else {
                            None
                        };
                        let take = k.takes().then_some(if k.open {
                            Take::Open(reader)
                        } else if k.peek {
                            Take::Peek
                        } else {
                            Take::Pop
                        });
                        let held = open_on.iter().position(|q| *q == k.queue);
                        let may_hold = held.is_some();
                        match (k.open, held) {
                            (true, None) => open_on.push(k.queue.clone()),
                            (false, Some(i)) if settle.is_some() => {
                                open_on.swap_remove(i);
                            }
                            _ => {}
                        }
                        let done = router.submit(
                            shard,
                            Op::Get {
                                queue: k.queue,
                                wait: k.wait,
                                settle,
                                take,
                                reader,
                                may_hold,
                            },
                        );
                        (k.key, done)
                    })
                    .collect();
                Some(Pending::Get {
                    pops,
                    with_seq,
                    waits,
                })
            }
            Command::Delete { queue, noreply } => {
                let done = router.submit(router.shard_of(&queue), Op::Delete { queue });
                if noreply {
                    forget(done);
                    return None;
                }
                Some(Pending::Delete(done))
            }
            Command::Flush { queue, noreply } => {
                let done = router.submit(router.shard_of(&queue), Op::Flush { queue });
                if noreply {
                    forget(done);
                    return None;
                }
                Some(Pending::Flush {
                    parts: vec![done],
                    ok: "END",
                })
            }
            Command::FlushAll { noreply } => {
                let parts = self.router.each_shard(|| Op::FlushAll);
                if noreply {
                    parts.into_iter().for_each(forget);
                    return None;
                }
                Some(Pending::Flush { parts, ok: "OK" })
            }
            Command::Stats => {
                let limit = self.shared.stats_queues;
                let only = self.readable_only();
                let (general, queues) = match only {
                    None => self.router.ask_stats_first(limit),
                    // The first `limit` readable ones may be anywhere.
                    Some(_) => self.router.ask_stats(),
                };
                Some(Pending::Stats {
                    general,
                    queues,
                    limit,
                    only,
                })
            }
            Command::StatsQueue => Some(Pending::StatsQueue {
                parts: self.router.ask_queue_lines(),
                only: self.readable_only(),
            }),
            Command::StatsReset => {
                for counters in &self.shared.counters {
                    counters.reset();
                }
                ready("RESET")
            }
            Command::Version => ready(&format!("VERSION {}", env!("CARGO_PKG_VERSION"))),
            Command::Verbosity { level, noreply } => {
                logging::set_verbosity(level);
                log::info!("verbosity {level}");
                if noreply {
                    None
                } else {
                    ready("OK")
                }
            }
            Command::Reload => match crate::access::reload(&self.shared) {
                Ok(what) => {
                    log::info!("reload: {what}");
                    ready("Reloaded config.")
                }
                Err(e) => {
                    log::warn!("reload failed, everything in force stays: {e}");
                    ready(&format!("SERVER_ERROR reload failed: {e}").replace(['\r', '\n'], " "))
                }
            },
            Command::Shutdown if !self.shared.shutdown_enabled => {
                ready("ERROR: shutdown not enabled")
            }
            Command::RefreshCerts => ready(&super::tls::refresh_certs(&self.shared)),
            Command::Shutdown | Command::Quit => None,
        }
    }
}

/// Lets a `noreply` request complete with nobody waiting for it: it is
/// already applied; only a failure is worth a log line, since the client
/// asked not to hear about it.
pub(super) fn forget(done: OpFuture) {
    glommio::spawn_local(async move {
        let reply = done.await;
        if matches!(
            reply,
            OpReply::Set(Err(_))
                | OpReply::Delete(Err(_))
                | OpReply::Get(Err(_))
                | OpReply::Flushed(Err(_))
        ) {
            log::warn!("noreply request failed: {}", server_error(reply));
        }
    })
    .detach();
}
