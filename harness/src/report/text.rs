//! The terminal table.
use std::fmt::Write;

use super::compare::{Comparison, Status};
use super::{format_bytes, format_duration, Report, TargetResult, Verdict};

fn pct(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.meta;
    let _ = writeln!(s, "MLX {} on {} ({}, class {}), {}", m.mlx_version, m.device_name, m.backend, m.device_class, m.os);
    let budget = r.settings.max_time_s.map_or(String::new(), |t| format!(" (fewer where a round exceeds the {t} s budget: see n)"));
    let _ = writeln!(s, "{}; warm-up {}, iterations {}{budget}{}", r.method(), r.settings.warmup, r.settings.iterations, if r.settings.quick { " (quick)" } else { "" });
    let _ = writeln!(s);
    if !r.workloads.is_empty() {
        let _ = writeln!(s, "{:<34} {:<10} {:>3} {:>11} {:>25} {:>10} {:>18}", "workload", "variant", "n", "median", "95% CI", "peak mem", "speedup (95% CI)");
    }
    for w in &r.workloads {
        let mut first = true;
        for (name, v) in &w.variants {
            let speed = match (&w.speedup, first) {
                (Some(sp), true) => format!("{:.2}x [{:.2}, {:.2}]", sp.estimate, sp.ci.low, sp.ci.high),
                _ => String::new(),
            };
            let ci = format!("[{}, {}]", format_duration(v.stats.median_ci.low), format_duration(v.stats.median_ci.high));
            let id = if first { w.id.as_str() } else { "" };
            let _ = writeln!(s, "{:<34} {:<10} {:>3} {:>11} {:>25} {:>10} {:>18}", id, name, v.stats.n, format_duration(v.stats.median), ci, format_bytes(v.memory.peak_bytes), speed);
            first = false;
        }
    }
    scenarios(&mut s, r);
    noise(&mut s, r);
    if !r.workloads.is_empty() {
        let _ = writeln!(s, "\nWhat ran:");
    }
    for w in &r.workloads {
        let _ = writeln!(s, "  {}: {}; input {}; timed: {}", w.id, w.info.size, w.info.input, w.info.timed);
        for (name, v) in w.variants.iter().filter(|(_, v)| v.process_medians_s.len() > 1) {
            let m: Vec<String> = v.process_medians_s.iter().map(|x| format_duration(*x)).collect();
            let _ = writeln!(s, "    {name}: per-process medians {}", m.join(", "));
        }
        if let Some(n) = &w.info.note {
            let _ = writeln!(s, "    note: {n}");
        }
        // Decoding: time per step against the weight-bandwidth floor.
        let steps: Vec<String> = w
            .variants
            .iter()
            .filter_map(|(name, v)| {
                let t = &v.throughput;
                let ms = t.ms_per_token?;
                Some(match t.floor_ms_per_token {
                    Some(f) => format!("{name} {ms:.2} ms ({:.1}x the floor)", ms / f),
                    None => format!("{name} {ms:.2} ms"),
                })
            })
            .collect();
        if !steps.is_empty() && w.work.weight_bytes_per_token.is_some() {
            let floor = w.variants.values().find_map(|v| v.throughput.floor_ms_per_token);
            let bytes = w.work.weight_bytes_per_token.unwrap_or(0.0) / f64::from(1 << 20);
            let _ = writeln!(
                s,
                "    per step: {}; floor {} ({bytes:.0} MiB of weights at {})",
                steps.join(", "),
                floor.map_or("unknown".into(), |f| format!("{f:.2} ms")),
                r.meta.read_bandwidth_bytes_per_s.map_or("an unmeasured bandwidth".into(), |b| format!("{:.1} GB/s measured", b / 1e9))
            );
        }
    }
    if r.workloads.iter().any(|w| w.peer.is_some()) {
        let _ = writeln!(s, "\nAgainst the peers, same machine (ours/peer: optimized median over the peer's; below 1, ours is faster):");
        let _ = writeln!(s, "  {:<34} {:>11} {:>11} {:>11} {:>10}  peer is", "workload", "peer", "naive", "optimized", "ours/peer");
        for w in &r.workloads {
            let Some(p) = &w.peer else { continue };
            let ours = |v: &str| w.variants.get(v).map_or("-".into(), |x| format_duration(x.stats.median));
            let ratio = w.ours_over_peer().map_or("-".into(), |x| format!("{x:.2}"));
            let _ = writeln!(s, "  {:<34} {:>11} {:>11} {:>11} {:>10}  {}", w.id, format_duration(p.median_s), ours("naive"), ours("optimized"), ratio, p.name);
        }
    }
    if !r.targets.is_empty() {
        let _ = writeln!(s, "\nTargets (device class {}):", m.device_class);
        let peers = r.targets.iter().any(|t| t.peer_s.is_some());
        let peer_head = if peers { format!(" {:>11} {:>9}", "peer", "ours/peer") } else { String::new() };
        let _ = writeln!(s, "  {:<28} {:<24} {:>11} {:>11} {:>13} {:>9}{peer_head}", "task", "model", "measured", "target", "verdict", "margin");
        for t in &r.targets {
            let verdict = match t.verdict {
                Verdict::Pass => "PASS",
                Verdict::Miss => "MISS",
                Verdict::NoTarget => "no target",
                Verdict::NotMeasured => "not measured",
                Verdict::NoPeer => "no peer",
            };
            let _ = writeln!(
                s,
                "  {:<28} {:<24} {:>11} {:>11} {:>13} {:>9}{}",
                t.task,
                t.model,
                t.measured_s.map_or("-".into(), format_duration),
                t.target_s.map_or("-".into(), format_duration),
                verdict,
                t.margin.map_or("-".into(), |m| format!("{m:.2}x")),
                if peers { peer_cells(t) } else { String::new() }
            );
        }
        if r.targets.iter().any(|t| t.verdict == Verdict::NoPeer) {
            let _ = writeln!(s, "  'no peer': on this device class a row's target is PyTorch's time on the same machine, measured in the same run:");
            let _ = writeln!(s, "  ./run-benchmarks.sh --targets --peers (scripts/setup-peers.sh makes the pinned PyTorch environment, once)");
        }
    }
    if let Some(c) = &r.conformance {
        let _ = writeln!(s, "\nConformance: {}", c.headline());
        for f in &c.fixtures {
            let _ = writeln!(s, "  {:<18} {:<10} {:<5} {}", f.fixture, f.variant, if f.pass { "pass" } else { "FAIL" }, f.describe_worst());
        }
    }
    if let Some(c) = &r.comparison {
        s.push('\n');
        s.push_str(&render_comparison(c));
    }
    s
}

