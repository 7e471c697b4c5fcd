//! Taking turns on an executor.
//!
//! glommio never preempts a task: a task runs until it awaits something
//! that is not ready. It also reaps finished I/O (a small request's bytes
//! arriving, a client's socket becoming writable) only once no task is
//! runnable. So a task with a lot of work in hand (an 8 MiB body to read,
//! copy, checksum or write) that does it in one go makes every other
//! connection on the executor wait for all of it: small requests waited
//! tens of milliseconds behind 8 MiB messages (issue 8's fairness runs in
//! `bench-results/`).
//!
//! Such work is done in pieces of about [`PIECE`] bytes with a [`pause`]
//! between them. A pause is a timer, not a plain yield: the task runs again
//! only after the executor has looked for new I/O, so the requests that
//! arrived meanwhile are served in between.
//!
//! Only a thread that runs a glommio executor can pause ([`take_turns_here`]):
//! the offline tools read segments with the same code outside any executor,
//! and there a pause does nothing.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static TAKES_TURNS: Cell<bool> = const { Cell::new(false) };
}

/// Called first thing on an executor's thread: its tasks' pauses pause.
pub fn take_turns_here() {
    TAKES_TURNS.with(|t| t.set(true));
}

/// How much large-body work (copying, checksumming, writing, reading) a
/// task does before it pauses: tens of microseconds of CPU.
pub const PIECE: usize = 256 << 10;

/// Lets the executor reap new I/O and run the tasks it wakes before this
/// one goes on.
pub async fn pause() {
    if TAKES_TURNS.with(Cell::get) {
        glommio::timer::sleep(Duration::from_micros(1)).await;
    }
}

/// `crc32c(bytes)`, a [`PIECE`] at a time with a pause before each.
pub async fn checksum(bytes: &[u8]) -> u32 {
    let mut crc = 0;
    for piece in bytes.chunks(PIECE) {
        pause().await;
        crc = crc32c::crc32c_append(crc, piece);
    }
    crc
}
