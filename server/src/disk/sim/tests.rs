//! The simulator's own tests. Every crash test trusts what this disk
//! claims survives a power cut, so a too-kind simulator (a write durable
//! without its fdatasync, a name without its directory's sync, a fault
//! that changes something, a tear off a sector boundary) would pass
//! recovery code that loses data on a real device: these pin the model.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use futures_lite::future::block_on;

use super::*;
use crate::disk::{Disk, BLOCK};

const B: usize = BLOCK as usize;

fn dir() -> &'static Path {
    Path::new("/data/q")
}

fn disk() -> SimDisk {
    let d = SimDisk::new();
    block_on(d.create_dir_all(dir())).unwrap();
    d
}

fn read_all(d: &SimDisk, name: &str) -> io::Result<Vec<u8>> {
    block_on(async {
        let f = d.open(&dir().join(name)).await?;
        f.read_at(0, 1 << 20).await
    })
}

fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().expect("an errno"),
    }
}

#[test]
fn writes_are_visible_at_once_and_durable_after_fdatasync_and_dir_sync() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    block_on(f.write_at(0, &[1; B])).unwrap();
    assert_eq!(read_all(&d, "a").unwrap(), vec![1; B]);
    // Nothing synced: neither the name nor the data survive.
    assert_eq!(
        errno(read_all(&d.power_cut_image(0, None), "a")),
        libc::ENOENT
    );
    block_on(f.fdatasync()).unwrap();
    // Data synced, name not.
    assert_eq!(
        errno(read_all(&d.power_cut_image(0, None), "a")),
        libc::ENOENT
    );
    block_on(d.sync_dir(dir())).unwrap();
    assert_eq!(d.unsynced(), 0);
    assert_eq!(
        read_all(&d.power_cut_image(0, None), "a").unwrap(),
        vec![1; B]
    );
    // A later write is visible but not durable until the next fdatasync.
    block_on(f.write_at(B as u64, &[2; B])).unwrap();
    assert_eq!(read_all(&d, "a").unwrap().len(), 2 * B);
    assert_eq!(
        read_all(&d.power_cut_image(0, None), "a").unwrap(),
        vec![1; B]
    );
    assert_eq!(
        read_all(&d.power_cut_image(1, None), "a").unwrap().len(),
        2 * B
    );
}

#[test]
fn fdatasync_covers_only_its_own_file() {
    let d = disk();
    let a = block_on(d.create(&dir().join("a"))).unwrap();
    let b = block_on(d.create(&dir().join("b"))).unwrap();
    block_on(d.sync_dir(dir())).unwrap();
    block_on(a.write_at(0, &[1; B])).unwrap();
    block_on(b.write_at(0, &[2; B])).unwrap();
    block_on(b.fdatasync()).unwrap();
    let img = d.power_cut_image(0, None);
    assert_eq!(read_all(&img, "a").unwrap(), Vec::<u8>::new());
    assert_eq!(read_all(&img, "b").unwrap(), vec![2; B]);
    assert_eq!(d.unsynced(), 1);
}

#[test]
fn renames_and_removes_are_durable_only_after_sync_dir() {
    let d = disk();
    let f = block_on(d.create(&dir().join("tmp"))).unwrap();
    block_on(f.write_at(0, &[7; B])).unwrap();
    block_on(f.fdatasync()).unwrap();
    block_on(d.sync_dir(dir())).unwrap();
    block_on(d.rename(&dir().join("tmp"), &dir().join("final"))).unwrap();
    // The handle follows the inode.
    block_on(f.write_at(B as u64, &[8; B])).unwrap();
    assert_eq!(read_all(&d, "final").unwrap().len(), 2 * B);
    assert_eq!(errno(read_all(&d, "tmp")), libc::ENOENT);
    let img = d.power_cut_image(0, None);
    assert_eq!(read_all(&img, "tmp").unwrap(), vec![7; B]);
    assert_eq!(errno(read_all(&img, "final")), libc::ENOENT);
    block_on(d.sync_dir(dir())).unwrap();
    let img = d.power_cut_image(0, None);
    assert_eq!(read_all(&img, "final").unwrap(), vec![7; B]);
    assert_eq!(errno(read_all(&img, "tmp")), libc::ENOENT);

    // A removed file stays readable through its handle.
    block_on(d.remove(&dir().join("final"))).unwrap();
    assert_eq!(block_on(f.read_at(0, 2 * B)).unwrap().len(), 2 * B);
    assert_eq!(block_on(d.list(dir())).unwrap(), Vec::<String>::new());
    let img = d.power_cut_image(0, None);
    assert_eq!(
        block_on(img.list(dir())).unwrap(),
        vec!["final".to_string()]
    );
}

