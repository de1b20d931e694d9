//! `--compare BASELINE.json`: the per-workload change of the median against a baseline, and the
//! regression gate (slower than the threshold with non-overlapping intervals).
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::Report;
use crate::stats::{self, Change};

/// Exit code of a run that found a regression.
pub const REGRESSION_EXIT: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Regression,
    Improvement,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub workload: String,
    pub variant: String,
    pub baseline_median_s: f64,
    pub current_median_s: f64,
    /// current / baseline medians, with its bootstrap interval.
    pub change: Change,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: String,
    pub baseline_time: String,
    pub baseline_commit: Option<String>,
    pub threshold_pct: f64,
    pub deltas: Vec<Delta>,
    /// Workload/variants in the baseline that this run did not measure.
    pub missing: Vec<String>,
}

impl Comparison {
    pub fn regressions(&self) -> impl Iterator<Item = &Delta> {
        self.deltas.iter().filter(|d| d.status == Status::Regression)
    }
}

/// Refuse a baseline that cannot be compared, unless forced.
pub fn check_compatible(baseline: &Report, current: &Report, force: bool) -> Result<()> {
    check_compatible_meta(&baseline.meta, &current.meta, force)
}

/// [`check_compatible`] on the run's facts alone, so `bench -c` refuses before timing.
pub fn check_compatible_meta(baseline: &super::Meta, current: &super::Meta, force: bool) -> Result<()> {
    if baseline.device_class != current.device_class && !force {
        bail!(
            "baseline was measured on device class '{}' ({}), this run is '{}' ({}); timings are not comparable (use --force to compare anyway)",
            baseline.device_class,
            baseline.device_name,
            current.device_class,
            current.device_name
        );
    }
    let (b, c) = (precision_of_meta(baseline), precision_of_meta(current));
    if b != c && !force {
        bail!("baseline was measured in precision mode {b}, this run in {c}; timings are not comparable (use --force to compare anyway, or --precision to match)");
    }
    Ok(())
}

/// A report's precision mode in words; reports from before the mode was recorded ran in MLX's
/// default, which is TF32 on CUDA and fp32 elsewhere.
pub fn precision_of(r: &Report) -> &str {
    precision_of_meta(&r.meta)
}

fn precision_of_meta(m: &super::Meta) -> &str {
    match (&m.precision, m.backend.as_str()) {
        (Some(p), _) => p,
        (None, "cuda") => "tf32 (MLX's default; not recorded)",
        (None, _) => "fp32",
    }
}

/// The regression gate on two sets of samples: the change of the median (current over
/// baseline) with its interval, and whether it is a regression, an improvement or neither.
/// Conservative on noisy machines: the distribution-free median intervals must be apart, and the
/// whole interval of the change beyond the threshold. Intervals come from the raw samples, the
/// ground truth of a report.
pub fn judge(baseline: &[f64], current: &[f64], threshold_pct: f64) -> (Change, Status) {
    let limit = 1.0 + threshold_pct / 100.0;
    let ch = stats::change(baseline, current);
    let separated = !stats::median_ci_order_statistics(baseline).overlaps(&stats::median_ci_order_statistics(current));
    let status = if ch.ci.low > limit && separated {
        Status::Regression
    } else if ch.ci.high < 1.0 / limit && separated {
        Status::Improvement
    } else {
        Status::Unchanged
    };
    (ch, status)
}

pub fn compare(baseline: &Report, baseline_name: &str, current: &Report, threshold_pct: f64) -> Comparison {
    let mut deltas = Vec::new();
    let mut missing = Vec::new();
    for bw in &baseline.workloads {
        for (vname, bv) in &bw.variants {
            let Some(cv) = current.workloads.iter().find(|w| w.id == bw.id).and_then(|w| w.variants.get(vname)) else {
                missing.push(format!("{}/{vname}", bw.id));
                continue;
            };
            let (ch, status) = judge(&bv.samples_s, &cv.samples_s, threshold_pct);
            deltas.push(Delta {
                workload: bw.id.clone(),
                variant: vname.clone(),
                baseline_median_s: stats::median(&bv.samples_s),
                current_median_s: stats::median(&cv.samples_s),
                change: ch,
                status,
            });
        }
    }
    Comparison {
        baseline: baseline_name.to_string(),
        baseline_time: baseline.meta.time.clone(),
        baseline_commit: baseline.meta.git_commit.clone(),
        threshold_pct,
        deltas,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample_report;

    #[test]
    fn halved_baseline_is_a_regression() {
        let base = sample_report(0.5);
        let now = sample_report(1.0);
        let c = compare(&base, "base", &now, 10.0);
        assert_eq!(c.deltas.len(), 2);
        assert!(c.deltas.iter().all(|d| d.status == Status::Regression), "{c:?}");
        assert!((c.deltas[0].change.ratio - 2.0).abs() < 1e-9);
    }

    #[test]
    fn same_timings_are_not_a_regression() {
        let c = compare(&sample_report(1.0), "base", &sample_report(1.0), 10.0);
        assert_eq!(c.regressions().count(), 0);
        assert!(c.deltas.iter().all(|d| d.status == Status::Unchanged));
    }

    #[test]
    fn small_slowdown_under_threshold_is_not_a_regression() {
        let c = compare(&sample_report(1.0), "base", &sample_report(1.05), 10.0);
        assert_eq!(c.regressions().count(), 0);
    }

    #[test]
    fn faster_run_is_an_improvement_and_missing_workloads_are_listed() {
        let mut now = sample_report(0.5);
        now.workloads[0].variants.remove("naive");
        let c = compare(&sample_report(1.0), "base", &now, 10.0);
        assert_eq!(c.deltas.len(), 1);
        assert_eq!(c.deltas[0].status, Status::Improvement);
        assert_eq!(c.missing, ["blocks/decode-step-cache-64/naive"]);
    }

    #[test]
    fn other_device_class_is_refused_unless_forced() {
        let base = sample_report(1.0);
        let mut now = sample_report(1.0);
        now.meta.device_class = "cuda".into();
        let err = check_compatible(&base, &now, false).unwrap_err().to_string();
        assert!(err.contains("device class") && err.contains("--force"), "{err}");
        assert!(check_compatible(&base, &now, true).is_ok());
    }
}
