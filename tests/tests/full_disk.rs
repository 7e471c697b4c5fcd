//! A real full disk, not `--max-disk`: the data directory sits on a small
//! ext4 file system (a loop-mounted image) that mcqd fills up. Sets must be
//! refused with `SERVER_ERROR out of space` and nothing half-written, every
//! acknowledged message must come back in order, gets must keep working,
//! and sets must work again once consumers have freed space.
//!
//! Needs root and loop devices: without them it skips loudly on a
//! developer's machine and fails under CI (`CI` set), which runs as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use mcq_tests::{skip, test_dir, Client, Server};

struct Mount(PathBuf);

impl Mount {
    /// Makes a 160 MiB ext4 image and loop-mounts it at `at`; the error
    /// says which step failed and why.
    fn new(image: &Path, at: &Path) -> Result<Mount, String> {
        let run = |cmd: &mut Command| match cmd.output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "{cmd:?}: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("{cmd:?}: {e}")),
        };
        std::fs::File::create(image)
            .and_then(|f| f.set_len(160 << 20))
            .map_err(|e| format!("{}: {e}", image.display()))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at))?;
        Ok(Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("{i:08}").into_bytes();
    b.resize(64 << 10, b'a' + (i % 26) as u8);
    b
}

#[test]
fn a_real_full_disk_refuses_sets_and_recovers() {
    let dir = test_dir("fulldisk");
    let at = dir.join("mnt");
    std::fs::create_dir_all(&at).unwrap();
    let _mount = match Mount::new(&dir.join("fs.img"), &at) {
        Ok(mount) => mount,
        Err(why) => {
            skip(&format!(
                "cannot make and loop-mount a small ext4 file system \
                 (needs root and loop devices): {why}"
            ));
            return;
        }
    };
    let mut server = Server::start_in(&at.join("data"), &["-t", "1", "--segment-size", "8388608"]);
    let mut c = server.client();
    let stored = c.fill_until_out_of_space("full", body);
    assert!(stored > 100, "only {stored} messages fit");
    assert!(server.log().contains("disk full"), "{}", server.log());

    // Every acknowledged message comes back, in order, while the disk is
    // still full.
    let got = c.drain("full");
    assert_eq!(got.len(), stored, "messages stored and served");
    for (i, b) in got.iter().enumerate() {
        assert_eq!(*b, body(i), "message {i}");
    }

    // Consumers freed the space: sets work again.
    c.set_once_space_is_back("full", &body(0));
    assert!(server.stop().success());
    // And the log is intact after all that.
    server.restart_same_port();
    let mut c = Client::connect(server.port);
    assert_eq!(c.get("full").unwrap(), body(0));
    assert!(server.stop().success());
    drop(_mount);
    std::fs::remove_dir_all(&dir).unwrap();
}
