//! Storage benchmarks that drive one `Store` directly (no network), for
//! `bench-results/storage.md`:
//!
//! - `throughput`: sustained `set` MB/s of 4 KiB messages from many
//!   concurrent writers, next to `dd oflag=direct` on the same disk in the
//!   same run;
//! - `batching`: acknowledged sets per fdatasync with 16 and 64 concurrent
//!   writers under `--sync always`;
//! - `restart`: time to reopen a shard holding N small messages, with its
//!   index files and with them deleted.
//!
//! Usage: `logbench <dir on the disk to test> [throughput|tp-only|batching|restart|space|all]`
//! Environment: `SECS` (per throughput run, default 10), `WRITERS`
//! (throughput, default 1024), `DEPTH` (sets each throughput writer keeps
//! in flight, like a pipelining client; default 1), `MESSAGES` (restart,
//! default 10000000), `SEGMENT` (segment size, default 64 MiB).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mcqd::store::{Store, StoreConfig, SyncMode};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(dir: &Path, sync: SyncMode) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        sync,
        segment_size: env("SEGMENT", 64 << 20),
        max_disk: None,
        cache_bytes: 64 << 20,
        readahead_bytes: mcqd::log::readahead::DEFAULT_BUDGET,
        limits: Default::default(),
        region_min: mcqd::log::REGION_MIN,
    }
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn dd(base: &Path) -> f64 {
    let file = base.join("dd.bin");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", "count=1024", "oflag=direct"])
        .output()
        .expect("run dd");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stderr);
    // "... copied, 2.9 s, 369 MB/s"
    let secs: f64 = text
        .rsplit(", ")
        .nth(1)
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .expect("dd output");
    println!("    dd: {}", text.lines().last().unwrap_or(""));
    (1u64 << 30) as f64 / secs / 1e6
}

/// `writers` tasks each set 4 KiB messages back to back for `secs`,
/// spread over 16 queues, while a consumer-free backlog builds (the log
/// only grows). Returns (MB/s of message bytes, MB/s written to the log).
async fn set_throughput(
    dir: &Path,
    sync: SyncMode,
    writers: usize,
    secs: u64,
) -> (f64, f64, u64, u64) {
    let depth = env("DEPTH", 1) as usize;
    let store = Store::open(config(dir, sync)).await.unwrap();
    let stop = Rc::new(Cell::new(false));
    let count = Rc::new(Cell::new(0u64));
    let before = store.stats();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
        tasks.push(glommio::spawn_local(async move {
            // Each writer pipelines `depth` sets, as a pipelining client
            // (or several connections) would.
            let q = format!("q{}", w % 16);
            let mut pending = std::collections::VecDeque::new();
            while !stop.get() {
                while pending.len() < depth {
                    pending.push_back(store.set(q.as_bytes(), 0, vec![b'x'; 4096]));
                }
                pending.pop_front().unwrap().await.unwrap();
                count.set(count.get() + 1);
            }
            for f in pending {
                f.await.unwrap();
                count.set(count.get() + 1);
            }
        }));
    }
    glommio::timer::sleep(Duration::from_secs(secs)).await;
    stop.set(true);
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.stats();
    store.close().await.unwrap();
    let n = count.get();
    let mbs = (n * 4096) as f64 / elapsed / 1e6;
    let log_mbs = (after.log_bytes_written - before.log_bytes_written) as f64 / elapsed / 1e6;
    (mbs, log_mbs, n, after.log_fsyncs - before.log_fsyncs)
}

async fn batching(dir: &Path, writers: usize, secs: u64) -> (u64, u64, u64) {
    let store = Store::open(config(dir, SyncMode::Always)).await.unwrap();
    let stop = Rc::new(Cell::new(false));
    let count = Rc::new(Cell::new(0u64));
    let before = store.stats();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
        tasks.push(glommio::spawn_local(async move {
            let q = format!("q{}", w % 8);
            while !stop.get() {
                store.set(q.as_bytes(), 0, vec![b'x'; 100]).await.unwrap();
                count.set(count.get() + 1);
            }
        }));
    }
    glommio::timer::sleep(Duration::from_secs(secs)).await;
    stop.set(true);
    for t in tasks {
        t.await;
    }
    let after = store.stats();
    store.close().await.unwrap();
    (
        count.get(),
        after.log_fsyncs - before.log_fsyncs,
        after.log_writes - before.log_writes,
    )
}

