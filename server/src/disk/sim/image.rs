//! The disk a crash leaves: after `kill -9` everything completed, after a
//! power cut the durable state plus what of the volatile cache the device
//! wrote back (a prefix, possibly torn at a sector, or on a reordering
//! device any subset). Each image is a new [`SimDisk`] to recover from;
//! the disk it was taken of is left as it was.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::state::{set_entry, Change, Ino, State, Unsynced};
use super::{SimDisk, SplitMix64, SECTOR};

impl SimDisk {
    /// The disk after `kill -9`: every completed operation survives.
    pub fn kill_image(&self) -> SimDisk {
        let s = self.0.borrow();
        let state = State::image(s.visible.clone(), |ino| s.inodes[&ino].visible.clone());
        SimDisk(Rc::new(RefCell::new(state)))
    }

    /// The disk after a power cut: the durable state plus the first `keep`
    /// unsynced operations (clamped to how many there are). If the last
    /// kept operation is a write and `tear_sectors` is `Some(n)`, only its
    /// first `n` sectors land.
    pub fn power_cut_image(&self, keep: usize, tear_sectors: Option<usize>) -> SimDisk {
        let keep = keep.min(self.unsynced());
        self.image_with(|i, _| match tear_sectors {
            _ if i >= keep => Landing::Nothing,
            Some(n) if i + 1 == keep => Landing::Sectors(n),
            _ => Landing::All,
        })
    }

    /// The disk after a power cut on a device that writes its cache back in
    /// any order, as real ones do: each unsynced data operation lands or
    /// not, drawn from `seed`, and a write that lands may be torn. Name
    /// operations still land as a prefix (a file system journals them in
    /// order).
    pub fn reordered_power_cut_image(&self, seed: u64) -> SimDisk {
        let mut rng = SplitMix64(seed);
        let names = (self.0.borrow().unsynced.iter())
            .filter(|u| matches!(u, Unsynced::Names(_)))
            .count();
        let mut names_left = rng.below(names as u64 + 1);
        self.image_with(|_, u| match u {
            Unsynced::Names(_) if names_left > 0 => {
                names_left -= 1;
                Landing::All
            }
            Unsynced::Names(_) => Landing::Nothing,
            Unsynced::Data(_, Change::Write { data, .. }) => match rng.below(4) {
                0 => Landing::Nothing,
                1 => Landing::Sectors(rng.below((data.len() / SECTOR) as u64) as usize),
                _ => Landing::All,
            },
            Unsynced::Data(..) if rng.below(2) == 0 => Landing::Nothing,
            Unsynced::Data(..) => Landing::All,
        })
    }

    /// The durable state plus what `land` lets through of each unsynced
    /// operation, applied in issue order.
    fn image_with(&self, mut land: impl FnMut(usize, &Unsynced) -> Landing) -> SimDisk {
        let s = self.0.borrow();
        let mut names = s.durable.clone();
        let mut content: BTreeMap<Ino, Vec<u8>> = s
            .inodes
            .iter()
            .map(|(ino, i)| (*ino, i.durable.clone()))
            .collect();
        for (i, u) in s.unsynced.iter().enumerate() {
            let landing = land(i, u);
            match (u, landing) {
                (_, Landing::Nothing) => {}
                (Unsynced::Names(set), _) => {
                    for (path, ino) in set {
                        set_entry(&mut names, path, *ino);
                    }
                }
                (Unsynced::Data(ino, Change::Write { pos, data: w }), Landing::Sectors(n)) => {
                    let n = (n * SECTOR).min(w.len());
                    let torn = Change::Write {
                        pos: *pos,
                        data: w[..n].to_vec(),
                    };
                    torn.apply(content.get_mut(ino).expect("inode"));
                }
                (Unsynced::Data(ino, change), _) => {
                    change.apply(content.get_mut(ino).expect("inode"));
                }
            }
        }
        let state = State::image(names, |ino| content[&ino].clone());
        SimDisk(Rc::new(RefCell::new(state)))
    }

    /// A power-cut image with the cut point drawn from `seed`: any prefix
    /// of the cache, and half the time a torn last write.
    pub fn random_power_cut_image(&self, seed: u64) -> SimDisk {
        let mut rng = SplitMix64(seed);
        let keep = rng.below(self.unsynced() as u64 + 1) as usize;
        let sectors = keep.checked_sub(1).map_or(0, |i| self.unsynced_sectors(i));
        let tear = (sectors > 0 && rng.next().is_multiple_of(2))
            .then(|| rng.below(sectors as u64) as usize);
        self.power_cut_image(keep, tear)
    }
}

/// What of one unsynced operation reaches the medium in a power cut.
enum Landing {
    Nothing,
    All,
    /// The first n sectors of a write (all of any other operation).
    Sectors(usize),
}