/// The peer's median and our time over it, for a targets row.
fn peer_cells(t: &TargetResult) -> String {
    let ratio = t.ours_over_peer().map_or("-".into(), |x| format!("{x:.2}"));
    format!(" {:>11} {:>9}", t.peer_s.map_or("-".into(), format_duration), ratio)
}

/// The comparison section alone (also what `harness compare` prints).
pub fn render_comparison(c: &Comparison) -> String {
    let mut s = String::new();
    {
        let _ = writeln!(s, "Against baseline {} ({}), threshold {}%:", c.baseline, c.baseline_time, c.threshold_pct);
        for d in &c.deltas {
            let tag = match d.status {
                Status::Regression => "REGRESSION",
                Status::Improvement => "improvement",
                Status::Unchanged => "unchanged",
            };
            let _ = writeln!(
                s,
                "  {:<34} {:<10} {:>11} -> {:>11}  {:>8} [{}, {}]  {}",
                d.workload,
                d.variant,
                format_duration(d.baseline_median_s),
                format_duration(d.current_median_s),
                pct(d.change.ratio),
                pct(d.change.ci.low),
                pct(d.change.ci.high),
                tag
            );
        }
        for m in &c.missing {
            let _ = writeln!(s, "  {m}: in the baseline, not measured now");
        }
    }
    s
}

