//! Statistics for noisy timings: order statistics, a percentile-bootstrap confidence interval for
//! the median, paired speedups and the change between two runs. Resampling uses a fixed-seed
//! generator so a report is reproducible from its raw samples.
use serde::{Deserialize, Serialize};

/// Bootstrap resamples per interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Two-sided confidence level of every interval.
pub const CONFIDENCE: f64 = 0.95;

/// A confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.low <= other.high && other.low <= self.high
    }
}

/// Summary of one set of samples (seconds, or any positive quantity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub mean: f64,
    pub max: f64,
    /// Sample standard deviation (n - 1).
    pub std_dev: f64,
    /// 95% bootstrap interval of the median.
    pub median_ci: Interval,
    /// Distribution-free interval of the median from order statistics (binomial), at the
    /// smallest coverage >= 95% the sample size allows ([min, max] below 6 samples). Wider than
    /// the bootstrap for small samples; the regression gate uses it.
    pub median_ci_exact: Interval,
    /// Coefficient of variation: `std_dev / mean`.
    #[serde(default)]
    pub cv: f64,
    /// Samples outside Tukey's fences, as criterion classifies them.
    #[serde(default)]
    pub outliers: Outliers,
}

/// criterion's outlier classes: beyond 1.5 interquartile ranges from the quartiles is mild,
/// beyond 3 severe, on either side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outliers {
    pub low_severe: usize,
    pub low_mild: usize,
    pub high_mild: usize,
    pub high_severe: usize,
}

impl Outliers {
    pub fn total(&self) -> usize {
        self.low_severe + self.low_mild + self.high_mild + self.high_severe
    }
}

/// Classify `xs` by Tukey's fences (at least 4 samples; none below that).
pub fn outliers(xs: &[f64]) -> Outliers {
    let mut o = Outliers::default();
    if xs.len() < 4 {
        return o;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile_sorted(&s, 0.25), quantile_sorted(&s, 0.75));
    let iqr = q3 - q1;
    for &x in xs {
        if x < q1 - 3.0 * iqr {
            o.low_severe += 1;
        } else if x < q1 - 1.5 * iqr {
            o.low_mild += 1;
        } else if x > q3 + 3.0 * iqr {
            o.high_severe += 1;
        } else if x > q3 + 1.5 * iqr {
            o.high_mild += 1;
        }
    }
    o
}

/// SplitMix64 (the models crate's), for resampling indices.
pub use models::rng::Rng;

/// Median of `xs` (mean of the middle two for even lengths). NaN for an empty slice.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    }
}

/// Linear-interpolated quantile `q` in [0, 1] of sorted data (numpy's default method).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Percentile-bootstrap interval of `stat` over resamples of `xs`.
fn bootstrap(xs: &[f64], seed: u64, stat: impl Fn(&[f64]) -> f64) -> Interval {
    if xs.len() < 2 {
        let v = stat(xs);
        return Interval { low: v, high: v };
    }
    let mut rng = Rng::new(seed);
    let mut buf = vec![0.0; xs.len()];
    let mut stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            for b in buf.iter_mut() {
                *b = xs[rng.below(xs.len())];
            }
            stat(&buf)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Interval { low: quantile_sorted(&stats, tail), high: quantile_sorted(&stats, 1.0 - tail) }
}

/// Order-statistic interval of the median: `[x(k), x(n+1-k)]` with the largest `k` whose
/// coverage `1 - 2 P(Binomial(n, 1/2) < k)` is at least 95%; `[min, max]` when none is.
pub fn median_ci_order_statistics(xs: &[f64]) -> Interval {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return Interval { low: f64::NAN, high: f64::NAN };
    }
    // P(B <= j) for B ~ Binomial(n, 1/2), accumulated in log space to stay finite for large n.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64;
    let mut cdf = 0.0f64;
    let mut k = 1usize;
    for j in 0..n / 2 {
        if j > 0 {
            ln_choose += ((n - j + 1) as f64).ln() - (j as f64).ln();
        }
        cdf += (ln_choose + ln_half_n).exp();
        // Using x(j+1) as the lower bound leaves P(B <= j) in each tail.
        if 1.0 - 2.0 * cdf >= CONFIDENCE {
            k = j + 1;
        } else {
            break;
        }
    }
    Interval { low: v[k - 1], high: v[n - k] }
}

