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
    /// Parity of reference fixtures on this report's device, in its precision mode (`harness
    /// parity -o`, attached with `bench --conformance` or `merge --conformance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conformance: Option<Conformance>,
    /// Serving scenarios (`bench -m serve`): single-stream percentiles, offline throughput,
    /// and the highest Poisson arrival rate whose p99 meets a bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<crate::bench::serve::ScenarioResult>,
}

/// Which fixtures pass, where and in which precision mode (`harness parity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conformance {
    /// "cpu" or "gpu".
    pub device_kind: String,
    pub device_name: String,
    /// "cpu", "metal" or "cuda".
    pub backend: String,
    /// "fp32" or "tf32".
    pub precision: String,
    pub mlx_version: String,
    /// One entry per fixture and variant.
    pub fixtures: Vec<FixtureConformance>,
}

impl Conformance {
    /// True when there is at least one fixture run and every one passed.
    pub fn pass(&self) -> bool {
        !self.fixtures.is_empty() && self.fixtures.iter().all(|f| f.pass)
    }

    /// Read a `harness parity -o` file, refusing one without fixtures.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let c: Conformance = serde_json::from_str(&text).with_context(|| format!("{} is not a `harness parity -o` file", path.display()))?;
        if c.fixtures.is_empty() {
            anyhow::bail!("{}: no fixture was checked", path.display());
        }
        Ok(c)
    }

    /// Refuse conformance from another configuration than the report's: parity on one
    /// device or precision says nothing of timings on another.
    pub fn check_matches(&self, meta: &Meta) -> anyhow::Result<()> {
        let precision = meta.precision.as_deref().unwrap_or("(not recorded)");
        for (what, ours, theirs) in [
            ("device", self.device_kind.as_str(), meta.device_kind.as_str()),
            ("backend", &self.backend, &meta.backend),
            ("device name", &self.device_name, &meta.device_name),
            ("precision mode", &self.precision, precision),
            ("MLX version", &self.mlx_version, &meta.mlx_version),
        ] {
            if ours != theirs {
                anyhow::bail!("the conformance results were made with {what} '{ours}', the timings with '{theirs}'; run parity in the timings' configuration");
            }
        }
        Ok(())
    }

    /// The same results without the individual checks (what a report embeds).
    pub fn summary(mut self) -> Self {
        for f in &mut self.fixtures {
            f.checks.clear();
        }
        self
    }
}

/// One fixture in one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureConformance {
    /// The fixture folder's name.
    pub fixture: String,
    pub model: String,
    pub seed: u64,
    /// The reference implementation and version, e.g. "transformers 5.24.0".
    pub reference: String,
    pub variant: String,
    pub pass: bool,
    /// Outputs checked.
    pub outputs: usize,
    /// Outputs out of tolerance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// Why the fixture could not be run at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The output that used the largest share of its tolerance (a failing one first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst: Option<crate::parity::Check>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::parity::Check>,
}

impl Conformance {
    /// "30 of 30 fixture runs pass on gpu (cuda, NVIDIA H200), precision fp32".
    pub fn headline(&self) -> String {
        let passed = self.fixtures.iter().filter(|f| f.pass).count();
        format!("{passed} of {} fixture runs pass on {} ({}, {}), precision {}, MLX {}", self.fixtures.len(), self.device_kind, self.backend, self.device_name, self.precision, self.mlx_version)
    }
}

impl FixtureConformance {
    fn name(dir: &std::path::Path) -> String {
        dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    pub fn from_checks(dir: &std::path::Path, m: &crate::parity::Manifest, variant: &str, checks: Vec<crate::parity::Check>) -> Self {
        // Failing first, then by share of tolerance used (exact mismatches count as over).
        let key = |c: &crate::parity::Check| (!c.pass, c.used.unwrap_or(if c.mismatches > 0 { f64::INFINITY } else { 0.0 }));
        let worst = checks.iter().max_by(|a, b| key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal)).cloned();
        FixtureConformance {
            fixture: Self::name(dir),
            model: m.model.clone(),
            seed: m.seed,
            reference: format!("{} {}", m.reference.package, m.reference.version),
            variant: variant.into(),
            pass: !checks.is_empty() && checks.iter().all(|c| c.pass),
            outputs: checks.len(),
            failed: checks.iter().filter(|c| !c.pass).map(|c| c.output.clone()).collect(),
            error: None,
            worst,
            checks,
        }
    }

