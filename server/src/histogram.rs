//! The commit latency histogram: a count per fixed bucket, so each shard's
//! log records into its own with a few comparisons and no allocation, and
//! `stats` and the Prometheus exposition add the shards' together.
//!
//! A leaf: the log records into it, `stats` and `metrics` read it.

/// Upper bounds of the commit latency histogram's buckets, in
/// microseconds (the last bucket, `+Inf`, is implicit): from a fast NVMe
/// flush to a disk that stalls.
pub const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// A latency histogram: a count per bucket (not cumulative) and the sum.
/// Plain integers: each log owns one and only its own thread touches it,
/// and recording costs a few comparisons, no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[i]` observations fell at or under `LATENCY_BOUNDS_US[i]`
    /// and above the bound before; the last one above every bound.
    pub counts: [u64; LATENCY_BOUNDS_US.len() + 1],
    pub sum_us: u64,
}

impl Histogram {
    pub fn record(&mut self, latency: std::time::Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds another shard's observations to these.
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(0));
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(101));
        h.record(Duration::from_secs(10));
        assert_eq!(h.counts[0], 2, "at or under 100 µs");
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BOUNDS_US.len()], 1, "+Inf");
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_us, 10_000_201);
        let mut total = Histogram::default();
        total.add(&h);
        total.add(&h);
        assert_eq!(total.count(), 8);
        assert_eq!(total.sum_us, 2 * h.sum_us);
    }
}