async fn restart(dir: &Path, messages: u64) {
    let store = Store::open(config(dir, SyncMode::Interval(Duration::from_millis(100))))
        .await
        .unwrap();
    let t = Instant::now();
    let mut pending = Vec::with_capacity(4096);
    for i in 0..messages {
        pending.push(store.set(format!("q{}", i % 16).as_bytes(), 0, vec![b'm'; 64]));
        if pending.len() == 4096 {
            for f in pending.drain(..) {
                f.await.unwrap();
            }
        }
    }
    for f in pending.drain(..) {
        f.await.unwrap();
    }
    let s = store.stats();
    println!(
        "    filled {} messages of 64 bytes in {:.1} s: {} segments, {:.0} MiB on disk",
        s.items,
        t.elapsed().as_secs_f64(),
        s.log_segments,
        s.log_disk_bytes as f64 / (1 << 20) as f64
    );
    store.close().await.unwrap();
    drop(store);

    let t = Instant::now();
    let store = Store::open(config(dir, SyncMode::Always)).await.unwrap();
    let with_idx = t.elapsed().as_secs_f64();
    assert_eq!(store.stats().items, messages);
    store.close().await.unwrap();
    drop(store);

    let mut removed = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(p).unwrap();
            removed += 1;
        }
    }
    let t = Instant::now();
    let store = Store::open(config(dir, SyncMode::Always)).await.unwrap();
    let without = t.elapsed().as_secs_f64();
    assert_eq!(store.stats().items, messages);
    store.close().await.unwrap();
    println!("    restart with index files:              {with_idx:.3} s");
    println!("    restart with {removed} index files deleted: {without:.3} s (rebuilds them)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = PathBuf::from(
        args.get(1)
            .expect("usage: logbench <dir> [throughput|batching|restart|all]"),
    );
    let what = args.get(2).cloned().unwrap_or_else(|| "all".into());
    std::fs::create_dir_all(&base).unwrap();
    let secs = env("SECS", 10);
    let writers = env("WRITERS", 1024) as usize;
    let messages = env("MESSAGES", 10_000_000);
    let base2 = base.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let base = base2;
            if what == "throughput" || what == "all" {
                println!("throughput: 4 KiB sets, {writers} concurrent writers, {secs} s per run");
                // The disk's speed drifts (shared virtual disk): interleave
                // dd and our runs, and compare each run with the dd runs
                // on either side of it.
                let mut prev_dd = dd(&base);
                for round in 1..=3 {
                    for (name, sync) in [
                        ("interval=100", SyncMode::Interval(Duration::from_millis(100))),
                        ("always", SyncMode::Always),
                    ] {
                        let d = fresh(&base, "tp");
                        let (mbs, log_mbs, n, fsyncs) = set_throughput(&d, sync, writers, secs).await;
                        let _ = std::fs::remove_dir_all(&d);
                        let next_dd = dd(&base);
                        let dd_mean = (prev_dd + next_dd) / 2.0;
                        println!(
                            "    round {round} --sync {name}: {n} sets, {mbs:.0} MB/s of messages ({log_mbs:.0} MB/s to the log), {fsyncs} fdatasyncs; dd around it {prev_dd:.0}/{next_dd:.0} MB/s: ratio {:.2}",
                            mbs / dd_mean
                        );
                        prev_dd = next_dd;
                    }
                }
            }
            if what == "space" {
                // 1 GB of 1,000-byte messages, nothing consumed.
                let d = fresh(&base, "space");
                let store = Store::open(config(&d, SyncMode::Interval(Duration::from_millis(100)))).await.unwrap();
                let mut pending = Vec::new();
                for i in 0..1_000_000u64 {
                    pending.push(store.set(format!("q{}", i % 16).as_bytes(), 0, vec![b's'; 1000]));
                    if pending.len() == 1024 {
                        for f in pending.drain(..) {
                            f.await.unwrap();
                        }
                    }
                }
                for f in pending.drain(..) {
                    f.await.unwrap();
                }
                store.close().await.unwrap();
                let mut disk = 0u64;
                let mut kinds = std::collections::BTreeMap::new();
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    let n = std::fs::metadata(&p).unwrap().len();
                    disk += n;
                    *kinds.entry(p.extension().unwrap().to_string_lossy().into_owned()).or_insert(0u64) += n;
                }
                println!("space: 1,000,000 messages of 1,000 bytes (1 GB): {disk} bytes in files ({:.3}x): {kinds:?}", disk as f64 / 1e9);
                let _ = std::fs::remove_dir_all(&d);
            }
            if what == "tp-only" {
                let d = fresh(&base, "tp");
                let (mbs, _, n, _) =
                    set_throughput(&d, SyncMode::Interval(Duration::from_millis(100)), writers, secs).await;
                println!("    {n} sets, {mbs:.0} MB/s");
                let _ = std::fs::remove_dir_all(&d);
            }
            if what == "batching" || what == "all" {
                println!("batching: 100-byte sets under --sync always, {secs} s per run");
                for w in [16, 64] {
                    let d = fresh(&base, "batch");
                    let (n, fsyncs, writes) = batching(&d, w, secs).await;
                    println!(
                        "    {w} writers: {n} sets, {writes} writes, {fsyncs} fdatasyncs: {:.1} sets per fdatasync, {:.0} sets/s",
                        n as f64 / fsyncs.max(1) as f64,
                        n as f64 / secs as f64
                    );
                    let _ = std::fs::remove_dir_all(&d);
                }
            }
            if what == "restart" || what == "all" {
                println!("restart: {messages} messages of 64 bytes in 16 queues");
                let d = fresh(&base, "restart");
                restart(&d, messages).await;
                let _ = std::fs::remove_dir_all(&d);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
