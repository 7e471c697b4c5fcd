//! What to send: operation mix, queue choice, message sizes and bodies.
//!
//! Everything here is decided per request, so it is built to cost a few
//! nanoseconds and never allocate: a splitmix/xorshift generator instead of a
//! crate, a precomputed CDF for Zipf, queue names rendered once at start-up,
//! and message bodies copied out of one random pattern buffer. Bodies that
//! must be checked later (pairs, `--verify`) start with a fixed 32-byte header
//! that says who sent them, in which order and when — enough to measure
//! end-to-end latency and to prove order, loss and duplication without any
//! shared state between producer and consumer.

use std::fmt;
use std::str::FromStr;

/// Fast non-cryptographic generator (xorshift64*), seeded through splitmix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias is negligible here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// `--workload`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Each request is a `set` with probability `--set-ratio`, else a `get`.
    Mixed,
    /// Only `set`.
    Set,
    /// Only `get` (pops whatever is queued; misses on empty queues).
    Get,
    /// Producer/consumer pairs: half the connections `set` timestamped
    /// messages, the other half `get` them and measure end-to-end latency.
    Pairs,
}

/// `--key-dist`: how a request picks its queue.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyDist {
    Uniform,
    /// Zipf with exponent `s` (queue 0 is the most popular).
    Zipf(f64),
}

impl FromStr for KeyDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "uniform" {
            return Ok(KeyDist::Uniform);
        }
        if s == "zipf" {
            return Ok(KeyDist::Zipf(0.99));
        }
        if let Some(exp) = s.strip_prefix("zipf:") {
            let e: f64 = exp
                .parse()
                .map_err(|_| format!("bad zipf exponent {exp:?}"))?;
            if !(e > 0.0 && e.is_finite()) {
                return Err("zipf exponent must be > 0".into());
            }
            return Ok(KeyDist::Zipf(e));
        }
        Err(format!(
            "unknown key distribution {s:?} (uniform, zipf, zipf:<s>)"
        ))
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => write!(f, "uniform"),
            KeyDist::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// Picks queue indices according to a [`KeyDist`].
#[derive(Clone, Debug)]
pub struct KeyChooser {
    n: u64,
    /// Cumulative weights for Zipf; empty for uniform.
    cdf: Vec<f64>,
}

/// Above this many queues a Zipf table would be unreasonably large.
pub const MAX_ZIPF_QUEUES: u64 = 10_000_000;

impl KeyChooser {
    pub fn new(n: u64, dist: &KeyDist) -> Result<KeyChooser, String> {
        if n == 0 {
            return Err("--queues must be at least 1".into());
        }
        let cdf = match dist {
            KeyDist::Uniform => Vec::new(),
            KeyDist::Zipf(s) => {
                if n > MAX_ZIPF_QUEUES {
                    return Err(format!("zipf supports at most {MAX_ZIPF_QUEUES} queues"));
                }
                let mut acc = 0.0;
                let mut cdf = Vec::with_capacity(n as usize);
                for k in 1..=n {
                    acc += 1.0 / (k as f64).powf(*s);
                    cdf.push(acc);
                }
                cdf
            }
        };
        Ok(KeyChooser { n, cdf })
    }

    #[inline]
    pub fn pick(&self, rng: &mut Rng) -> u32 {
        if self.cdf.is_empty() {
            return rng.below(self.n) as u32;
        }
        let total = self.cdf[self.cdf.len() - 1];
        let u = rng.unit() * total;
        let i = self.cdf.partition_point(|&c| c <= u);
        i.min(self.cdf.len() - 1) as u32
    }
}

/// The largest fixed or range size `--value-size` accepts: room for 8 MiB
/// flood messages and more (mcqd and memcached need `-B`/`-I` raised to
/// store them). The pattern buffer that bodies are cut from is this large at
/// most, and only when asked for.
pub const MAX_SIZE: usize = 64 * 1024 * 1024;

/// Where an exponential distribution is cut off (mcqd's default `-B`). It is
/// kept apart from [`MAX_SIZE`] because the pattern buffer is sized to the
/// largest possible message, and `exp:` would otherwise allocate 64 MiB for
/// a tail that hardly ever shows.
pub const EXP_CAP: usize = 1024 * 1024;

/// A byte count: digits, optionally followed by `K`, `M` or `G` (powers of
/// 1024, as mcqd's and memcached's size flags), e.g. `8M`.
pub fn parse_size(t: &str) -> Option<usize> {
    let (digits, unit) = match t.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return None,
    };
    let n: usize = digits.parse().ok()?;
    n.checked_mul(1 << shift)
}

