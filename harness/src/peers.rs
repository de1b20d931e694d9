//! Peer timings: what an incumbent implementation (PyTorch eager with HF transformers or
//! demucs) takes for the same workload on the same machine. The scripts in `scripts/peers/`
//! measure them and print one JSON object per line:
//!
//! ```json
//! {"workload": "clap/embed-audio-10s", "peer": "PyTorch 2.11.0 eager, transformers 5.17 ClapModel",
//!  "samples_s": [0.0351, 0.0349, 0.0352], "note": "features by HF's numpy extractor, on the CPU"}
//! ```
//!
//! `bench --peer FILE` and `merge --peer FILE` attach them to the report's workloads by id, so
//! the report reads ours against theirs per task.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::report::{Peer, Report};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    workload: String,
    peer: String,
    samples_s: Vec<f64>,
    /// "fp32" or "tf32": the peer's own TF32 switches (absent in older lines).
    #[serde(default)]
    precision: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

/// Peer results keyed by workload id, from the JSON-lines text of `origin` (named in errors).
/// Blank lines and lines starting with `#` are skipped.
pub fn parse(text: &str, origin: &str) -> Result<BTreeMap<String, Peer>> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{origin}:{}", i + 1);
        let l: Line = serde_json::from_str(line).with_context(|| format!("{}: not a peer line (workload, peer, samples_s[, note])", at()))?;
        if l.workload.is_empty() || l.peer.is_empty() {
            bail!("{}: workload and peer must not be empty", at());
        }
        if l.samples_s.is_empty() || l.samples_s.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            bail!("{}: samples_s of {} must be a non-empty list of positive seconds", at(), l.workload);
        }
        if let Some(p) = &l.precision {
            if p != "fp32" && p != "tf32" {
                bail!("{}: precision of {} must be fp32 or tf32, got '{p}'", at(), l.workload);
            }
        }
        if out.contains_key(&l.workload) {
            bail!("{}: a second peer line for {}", at(), l.workload);
        }
        let peer = Peer {
            name: l.peer,
            median_s: crate::stats::median(&l.samples_s),
            samples_s: l.samples_s,
            precision: l.precision,
            note: l.note,
        };
        out.insert(l.workload, peer);
    }
    if out.is_empty() {
        bail!("{origin}: no peer lines");
    }
    Ok(out)
}

/// Read and merge peer files; a workload named in two files is refused.
pub fn read_all(paths: &[impl AsRef<Path>]) -> Result<BTreeMap<String, Peer>> {
    let mut all = BTreeMap::new();
    for p in paths {
        let p = p.as_ref();
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read peer file {}", p.display()))?;
        for (id, peer) in parse(&text, &p.display().to_string())? {
            if all.contains_key(&id) {
                bail!("peer file {}: {id} already has a peer from an earlier file", p.display());
            }
            all.insert(id, peer);
        }
    }
    Ok(all)
}

/// Refuse peers measured in another precision mode than ours (`precision`, the report's):
/// ours/peer compares like with like. Lines that do not record a mode are taken as they are.
pub fn check_precision(peers: &BTreeMap<String, Peer>, precision: Option<&str>) -> Result<()> {
    let Some(ours) = precision else { return Ok(()) };
    for (id, p) in peers {
        if let Some(theirs) = p.precision.as_deref().filter(|t| *t != ours) {
            bail!("the peer time of {id} was measured in {theirs}, this report in {ours}; re-run the peer with --precision {ours}");
        }
    }
    Ok(())
}

/// Attach peers to the report's workloads; returns the ids that matched no workload (a run
/// filtered with `-m` measures fewer workloads than a peer file covers).
pub fn attach(report: &mut Report, mut peers: BTreeMap<String, Peer>) -> Vec<String> {
    for w in &mut report.workloads {
        if let Some(p) = peers.remove(&w.id) {
            w.peer = Some(p);
        }
    }
    peers.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_attach_by_workload() {
        let text = "# PyTorch on the same card\n\
            {\"workload\": \"blocks/decode-step-cache-64\", \"peer\": \"PyTorch\", \"samples_s\": [0.02, 0.04, 0.03]}\n\n\
            {\"workload\": \"other/w\", \"peer\": \"PyTorch\", \"samples_s\": [1.0], \"note\": \"n\"}\n";
        let peers = parse(text, "p.jsonl").unwrap();
        assert_eq!(peers["blocks/decode-step-cache-64"].median_s, 0.03);
        let mut r = crate::report::sample_report(1.0);
        let unmatched = attach(&mut r, peers);
        assert_eq!(unmatched, ["other/w"]);
        let w = &r.workloads[0];
        assert_eq!(w.peer.as_ref().unwrap().name, "PyTorch");
        // The sample's optimized median is 10.1 ms against the peer's 30 ms.
        let ratio = w.ours_over_peer().unwrap();
        assert!((ratio - w.variants["optimized"].stats.median / 0.03).abs() < 1e-12 && ratio < 1.0);
    }

    #[test]
    fn malformed_peer_lines_are_refused_with_file_and_line() {
        let err = |t: &str| parse(t, "p.jsonl").unwrap_err().to_string();
        assert!(err("{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": []}").contains("p.jsonl:1"));
        assert!(err("\n{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": [-1]}").contains("p.jsonl:2"));
        assert!(err("{\"workload\": \"a\", \"peer\": \"x\"}").contains("not a peer line"));
        assert!(err("{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": [1], \"extra\": 1}").contains("not a peer line"));
        let dup = "{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": [1]}\n{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": [2]}";
        assert!(err(dup).contains("second peer line"));
        assert!(err("# nothing\n").contains("no peer lines"));
        assert!(err("{\"workload\": \"a\", \"peer\": \"\", \"samples_s\": [1]}").contains("must not be empty"));
        assert!(err("{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": [1], \"precision\": \"fp16\"}").contains("fp32 or tf32"));
    }

    #[test]
    fn peers_of_another_precision_mode_are_refused() {
        let p = parse("{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": [1], \"precision\": \"tf32\"}", "p").unwrap();
        assert!(check_precision(&p, Some("fp32")).unwrap_err().to_string().contains("measured in tf32"));
        assert!(check_precision(&p, Some("tf32")).is_ok());
        let old = parse("{\"workload\": \"a\", \"peer\": \"x\", \"samples_s\": [1]}", "p").unwrap();
        assert!(check_precision(&old, Some("fp32")).is_ok(), "lines without a mode are taken as they are");
    }
}
