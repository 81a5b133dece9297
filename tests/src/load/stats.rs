//! Percentiles: exact ones over a few samples (join times), and a fixed-size log-linear
//! [`Histogram`] for the millions of per-packet delays, which must not be kept one by one.

/// Sub-buckets per power of two, as a bit count: 32 buckets, so a value is known to ±1.6 %.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this get one bucket each.
const LINEAR: u64 = 2 * SUB;
/// The largest value kept apart; larger ones land in the top bucket (2^41 µs is 25 days).
const MAX_VALUE: u64 = (1 << 41) - 1;
const BUCKETS: usize = bucket_of(MAX_VALUE) + 1;

const fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    // `v >= LINEAR` so the top bit is at least SUB_BITS + 1.
    let top = 63 - v.leading_zeros();
    let sub = (v >> (top - SUB_BITS)) & (SUB - 1);
    (LINEAR + (top - SUB_BITS - 1) as u64 * SUB + sub) as usize
}

/// The smallest value of a bucket and its width.
fn bucket_range(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < LINEAR {
        return (index, 1);
    }
    let k = index - LINEAR;
    let top = k / SUB + u64::from(SUB_BITS) + 1;
    let sub = k % SUB;
    let shift = top - u64::from(SUB_BITS);
    ((SUB + sub) << shift, 1 << shift)
}

/// Counts of values (here: microseconds) in log-linear buckets; fixed size, mergeable.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u32>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: Vec::new(),
            total: 0,
            max: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        if self.counts.is_empty() {
            // Allocated on first use: most histograms of a failed viewer stay empty.
            self.counts = vec![0; BUCKETS];
        }
        let slot = &mut self.counts[bucket_of(value.min(MAX_VALUE))];
        *slot = slot.saturating_add(1);
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The nearest-rank `p`-th percentile (`0 < p <= 100`), as the middle of its bucket (never
    /// above the largest value recorded); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        let rank = rank(self.total, p)?;
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                let (low, width) = bucket_range(index);
                return Some((low + width / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// The 1-based nearest rank of percentile `p` among `n` values.
fn rank(n: u64, p: f64) -> Option<u64> {
    if n == 0 {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    Some(((p / 100.0 * n as f64).ceil() as u64).clamp(1, n))
}

/// The nearest-rank `p`-th percentile of `values` (sorted ascending); `None` when empty.
pub fn percentile_sorted<T: Copy>(values: &[T], p: f64) -> Option<T> {
    let r = rank(values.len() as u64, p)?;
    Some(values[(r - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, width) = bucket_range(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(low + width - 1), index);
            expected_low = low + width;
        }
        assert_eq!(expected_low, MAX_VALUE + 1);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 95.0), Some(100));
        assert_eq!(percentile_sorted(&v, 10.0), Some(10));
        assert_eq!(percentile_sorted(&v, 0.0), Some(10));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted::<u64>(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7], 99.0), Some(7));
    }

    #[test]
    fn histogram_percentiles_are_within_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (p, exact) in [(50.0, 5_000.0), (95.0, 9_500.0), (99.0, 9_900.0)] {
            let got = h.percentile(p).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.02, "p{p}: {got} vs {exact}");
        }
        assert_eq!(h.percentile(100.0), Some(10_000));
        assert_eq!(h.max(), Some(10_000));
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn small_values_are_exact_and_empty_has_none() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.max(), None);
        for v in [3, 3, 3, 60] {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(3));
        assert_eq!(h.percentile(75.0), Some(3));
        assert_eq!(h.percentile(99.0), Some(60));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(100);
        b.record(1_000_000);
        b.record(1_000_000);
        a.merge(&b);
        a.merge(&Histogram::new());
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), Some(1_000_000));
        let p99 = a.percentile(99.0).unwrap();
        assert!((p99 as f64 - 1e6).abs() / 1e6 < 0.02, "{p99}");
        // 100 lies in the bucket [100, 102): its middle is reported.
        assert_eq!(a.percentile(10.0), Some(101));
    }

    #[test]
    fn huge_values_saturate_into_the_top_bucket() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        assert_eq!(h.max(), Some(u64::MAX));
        assert!(h.percentile(50.0).unwrap() >= MAX_VALUE / 2);
    }
}
