//! `mcqd verify`: reads every record of a data directory, checks every
//! checksum, the manifest, and every index file against its segment, and
//! names each damage by file and byte offset.
//!
//! # What is damage
//! Anything the server did not write that way: a record that fails its
//! checks with valid records after it, a sealed segment whose records end
//! in invalid bytes, an index file that is invalid or disagrees with its
//! segment, a queue stored in a shard its name does not hash to, a missing
//! shard directory. Not damage, reported as notes: the torn tail of a
//! shard's newest segment (a kill -9 or power cut mid-write leaves one, a
//! live server is writing it; recovery cuts it), bytes after the end of a
//! sealed segment's log that its index excludes (a tail an earlier
//! recovery cut), a missing index (rebuilt at the next start), leftover
//! `*.tmp` files (deleted at the next start).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::Parser;

use super::json::Json;
use super::view::{self, IndexState, SegView, ShardView};
use super::EXIT_ERROR;
use crate::log::index::SegmentIndex;
use crate::manifest;

/// Checks a data directory without a server: every record's checksum,
/// every index file against its segment, the manifest. Prints each damage
/// by file and byte offset and exits 1 if there is any, 0 if none (2 when
/// it could not check). The torn tail of a shard's newest segment is
/// reported but is not damage: a crash leaves one, a running server may be
/// writing it, and the next start cuts it. Read-only: safe beside a
/// running mcqd.
#[derive(Parser, Debug)]
#[command(name = "mcqd verify")]
struct Args {
    /// The data directory.
    #[arg(short = 'H', long = "data-dir", default_value = "./mcq-data")]
    data_dir: PathBuf,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub damage: bool,
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub bytes: Option<u64>,
    pub what: String,
}

impl Finding {
    fn json(&self) -> Json {
        Json::Obj(vec![
            ("file", Json::bytes(self.file.as_os_str().as_bytes())),
            ("offset", Json::opt(self.offset)),
            ("bytes", Json::opt(self.bytes)),
            ("what", Json::str(self.what.clone())),
        ])
    }

    fn line(&self) -> String {
        let at = match (self.offset, self.bytes) {
            (Some(o), Some(n)) => format!(" offset {o} ({n} bytes)"),
            (Some(o), None) => format!(" offset {o}"),
            _ => String::new(),
        };
        let kind = if self.damage { "DAMAGE" } else { "note" };
        format!("{kind}: {}{at}: {}", self.file.display(), self.what)
    }
}

/// What was checked, and what was found.
#[derive(Default)]
pub struct Report {
    pub shards: u32,
    pub segments: u64,
    pub records: u64,
    pub indexes: u64,
    pub findings: Vec<Finding>,
}

impl Report {
    fn note(&mut self, damage: bool, file: &Path, at: Option<(u64, u64)>, what: String) {
        self.findings.push(Finding {
            damage,
            file: file.to_path_buf(),
            offset: at.map(|a| a.0),
            bytes: at.map(|a| a.1),
            what,
        });
    }

    pub fn damaged(&self) -> usize {
        self.findings.iter().filter(|f| f.damage).count()
    }
}

pub fn main(args: Vec<OsString>) -> i32 {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let report = match verify(&args.data_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mcqd verify: {e}");
            return EXIT_ERROR;
        }
    };
    let damaged = report.damaged();
    if args.json {
        let (damage, notes): (Vec<&Finding>, Vec<&Finding>) =
            report.findings.iter().partition(|f| f.damage);
        let v = Json::Obj(vec![
            (
                "data_dir",
                Json::bytes(args.data_dir.as_os_str().as_bytes()),
            ),
            ("ok", Json::Bool(damaged == 0)),
            ("shards", Json::Num(report.shards.into())),
            ("segments", Json::Num(report.segments)),
            ("records", Json::Num(report.records)),
            ("indexes", Json::Num(report.indexes)),
            (
                "damage",
                Json::Arr(damage.iter().map(|f| f.json()).collect()),
            ),
            ("notes", Json::Arr(notes.iter().map(|f| f.json()).collect())),
        ]);
        println!("{}", v.render());
    } else {
        for f in &report.findings {
            println!("{}", f.line());
        }
        println!(
            "{}: {} shards, {} segments, {} records, {} index files checked: {}",
            args.data_dir.display(),
            report.shards,
            report.segments,
            report.records,
            report.indexes,
            if damaged == 0 {
                "no damage".to_string()
            } else {
                format!("{damaged} damaged")
            }
        );
    }
    i32::from(damaged > 0)
}

