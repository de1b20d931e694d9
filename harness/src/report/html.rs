//! One self-contained HTML page: tables plus SVG charts drawn by plotters and inlined. No
//! scripts, fonts or other network assets.
use std::fmt::Write;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::compare::Status;
use super::{format_bytes, format_duration, Report, Verdict};

const NAIVE: RGBColor = RGBColor(0xd9, 0x5f, 0x02);
const OPTIMIZED: RGBColor = RGBColor(0x1b, 0x9e, 0x77);
const OTHER: RGBColor = RGBColor(0x75, 0x70, 0xb3);

/// `s` safe inside HTML text and double-quoted attributes.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One bar of a grouped bar chart, with an optional interval whisker.
struct Bar {
    series: String,
    value: f64,
    whisker: Option<(f64, f64)>,
    color: RGBColor,
}

/// Grouped bars (one group per label), values in `unit`, drawn to an SVG string.
fn bar_chart(title: &str, unit: &str, groups: &[(String, Vec<Bar>)]) -> Result<String> {
    let mut svg = String::new();
    let width = (220 + 90 * groups.iter().map(|g| g.1.len().max(1)).sum::<usize>()).clamp(480, 1400) as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (width, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
        let ymax = groups.iter().flat_map(|g| g.1.iter()).map(|b| b.whisker.map_or(b.value, |w| w.1.max(b.value))).fold(0.0f64, f64::max).max(1e-12) * 1.15;
        let n = groups.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(|e| anyhow!("chart: {e}"))?;
        let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-6 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(unit)
            .draw()
            .map_err(|e| anyhow!("chart: {e}"))?;
        let mut legend: Vec<(String, RGBColor)> = Vec::new();
        for (gi, (_, bars)) in groups.iter().enumerate() {
            let k = bars.len().max(1) as f64;
            let w = 0.8 / k;
            for (bi, b) in bars.iter().enumerate() {
                let x0 = gi as f64 + 0.1 + bi as f64 * w;
                chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x0 + w * 0.9, b.value)], b.color.filled()))).map_err(|e| anyhow!("chart: {e}"))?;
                if let Some((lo, hi)) = b.whisker {
                    let xc = x0 + w * 0.45;
                    chart.draw_series(std::iter::once(ErrorBar::new_vertical(xc, lo, b.value, hi, BLACK.stroke_width(1), 8))).map_err(|e| anyhow!("chart: {e}"))?;
                }
                if !legend.iter().any(|(s, _)| *s == b.series) {
                    legend.push((b.series.clone(), b.color));
                }
            }
        }
        for (name, color) in legend {
            chart
                .draw_series(std::iter::once(Rectangle::new([(0.0, 0.0), (0.0, 0.0)], color.filled())))
                .map_err(|e| anyhow!("chart: {e}"))?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).position(SeriesLabelPosition::UpperRight).draw().map_err(|e| anyhow!("chart: {e}"))?;
        root.present().map_err(|e| anyhow!("chart: {e}"))?;
    }
    Ok(svg)
}

fn color_of(variant: &str) -> RGBColor {
    match variant {
        "naive" => NAIVE,
        "optimized" => OPTIMIZED,
        _ => OTHER,
    }
}

/// Seconds to the most readable of s/ms/µs for a set of values.
fn scale_for(max_s: f64) -> (f64, &'static str) {
    if max_s >= 1.0 {
        (1.0, "seconds")
    } else if max_s >= 1e-3 {
        (1e3, "milliseconds")
    } else {
        (1e6, "microseconds")
    }
}

