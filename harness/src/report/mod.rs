//! The one result type every report is made from, and its exporters (JSON, text table,
//! Markdown summary, HTML). The JSON schema is documented in `harness/REPORT_SCHEMA.md`;
//! bump [`SCHEMA_VERSION`] on any incompatible change.
pub mod compare;
pub mod html;
pub mod json;
pub mod markdown;
pub mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::{Speedup, Summary};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub meta: Meta,
    pub settings: Settings,
    pub workloads: Vec<WorkloadResult>,
    pub targets: Vec<TargetResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<compare::Comparison>,
}

/// Where and what ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// RFC 3339, UTC.
    pub time: String,
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    /// The commit the harness binary was built from (its build script's `git rev-parse HEAD`);
    /// differs from `git_commit` when the binary runs in another checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_commit: Option<String>,
    pub harness_version: String,
    pub mlx_version: String,
    /// "cpu", "metal" or "cuda".
    pub backend: String,
    /// "cpu" or "gpu".
    pub device_kind: String,
    pub device_name: String,
    /// The targets table's class: "apple-silicon", "cuda" or "cpu".
    pub device_class: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub blas: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub quick: bool,
    pub warmup: u32,
    pub iterations: u32,
    pub variants: Vec<String>,
    pub models: Vec<String>,
    pub device: String,
    pub threshold_pct: f64,
    /// Seconds of timed rounds one workload may use; slower workloads get fewer iterations
    /// (at least [`MIN_ROUNDS`]). Each result's `stats.n` says how many ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time_s: Option<f64>,
    /// For a report made by `harness merge`: each source report, its models and settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

/// The fewest timed rounds a workload gets, whatever its time budget.
pub const MIN_ROUNDS: u32 = 3;

/// What a workload times, in words, for humans reading the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// Model size / configuration, e.g. "whisper large-v3-turbo dims, random weights".
    pub size: String,
    /// The input, e.g. "30 s of noise at 16 kHz".
    pub input: String,
    /// What the timed region covers, e.g. "one decode step, evaluated".
    pub timed: String,
    /// How this relates to the seed's targets, when it is scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The work one timed run does, for throughput figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// Seconds of audio processed or produced per run (real-time factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_seconds: Option<f64>,
    /// Tokens (or decode steps) per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<f64>,
    /// Items (clips, batches' members, calls) per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Audio seconds per wall-clock second ("x real time").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items_per_s: Option<f64>,
}

impl Throughput {
    pub fn from_work(work: &Work, median_s: f64) -> Self {
        let per = |x: Option<f64>| x.map(|v| v / median_s);
        Throughput {
            realtime_factor: per(work.audio_seconds),
            tokens_per_s: per(work.tokens),
            items_per_s: per(work.items),
        }
    }
}

/// MLX memory around one variant's runs (the memory profiler).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// Peak MLX memory since the reset before this variant, bytes.
    pub peak_bytes: u64,
    /// MLX memory in use after the last run, bytes.
    pub active_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    pub stats: Summary,
    /// Raw per-iteration times, seconds, in the order measured.
    pub samples_s: Vec<f64>,
    pub throughput: Throughput,
    pub memory: Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub id: String,
    pub model: String,
    pub info: WorkloadInfo,
    pub work: Work,
    /// Keyed by variant name ("naive", "optimized").
    pub variants: BTreeMap<String, VariantResult>,
    /// optimized over naive, from interleaved pairs; present when both ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speedup: Option<Speedup>,
    /// The incumbent's time for the same task on the same machine (`--peer`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
}

impl WorkloadResult {
    /// The variant set beside a peer: the optimized one, or the only one that ran.
    pub fn ours(&self) -> Option<&VariantResult> {
        self.variants.get("optimized").or_else(|| self.variants.values().next())
    }

    /// Our time over the peer's, medians: below 1 we are faster.
    pub fn ours_over_peer(&self) -> Option<f64> {
        Some(self.ours()?.stats.median / self.peer.as_ref()?.median_s)
    }
}

/// An incumbent implementation's time for a workload, measured outside the harness by a
/// script in `scripts/peers/` on the same machine (same sizes, inputs, decode lengths, dtype).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// Who ran, e.g. "PyTorch 2.11.0+cu130 eager, transformers 5.17 ClapModel".
    pub name: String,
    /// Median of `samples_s`.
    pub median_s: f64,
    /// Per-run seconds, in the order measured.
    pub samples_s: Vec<f64>,
    /// What the peer's timed region covers, where it differs from ours, and its settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Miss,
    /// The current device class has no target for this row.
    NoTarget,
    /// The row's workload did not run (filtered out, or not implemented yet).
    NotMeasured,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub task: String,
    pub model: String,
    pub input: String,
    pub workload: String,
    pub variant: String,
    pub device_class: String,
    pub target_s: Option<f64>,
    pub measured_s: Option<f64>,
    pub verdict: Verdict,
    /// target / measured: above 1 passes with that many times headroom.
    pub margin: Option<f64>,
    /// The peer's median for the row's workload (`--peer`), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TargetResult {
    /// Measured over the peer's median: below 1 we are faster.
    pub fn ours_over_peer(&self) -> Option<f64> {
        Some(self.measured_s? / self.peer_s?)
    }
}