    pub fn failed_to_run(dir: &std::path::Path, error: &str) -> Self {
        FixtureConformance {
            fixture: Self::name(dir),
            model: String::new(),
            seed: 0,
            reference: String::new(),
            variant: String::new(),
            pass: false,
            outputs: 0,
            failed: vec![],
            error: Some(error.into()),
            worst: None,
            checks: vec![],
        }
    }

    /// The worst output in words: "logits 3.1e-6 (31% of atol 1e-5, rtol 1e-4)".
    pub fn describe_worst(&self) -> String {
        let Some(c) = &self.worst else { return self.error.clone().unwrap_or_default() };
        let used = match c.used {
            Some(u) => format!("{:.0}% of {}", u * 100.0, c.tolerance.describe()),
            None if matches!(c.tolerance, crate::parity::Tolerance::Exact { .. }) => format!("{} differing, exact", c.mismatches),
            None => "non-finite".into(),
        };
        format!("{} max abs {:.2e} ({used})", c.output, c.max_abs)
    }
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
    /// The precision mode of float32 products: "fp32" or "tf32" (`--precision`; on the CPU
    /// always "fp32"). Absent in reports made before the mode was recorded, which ran in MLX's
    /// default: TF32 on CUDA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    /// The rate the device streamed weights at in a matrix-vector product at the start of a
    /// bench run (16384 x 16384 float32, best of five), bytes per second: the decode floors' basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bandwidth_bytes_per_s: Option<f64>,
    pub os: String,
    pub blas: String,
    /// How the host allocator was set for the run (`runtime::retain_freed_memory`); absent where
    /// it was left as the C library has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_allocator: Option<String>,
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
    /// How the variants' timed runs were ordered: "interleaved" (rounds of one run per variant,
    /// alternating which goes first) or "blocked" (each variant's warm-up and timed runs
    /// together, one variant after the other). Absent in older reports: interleaved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// With `bench --processes N` (N > 1): how many fresh processes ran every workload, their
    /// samples pooled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    /// For a report made by `harness merge`: each source report, its models and settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

impl Report {
    /// How this report was measured, in words: the precision mode and the order of the
    /// variants' runs (both change the medians on a GPU).
    pub fn method(&self) -> String {
        format!(
            "precision {}, variants {}{}",
            compare::precision_of(self),
            self.settings.order.as_deref().unwrap_or("interleaved"),
            self.settings.processes.filter(|n| *n > 1).map_or(String::new(), |n| format!(", samples pooled over {n} processes"))
        )
    }
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
    /// Decoding: bytes of weights one step must read (the decoder's matrices and output heads
    /// at their stored precision; cached cross-attention K/V and embedding rows left out),
    /// which bounds a step from below at the device's memory bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bytes_per_token: Option<f64>,
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
    /// Milliseconds per token (decode step), median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_per_token: Option<f64>,
    /// The weight-bandwidth floor of a step: `weight_bytes_per_token` at the measured read
    /// bandwidth (`meta.read_bandwidth_bytes_per_s`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_ms_per_token: Option<f64>,
}

impl Throughput {
    pub fn from_work(work: &Work, median_s: f64) -> Self {
        let per = |x: Option<f64>| x.map(|v| v / median_s);
        Throughput {
            realtime_factor: per(work.audio_seconds),
            tokens_per_s: per(work.tokens),
            items_per_s: per(work.items),
            ms_per_token: work.tokens.filter(|&t| t > 0.0).map(|t| 1e3 * median_s / t),
            floor_ms_per_token: None,
        }
    }
}

/// Fill every decoding result's floor per step from the weights it reads and `bandwidth`
/// (bytes per second).
pub fn fill_step_floors(workloads: &mut [WorkloadResult], bandwidth: Option<f64>) {
    for w in workloads {
        let floor = match (w.work.weight_bytes_per_token, bandwidth) {
            (Some(bytes), Some(bw)) if bw > 0.0 => Some(1e3 * bytes / bw),
            _ => None,
        };
        for v in w.variants.values_mut() {
            v.throughput.floor_ms_per_token = floor;
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
    /// With `bench --processes N`: each process's median, in order (`samples_s` pools them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub process_medians_s: Vec<f64>,
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
    /// The machine's one-minute load average before and after this workload's runs (where
    /// the OS reports one): a change says something else ran meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadChange {
    pub before: f64,
    pub after: f64,
}

impl LoadChange {
    /// A change of at least one busy core's worth.
    pub fn changed(&self) -> bool {
        (self.after - self.before).abs() >= 1.0
    }
}

/// The one-minute load average, where the OS reports one.
pub fn load_average() -> Option<f64> {
    let mut l = [0f64; 3];
    // SAFETY: getloadavg writes at most the 3 doubles it is given.
    let n = unsafe { libc::getloadavg(l.as_mut_ptr(), 3) };
    (n >= 1).then_some(l[0])
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
    /// The peer's precision mode, "fp32" or "tf32" (its TF32 switches; absent in older lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
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
    /// A row judged against the peer ran, but no peer time was measured (`--peers`).
    NoPeer,
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
        VariantResult {
            throughput: Throughput::from_work(&work, st.median),
            stats: st,
            samples_s: samples,
            memory: Memory { peak_bytes: 31 << 20, active_bytes: 12 << 20 },
            process_medians_s: vec![],
        }
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
            precision: Some("fp32".into()),
            cpu_model: "Test CPU".into(),
            read_bandwidth_bytes_per_s: None,
            cores: 2,
            memory_bytes: Some(24 << 30),
            os: "linux x86_64".into(),
            blas: "OpenBLAS 0.3.21".into(),
            host_allocator: None,
        },
        settings: Settings {
            quick: true,
            warmup: 1,
            iterations: 9,
            variants: vec!["naive".into(), "optimized".into()],
            models: vec!["blocks".into()],
            device: "cpu".into(),
            threshold_pct: 10.0,
            max_time_s: None,
            order: Some("interleaved".into()),
            processes: None,
            merged_from: vec![],
        },
        workloads: vec![WorkloadResult {
            load: None,
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
        conformance: None,
        scenarios: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_steps_are_reported_against_the_weight_bandwidth_floor() {
        let work = Work { tokens: Some(50.0), weight_bytes_per_token: Some(2e9), ..Work::default() };
        let t = Throughput::from_work(&work, 2.0);
        assert_eq!(t.ms_per_token, Some(40.0));
        let mut r = sample_report(1.0);
        r.workloads[0].work = work;
        fill_step_floors(&mut r.workloads, Some(4e12));
        // 2 GB at 4 TB/s: 0.5 ms.
        assert!(r.workloads[0].variants.values().all(|v| v.throughput.floor_ms_per_token == Some(0.5)));
        // Without a bandwidth, or without weights, there is no floor.
        fill_step_floors(&mut r.workloads, None);
        assert!(r.workloads[0].variants.values().all(|v| v.throughput.floor_ms_per_token.is_none()));
        assert_eq!(Throughput::from_work(&Work::default(), 1.0).ms_per_token, None);
    }

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
        r.workloads[0].peer = Some(Peer {
            name: "PyTorch 9.9 eager".into(),
            median_s: 0.040,
            samples_s: vec![0.04, 0.041, 0.039],
            precision: None,
            note: Some("same task".into()),
        });
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
