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
    if baseline.meta.device_class != current.meta.device_class && !force {
        bail!(
            "baseline was measured on device class '{}' ({}), this run is '{}' ({}); timings are not comparable (use --force to compare anyway)",
            baseline.meta.device_class,
            baseline.meta.device_name,
            current.meta.device_class,
            current.meta.device_name
        );
    }
    Ok(())
}

pub fn compare(baseline: &Report, baseline_name: &str, current: &Report, threshold_pct: f64) -> Comparison {
    let limit = 1.0 + threshold_pct / 100.0;
    let mut deltas = Vec::new();
    let mut missing = Vec::new();
    for bw in &baseline.workloads {
        for (vname, bv) in &bw.variants {
            let Some(cv) = current.workloads.iter().find(|w| w.id == bw.id).and_then(|w| w.variants.get(vname)) else {
                missing.push(format!("{}/{vname}", bw.id));
                continue;
            };
            let ch = stats::change(&bv.samples_s, &cv.samples_s);
            let separated = !bv.stats.median_ci.overlaps(&cv.stats.median_ci);
            let status = if ch.ratio > limit && separated {
                Status::Regression
            } else if ch.ratio < 1.0 / limit && separated {
                Status::Improvement
            } else {
                Status::Unchanged
            };
            deltas.push(Delta {
                workload: bw.id.clone(),
                variant: vname.clone(),
                baseline_median_s: bv.stats.median,
                current_median_s: cv.stats.median,
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