/// Human-readable byte counts.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Human-readable durations from seconds.
pub fn format_duration(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// A fixed report for tests of the exporters and the compare logic.
#[cfg(test)]
pub fn sample_report(scale: f64) -> Report {
    use crate::stats;
    let mk = |base: f64| {
        let samples: Vec<f64> = (0..9).map(|i| scale * base * (1.0 + 0.01 * (i % 3) as f64)).collect();
        let st = stats::summarize(&samples);
        let work = Work { tokens: Some(8.0), ..Work::default() };
        VariantResult { throughput: Throughput::from_work(&work, st.median), stats: st, samples_s: samples, memory: Memory { peak_bytes: 31 << 20, active_bytes: 12 << 20 } }
    };
    let mut variants = BTreeMap::new();
    variants.insert("naive".to_string(), mk(0.020));
    variants.insert("optimized".to_string(), mk(0.010));
    let speedup = Some(stats::paired_speedup(&variants["naive"].samples_s, &variants["optimized"].samples_s));
    Report {
        schema_version: SCHEMA_VERSION,
        meta: Meta {
            time: "2026-11-28T00:00:00Z".into(),
            git_commit: Some("0123456789abcdef".into()),
            git_dirty: Some(false),
            build_commit: None,
            harness_version: "0.1.0".into(),
            mlx_version: "0.32.4".into(),
            backend: "cpu".into(),
            device_kind: "cpu".into(),
            device_name: "Test CPU".into(),
            device_class: "cpu".into(),
            cpu_model: "Test CPU".into(),
            cores: 2,
            memory_bytes: Some(24 << 30),
            os: "linux x86_64".into(),
            blas: "OpenBLAS 0.3.21".into(),
        },
        settings: Settings { quick: true, warmup: 1, iterations: 9, variants: vec!["naive".into(), "optimized".into()], models: vec!["blocks".into()], device: "cpu".into(), threshold_pct: 10.0, max_time_s: None, merged_from: vec![] },
        workloads: vec![WorkloadResult {
            id: "blocks/decode-step-cache-64".into(),
            model: "blocks".into(),
            info: WorkloadInfo { size: "d 1280".into(), input: "64 cached tokens".into(), timed: "8 steps".into(), note: None },
            work: Work { tokens: Some(8.0), ..Work::default() },
            variants,
            speedup,
            peer: None,
        }],
        targets: vec![],
        comparison: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let r = sample_report(1.0);
        let text = json::to_string(&r).unwrap();
        assert_eq!(json::parse(&text).unwrap(), r);
    }

    #[test]
    fn text_table_snapshot() {
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"\d+\.\d+ (ms|s|µs)", "[time]");
        settings.add_filter(r"\d+\.\d+x", "[ratio]");
        settings.bind(|| insta::assert_snapshot!(text::render(&sample_report(1.0))));
    }

    #[test]
    fn markdown_summary_snapshot() {
        let mut r = sample_report(1.0);
        r.comparison = Some(compare::compare(&sample_report(0.5), "base.json", &r, 10.0));
        let mut settings = insta::Settings::clone_current();
        settings.add_filter(r"[+-]?\d+\.\d+ (ms|s|µs)", "[time]");
        settings.add_filter(r"[+-]?\d+\.\d+%", "[pct]");
        settings.add_filter(r"\d+\.\d+x", "[ratio]");
        settings.bind(|| insta::assert_snapshot!(markdown::render(&r)));
    }

    #[test]
    fn peers_show_beside_ours_in_every_format() {
        let mut r = sample_report(1.0);
        r.workloads[0].peer = Some(Peer { name: "PyTorch 9.9 eager".into(), median_s: 0.040, samples_s: vec![0.04, 0.041, 0.039], note: Some("same task".into()) });
        // ours 10.1 ms (median of 10.0, 10.1, 10.2) over the peer's 40 ms.
        let ratio = format!("{:.2}", r.workloads[0].ours_over_peer().unwrap());
        assert_eq!(ratio, "0.25");
        let text = text::render(&r);
        assert!(text.contains("Against the peers") && text.contains("PyTorch 9.9 eager") && text.contains(&ratio), "{text}");
        assert!(markdown::render(&r).contains(&format!("| 40.000 ms | 10.100 ms | {ratio} |")));
        let h = html::render(&r).unwrap();
        assert!(h.contains("<h2>Against the peers</h2>") && h.contains("PyTorch 9.9 eager") && h.contains(&format!(">{ratio}</td>")));
        assert_eq!(json::parse(&json::to_string(&r).unwrap()).unwrap(), r, "peers survive the JSON round trip");
    }

    #[test]
    fn html_is_self_contained() {
        let mut r = sample_report(1.0);
        r.comparison = Some(compare::compare(&sample_report(1.0), "base.json", &r, 10.0));
        let h = html::render(&r).unwrap();
        assert!(h.starts_with("<!DOCTYPE html>") && h.trim_end().ends_with("</html>"));
        assert!(h.matches("<svg").count() >= 2, "charts inlined");
        // No scripts, stylesheets, images or fonts from elsewhere (SVG's xmlns URI is a name, not a fetch).
        for external in ["<script", "<link", "<img", "src=", "url(", "@import"] {
            assert!(!h.contains(external), "{external} in the page");
        }
    }
}
