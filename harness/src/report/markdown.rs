//! The Markdown summary written to `GITHUB_STEP_SUMMARY`.
use std::fmt::Write;

use super::compare::Status;
use super::{format_duration, Report, Verdict};

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.meta;
    let _ = writeln!(s, "## Benchmarks: {} ({}, MLX {}; {})\n", m.device_name, m.device_class, m.mlx_version, r.method());
    let _ = writeln!(s, "| workload | variant | median | 95% CI | speedup |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|");
    for w in &r.workloads {
        for (name, v) in &w.variants {
            let sp = match (&w.speedup, name.as_str()) {
                (Some(sp), "optimized") => format!("{:.2}x [{:.2}, {:.2}]", sp.estimate, sp.ci.low, sp.ci.high),
                _ => String::new(),
            };
            let _ = writeln!(s, "| `{}` | {name} | {} | {} – {} | {sp} |", w.id, format_duration(v.stats.median), format_duration(v.stats.median_ci.low), format_duration(v.stats.median_ci.high));
        }
    }
    if r.workloads.iter().any(|w| w.peer.is_some()) {
        let _ = writeln!(s, "\n### Against the peers (same machine)\n\n| workload | peer | peer median | ours (optimized) | ours/peer |\n|---|---|---:|---:|---:|");
        for w in r.workloads.iter().filter(|w| w.peer.is_some()) {
            let Some(p) = &w.peer else { continue };
            let ours = w.ours().map_or("-".into(), |v| format_duration(v.stats.median));
            let ratio = w.ours_over_peer().map_or("-".into(), |x| format!("{x:.2}"));
            let _ = writeln!(s, "| `{}` | {} | {} | {ours} | {ratio} |", w.id, p.name, format_duration(p.median_s));
        }
    }
    if r.targets.iter().any(|t| t.verdict != Verdict::NoTarget) {
        let _ = writeln!(s, "\n### Targets\n\n| task | measured | target | verdict | margin | peer |\n|---|---:|---:|---|---:|---:|");
        for t in &r.targets {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:?} | {} | {} |",
                t.task,
                t.measured_s.map_or("-".into(), format_duration),
                t.target_s.map_or("-".into(), format_duration),
                t.verdict,
                t.margin.map_or("-".into(), |m| format!("{m:.2}x")),
                t.peer_s.map_or("-".into(), format_duration)
            );
        }
    }
    if let Some(c) = &r.conformance {
        let _ = writeln!(s, "\n### Conformance: {}\n\n| fixture | variant | result | worst output |\n|---|---|---|---|", c.headline());
        for f in &c.fixtures {
            let _ = writeln!(s, "| {} | {} | {} | {} |", f.fixture, f.variant, if f.pass { "pass" } else { "**FAIL**" }, f.describe_worst());
        }
    }
    if let Some(c) = &r.comparison {
        let reg = c.regressions().count();
        let _ = writeln!(s, "\n### Against `{}` (threshold {}%): {}\n", c.baseline, c.threshold_pct, if reg > 0 { format!("**{reg} regression(s)**") } else { "no regressions".into() });
        let _ = writeln!(s, "| workload | variant | baseline | now | change (95% CI) | status |\n|---|---|---:|---:|---:|---|");
        for d in &c.deltas {
            let st = match d.status {
                Status::Regression => "**regression**",
                Status::Improvement => "improvement",
                Status::Unchanged => "unchanged",
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {:+.1}% [{:+.1}%, {:+.1}%] | {st} |",
                d.workload,
                d.variant,
                format_duration(d.baseline_median_s),
                format_duration(d.current_median_s),
                (d.change.ratio - 1.0) * 100.0,
                (d.change.ci.low - 1.0) * 100.0,
                (d.change.ci.high - 1.0) * 100.0
            );
        }
    }
    s
}