/// `--value-size`: fixed, uniform range, or exponential.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeDist {
    Fixed(usize),
    /// Uniform over `lo..=hi`.
    Range(usize, usize),
    /// Exponential with this mean, capped at [`EXP_CAP`].
    Exp(f64),
}

impl FromStr for SizeDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| -> Result<usize, String> {
            let v = parse_size(t.trim()).ok_or_else(|| format!("bad size {t:?}"))?;
            if v > MAX_SIZE {
                return Err(format!("size {v} exceeds {MAX_SIZE}"));
            }
            Ok(v)
        };
        if let Some(mean) = s.strip_prefix("exp:") {
            let m: f64 = mean.parse().map_err(|_| format!("bad mean {mean:?}"))?;
            if !(m >= 1.0 && m <= EXP_CAP as f64) {
                return Err(format!("exp mean must be in 1..={EXP_CAP}"));
            }
            return Ok(SizeDist::Exp(m));
        }
        if let Some((lo, hi)) = s.split_once("..") {
            let (lo, hi) = (num(lo)?, num(hi.trim_start_matches('='))?);
            if lo > hi {
                return Err(format!("empty size range {s:?}"));
            }
            return Ok(SizeDist::Range(lo, hi));
        }
        Ok(SizeDist::Fixed(num(s)?))
    }
}

impl fmt::Display for SizeDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeDist::Fixed(n) => write!(f, "{n}"),
            SizeDist::Range(a, b) => write!(f, "{a}..{b}"),
            SizeDist::Exp(m) => write!(f, "exp:{m}"),
        }
    }
}

impl SizeDist {
    pub fn max(&self) -> usize {
        match self {
            SizeDist::Fixed(n) => *n,
            SizeDist::Range(_, hi) => *hi,
            SizeDist::Exp(_) => EXP_CAP,
        }
    }

    /// A size, never below `min` (room for the message header).
    #[inline]
    pub fn sample(&self, rng: &mut Rng, min: usize) -> usize {
        let v = match self {
            SizeDist::Fixed(n) => *n,
            SizeDist::Range(lo, hi) => lo + rng.below((hi - lo + 1) as u64) as usize,
            SizeDist::Exp(mean) => {
                let u = 1.0 - rng.unit(); // (0, 1]
                ((-u.ln() * mean) as usize).min(EXP_CAP)
            }
        };
        v.max(min)
    }
}

/// Size of the header that starts a traceable message body.
pub const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"MCQ1";