/// The serving scenarios: one summary row per scenario and variant, then each server trial.
fn scenarios(h: &mut String, r: &Report) {
    if r.scenarios.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<h2>Serving scenarios</h2><p>Single-stream: queries one after another, latency percentiles. Offline: one batch, throughput. Server: queries arriving as a Poisson process, one worker serving in arrival order and batching whatever waits; the highest arrival rate whose p99 latency (arrival to result) meets the bound, bisected between zero and the offline throughput.</p>\
         <table><tr><th>scenario</th><th>variant</th><th>queries</th><th>p50</th><th>p90</th><th>p99</th><th>offline</th><th>server bound (p99)</th><th>server max rate</th></tr>"
    );
    for c in &r.scenarios {
        let l = &c.single_stream;
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2} queries/s (batch {})</td><td>{} ({})</td><td class=\"{}\">{}</td></tr>",
            esc(&c.id),
            esc(&c.variant),
            l.n,
            format_duration(l.p50_s),
            format_duration(l.p90_s),
            format_duration(l.p99_s),
            c.offline.queries_per_s,
            c.offline.batch,
            format_duration(c.server.latency_bound_s),
            esc(&c.server.bound_from),
            if c.server.max_rate_per_s.is_some() { "pass" } else { "miss" },
            c.server.max_rate_per_s.map_or("none met the bound".into(), |q| format!("{q:.2} queries/s"))
        );
    }
    let _ =
        writeln!(h, "</table><table><tr><th>scenario</th><th>variant</th><th>target rate</th><th>offered</th><th>p50</th><th>p90</th><th>p99</th><th>mean batch</th><th>within the bound</th></tr>");
    for c in &r.scenarios {
        for t in &c.server.trials {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.2}/s</td><td>{:.2}/s</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td class=\"{}\">{}</td></tr>",
                esc(&c.id),
                esc(&c.variant),
                t.target_rate_per_s,
                t.offered_rate_per_s,
                format_duration(t.latencies.p50_s),
                format_duration(t.latencies.p90_s),
                format_duration(t.latencies.p99_s),
                t.mean_batch,
                if t.pass { "pass" } else { "miss" },
                if t.pass { "yes" } else { "no" }
            );
        }
    }
    let _ = writeln!(h, "</table>");
}