/// Checks the directory (see the module doc).
pub fn verify(data_dir: &Path) -> io::Result<Report> {
    let mut report = Report::default();
    let manifest = data_dir.join(manifest::MANIFEST);
    let (format, shards) = match view::open_dir(data_dir) {
        Ok(dir) => (dir.format, dir.shards),
        Err(e) if !data_dir.is_dir() => return Err(e),
        Err(e) => {
            // Go on with the shard directories there are.
            let found = shard_dirs(data_dir).last().map_or(0, |&n| n + 1);
            let what = if manifest.exists() {
                format!("{e}; checking the {found} shard directories found")
            } else {
                format!("missing; checking the {found} shard directories found")
            };
            report.note(true, &manifest, None, what);
            (manifest::FORMAT, found)
        }
    };
    report.shards = shards;
    for s in 0..shards {
        let sdir = manifest::shard_dir(data_dir, s);
        if !sdir.is_dir() {
            report.note(
                true,
                &sdir,
                None,
                format!("shard {s} of {shards} is missing"),
            );
            continue;
        }
        let sh = view::load_shard(data_dir, s)?;
        check_shard(&sh, shards, format, &mut report);
    }
    // Shard directories the manifest does not count are never opened.
    for n in shard_dirs(data_dir).into_iter().filter(|&n| n >= shards) {
        report.note(
            false,
            &manifest::shard_dir(data_dir, n),
            None,
            format!("not one of the manifest's {shards} shards: never read"),
        );
    }
    Ok(report)
}

/// The numbers of the `shard-NNN` directories in `data_dir`, sorted.
fn shard_dirs(data_dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("shard-")?.parse::<u32>().ok()?;
            (manifest::shard_dir(data_dir, n) == e.path()).then_some(n)
        })
        .collect();
    found.sort_unstable();
    found
}

fn check_shard(sh: &ShardView, shards: u32, format: u32, report: &mut Report) {
    // Spare segments wait beside the log of every running shard.
    let spare = |n: &str| n.starts_with("spare-") && n.ends_with(".tmp");
    for name in sh.leftovers.iter().filter(|n| !spare(n)) {
        let what = if name.ends_with(".tmp") {
            "left by an interrupted operation: deleted at the next start"
        } else {
            "not part of the log: ignored"
        };
        report.note(false, &sh.dir.join(name), None, what.into());
    }
    for s in &sh.segs {
        check_segment(s, report);
    }
    if format >= manifest::FAN_OUT_FORMAT {
        for q in &sh.queues {
            let home = manifest::shard_for(&q.name, shards);
            if home != sh.shard {
                report.note(
                    true,
                    &sh.dir,
                    None,
                    format!(
                        "queue {} is stored in shard {} but its name hashes to shard {home}",
                        super::escape(&q.name),
                        sh.shard
                    ),
                );
            }
        }
    }
}

