//! Helpers the unit tests of several modules share: a data directory on a
//! real disk, and a glommio executor to run a test's future on.
//!
//! Test data lives under `target/` (a real disk: on tmpfs glommio silently
//! falls back to buffered I/O, and O_DIRECT would not be exercised).

use std::future::Future;
use std::path::Path;

pub(crate) fn test_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/store-tests");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

pub(crate) fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(|| {
            crate::turn::take_turns_here();
            f()
        })
        .unwrap()
        .join()
        .unwrap();
}
