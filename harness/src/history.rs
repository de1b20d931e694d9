//! `harness history`: bench reports over many commits, as asv and bencher keep them. Reports are
//! filed into a folder by machine and commit (`harness record`, `bench --record`); `history`
//! reads such a folder, draws each workload's median with its interval per machine, finds the
//! commits where a step happened, and prints a summary for CI logs.
//!
//! Steps are found by binary segmentation: in a run of reports, the split that explains most of
//! the variation of the reports' log medians is a step when the regression gate of `--compare`
//! would flag the change between its two sides (the whole 95% interval of the ratio of the
//! pooled samples' medians beyond the threshold, and their distribution-free intervals apart),
//! and when every report's median on one side lies beyond every one on the other by the
//! threshold too (runs of one commit vary between processes more than a report's own interval
//! shows). Both sides are then searched again. A side must hold two reports, except the oldest
//! or the newest, so one noisy run in the middle is not read as two steps.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::report::html::esc;
use crate::report::{compare, json, Report};
use crate::stats;

#[derive(clap::Args, Debug)]
#[command(after_help = "Reports of different machines (device class, device, cores, backend, precision) are never drawn in one \
line. Within a machine, reports are ordered by the time they were measured: record commits oldest first. Exit status: 0, or 3 \
when --fail-on-regression is given and the newest report sits after a step that made something slower.")]
pub struct Args {
    /// History folders (as `harness record` fills them) or report files; folders are searched
    /// recursively for *.json bench reports. Files that are not bench reports are listed and
    /// skipped.
    #[arg(required = true, value_name = "DIR|REPORT")]
    inputs: Vec<PathBuf>,
    /// Write the HTML page of trends here.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Write the series and the steps found as JSON here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Smallest change, in percent, that counts as a step (as `bench --threshold`).
    #[arg(long, default_value_t = 10.0, value_parser = crate::bench::parse_threshold, value_name = "PCT")]
    threshold: f64,
    /// Exit 3 when the newest report of a machine follows a step that made a workload slower.
    #[arg(long)]
    fail_on_regression: bool,
}

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// The history folder; each report goes to FOLDER/MACHINE/TIME-COMMIT.json.
    #[arg(long, value_name = "DIR")]
    into: PathBuf,
    /// Bench reports (`bench -o`) to file.
    #[arg(required = true, value_name = "REPORT")]
    reports: Vec<PathBuf>,
}

/// What makes two reports comparable: the same device, cores, backend and precision mode.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Machine {
    pub device_class: String,
    pub device_name: String,
    pub cores: usize,
    pub backend: String,
    pub precision: String,
}

impl Machine {
    pub fn of(r: &Report) -> Self {
        let m = &r.meta;
        Machine {
            device_class: m.device_class.clone(),
            device_name: m.device_name.clone(),
            cores: m.cores,
            backend: m.backend.clone(),
            precision: crate::report::compare::precision_of(r).split_whitespace().next().unwrap_or("fp32").to_string(),
        }
    }

    pub fn label(&self) -> String {
        format!("{} ({}, {} cores, {}, {})", self.device_name, self.device_class, self.cores, self.backend, self.precision)
    }

    /// A folder name: lowercase letters, digits and dashes only.
    pub fn slug(&self) -> String {
        slug(&format!("{}-{}-{}c-{}-{}", self.device_class, self.device_name, self.cores, self.backend, self.precision))
    }
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(100).collect()
}

/// The file name a report is recorded under: its UTC time, then its commit (with `-dirty` for
/// an uncommitted tree), so a folder lists in time order.
pub fn record_name(r: &Report) -> String {
    let time: String = r.meta.time.chars().filter(|c| c.is_ascii_alphanumeric()).take(15).collect();
    let commit: String = r.meta.git_commit.as_deref().unwrap_or("nocommit").chars().filter(char::is_ascii_hexdigit).take(12).collect();
    let commit = if commit.is_empty() { "nocommit".to_string() } else { commit };
    let dirty = if r.meta.git_dirty == Some(true) { "-dirty" } else { "" };
    format!("{time}-{commit}{dirty}.json")
}