#[test]
fn a_power_cut_keeps_a_prefix_and_may_tear_the_last_write_at_a_sector() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    block_on(d.sync_dir(dir())).unwrap();
    block_on(f.write_at(0, &[1; B])).unwrap();
    block_on(f.write_at(B as u64, &[2; 2 * B])).unwrap();
    assert_eq!(d.unsynced(), 2);
    assert_eq!(d.unsynced_sectors(1), 2 * B / SECTOR);
    let img = d.power_cut_image(2, Some(3));
    let mut want = vec![1; B];
    want.extend_from_slice(&[2; 3 * SECTOR]);
    assert_eq!(read_all(&img, "a").unwrap(), want);
    assert_eq!(
        read_all(&d.power_cut_image(1, Some(3)), "a").unwrap(),
        vec![1; 3 * SECTOR]
    );
    // The seeded choice is always one of the explicit ones.
    for seed in 0..50 {
        let got = read_all(&d.random_power_cut_image(seed), "a").unwrap();
        assert!(got.len().is_multiple_of(SECTOR) && got.len() <= 3 * B);
        assert!(got.iter().take(B).all(|&b| b == 1));
        assert!(got.iter().skip(B).all(|&b| b == 2));
    }
}

#[test]
fn a_reordering_device_may_land_a_later_write_without_an_earlier_one() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    block_on(f.fdatasync()).unwrap();
    block_on(d.sync_dir(dir())).unwrap();
    block_on(f.write_at(0, &[1; B])).unwrap();
    block_on(f.write_at(B as u64, &[2; B])).unwrap();
    let mut outcomes = BTreeSet::new();
    for seed in 0..64 {
        let got = read_all(&d.reordered_power_cut_image(seed), "a").unwrap();
        let first = got.iter().take(B).filter(|&&b| b == 1).count();
        let second = got.iter().skip(B).filter(|&&b| b == 2).count();
        assert!(first.is_multiple_of(SECTOR) && second.is_multiple_of(SECTOR));
        outcomes.insert((first == B, second == B));
    }
    assert!(outcomes.contains(&(false, true)), "{outcomes:?}");
    assert_eq!(outcomes.len(), 4);
}

#[test]
fn kill_image_keeps_every_completed_operation() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    block_on(f.write_at(0, &[3; B])).unwrap();
    block_on(f.truncate(B as u64 / 2)).unwrap();
    block_on(f.pre_allocate(2 * B as u64)).unwrap();
    let img = d.kill_image();
    let mut want = vec![3; B / 2];
    want.resize(2 * B, 0);
    assert_eq!(read_all(&img, "a").unwrap(), want);
    assert_eq!(img.unsynced(), 0);
    assert_eq!(read_all(&img.power_cut_image(0, None), "a").unwrap(), want);
}

#[test]
fn unaligned_writes_fail_with_einval_and_change_nothing() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    assert_eq!(errno(block_on(f.write_at(0, &[1; 100]))), libc::EINVAL);
    assert_eq!(errno(block_on(f.write_at(512, &[1; B]))), libc::EINVAL);
    assert_eq!(block_on(f.size()).unwrap(), 0);
    // Reads need no alignment and stop at the end of the file.
    block_on(f.write_at(0, &[1; B])).unwrap();
    assert_eq!(
        block_on(f.read_at(B as u64 - 10, 100)).unwrap(),
        vec![1; 10]
    );
    assert_eq!(
        block_on(f.read_at(10 * B as u64, 100)).unwrap(),
        Vec::<u8>::new()
    );
}

