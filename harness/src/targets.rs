//! The seed's performance targets, kept as data (`harness/data/targets.json`), and their
//! verdicts against a run.
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::report::{TargetResult, Verdict, WorkloadResult};

const BUILTIN: &str = include_str!("../data/targets.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub schema_version: u32,
    #[serde(default)]
    pub source: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub task: String,
    pub model: String,
    pub input: String,
    /// The workload id that measures this row.
    pub workload: String,
    pub variant: String,
    #[serde(default)]
    pub note: Option<String>,
    /// Target seconds per device class ("apple-silicon", "cuda", "cpu").
    pub targets: BTreeMap<String, f64>,
}

impl Table {
    pub fn builtin() -> Result<Self> {
        Self::parse(BUILTIN).context("the built-in targets table")
    }

    /// The table in `path`, or the built-in one.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self> {
        match path {
            Some(p) => Self::parse(&std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?).with_context(|| format!("targets table {}", p.display())),
            None => Self::builtin(),
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let t: Table = serde_json::from_str(text).context("parsing the targets table")?;
        if t.schema_version != 1 {
            bail!("targets table schema_version {} is not supported (expected 1)", t.schema_version);
        }
        for r in &t.rows {
            if let Some((class, s)) = r.targets.iter().find(|(_, s)| !(s.is_finite() && **s > 0.0)) {
                bail!("targets row '{}': target for {class} must be a positive number of seconds, got {s}", r.task);
            }
        }
        Ok(t)
    }

    /// Verdicts for `class` from the measured workloads.
    pub fn evaluate(&self, class: &str, results: &[WorkloadResult]) -> Vec<TargetResult> {
        self.rows
            .iter()
            .map(|row| {
                let workload = results.iter().find(|w| w.id == row.workload);
                let measured_s = workload.and_then(|w| w.variants.get(&row.variant)).map(|v| v.stats.median);
                let target_s = row.targets.get(class).copied();
                let (verdict, margin) = match (target_s, measured_s) {
                    (None, _) => (Verdict::NoTarget, None),
                    (Some(_), None) => (Verdict::NotMeasured, None),
                    (Some(t), Some(m)) => (if m <= t { Verdict::Pass } else { Verdict::Miss }, Some(t / m)),
                };
                TargetResult {
                    task: row.task.clone(),
                    model: row.model.clone(),
                    input: row.input.clone(),
                    workload: row.workload.clone(),
                    variant: row.variant.clone(),
                    device_class: class.to_string(),
                    target_s,
                    measured_s,
                    verdict,
                    margin,
                    peer_s: workload.and_then(|w| w.peer.as_ref()).map(|p| p.median_s),
                    note: row.note.clone(),
                }
            })
            .collect()
    }
}

/// True when some row with a target for this class was measured and missed. A row whose
/// workload did not run is "not measured": reported, but no failure (`bench -m` runs a part).
pub fn any_missed(results: &[TargetResult]) -> bool {
    results.iter().any(|t| t.verdict == Verdict::Miss)
}

/// What `--targets` decides about a report, for `bench` and `merge` alike: names the rows not
/// measured (`why` says why they were not), and gives the miss exit code when a measured row
/// missed.
pub fn verdict_exit(results: &[TargetResult], class: &str, why: &str) -> Option<u8> {
    let unmeasured = not_measured(results);
    if !unmeasured.is_empty() {
        eprintln!("targets: not measured ({why}): {}", unmeasured.join(", "));
    }
    if any_missed(results) {
        eprintln!("targets: a measured target for device class {class} was missed");
        return Some(crate::bench::TARGET_MISSED_EXIT);
    }
    None
}

/// The tasks of rows with a target for this class whose workload did not run.
pub fn not_measured(results: &[TargetResult]) -> Vec<String> {
    results.iter().filter(|t| t.verdict == Verdict::NotMeasured).map(|t| t.task.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_has_the_seeds_five_rows() {
        let t = Table::builtin().unwrap();
        assert_eq!(t.rows.len(), 5);
        let secs: Vec<f64> = t.rows.iter().map(|r| r.targets["apple-silicon"]).collect();
        assert_eq!(secs, [5.0, 3.0, 0.1, 15.0, 0.05]);
        // No CPU targets: a CPU run prints "no target" and never fails on them.
        let v = t.evaluate("cpu", &[]);
        assert!(v.iter().all(|r| r.verdict == Verdict::NoTarget));
        assert!(!any_missed(&v));
        // Nothing ran: every row is "not measured", which is no miss.
        let none = t.evaluate("apple-silicon", &[]);
        assert!(none.iter().all(|r| r.verdict == Verdict::NotMeasured));
        assert!(!any_missed(&none));
        assert_eq!(not_measured(&none).len(), 5);
    }

    #[test]
    fn malformed_tables_are_refused() {
        assert!(Table::parse("{").is_err());
        assert!(Table::parse(r#"{"schema_version": 2, "rows": []}"#).is_err());
        let neg = r#"{"schema_version": 1, "rows": [{"task": "t", "model": "m", "input": "i", "workload": "w", "variant": "optimized", "targets": {"cuda": -1}}]}"#;
        assert!(Table::parse(neg).unwrap_err().to_string().contains("positive"));
    }
}