pub fn render(r: &Report) -> Result<String> {
    let m = &r.meta;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Benchmark report: {}</title>\n<style>\
         body{{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         .pass{{color:#1b7837;font-weight:bold}}.miss{{color:#b2182b;font-weight:bold}}.muted{{color:#777}}\
         .chart svg{{max-width:100%;height:auto}}</style></head><body>\n",
        esc(&m.device_name)
    );
    let _ = writeln!(h, "<h1>Benchmark report</h1>");
    let _ = writeln!(
        h,
        "<p>{} · MLX {} · {} ({}, device class <b>{}</b>) · {} · {} cores{} · BLAS: {}{}<br>commit {}{}{} · harness {} · <b>{}</b> · warm-up {}, iterations {}{}</p>",
        esc(&m.time),
        esc(&m.mlx_version),
        esc(&m.device_name),
        esc(&m.backend),
        esc(&m.device_class),
        esc(&m.cpu_model),
        m.cores,
        m.memory_bytes.map_or(String::new(), |b| format!(", {}", format_bytes(b))),
        esc(&m.blas),
        m.host_allocator.as_deref().map_or(String::new(), |a| format!(" · host allocator: {}", esc(a))),
        esc(m.git_commit.as_deref().unwrap_or("unknown")),
        if m.git_dirty == Some(true) { " (dirty)" } else { "" },
        match &m.build_commit {
            Some(b) if m.git_commit.as_ref() != Some(b) => format!(" · binary built from {}", esc(b)),
            _ => String::new(),
        },
        esc(&m.harness_version),
        esc(&r.method()),
        r.settings.warmup,
        r.settings.iterations,
        if r.settings.quick { " (quick)" } else { "" }
    );

    if !r.settings.merged_from.is_empty() {
        let _ = writeln!(
            h,
            "<p>Merged from {} runs on this machine:</p><ul>{}</ul>",
            r.settings.merged_from.len(),
            r.settings.merged_from.iter().map(|s| format!("<li>{}</li>", esc(s))).collect::<String>()
        );
    }

    if let Some(c) = &r.conformance {
        let cls = if c.pass() { "pass" } else { "miss" };
        let _ = writeln!(h, "<h2>Conformance</h2><p class=\"{cls}\">{}</p><table><tr><th>fixture</th><th>model</th><th>reference</th><th>variant</th><th>result</th><th>worst output (share of its tolerance)</th></tr>", esc(&c.headline()));
        for f in &c.fixtures {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                esc(&f.fixture),
                esc(&f.model),
                esc(&f.reference),
                esc(&f.variant),
                if f.pass { "pass" } else { "miss" },
                if f.pass { "pass" } else { "FAIL" },
                esc(&f.describe_worst())
            );
        }
        let _ = writeln!(h, "</table>");
    }

    // Summary table.
    let _ = writeln!(
        h,
        "<h2>Summary</h2><table><tr><th>workload</th><th>variant</th><th>median</th><th>95% CI of median</th><th>min</th><th>max</th><th>std dev</th><th>throughput</th><th>speedup (95% CI)</th></tr>"
    );
    for w in &r.workloads {
        for (name, v) in &w.variants {
            let t = &v.throughput;
            let per_step = t.ms_per_token.filter(|_| w.work.weight_bytes_per_token.is_some()).map(|ms| match t.floor_ms_per_token {
                Some(f) => format!("{ms:.2} ms/step, {:.1}x the {f:.2} ms weight-bandwidth floor", ms / f),
                None => format!("{ms:.2} ms/step"),
            });
            let thr = [t.realtime_factor.map(|x| format!("{x:.1}x real time")), t.tokens_per_s.map(|x| format!("{x:.1} tokens/s")), t.items_per_s.map(|x| format!("{x:.1} items/s")), per_step]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            let sp = match (&w.speedup, name.as_str()) {
                (Some(s), "optimized") => format!("{:.2}x [{:.2}, {:.2}]", s.estimate, s.ci.low, s.ci.high),
                _ => String::new(),
            };
            let st = &v.stats;
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{name}</td><td>{}</td><td>{} – {}</td><td>{}</td><td>{}</td><td>{}</td><td>{thr}</td><td>{sp}</td></tr>",
                esc(&w.id),
                format_duration(st.median),
                format_duration(st.median_ci.low),
                format_duration(st.median_ci.high),
                format_duration(st.min),
                format_duration(st.max),
                format_duration(st.std_dev)
            );
        }
    }
    let _ = writeln!(h, "</table>");
    let noisy = super::text::noise_lines(r);
    if noisy.is_empty() {
        let _ = writeln!(h, "<p>Noise: no outliers (criterion's rule), every coefficient of variation under 5%, the load steady.</p>");
    } else {
        let _ = writeln!(h, "<p>Noise (outliers by criterion's rule; a coefficient of variation above 5%; load changes):</p><ul>");
        for l in noisy {
            let _ = writeln!(h, "<li>{}</li>", esc(&l));
        }
        let _ = writeln!(h, "</ul>");
    }

    scenarios(&mut h, r);

    // Naive vs optimized, per model.
    let mut models: Vec<&str> = r.workloads.iter().map(|w| w.model.as_str()).collect();
    models.dedup();
    let _ = writeln!(h, "<h2>Naive versus optimized</h2>");
    for model in models {
        let ws: Vec<_> = r.workloads.iter().filter(|w| w.model == model).collect();
        let max = ws.iter().flat_map(|w| w.variants.values()).map(|v| v.stats.median_ci.high).fold(0.0, f64::max);
        let (k, unit) = scale_for(max);
        let groups: Vec<(String, Vec<Bar>)> = ws
            .iter()
            .map(|w| {
                let label = w.id.split_once('/').map_or(w.id.as_str(), |x| x.1).to_string();
                let bars = w
                    .variants
                    .iter()
                    .map(|(n, v)| Bar {
                        series: n.clone(),
                        value: v.stats.median * k,
                        whisker: Some((v.stats.median_ci.low * k, v.stats.median_ci.high * k)),
                        color: color_of(n),
                    })
                    .collect();
                (label, bars)
            })
            .collect();
        let svg = bar_chart(&format!("{model}: median time, 95% CI whiskers"), unit, &groups)?;
        let _ = writeln!(h, "<h3>{}</h3><div class=\"chart\">{svg}</div>", esc(model));
        // Speedups put workloads of very different durations on one readable scale.
        let speedups: Vec<(String, Vec<Bar>)> = ws
            .iter()
            .filter_map(|w| {
                let sp = w.speedup.as_ref()?;
                let label = w.id.split_once('/').map_or(w.id.as_str(), |x| x.1).to_string();
                let color = if sp.ci.low > 1.0 {
                    OPTIMIZED
                } else if sp.ci.high < 1.0 {
                    NAIVE
                } else {
                    OTHER
                };
                Some((
                    label,
                    vec![Bar {
                        series: "optimized speedup".into(),
                        value: sp.estimate,
                        whisker: Some((sp.ci.low, sp.ci.high)),
                        color,
                    }],
                ))
            })
            .collect();
        if !speedups.is_empty() {
            let svg = bar_chart(&format!("{model}: speedup, naive / optimized time, 95% CI"), "speedup (x, above 1: optimized faster)", &speedups)?;
            let _ = writeln!(h, "<div class=\"chart\">{svg}</div>");
        }
        let _ = writeln!(h, "<ul>");
        for w in &ws {
            let _ = writeln!(
                h,
                "<li><b>{}</b>: {}; input {}; timed: {}{}</li>",
                esc(&w.id),
                esc(&w.info.size),
                esc(&w.info.input),
                esc(&w.info.timed),
                w.info.note.as_ref().map_or(String::new(), |n| format!(" <i>({})</i>", esc(n)))
            );
        }
        let _ = writeln!(h, "</ul>");
    }

    // Peers.
    let with_peer: Vec<_> = r.workloads.iter().filter(|w| w.peer.is_some()).collect();
    if !with_peer.is_empty() {
        let _ = writeln!(h, "<h2>Against the peers</h2><p>The incumbent's time for the same task on the same machine (<code>scripts/peers/</code>): same sizes, inputs, decode lengths and dtype. ours/peer is our optimized median over the peer's: below 1, ours is faster.</p>");
        let _ = writeln!(h, "<table><tr><th>workload</th><th>peer</th><th>peer median</th><th>peer runs</th><th>ours naive</th><th>ours optimized</th><th>ours/peer</th><th>peer note</th></tr>");
        for w in &with_peer {
            let Some(p) = &w.peer else { continue };
            let ours = |v: &str| w.variants.get(v).map_or("-".into(), |x| format_duration(x.stats.median));
            let ratio = w.ours_over_peer().unwrap_or(f64::NAN);
            let cls = if ratio <= 1.0 { "pass" } else { "miss" };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td style=\"text-align:left\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{cls}\">{ratio:.2}</td><td style=\"text-align:left\">{}</td></tr>",
                esc(&w.id),
                esc(&p.name),
                format_duration(p.median_s),
                p.samples_s.len(),
                ours("naive"),
                ours("optimized"),
                esc(p.note.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(h, "</table>");
        let groups: Vec<(String, Vec<Bar>)> = with_peer
            .iter()
            .filter_map(|w| {
                let x = w.ours_over_peer()?;
                let label = w.id.split_once('/').map_or(w.id.as_str(), |x| x.1).to_string();
                Some((
                    label,
                    vec![Bar {
                        series: "ours / peer".into(),
                        value: x,
                        whisker: None,
                        color: if x <= 1.0 { OPTIMIZED } else { NAIVE },
                    }],
                ))
            })
            .collect();
        let svg = bar_chart("Our time over the peer's (below 1: ours is faster)", "ours / peer", &groups)?;
        let _ = writeln!(h, "<div class=\"chart\">{svg}</div>");
    }

    // Targets.
    let peer_cols = r.targets.iter().any(|t| t.peer_s.is_some());
    let _ = writeln!(
        h,
        "<h2>Targets (device class {})</h2><table><tr><th>task</th><th>model</th><th>input</th><th>measured</th><th>target</th><th>verdict</th><th>margin</th>{}</tr>",
        esc(&m.device_class),
        if peer_cols { "<th>peer</th><th>ours/peer</th>" } else { "" }
    );
    for t in &r.targets {
        let (cls, txt) = match t.verdict {
            Verdict::Pass => ("pass", "PASS"),
            Verdict::Miss => ("miss", "MISS"),
            Verdict::NoTarget => ("muted", "no target"),
            Verdict::NotMeasured => ("muted", "not measured"),
            Verdict::NoPeer => ("muted", "no peer"),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{cls}\">{txt}</td><td>{}</td>{}</tr>",
            esc(&t.task),
            esc(&t.model),
            esc(&t.input),
            t.measured_s.map_or("-".into(), format_duration),
            t.target_s.map_or("-".into(), format_duration),
            t.margin.map_or("-".into(), |x| format!("{x:.2}x")),
            if peer_cols {
                let ratio = t.ours_over_peer().map_or("-".into(), |x| format!("{x:.2}"));
                format!("<td>{}</td><td>{ratio}</td>", t.peer_s.map_or("-".into(), format_duration))
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(h, "</table>");
    let measured: Vec<_> = r.targets.iter().filter(|t| t.target_s.is_some() && t.measured_s.is_some()).collect();
    if !measured.is_empty() {
        let groups: Vec<(String, Vec<Bar>)> = measured
            .iter()
            .map(|t| {
                let (tg, ms) = (t.target_s.unwrap_or(0.0), t.measured_s.unwrap_or(0.0));
                (
                    t.model.clone(),
                    vec![Bar {
                        series: "measured / target".into(),
                        value: ms / tg,
                        whisker: None,
                        color: if ms <= tg { OPTIMIZED } else { NAIVE },
                    }],
                )
            })
            .collect();
        let svg = bar_chart("Measured time as a fraction of the target (below 1 passes)", "measured / target", &groups)?;
        let _ = writeln!(h, "<div class=\"chart\">{svg}</div>");
    } else {
        let _ = writeln!(h, "<p class=\"muted\">No target applies to this device class, or none of the target workloads ran.</p>");
    }

    // Comparison.
    if let Some(c) = &r.comparison {
        let _ = writeln!(
            h,
            "<h2>Against baseline {}</h2><p>baseline from {} (commit {}), regression threshold {}%.</p>",
            esc(&c.baseline),
            esc(&c.baseline_time),
            esc(c.baseline_commit.as_deref().unwrap_or("unknown")),
            c.threshold_pct
        );
        let _ = writeln!(h, "<table><tr><th>workload</th><th>variant</th><th>baseline</th><th>now</th><th>change</th><th>95% CI</th><th>status</th></tr>");
        for d in &c.deltas {
            let (cls, txt) = match d.status {
                Status::Regression => ("miss", "regression"),
                Status::Improvement => ("pass", "improvement"),
                Status::Unchanged => ("muted", "unchanged"),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.1}%</td><td>{:+.1}% – {:+.1}%</td><td class=\"{cls}\">{txt}</td></tr>",
                esc(&d.workload),
                esc(&d.variant),
                format_duration(d.baseline_median_s),
                format_duration(d.current_median_s),
                (d.change.ratio - 1.0) * 100.0,
                (d.change.ci.low - 1.0) * 100.0,
                (d.change.ci.high - 1.0) * 100.0
            );
        }
        let _ = writeln!(h, "</table>");
        let groups: Vec<(String, Vec<Bar>)> = c
            .deltas
            .iter()
            .map(|d| {
                let label = format!("{} {}", d.workload.split_once('/').map_or(d.workload.as_str(), |x| x.1), d.variant);
                (
                    label,
                    vec![Bar {
                        series: "now / baseline".into(),
                        value: d.change.ratio,
                        whisker: Some((d.change.ci.low, d.change.ci.high)),
                        color: if d.status == Status::Regression { NAIVE } else { OTHER },
                    }],
                )
            })
            .collect();
        if !groups.is_empty() {
            let svg = bar_chart("Median now / baseline (above 1 is slower), 95% CI", "ratio", &groups)?;
            let _ = writeln!(h, "<div class=\"chart\">{svg}</div>");
        }
    }

    // Memory.
    let _ = writeln!(h, "<h2>Memory (MLX, peak reset before each variant)</h2><table><tr><th>workload</th><th>variant</th><th>peak</th><th>active after</th></tr>");
    for w in &r.workloads {
        for (name, v) in &w.variants {
            let _ = writeln!(h, "<tr><td>{}</td><td>{name}</td><td>{}</td><td>{}</td></tr>", esc(&w.id), format_bytes(v.memory.peak_bytes), format_bytes(v.memory.active_bytes));
        }
    }
    let _ = writeln!(h, "</table>\n</body></html>");
    Ok(h)
}