/// Summarise samples. Panics on no samples (callers always time at least one iteration).
pub fn summarize(xs: &[f64]) -> Summary {
    assert!(!xs.is_empty(), "summarize needs at least one sample");
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = if n > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    Summary {
        n,
        min: xs.iter().copied().fold(f64::INFINITY, f64::min),
        median: median(xs),
        mean,
        max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        std_dev: var.sqrt(),
        median_ci: bootstrap(xs, 0x5EED_0001, median),
        median_ci_exact: median_ci_order_statistics(xs),
        cv: if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        outliers: outliers(xs),
    }
}

/// A 95% interval of the pooled median of clustered samples (one cluster per process):
/// resample whole clusters with replacement, pool, take the median. Between-cluster spread
/// (a process landing in a slower state) widens it, where a bootstrap over the pooled samples
/// would treat them as independent and be too narrow. Clusters must be non-empty.
pub fn cluster_median_ci(clusters: &[Vec<f64>]) -> Interval {
    let mut rng = Rng::new(0x5EED_0003);
    let mut stats: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let mut pooled = Vec::new();
            for _ in 0..clusters.len() {
                pooled.extend_from_slice(&clusters[rng.below(clusters.len())]);
            }
            median(&pooled)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Interval { low: quantile_sorted(&stats, tail), high: quantile_sorted(&stats, 1.0 - tail) }
}

/// Speedup of B over A from interleaved pairs `(a_i, b_i)`: the median of `a_i / b_i`, with a
/// bootstrap interval over pairs. Pairing cancels drift that hits both runs of a pair alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speedup {
    pub estimate: f64,
    pub ci: Interval,
    pub pairs: usize,
}

pub fn paired_speedup(a: &[f64], b: &[f64]) -> Speedup {
    let ratios: Vec<f64> = a.iter().zip(b).filter(|(_, &y)| y > 0.0).map(|(&x, &y)| x / y).collect();
    Speedup { estimate: median(&ratios), ci: bootstrap(&ratios, 0x5EED_0002, median), pairs: ratios.len() }
}

/// Change of `current` against `baseline`: ratio of medians (> 1 is slower), with a bootstrap
/// interval from independent resamples of both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub ratio: f64,
    pub ci: Interval,
}

