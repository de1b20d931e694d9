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
    /// Per device class without a target in seconds: workloads sized for that class whose
    /// summed optimized medians must be at most the peer's (PyTorch on the same machine, from
    /// `--peers`). On the CPU the seed's tasks are too large for a 2-core box, so the verdict
    /// there is "no slower than PyTorch" on a smaller workload of the same model.
    #[serde(default)]
    pub peer_workloads: BTreeMap<String, Vec<String>>,
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
            if let Some((class, _)) = r.peer_workloads.iter().find(|(c, w)| w.is_empty() || r.targets.contains_key(*c)) {
                bail!("targets row '{}': peer_workloads for {class} must be a non-empty list, for a class without a target in seconds", r.task);
            }
        }
        Ok(t)
    }

    /// Workloads a `--targets` run of `class` must include (heavy or not): the peer-judged ones.
    pub fn peer_workloads_of(&self, class: &str) -> Vec<String> {
        self.rows.iter().flat_map(|r| r.peer_workloads.get(class).cloned().unwrap_or_default()).collect()
    }

    /// Verdicts for `class` from the measured workloads.
    pub fn evaluate(&self, class: &str, results: &[WorkloadResult]) -> Vec<TargetResult> {
        self.rows
            .iter()
            .map(|row| {
                if let (None, Some(ids)) = (row.targets.get(class), row.peer_workloads.get(class)) {
                    return Self::against_peer(row, class, ids, results);
                }
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

    /// A row judged against the peer: ours (the row's variant, medians summed over `ids`) at
    /// most the peer's summed medians. The target is the peer's time.
    fn against_peer(row: &Row, class: &str, ids: &[String], results: &[WorkloadResult]) -> TargetResult {
        let found: Vec<Option<&WorkloadResult>> = ids.iter().map(|id| results.iter().find(|w| &w.id == id)).collect();
        let ours: Option<f64> = found.iter().map(|w| w.and_then(|w| w.variants.get(&row.variant)).map(|v| v.stats.median)).sum();
        let peer: Option<f64> = found.iter().map(|w| w.and_then(|w| w.peer.as_ref()).map(|p| p.median_s)).sum();
        let (verdict, margin) = match (ours, peer) {
            (None, _) => (Verdict::NotMeasured, None),
            (Some(_), None) => (Verdict::NoPeer, None),
            (Some(m), Some(p)) => (if m <= p { Verdict::Pass } else { Verdict::Miss }, Some(p / m)),
        };
        let size = format!("on this class: {}", ids.join(" + "));
        TargetResult {
            task: row.task.clone(),
            model: row.model.clone(),
            input: size,
            workload: ids.join(" + "),
            variant: row.variant.clone(),
            device_class: class.to_string(),
            target_s: peer,
            measured_s: ours,
            verdict,
            margin,
            peer_s: peer,
            note: Some(match verdict {
                Verdict::NoPeer => "target: PyTorch's time on this machine; no peer measured (./run-benchmarks.sh --targets --peers, after scripts/setup-peers.sh)".into(),
                _ => "target: PyTorch's time on this machine, measured in the same run (ours/peer at most 1)".into(),
            }),
        }
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
        // No CPU targets in seconds: the CPU rows are judged against the peer on smaller
        // workloads, and nothing measured is no miss.
        let v = t.evaluate("cpu", &[]);
        assert!(v.iter().all(|r| r.verdict == Verdict::NotMeasured));
        assert!(!any_missed(&v));
        assert_eq!(t.peer_workloads_of("cpu").len(), 6);
        // Nothing ran: every row is "not measured", which is no miss.
        let none = t.evaluate("apple-silicon", &[]);
        assert!(none.iter().all(|r| r.verdict == Verdict::NotMeasured));
        assert!(!any_missed(&none));
        assert_eq!(not_measured(&none).len(), 5);
    }

    #[test]
    fn cpu_rows_are_judged_against_the_peer_summed_over_their_workloads() {
        let t = Table::builtin().unwrap();
        let mut enc = crate::report::sample_report(1.0).workloads.remove(0);
        enc.id = "whisper/encode-30s".into();
        let mut dec = enc.clone();
        dec.id = "whisper/decode-64".into();
        let ours = enc.variants["optimized"].stats.median + dec.variants["optimized"].stats.median;
        let row = |ws: &[WorkloadResult]| t.evaluate("cpu", ws).into_iter().find(|r| r.model.contains("Whisper")).unwrap();
        // Measured without peers: says how to get them, and is no miss.
        let r = row(&[enc.clone(), dec.clone()]);
        assert_eq!(r.verdict, Verdict::NoPeer);
        assert!(r.note.unwrap().contains("--peers") && !any_missed(&[row(&[enc.clone(), dec.clone()])]));
        // One of the two missing: not measured.
        assert_eq!(row(&[enc.clone()]).verdict, Verdict::NotMeasured);
        let peer = |s: f64| Some(crate::report::Peer { name: "PyTorch".into(), samples_s: vec![s], median_s: s, precision: None, note: None });
        // The peer's sum just above ours passes; just below misses.
        enc.peer = peer(ours / 2.0 + 1e-6);
        dec.peer = peer(ours / 2.0);
        let r = row(&[enc.clone(), dec.clone()]);
        assert_eq!(r.verdict, Verdict::Pass);
        assert!((r.ours_over_peer().unwrap() - ours / (ours + 1e-6)).abs() < 1e-12);
        enc.peer = peer(ours / 2.0 - 1e-6);
        assert_eq!(row(&[enc, dec]).verdict, Verdict::Miss);
    }

    #[test]
    fn malformed_tables_are_refused() {
        assert!(Table::parse("{").is_err());
        assert!(Table::parse(r#"{"schema_version": 2, "rows": []}"#).is_err());
        let neg = r#"{"schema_version": 1, "rows": [{"task": "t", "model": "m", "input": "i", "workload": "w", "variant": "optimized", "targets": {"cuda": -1}}]}"#;
        assert!(Table::parse(neg).unwrap_err().to_string().contains("positive"));
        let both = r#"{"schema_version": 1, "rows": [{"task": "t", "model": "m", "input": "i", "workload": "w", "variant": "optimized", "targets": {"cpu": 1}, "peer_workloads": {"cpu": ["w"]}}]}"#;
        assert!(Table::parse(both).unwrap_err().to_string().contains("without a target"));
        let empty = r#"{"schema_version": 1, "rows": [{"task": "t", "model": "m", "input": "i", "workload": "w", "variant": "optimized", "targets": {}, "peer_workloads": {"cpu": []}}]}"#;
        assert!(Table::parse(empty).is_err());
    }
}