/// File `report` into the history folder `into`; returns the path.
/// An existing file of that name is left alone (an error unless it is the same report).
pub fn record(report: &Report, into: &Path) -> Result<PathBuf> {
    let dir = into.join(Machine::of(report).slug());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(record_name(report));
    let text = json::to_string(report)?;
    if path.exists() {
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if old == text {
            return Ok(path);
        }
        bail!("{} already holds another report measured at the same time on the same commit; nothing was overwritten", path.display());
    }
    json::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// `harness record --into DIR REPORT...`.
pub fn run_record(args: &RecordArgs) -> Result<std::process::ExitCode> {
    // Read every report before filing any, so a bad one leaves the folder as it was.
    let reports: Vec<Report> = args.reports.iter().map(|p| json::read(p)).collect::<Result<_>>()?;
    for (r, src) in reports.iter().zip(&args.reports) {
        let path = record(r, &args.into)?;
        println!("{} -> {}", src.display(), path.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// One report's result for one workload and variant.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub time: String,
    pub commit: Option<String>,
    pub dirty: bool,
    pub median_s: f64,
    pub ci: stats::Interval,
    #[serde(skip)]
    pub samples: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Index of the first point after the step.
    pub at: usize,
    /// The last commit before and the first after: the step happened in between.
    pub last_before: Option<String>,
    pub first_after: Option<String>,
    /// Median after over median before (pooled samples of the two sides), with its interval.
    pub ratio: f64,
    pub ci: stats::Interval,
}

impl Step {
    pub fn slower(&self) -> bool {
        self.ratio > 1.0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub workload: String,
    pub variant: String,
    pub points: Vec<Point>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineHistory {
    pub machine: Machine,
    pub reports: usize,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub threshold_pct: f64,
    pub machines: Vec<MachineHistory>,
    /// Files that were not usable bench reports, with why.
    pub skipped: Vec<(String, String)>,
}

fn collect_files(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p).with_context(|| format!("cannot read folder {}", p.display()))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                collect_files(&e, out)?;
            } else if e.extension().is_some_and(|x| x == "json") {
                out.push(e);
            }
        }
        Ok(())
    } else if p.is_file() {
        out.push(p.to_path_buf());
        Ok(())
    } else {
        bail!("{} does not exist", p.display())
    }
}

/// Pooled samples of points `a..b`.
fn pool(points: &[Point], a: usize, b: usize) -> Vec<f64> {
    points[a..b].iter().flat_map(|p| p.samples.iter().copied()).collect()
}

/// Steps in `points[a..b]` (binary segmentation; see the module's comment); `logs` holds the
/// points' log medians.
fn segment(points: &[Point], logs: &[f64], a: usize, b: usize, threshold_pct: f64, steps: &mut Vec<Step>) {
    let n = points.len();
    // Both sides hold two reports, except at the ends of the whole series: the oldest or the
    // newest report may stand alone.
    let ends = [(a == 0 && b >= 3).then_some(1), (b == n && b >= a + 3).then_some(b - 1)];
    let mut candidates: Vec<usize> = (a + 2..=b.saturating_sub(2)).chain(ends.into_iter().flatten()).collect();
    candidates.sort_unstable();
    candidates.dedup();
    // The split that explains most of the variation of the points' log medians (the classic
    // binary segmentation cost: n_L n_R / n times the squared difference of the two means).
    let mean = |i: usize, j: usize| logs[i..j].iter().sum::<f64>() / (j - i) as f64;
    let best = candidates
        .into_iter()
        .map(|k| {
            let (nl, nr) = ((k - a) as f64, (b - k) as f64);
            (k, nl * nr / (nl + nr) * (mean(k, b) - mean(a, k)).powi(2))
        })
        .filter(|(_, d)| d.is_finite())
        .max_by(|x, y| x.1.total_cmp(&y.1));
    let Some((k, _)) = best else { return };
    let (ch, status) = compare::judge(&pool(points, a, k), &pool(points, k, b), threshold_pct);
    let limit = 1.0 + threshold_pct / 100.0;
    // Runs of one commit vary between processes more than within one (a report's interval
    // does not see that), so the reports themselves must separate too: every median on one
    // side beyond every median on the other by the threshold.
    let range = |i: usize, j: usize| {
        let m = points[i..j].iter().map(|p| p.median_s);
        stats::Interval { low: m.clone().fold(f64::INFINITY, f64::min), high: m.fold(f64::NEG_INFINITY, f64::max) }
    };
    let (before, after) = (range(a, k), range(k, b));
    let reports_apart = match status {
        compare::Status::Regression => after.low > before.high * limit,
        compare::Status::Improvement => after.high * limit < before.low,
        compare::Status::Unchanged => false,
    };
    if reports_apart {
        segment(points, logs, a, k, threshold_pct, steps);
        steps.push(Step {
            at: k,
            last_before: points[k - 1].commit.clone(),
            first_after: points[k].commit.clone(),
            ratio: ch.ratio,
            ci: ch.ci,
        });
        segment(points, logs, k, b, threshold_pct, steps);
    }
}

/// The steps of one series of points in time order.
pub fn find_steps(points: &[Point], threshold_pct: f64) -> Vec<Step> {
    let mut steps = Vec::new();
    let logs: Vec<f64> = points.iter().map(|p| p.median_s.ln()).collect();
    segment(points, &logs, 0, points.len(), threshold_pct, &mut steps);
    steps
}

/// Read every report under `inputs` and build the history.
pub fn build(inputs: &[PathBuf], threshold_pct: f64) -> Result<History> {
    let mut files = Vec::new();
    for p in inputs {
        collect_files(p, &mut files)?;
    }
    let mut skipped = Vec::new();
    let mut by_machine: BTreeMap<Machine, Vec<Report>> = BTreeMap::new();
    for f in &files {
        match json::read(f) {
            Ok(r) => by_machine.entry(Machine::of(&r)).or_default().push(r),
            Err(e) => skipped.push((f.display().to_string(), format!("{:#}", e).lines().next().unwrap_or_default().to_string())),
        }
    }
    if by_machine.is_empty() {
        bail!("no bench reports among {} file(s) under {}", files.len(), inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    let mut machines = Vec::new();
    for (machine, mut reports) in by_machine {
        reports.sort_by(|a, b| a.meta.time.cmp(&b.meta.time));
        let mut series: BTreeMap<(String, String), Vec<Point>> = BTreeMap::new();
        for r in &reports {
            for w in &r.workloads {
                for (v, res) in &w.variants {
                    series.entry((w.id.clone(), v.clone())).or_default().push(Point {
                        time: r.meta.time.clone(),
                        commit: r.meta.git_commit.clone(),
                        dirty: r.meta.git_dirty == Some(true),
                        median_s: stats::median(&res.samples_s),
                        ci: stats::median_ci_order_statistics(&res.samples_s),
                        samples: res.samples_s.clone(),
                    });
                }
            }
        }
        let series = series
            .into_iter()
            .map(|((workload, variant), points)| {
                let steps = find_steps(&points, threshold_pct);
                Series { workload, variant, points, steps }
            })
            .collect();
        machines.push(MachineHistory { machine, reports: reports.len(), series });
    }
    Ok(History { threshold_pct, machines, skipped })
}

fn short(c: &Option<String>) -> String {
    c.as_deref().map_or("?".to_string(), |c| c.chars().take(8).collect())
}

fn change_words(s: &Step) -> String {
    let pct = (s.ratio - 1.0) * 100.0;
    format!("{} {:.1}% ({:.3}x, 95% CI [{:.3}, {:.3}])", if s.slower() { "slower" } else { "faster" }, pct.abs(), s.ratio, s.ci.low, s.ci.high)
}

/// The summary for CI logs.
pub fn text(h: &History) -> String {
    let mut out = String::new();
    for m in &h.machines {
        let _ = writeln!(out, "{}: {} report(s), {} series", m.machine.label(), m.reports, m.series.len());
        let mut any = false;
        for s in &m.series {
            for st in &s.steps {
                any = true;
                let _ = writeln!(out, "  step  {}/{}: {} between {} and {}", s.workload, s.variant, change_words(st), short(&st.last_before), short(&st.first_after));
            }
        }
        if !any {
            let _ = writeln!(out, "  no step beyond {}% in any series", h.threshold_pct);
        }
    }
    for (f, why) in &h.skipped {
        let _ = writeln!(out, "skipped {f}: {why}");
    }
    out
}

/// Whether the newest report of some machine comes after a slowing step (every step before the
/// newest point counts: the slower level is where the series ends unless a later step undid it).
pub fn ends_slower(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for m in &h.machines {
        for s in &m.series {
            let net: f64 = s.steps.iter().map(|st| st.ratio.ln()).sum();
            if let Some(last) = s.steps.last() {
                if last.slower() && net > 0.0 {
                    out.push(format!("{} {}/{}: {}", m.machine.label(), s.workload, s.variant, change_words(last)));
                }
            }
        }
    }
    out
}

/// One series as an SVG chart: the medians joined by a line over the band of their intervals,
/// steps as dashed lines, commits along the bottom.
fn chart(s: &Series) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 220.0, 70.0, 20.0, 16.0, 58.0);
    let n = s.points.len();
    let lo = s.points.iter().map(|p| p.ci.low.min(p.median_s)).fold(f64::INFINITY, f64::min);
    let hi = s.points.iter().map(|p| p.ci.high.max(p.median_s)).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(1e-12);
    let (lo, hi) = ((lo - pad).max(0.0), hi + pad);
    let x = |i: usize| if n <= 1 { left + (w - left - right) / 2.0 } else { left + (w - left - right) * i as f64 / (n - 1) as f64 };
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v - lo) / (hi - lo));
    let mut svg = format!("<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\">");
    // Axis and three gridlines with times.
    for i in 0..=2 {
        let v = lo + (hi - lo) * i as f64 / 2.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y(v) + 4.0,
            esc(&crate::report::format_duration(v)),
            y = y(v)
        );
    }
    let band: Vec<String> =
        s.points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.ci.high))).chain(s.points.iter().enumerate().rev().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.ci.low)))).collect();
    let _ = write!(svg, "<polygon points=\"{}\" class=\"band\"/>", band.join(" "));
    let line: Vec<String> = s.points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.median_s))).collect();
    let _ = write!(svg, "<polyline points=\"{}\" class=\"line\"/>", line.join(" "));
    for st in &s.steps {
        let sx = (x(st.at - 1) + x(st.at)) / 2.0;
        let _ = write!(
            svg,
            "<line x1=\"{sx:.1}\" x2=\"{sx:.1}\" y1=\"{top}\" y2=\"{:.1}\" class=\"{}\"><title>{}</title></line>",
            h - bottom,
            if st.slower() { "step slower" } else { "step faster" },
            esc(&format!("{} between {} and {}", change_words(st), short(&st.last_before), short(&st.first_after)))
        );
    }
    for (i, p) in s.points.iter().enumerate() {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" class=\"pt\"><title>{}</title></circle>",
            x(i),
            y(p.median_s),
            esc(&format!(
                "{}{} at {}: median {}, 95% CI [{}, {}], {} runs",
                short(&p.commit),
                if p.dirty { " (dirty)" } else { "" },
                p.time,
                crate::report::format_duration(p.median_s),
                crate::report::format_duration(p.ci.low),
                crate::report::format_duration(p.ci.high),
                p.samples.len()
            ))
        );
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\" transform=\"rotate(-40 {:.1} {:.1})\">{}{}</text>",
            x(i),
            h - bottom + 14.0,
            x(i),
            h - bottom + 14.0,
            esc(&short(&p.commit)),
            if p.dirty { "*" } else { "" }
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The HTML page: per machine, a chart per workload and variant, and the steps found.
pub fn html(h: &History) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Benchmark history</title><style>\
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}h2{margin-top:32px;border-bottom:1px solid #ccc}\
h3{font-size:15px;margin:18px 0 4px}.grid{stroke:#eee}.axis{font-size:11px;fill:#555}.band{fill:#9ec5fe;opacity:.45}\
.line{fill:none;stroke:#1f6feb;stroke-width:2}.pt{fill:#1f6feb}.step{stroke-width:2;stroke-dasharray:5 4}.slower{stroke:#d1242f}\
.faster{stroke:#1a7f37}.note{color:#555;font-size:13px}li.slower{color:#d1242f}li.faster{color:#1a7f37}</style></head><body>\
<h1>Benchmark history</h1>",
    );
    let _ = write!(
        out,
        "<p class=\"note\">Each point is one report's median; the band is the distribution-free 95% interval of that median. \
A dashed line marks a step: the reports after it differ from those before by more than {}% with the regression gate's \
statistics (pooled samples, the ratio's bootstrap interval wholly beyond the threshold, the medians' intervals apart) \
and every report's median on one side lies beyond every one on the other by the threshold. \
Reports are in the order they were measured; one line holds one machine's reports only.</p>",
        h.threshold_pct
    );
    for m in &h.machines {
        let _ = write!(out, "<h2>{}</h2><p class=\"note\">{} report(s)</p>", esc(&m.machine.label()), m.reports);
        let steps: Vec<String> = m
            .series
            .iter()
            .flat_map(|s| {
                s.steps.iter().map(move |st| {
                    format!(
                        "<li class=\"{}\">{}/{}: {} between {} and {}</li>",
                        if st.slower() { "slower" } else { "faster" },
                        esc(&s.workload),
                        esc(&s.variant),
                        esc(&change_words(st)),
                        esc(&short(&st.last_before)),
                        esc(&short(&st.first_after))
                    )
                })
            })
            .collect();
        if steps.is_empty() {
            let _ = write!(out, "<p>No step beyond {}% in any series.</p>", h.threshold_pct);
        } else {
            let _ = write!(out, "<p>Steps:</p><ul>{}</ul>", steps.concat());
        }
        for s in &m.series {
            let _ = write!(out, "<h3>{} · {}</h3>{}", esc(&s.workload), esc(&s.variant), chart(s));
        }
    }
    if !h.skipped.is_empty() {
        out.push_str("<h2>Skipped files</h2><ul>");
        for (f, why) in &h.skipped {
            let _ = write!(out, "<li>{}: {}</li>", esc(f), esc(why));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}

/// `harness history`.
pub fn run(args: &Args) -> Result<std::process::ExitCode> {
    for p in [&args.html, &args.json].into_iter().flatten() {
        json::existing_parent(p)?;
        if args.inputs.iter().any(|i| i == p) {
            bail!("{} is an input; name another output", p.display());
        }
    }
    let h = build(&args.inputs, args.threshold)?;
    print!("{}", text(&h));
    if let Some(p) = &args.json {
        json::write_atomic(p, serde_json::to_string_pretty(&h)?.as_bytes())?;
        println!("JSON: {}", p.display());
    }
    if let Some(p) = &args.html {
        json::write_atomic(p, html(&h).as_bytes())?;
        println!("HTML: {}", p.display());
    }
    let slower = ends_slower(&h);
    if args.fail_on_regression && !slower.is_empty() {
        for s in &slower {
            eprintln!("regression: {s}");
        }
        return Ok(std::process::ExitCode::from(crate::report::compare::REGRESSION_EXIT));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: usize, level: f64) -> Point {
        // Five samples spread 2% around the level, differing per point.
        let samples: Vec<f64> = (0..5).map(|j| level * (1.0 + 0.005 * ((i * 7 + j * 3) % 5) as f64 - 0.01)).collect();
        Point {
            time: format!("2026-01-{:02}T00:00:00Z", i + 1),
            commit: Some(format!("{i:040x}")),
            dirty: false,
            median_s: stats::median(&samples),
            ci: stats::median_ci_order_statistics(&samples),
            samples,
        }
    }

    fn series(levels: &[f64]) -> Vec<Point> {
        levels.iter().enumerate().map(|(i, &l)| point(i, l)).collect()
    }

    #[test]
    fn one_step_is_found_between_the_right_commits() {
        let pts = series(&[1.0, 1.0, 1.01, 0.99, 1.0, 1.3, 1.31, 1.29, 1.3, 1.3]);
        let steps = find_steps(&pts, 10.0);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(steps[0].at, 5);
        assert!(steps[0].slower() && (steps[0].ratio - 1.3).abs() < 0.03, "{:?}", steps[0]);
        assert_eq!(steps[0].last_before, pts[4].commit);
        assert_eq!(steps[0].first_after, pts[5].commit);
    }

    #[test]
    fn flat_noise_and_a_lone_outlier_are_not_steps() {
        assert!(find_steps(&series(&[1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97]), 10.0).is_empty());
        // One slow run in the middle: each side of a split at it would hold a single report.
        assert!(find_steps(&series(&[1.0, 1.0, 1.0, 1.6, 1.0, 1.0, 1.0]), 10.0).is_empty());
        // Below the threshold.
        assert!(find_steps(&series(&[1.0, 1.0, 1.0, 1.05, 1.05, 1.05]), 10.0).is_empty());
    }

    #[test]
    fn two_steps_and_a_slower_newest_report_are_found() {
        let pts = series(&[1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.8]);
        let steps = find_steps(&pts, 10.0);
        assert_eq!(steps.iter().map(|s| s.at).collect::<Vec<_>>(), vec![3, 7], "{steps:?}");
        assert!(!steps[0].slower() && steps[1].slower());
    }

    /// Reports filed by `record`, read back by `build`: one machine's eight reports with a
    /// step after the fourth, another machine's two never joined to them, a file that is not a
    /// report listed as skipped, and the page and summary naming the step's commits.
    #[test]
    fn recorded_reports_give_one_line_per_machine_and_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let report = |i: usize, scale: f64, device: &str| {
            let mut r = crate::report::sample_report(scale);
            r.meta.time = format!("2026-11-{:02}T10:00:00Z", i + 1);
            r.meta.git_commit = Some(format!("{:04x}{}", 0xabc0 + i, "0".repeat(36)));
            r.meta.device_name = device.into();
            r
        };
        for i in 0..8 {
            record(&report(i, if i < 4 { 1.0 } else { 1.5 }, "Test CPU"), dir.path()).unwrap();
        }
        for i in 0..2 {
            record(&report(i, 3.0, "Other CPU"), dir.path()).unwrap();
        }
        // The same report again is fine; another one under the same name is refused.
        record(&report(0, 1.0, "Test CPU"), dir.path()).unwrap();
        let e = record(&report(0, 2.0, "Test CPU"), dir.path()).unwrap_err().to_string();
        assert!(e.contains("nothing was overwritten"), "{e}");
        std::fs::write(dir.path().join("notes.json"), "{}").unwrap();

        let h = build(&[dir.path().to_path_buf()], 10.0).unwrap();
        assert_eq!(h.machines.len(), 2);
        assert_eq!(h.skipped.len(), 1, "{:?}", h.skipped);
        let test = h.machines.iter().find(|m| m.machine.device_name == "Test CPU").unwrap();
        assert_eq!(test.reports, 8);
        for s in &test.series {
            assert_eq!(s.points.len(), 8);
            assert_eq!(s.steps.len(), 1, "{}/{}: {:?}", s.workload, s.variant, s.steps);
            let st = &s.steps[0];
            assert!(st.slower() && (st.ratio - 1.5).abs() < 0.02, "{st:?}");
            assert_eq!(st.last_before.as_deref().map(|c| &c[..4]), Some("abc3"));
            assert_eq!(st.first_after.as_deref().map(|c| &c[..4]), Some("abc4"));
        }
        let other = h.machines.iter().find(|m| m.machine.device_name == "Other CPU").unwrap();
        assert!(other.series.iter().all(|s| s.points.len() == 2 && s.steps.is_empty()));
        let summary = text(&h);
        assert!(summary.contains("slower 50.0%") && summary.contains("between abc30000 and abc40000") && summary.contains("skipped"), "{summary}");
        assert_eq!(ends_slower(&h).len(), test.series.len());
        let page = html(&h);
        assert_eq!(page.matches("<svg").count(), test.series.len() + other.series.len());
        assert!(page.contains("class=\"step slower\""));
    }

    #[test]
    fn machine_names_are_safe_folder_names() {
        assert_eq!(slug("cpu-AMD EPYC 7B13 64-Core/Processor-2c-cpu-fp32"), "cpu-amd-epyc-7b13-64-core-processor-2c-cpu-fp32");
        assert_eq!(slug("../../etc"), "etc");
    }
}