/// Noise warnings: outliers by criterion's rule, a coefficient of variation above 5%, and a
/// load average that moved during a workload; one line saying so when there are none.
/// The serving scenarios' section: latency percentiles, offline throughput, the server's
/// highest rate within its bound and each of its trials.
fn scenarios(s: &mut String, r: &Report) {
    if r.scenarios.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nServing scenarios (single-stream: queries back to back; offline: one batch; server: Poisson arrivals, one worker batching what waits):");
    let _ = writeln!(s, "{:<30} {:<10} {:>10} {:>10} {:>10} {:>16} {:>24}", "scenario", "variant", "p50", "p90", "p99", "offline", "server max rate (p99 <)");
    for c in &r.scenarios {
        let l = &c.single_stream;
        let server = match c.server.max_rate_per_s {
            Some(q) => format!("{q:.2}/s ({})", format_duration(c.server.latency_bound_s)),
            None => format!("none ({})", format_duration(c.server.latency_bound_s)),
        };
        let _ = writeln!(
            s,
            "{:<30} {:<10} {:>10} {:>10} {:>10} {:>16} {:>24}",
            c.id,
            c.variant,
            format_duration(l.p50_s),
            format_duration(l.p90_s),
            format_duration(l.p99_s),
            format!("{:.2}/s (x{})", c.offline.queries_per_s, c.offline.batch),
            server
        );
    }
    for c in &r.scenarios {
        let _ = writeln!(
            s,
            "  {} {}: {} single-stream queries; offline {} runs of {}; server bound {} ({}), batches up to {}, {} queries a trial:",
            c.id,
            c.variant,
            c.single_stream.n,
            c.offline.runs,
            c.offline.batch,
            format_duration(c.server.latency_bound_s),
            c.server.bound_from,
            c.server.max_batch,
            c.server.queries_per_trial
        );
        for t in &c.server.trials {
            let _ = writeln!(
                s,
                "    {:>8.2} queries/s (offered {:.2}): p50 {}, p99 {}, mean batch {:.1}: {}",
                t.target_rate_per_s,
                t.offered_rate_per_s,
                format_duration(t.latencies.p50_s),
                format_duration(t.latencies.p99_s),
                t.mean_batch,
                if t.pass { "within" } else { "over" }
            );
        }
    }
}

fn noise(s: &mut String, r: &Report) {
    let lines = noise_lines(r);
    if lines.is_empty() {
        let _ = writeln!(s, "\nNoise: no outliers (criterion's rule), every coefficient of variation under 5%, the load steady.");
    } else {
        let _ = writeln!(s, "\nNoise (outliers by criterion's rule; a coefficient of variation above 5%; load changes):");
        for l in lines {
            let _ = writeln!(s, "  {l}");
        }
    }
}

/// One warning per noisy variant or load change (see [`noise`]), for the text and HTML reports.
pub fn noise_lines(r: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for w in &r.workloads {
        for (name, v) in &w.variants {
            let (o, cv) = (&v.stats.outliers, v.stats.cv);
            let mut what = Vec::new();
            if o.total() > 0 {
                what.push(format!("{} outlier(s) of {} ({} severe; {} low, {} high)", o.total(), v.stats.n, o.low_severe + o.high_severe, o.low_mild + o.low_severe, o.high_mild + o.high_severe));
            }
            if cv > 0.05 {
                what.push(format!("coefficient of variation {:.0}%", 100.0 * cv));
            }
            if !what.is_empty() {
                lines.push(format!("{} {name}: {}", w.id, what.join(", ")));
            }
        }
        if let Some(l) = w.load.filter(|l| l.changed()) {
            lines.push(format!("{}: the load average moved from {:.1} to {:.1} during its runs (something else ran)", w.id, l.before, l.after));
        }
    }
    lines
}