pub fn change(baseline: &[f64], current: &[f64]) -> Change {
    let ratio = median(current) / median(baseline);
    if baseline.len() < 2 || current.len() < 2 {
        return Change { ratio, ci: Interval { low: ratio, high: ratio } };
    }
    let mut rng = Rng::new(0x5EED_0003);
    let (mut bb, mut cb) = (vec![0.0; baseline.len()], vec![0.0; current.len()]);
    let mut rs: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            for x in bb.iter_mut() {
                *x = baseline[rng.below(baseline.len())];
            }
            for x in cb.iter_mut() {
                *x = current[rng.below(current.len())];
            }
            median(&cb) / median(&bb)
        })
        .collect();
    rs.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Change { ratio, ci: Interval { low: quantile_sorted(&rs, tail), high: quantile_sorted(&rs, 1.0 - tail) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_follow_tukeys_fences_and_cv_is_relative_spread() {
        // Quartiles 3.5 and 10.5 (numpy's), IQR 7: mild below -7 or above 21, severe below
        // -17.5 or above 31.5.
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, -9.0, 25.0, 40.0];
        let o = outliers(&xs);
        assert_eq!((o.low_severe, o.low_mild, o.high_mild, o.high_severe), (0, 1, 1, 1), "{o:?}");
        assert_eq!(outliers(&[1.0, 1.0, 1.0]).total(), 0, "too few samples to judge");
        let s = summarize(&[1.0, 1.0, 1.0, 1.0]);
        assert_eq!((s.cv, s.outliers.total()), (0.0, 0));
        let s = summarize(&[9.0, 11.0]);
        assert!((s.cv - 2f64.sqrt() / 10.0).abs() < 1e-12);
    }

    #[test]
    fn order_statistics_match_known_values() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0, 5.0]);
        assert_eq!((s.min, s.median, s.mean, s.max), (1.0, 3.0, 3.0, 5.0));
        // Sample standard deviation of 1..5 is sqrt(2.5).
        assert!((s.std_dev - 2.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
        assert!(median(&[]).is_nan());
        // numpy.quantile([1, 2, 3, 4], 0.25) == 1.75
        assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
    }

    #[test]
    fn median_interval_brackets_the_median_and_is_reproducible() {
        let xs: Vec<f64> = (0..101).map(|i| 1.0 + (i as f64 * 0.37).sin() * 0.1).collect();
        let s = summarize(&xs);
        assert!(s.median_ci.low <= s.median && s.median <= s.median_ci.high);
        assert!(s.median_ci.high - s.median_ci.low < 0.1);
        assert_eq!(summarize(&xs).median_ci, s.median_ci);
        // Constant data: a zero-width interval at the value.
        let c = summarize(&[2.0; 8]);
        assert_eq!((c.median_ci.low, c.median_ci.high), (2.0, 2.0));
    }

    #[test]
    fn a_cluster_interval_holds_the_spread_between_clusters() {
        // Two processes at ~30, two at ~44: pooled, the bootstrap over samples is narrow; over
        // processes it spans both states.
        let c = |m: f64| (0..10).map(|i| m + 0.01 * f64::from(i)).collect::<Vec<_>>();
        let clusters = vec![c(30.0), c(44.0), c(30.0), c(44.0)];
        let ci = cluster_median_ci(&clusters);
        assert!(ci.low <= 30.1 && ci.high >= 43.9, "{ci:?}");
        let one = cluster_median_ci(&[c(30.0)]);
        assert!(one.low >= 30.0 && one.high <= 30.1, "{one:?}");
    }

    #[test]
    fn paired_speedup_of_a_constant_factor() {
        let a: Vec<f64> = (1..=20).map(|i| i as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x / 2.0).collect();
        let s = paired_speedup(&a, &b);
        assert_eq!(s.estimate, 2.0);
        assert_eq!((s.ci.low, s.ci.high), (2.0, 2.0));
        assert_eq!(s.pairs, 20);
    }

    #[test]
    fn change_detects_doubling_with_a_clear_interval() {
        let base: Vec<f64> = (0..30).map(|i| 1.0 + 0.01 * (i % 5) as f64).collect();
        let slow: Vec<f64> = base.iter().map(|x| x * 2.0).collect();
        let c = change(&base, &slow);
        assert!((c.ratio - 2.0).abs() < 1e-12);
        assert!(c.ci.low > 1.9 && c.ci.high < 2.1, "{c:?}");
        let same = change(&base, &base);
        assert!(same.ci.low <= 1.0 && same.ci.high >= 1.0);
    }

    #[test]
    fn order_statistic_median_interval_matches_binomial_tables() {
        let xs: Vec<f64> = (1..=15).map(f64::from).collect();
        // n = 15: [x(4), x(12)], coverage 96.5% (x(5), x(11) would be 88.2%).
        assert_eq!(median_ci_order_statistics(&xs), Interval { low: 4.0, high: 12.0 });
        // n = 5 cannot reach 95%: the whole range.
        assert_eq!(median_ci_order_statistics(&[5.0, 1.0, 3.0, 2.0, 4.0]), Interval { low: 1.0, high: 5.0 });
        // n = 6: [x(1), x(6)] covers 96.9%.
        let six: Vec<f64> = (1..=6).map(f64::from).collect();
        assert_eq!(median_ci_order_statistics(&six), Interval { low: 1.0, high: 6.0 });
        // n = 100: [x(40), x(61)] (coverage 96.5%).
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median_ci_order_statistics(&hundred), Interval { low: 40.0, high: 61.0 });
    }

    #[test]
    fn intervals_overlap() {
        let a = Interval { low: 1.0, high: 2.0 };
        assert!(a.overlaps(&Interval { low: 2.0, high: 3.0 }));
        assert!(!a.overlaps(&Interval { low: 2.1, high: 3.0 }));
    }
}