/// What a traceable body says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub run: u32,
    pub producer: u32,
    pub queue: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Header {
    pub fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&self.run.to_le_bytes());
        out[8..12].copy_from_slice(&self.producer.to_le_bytes());
        out[12..16].copy_from_slice(&self.queue.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    pub fn read(body: &[u8]) -> Option<Header> {
        if body.len() < HEADER_LEN || &body[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(body[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap());
        Some(Header {
            run: u32_at(4),
            producer: u32_at(8),
            queue: u32_at(12),
            seq: u64_at(16),
            sent_ns: u64_at(24),
        })
    }
}

/// Random bytes that message bodies are cut from. The offset depends on the
/// producer and sequence number, so a consumer can check the payload without
/// having seen the message being sent.
pub struct Pattern {
    bytes: Vec<u8>,
}

const PATTERN_SPREAD: usize = 4096;

impl Pattern {
    pub fn new(max_len: usize, seed: u64) -> Pattern {
        let mut rng = Rng::new(seed);
        let len = max_len + PATTERN_SPREAD;
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        // Printable bytes keep captured traffic readable; any byte would do.
        for b in &mut bytes {
            *b = b'a' + (*b % 26);
        }
        Pattern { bytes }
    }

    #[inline]
    pub fn slice(&self, producer: u32, seq: u64, len: usize) -> &[u8] {
        let off = (seq.wrapping_mul(31).wrapping_add(u64::from(producer) * 7)
            % PATTERN_SPREAD as u64) as usize;
        &self.bytes[off..off + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_below_stays_in_range_and_covers_it() {
        let mut r = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = r.below(10);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 0));
        for _ in 0..1000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn key_dist_parse() {
        assert_eq!("uniform".parse::<KeyDist>().unwrap(), KeyDist::Uniform);
        assert_eq!("zipf".parse::<KeyDist>().unwrap(), KeyDist::Zipf(0.99));
        assert_eq!("zipf:1.2".parse::<KeyDist>().unwrap(), KeyDist::Zipf(1.2));
        assert!("zipf:-1".parse::<KeyDist>().is_err());
        assert!("normal".parse::<KeyDist>().is_err());
    }

    #[test]
    fn uniform_keys_cover_all_queues() {
        let k = KeyChooser::new(5, &KeyDist::Uniform).unwrap();
        let mut r = Rng::new(3);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[k.pick(&mut r) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 500), "{seen:?}");
    }

    #[test]
    fn zipf_is_skewed_in_rank_order() {
        let k = KeyChooser::new(100, &KeyDist::Zipf(1.0)).unwrap();
        let mut r = Rng::new(4);
        let mut seen = vec![0u32; 100];
        for _ in 0..200_000 {
            let q = k.pick(&mut r) as usize;
            assert!(q < 100);
            seen[q] += 1;
        }
        // Rank 1 should get about twice rank 2 and ten times rank 10.
        let r12 = f64::from(seen[0]) / f64::from(seen[1]);
        let r110 = f64::from(seen[0]) / f64::from(seen[9]);
        assert!((1.7..2.3).contains(&r12), "{r12}");
        assert!((8.0..12.0).contains(&r110), "{r110}");
        assert!(seen[99] > 0);
    }

    #[test]
    fn size_dist_parse_and_sample() {
        assert_eq!("100".parse::<SizeDist>().unwrap(), SizeDist::Fixed(100));
        assert_eq!(
            "64..1024".parse::<SizeDist>().unwrap(),
            SizeDist::Range(64, 1024)
        );
        assert_eq!("exp:500".parse::<SizeDist>().unwrap(), SizeDist::Exp(500.0));
        assert!("10..5".parse::<SizeDist>().is_err());
        assert!("abc".parse::<SizeDist>().is_err());
        // 8 MiB flood messages (scripts/bench --fairness) parse; beyond
        // MAX_SIZE does not, and exp: stays capped at EXP_CAP.
        assert_eq!(
            "8388608".parse::<SizeDist>().unwrap(),
            SizeDist::Fixed(8 << 20)
        );
        assert_eq!(SizeDist::Fixed(8 << 20).max(), 8 << 20);
        assert_eq!("8M".parse::<SizeDist>().unwrap(), SizeDist::Fixed(8 << 20));
        assert_eq!(
            "4k..1m".parse::<SizeDist>().unwrap(),
            SizeDist::Range(4 << 10, 1 << 20)
        );
        assert!("1G".parse::<SizeDist>().is_err(), "beyond MAX_SIZE");
        assert!("8X".parse::<SizeDist>().is_err());
        assert!("M".parse::<SizeDist>().is_err());
        assert!(format!("{}", MAX_SIZE + 1).parse::<SizeDist>().is_err());
        assert!(format!("exp:{}", EXP_CAP + 1).parse::<SizeDist>().is_err());
        assert_eq!(SizeDist::Exp(500.0).max(), EXP_CAP);

        let mut r = Rng::new(9);
        let range = SizeDist::Range(64, 70);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let s = range.sample(&mut r, 0);
            assert!((64..=70).contains(&s));
            seen[s - 64] = true;
        }
        assert!(seen.iter().all(|&b| b));
        assert_eq!(SizeDist::Fixed(4).sample(&mut r, HEADER_LEN), HEADER_LEN);

        let exp = SizeDist::Exp(200.0);
        let n = 100_000;
        let total: usize = (0..n).map(|_| exp.sample(&mut r, 0)).sum();
        let mean = total as f64 / n as f64;
        assert!((180.0..220.0).contains(&mean), "{mean}");
    }

    #[test]
    fn header_roundtrip_and_pattern() {
        let h = Header {
            run: 0xdead_beef,
            producer: 3,
            queue: 17,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let mut body = vec![0u8; 40];
        h.write(&mut body);
        assert_eq!(Header::read(&body), Some(h));
        assert_eq!(Header::read(&body[..31]), None);
        body[0] = b'X';
        assert_eq!(Header::read(&body), None);

        let p = Pattern::new(100, 1);
        assert_eq!(p.slice(1, 2, 100), p.slice(1, 2, 100));
        assert_eq!(p.slice(1, 2, 100).len(), 100);
        assert_ne!(p.slice(1, 2, 100), p.slice(1, 3, 100));
    }
}
