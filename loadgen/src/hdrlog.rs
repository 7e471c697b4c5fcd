//! `--hdr-log`: the HdrHistogram interval log, one histogram per second.
//!
//! The standard format (V2 + deflate, base64, one line per interval) is what
//! HistogramLogProcessor, HdrHistogramVisualizer and friends read, so a run
//! can be analysed with those tools after the fact — including windows the
//! summary does not show. Values are nanoseconds; request latency is
//! untagged (so single-series tools pick it up), end-to-end latency is
//! tagged `e2e`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// Collects the interval lines; the log's own writer borrows its sink and
/// serializer, which does not fit a value that lives across the run, so the
/// lines are produced into a buffer per interval and appended to the file.
pub struct HdrLog {
    out: BufWriter<File>,
    serializer: V2DeflateSerializer,
}

impl HdrLog {
    pub fn create(path: &Path, start: SystemTime, command_line: &str) -> io::Result<HdrLog> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment(&format!("mcq-loadgen: {command_line}"))
            .add_comment("values in nanoseconds; untagged = request latency, tag e2e = end-to-end")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut serializer)?;
        out.write_all(b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n")?;
        Ok(HdrLog { out, serializer })
    }

    /// Appends one interval; `offset` is from the log's base time.
    pub fn write(
        &mut self,
        h: &Histogram<u64>,
        offset: Duration,
        length: Duration,
        tag: Option<&str>,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        {
            let mut w =
                IntervalLogWriterBuilder::new().begin_log_with(&mut buf, &mut self.serializer)?;
            w.write_histogram(h, offset, length, tag.and_then(Tag::new))
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
        }
        self.out.write_all(&buf)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_hist;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn log_reads_back() {
        let dir = std::env::temp_dir().join(format!("mcq-lg-hdr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.hlog");
        let mut h = new_hist();
        for v in 1..=100u64 {
            h.record(v * 1000).unwrap();
        }
        let mut log = HdrLog::create(&path, SystemTime::now(), "test").unwrap();
        log.write(&h, Duration::from_secs(0), Duration::from_secs(1), None)
            .unwrap();
        log.write(
            &h,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Some("e2e"),
        )
        .unwrap();
        log.finish().unwrap();
        let text = std::fs::read(&path).unwrap();
        let mut n = 0;
        let mut tags = Vec::new();
        for e in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(ih) = e.unwrap() {
                let raw = ih.encoded_histogram();
                let bytes = base64_decode(raw);
                let back: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .unwrap();
                assert_eq!(back.len(), 100);
                tags.push(ih.tag().map(|t| t.as_str().to_string()));
                n += 1;
            }
        }
        assert_eq!(n, 2);
        assert_eq!(tags, vec![None, Some("e2e".to_string())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let mut out = Vec::new();
        let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
        for chunk in bytes.chunks(4) {
            let mut acc = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                acc |= u32::from(val(c)) << (18 - 6 * i);
            }
            for i in 0..chunk.len().saturating_sub(1) {
                out.push((acc >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}
