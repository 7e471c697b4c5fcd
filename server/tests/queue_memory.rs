//! What a queue of a message or two costs the store's heap, counted per
//! allocation (a million of them is the case to keep small: see
//! `queue.rs`, "Many queues"). Memory is not a timing: exact bounds are fine.
//!
//! The bytes are glibc's chunk sizes for what is requested, so that a
//! layout that fits one more field into the same chunk costs nothing here
//! either. The shard's hash tables are not counted (their slot sizes are
//! `store::names`' and `idhash`'s to keep small).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::rc::Rc;

use mcqd::queue::Queue;

struct Counting;

thread_local! {
    /// Counting on this thread (the test's), heap bytes and allocations.
    static ON: Cell<bool> = const { Cell::new(false) };
    static BYTES: Cell<isize> = const { Cell::new(0) };
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
}

/// glibc's chunk for a request of `n` bytes.
fn chunk(n: usize) -> isize {
    ((n + 8 + 15) & !15).max(32) as isize
}

fn count(bytes: isize, blocks: isize) {
    if ON.with(Cell::get) {
        BYTES.with(|b| b.set(b.get() + bytes));
        BLOCKS.with(|b| b.set(b.get() + blocks));
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(chunk(l.size()), 1);
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-chunk(l.size()), -1);
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(chunk(n) - chunk(l.size()), 0);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes and allocations per queue of `msgs` messages set in one
/// second, with an 8-byte name. Boxed here, which counts the queue itself
/// as a 160-byte chunk: the shard's table keeps its queues side by side in
/// one vector (`idhash::IdSlab`), where it is its 152 bytes and an id.
fn per_queue(msgs: u64) -> (isize, f64) {
    const N: usize = 1000;
    let mut queues = Vec::with_capacity(N);
    ON.with(|on| on.set(true));
    let (bytes, blocks) = (BYTES.with(Cell::get), BLOCKS.with(Cell::get));
    for id in 0..N as u32 {
        let name: Rc<[u8]> = format!("q{id:07}").into_bytes().into();
        let mut q = Box::new(Queue::new(id, name));
        for m in 0..msgs {
            let seq = q.push(0, m as u32 * 256, 158, 0);
            q.enqueued_at(seq, 1_700_000_000);
        }
        queues.push(q);
    }
    let bytes = BYTES.with(Cell::get) - bytes;
    let blocks = BLOCKS.with(Cell::get) - blocks;
    ON.with(|on| on.set(false));
    (bytes / N as isize, blocks as f64 / N as f64)
}

#[test]
fn a_queue_of_one_or_two_messages_is_two_allocations() {
    for msgs in [0, 1, 2] {
        let (bytes, blocks) = per_queue(msgs);
        println!("{msgs} messages: {bytes} bytes in {blocks} allocations");
        assert!(
            bytes <= 192 && blocks == 2.0,
            "{msgs} messages: {bytes} bytes in {blocks}"
        );
    }
    // A third message takes a deque of locators (room for four).
    let (bytes, blocks) = per_queue(3);
    println!("3 messages: {bytes} bytes in {blocks} allocations");
    assert!(
        bytes <= 192 + 112 && blocks == 3.0,
        "{bytes} bytes in {blocks}"
    );
}
