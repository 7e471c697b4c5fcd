//! A stand-in for mcqd with one executor that panics, for the lifecycle
//! test: it installs mcqd's panic hook as `mcqd::server::run` does, runs
//! glommio executors named as mcqd names its own, lets `mcqd-0` panic while
//! `mcqd-1` keeps serving, and keeps its main thread waiting as mcqd's does.
//! Only the hook can end it, and the test checks that it dies of SIGABRT
//! with the hook's log line.
//!
//! It lives in the test crate so that mcqd itself carries no way to panic
//! on purpose that a user could trigger by accident.

use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

fn main() {
    mcqd::logging::install_panic_hook();
    let executor = |name: &str| LocalExecutorBuilder::new(Placement::Unbound).name(name);
    let _healthy = executor("mcqd-1")
        .spawn(|| async {
            loop {
                glommio::timer::sleep(Duration::from_secs(1)).await;
            }
        })
        .expect("start executor mcqd-1");
    let _failing = executor("mcqd-0")
        .spawn(|| async {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            let shards: Vec<u32> = Vec::new();
            // An out-of-bounds index, as a bug would have it.
            shards[std::hint::black_box(3)]
        })
        .expect("start executor mcqd-0");
    // mcqd's main thread waits for signals; nothing here ends the process.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