#[test]
fn faults_hit_the_chosen_operation_once_and_change_nothing() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    d.inject(Trigger::NthOf(Op::Write, 1), Fault::Errno(libc::ENOSPC));
    d.inject(Trigger::NthOf(Op::Write, 2), Fault::ShortWrite);
    block_on(f.write_at(0, &[1; B])).unwrap();
    assert_eq!(errno(block_on(f.write_at(B as u64, &[2; B]))), libc::ENOSPC);
    assert_eq!(block_on(f.size()).unwrap(), B as u64);
    assert_eq!(block_on(f.write_at(B as u64, &[2; B])).unwrap(), B / 2);
    assert_eq!(block_on(f.size()).unwrap(), (B + B / 2) as u64);
    assert_eq!(block_on(f.write_at(B as u64, &[2; B])).unwrap(), B);

    let next = d.ops();
    d.inject(Trigger::Nth(next + 1), Fault::Errno(libc::EIO));
    block_on(f.fdatasync()).unwrap();
    assert_eq!(errno(block_on(f.fdatasync())), libc::EIO);
    assert_eq!(d.unsynced(), 1, "the create's name and nothing else");
    assert_eq!(d.ops_of(Op::Write), 4);
    let fired = d.fired();
    assert_eq!(fired.len(), 3);
    assert_eq!(fired[0].op, Op::Write);
    assert_eq!(fired[0].path, dir().join("a"));
    assert_eq!(fired[2].fault, Fault::Errno(libc::EIO));
    assert_eq!(d.ops_of(Op::Fdatasync), 2);
}

#[test]
fn a_lasting_fault_hits_every_operation_of_its_kind_from_its_start() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    d.inject(
        Trigger::From(Op::PreAllocate, d.ops() + 1),
        Fault::Errno(libc::ENOSPC),
    );
    block_on(f.pre_allocate(B as u64)).unwrap();
    for _ in 0..3 {
        assert_eq!(errno(block_on(f.pre_allocate(4 * B as u64))), libc::ENOSPC);
        block_on(f.write_at(0, &[1; B])).unwrap();
    }
    assert_eq!(d.fired().len(), 3);
}

#[test]
fn a_power_cut_fails_everything_from_its_operation_on() {
    let d = disk();
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    d.power_cut_at(d.ops() + 1);
    block_on(f.write_at(0, &[1; B])).unwrap();
    assert!(!d.is_cut());
    assert_eq!(errno(block_on(f.fdatasync())), libc::EIO);
    assert_eq!(errno(block_on(d.sync_dir(dir()))), libc::EIO);
    assert_eq!(errno(block_on(f.read_at(0, 1))), libc::EIO);
    assert!(d.is_cut());
    assert_eq!(d.unsynced(), 2);
}

#[test]
fn delayed_results_arrive_later_but_the_operation_happens_when_issued() {
    let d = disk();
    d.set_delays(7, 3);
    let f = block_on(d.create(&dir().join("a"))).unwrap();
    let mut pending = 0;
    for i in 0..20u64 {
        let data = [i as u8; B];
        let mut w = f.write_at(i * B as u64, &data);
        assert_eq!(block_on(f.size()).unwrap(), (i + 1) * B as u64);
        let n = match block_on(futures_lite::future::poll_once(&mut w)) {
            Some(r) => r,
            None => {
                pending += 1;
                block_on(w)
            }
        };
        assert_eq!(n.unwrap(), B);
    }
    assert!(pending > 0 && pending < 20, "{pending} of 20 delayed");
}

#[test]
fn names_follow_posix() {
    let d = disk();
    assert_eq!(errno(block_on(d.open(&dir().join("x")))), libc::ENOENT);
    assert_eq!(errno(block_on(d.remove(&dir().join("x")))), libc::ENOENT);
    assert_eq!(
        errno(block_on(d.create(Path::new("/nope/x")))),
        libc::ENOENT
    );
    assert_eq!(errno(block_on(d.open(dir()))), libc::EISDIR);
    assert_eq!(errno(block_on(d.create(dir()))), libc::EISDIR);
    block_on(d.create_dir_all(&dir().join("sub"))).unwrap();
    block_on(d.create(&dir().join("f"))).unwrap();
    assert_eq!(block_on(d.list(dir())).unwrap(), vec!["f", "sub"]);
    assert_eq!(block_on(d.list(Path::new("/data"))).unwrap(), vec!["q"]);
    // Re-creating truncates the same inode: an open handle sees it.
    let f = block_on(d.open(&dir().join("f"))).unwrap();
    block_on(f.write_at(0, &[1; B])).unwrap();
    block_on(d.create(&dir().join("f"))).unwrap();
    assert_eq!(block_on(f.size()).unwrap(), 0);
    assert_eq!(d.ops_of(Op::Create), 4);
}