fn check_segment(s: &SegView, report: &mut Report) {
    report.segments += 1;
    report.records += s.scan.records;
    let path = &s.path;
    for &(off, n) in &s.scan.corrupt {
        // Zeros are block padding, not damage.
        let at = view::skip_padding(&s.file, off, off + n).unwrap_or(off);
        report.note(
            true,
            path,
            Some((at, off + n - at)),
            "records fail their checks (checksum, header or lsn order); the records after them are intact".into(),
        );
    }
    if let Some((off, n)) = s.scan.torn {
        if s.newest {
            report.note(
                false,
                path,
                Some((off, n)),
                "torn tail of the newest segment: a write in progress, or one a crash interrupted; the next start cuts it".into(),
            );
        } else {
            report.note(
                true,
                path,
                Some((off, n)),
                "the records of this sealed segment end in invalid bytes".into(),
            );
        }
    }
    for &(off, n) in &s.scan.unfinished {
        report.note(
            false,
            path,
            Some((off, n)),
            "an incomplete large message body (written out of line): a set a crash cut short, never acknowledged; the message is not in the log".into(),
        );
    }
    if let Some((off, n)) = s.after_end {
        report.note(
            false,
            path,
            Some((off, n)),
            "bytes after the end of the log its index records: a torn tail an earlier start cut"
                .into(),
        );
    }
    if let Some(at) = s.continues {
        report.note(
            true,
            path,
            Some((at, s.size - at)),
            "records go on after the end of the log its index records: the index stops short"
                .into(),
        );
    }
    if s.ord.is_none() {
        report.note(
            false,
            path,
            None,
            "newest segment without a record: the next start removes it".into(),
        );
    }
    let idx = crate::log::segment::idx_path(path.parent().unwrap_or(Path::new(".")), s.first_lsn);
    match &s.index {
        IndexState::Missing if !s.newest => report.note(
            false,
            &idx,
            None,
            "missing: the next start rebuilds it from its segment".into(),
        ),
        IndexState::Missing => {}
        IndexState::Invalid(why) => {
            report.indexes += 1;
            report.note(
                true,
                &idx,
                None,
                format!("invalid ({why}): the next start rebuilds it from its segment"),
            );
        }
        IndexState::Valid(i) => {
            report.indexes += 1;
            // Where the segment is damaged the scan says less than the
            // index: that damage is reported already.
            let intact = s.scan.corrupt.is_empty() && (s.newest || s.scan.torn.is_none());
            if intact {
                if let Some(diff) = index_difference(i, &s.built, s.newest) {
                    report.note(
                        true,
                        &idx,
                        None,
                        format!("disagrees with its segment: {diff}"),
                    );
                }
            }
        }
    }
}

/// How `index` differs from `scanned`, the index a scan of its segment
/// builds; `None` when it says the same. The count of damaged stretches
/// is left out (it is how the index was built, not what the log says); in
/// the newest segment a live server may have written more since the index,
/// so only what the index covers is compared there.
pub fn index_difference(
    index: &SegmentIndex,
    scanned: &SegmentIndex,
    newest: bool,
) -> Option<String> {
    let mut a = index.clone();
    let mut b = scanned.clone();
    a.corrupt_records = 0;
    b.corrupt_records = 0;
    if newest && b.last_lsn > a.last_lsn {
        return None;
    }
    if a == b {
        return None;
    }
    let fields = [
        ("version", a.version != b.version),
        ("first lsn", a.first_lsn != b.first_lsn),
        ("last lsn", a.last_lsn != b.last_lsn),
        ("end of data", a.data_len != b.data_len),
        ("checkpoint", a.checkpoint != b.checkpoint),
        ("checkpoint's live queues", a.live != b.live),
        ("next queue id", a.next_queue_id != b.next_queue_id),
        ("highest queue id", a.max_queue_id != b.max_queue_id),
    ];
    if let Some((name, _)) = fields.iter().find(|(_, differs)| *differs) {
        return Some(format!("{name} differs"));
    }
    for qa in &a.queues {
        match b.queues.iter().find(|q| q.id == qa.id) {
            None => return Some(format!("queue id {} is not in the segment", qa.id)),
            Some(qb) if qb != qa => {
                return Some(format!("queue id {}: its records differ", qa.id));
            }
            Some(_) => {}
        }
    }
    Some("the segment has records of queues the index lacks".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::index::{IndexBuilder, IndexEntry, QueueIndex};
    use crate::log::record::{self, Header, Kind};
    use crate::log::segment;

    fn index() -> SegmentIndex {
        SegmentIndex {
            version: crate::log::index::INDEX_VERSION,
            first_lsn: 1,
            last_lsn: 9,
            data_len: 800,
            checkpoint: true,
            live: vec![],
            next_queue_id: 2,
            max_queue_id: 1,
            corrupt_records: 0,
            queues: vec![QueueIndex {
                id: 1,
                msgs: vec![IndexEntry {
                    seq: 0,
                    off: 100,
                    len: 60,
                    expires: 0,
                    time: 5,
                }],
                ..QueueIndex::default()
            }],
        }
    }

    /// Writes `records` as a segment of `dir` (padded to whole blocks)
    /// and returns its bytes and each record's offset.
    fn segment(records: &[(Kind, u32, u64, u64, Vec<u8>)]) -> (Vec<u8>, Vec<u64>) {
        let mut buf = Vec::new();
        let mut offs = Vec::new();
        for (kind, queue, lsn, seq, body) in records {
            offs.push(buf.len() as u64);
            let h = Header {
                kind: *kind,
                queue: *queue,
                lsn: *lsn,
                seq: *seq,
                time: 1_700_000_000_000_000,
                flags: 0,
                expires: 0,
                len: body.len() as u32,
            };
            record::encode_into(&mut buf, &h, body);
        }
        (buf, offs)
    }

    fn indexed(first_lsn: u64, bytes: &[u8]) -> Vec<u8> {
        let mut b = IndexBuilder::new(first_lsn);
        let file = view::RoFile::open_bytes(bytes);
        futures_lite::future::block_on(segment::scan(
            &file,
            bytes.len() as u64,
            false,
            |h, body, off| b.record(h, body, off),
        ))
        .unwrap();
        crate::log::index::encode(&b.finish())
    }

    /// Padding is skipped in whole record words; a damaged record whose
    /// checksum starts with a zero byte is named at its own offset
    /// (regression: one such record in 256 was named one byte late).
    #[test]
    fn damage_is_named_at_the_record_not_at_its_first_nonzero_byte() {
        let mut bytes = vec![0u8; 16];
        bytes.extend_from_slice(&[0, 0, 7, 1, 60, 0, 0, 0]);
        bytes.extend_from_slice(b"MQ\x02\0garbage.");
        let file = view::RoFile::open_bytes(&bytes);
        let end = bytes.len() as u64;
        assert_eq!(view::skip_padding(&file, 0, end).unwrap(), 16);
        assert_eq!(view::skip_padding(&file, 16, end).unwrap(), 16);
        assert_eq!(view::skip_padding(&file, 8, end).unwrap(), 16);
        let zeros = view::RoFile::open_bytes(&[0; 20]);
        assert_eq!(view::skip_padding(&zeros, 0, 20).unwrap(), 16);
    }

    /// A sealed segment with its index and a newest one ending in a torn
    /// record: recovery's queue state, no damage; then a flipped byte, a
    /// damaged index and one that disagrees are each damage, by file.
    #[test]
    fn judges_a_directory_as_recovery_would() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path();
        std::fs::write(data.join(manifest::MANIFEST), "mcq-manifest 3\nshards 1\n").unwrap();
        let dir = manifest::shard_dir(data, 0);
        std::fs::create_dir(&dir).unwrap();
        let msg = |i: u64| format!("message {i}").into_bytes();
        let mut first = vec![
            (Kind::Created, 1, 1, 0, record::created_body(0, 0, b"alpha")),
            (Kind::Checkpoint, 0, 2, 2, vec![]),
        ];
        for i in 0..5 {
            first.push((Kind::Enqueued, 1, 3 + i, i, msg(i)));
        }
        first.push((Kind::Consumed, 1, 8, 2, vec![]));
        let (mut seg1, offs) = segment(&first);
        seg1.resize(4096, 0);
        let (mut seg2, _) = segment(&[
            (Kind::Created, 1, 9, 0, record::created_body(2, 5, b"alpha")),
            (Kind::Checkpoint, 0, 10, 2, vec![]),
            (Kind::Enqueued, 1, 11, 5, msg(5)),
        ]);
        let torn_at = seg2.len() as u64;
        let (torn, _) = segment(&[(Kind::Enqueued, 1, 12, 6, msg(6))]);
        seg2.extend_from_slice(&torn[..30]);
        seg2.resize(8192, 0);
        let log1 = segment::log_path(&dir, 1);
        let idx1 = segment::idx_path(&dir, 1);
        std::fs::write(&log1, &seg1).unwrap();
        std::fs::write(&idx1, indexed(1, &seg1)).unwrap();
        std::fs::write(segment::log_path(&dir, 9), &seg2).unwrap();

        let sh = view::load_shard(data, 0).unwrap();
        let q = &sh.queues[0];
        assert_eq!((&q.name[..], q.head, q.tail), (&b"alpha"[..], 2, 6));
        let seqs: Vec<u64> = q.locs.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [2, 3, 4, 5]);
        assert_eq!(sh.read(1, &q.locs[1]).unwrap().body, msg(3));
        let r = verify(data).unwrap();
        assert_eq!(r.damaged(), 0, "{:?}", r.findings);
        assert_eq!(r.records, 11);
        assert_eq!(r.indexes, 1);
        let torn = r
            .findings
            .iter()
            .find(|f| f.offset == Some(torn_at))
            .unwrap();
        assert!(!torn.damage && torn.what.contains("torn tail"), "{torn:?}");

        // A flipped byte in message 3's body.
        let mut bad = seg1.clone();
        bad[offs[5] as usize + 50] ^= 1;
        std::fs::write(&log1, &bad).unwrap();
        let r = verify(data).unwrap();
        let damage: Vec<&Finding> = r.findings.iter().filter(|f| f.damage).collect();
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!((&damage[0].file, damage[0].offset), (&log1, Some(offs[5])));
        let sh = view::load_shard(data, 0).unwrap();
        assert!(sh.read(1, &sh.queues[0].locs[1]).is_err());
        std::fs::write(&log1, &seg1).unwrap();

        // An index file that fails its checks, then one that passes them
        // but describes another segment's records.
        let mut idx = indexed(1, &seg1);
        idx[3] ^= 1;
        std::fs::write(&idx1, &idx).unwrap();
        let r = verify(data).unwrap();
        assert_eq!(r.damaged(), 1);
        assert!(r
            .findings
            .iter()
            .any(|f| f.damage && f.file == idx1 && f.what.starts_with("invalid")));
        let mut fewer = seg1.clone();
        fewer[offs[7] as usize..].fill(0);
        std::fs::write(&idx1, indexed(1, &fewer)).unwrap();
        let r = verify(data).unwrap();
        assert_eq!(r.damaged(), 1, "{:?}", r.findings);
        let short = r.findings.iter().find(|f| f.damage).unwrap();
        assert_eq!((&short.file, short.offset), (&log1, Some(offs[7])));
        let mut other = first.clone();
        other[3].4 = b"another body".to_vec();
        std::fs::write(&idx1, indexed(1, &segment(&other).0)).unwrap();
        let r = verify(data).unwrap();
        assert_eq!(r.damaged(), 1, "{:?}", r.findings);
        assert!(r
            .findings
            .iter()
            .any(|f| f.damage && f.file == idx1 && f.what.starts_with("disagrees")));

        // A damaged manifest is damage too, and the shards are still read.
        std::fs::write(data.join(manifest::MANIFEST), "garbage").unwrap();
        let r = verify(data).unwrap();
        assert_eq!(r.shards, 1);
        assert!(r
            .findings
            .iter()
            .any(|f| f.damage && f.file.ends_with("MANIFEST")));
    }

    #[test]
    fn index_differences_are_named() {
        let i = index();
        assert_eq!(index_difference(&i, &i, false), None);
        let mut cut = i.clone();
        cut.corrupt_records = 1;
        assert_eq!(index_difference(&cut, &i, false), None, "how it was built");
        let mut moved = i.clone();
        moved.queues[0].msgs[0].off = 108;
        assert_eq!(
            index_difference(&moved, &i, false).as_deref(),
            Some("queue id 1: its records differ")
        );
        let mut short = i.clone();
        short.data_len = 400;
        assert_eq!(
            index_difference(&short, &i, false).as_deref(),
            Some("end of data differs")
        );
        let mut extra = i.clone();
        extra.queues.clear();
        assert!(index_difference(&extra, &i, false).is_some());
    }
}
