//! `harness ab`: a base build and the current build of the harness timed on the same machine in
//! one job, their `bench` runs interleaved round by round, and the change judged as `bench
//! --compare` judges it. On a shared CI runner a baseline committed from another machine (or
//! another hour) says little: what holds is two builds measured side by side, the order of the
//! two alternating (ABBA) so that drift in the machine's speed falls on both.
//!
//! `run-benchmarks.sh --ab BASE_REF` builds the base commit in a worktree and calls this.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::outputs::StagedDir;
use crate::report::{self, compare, json, Report};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Exit status:
  0  both builds ran; no workload regressed
  1  an error (a build failed to run, bad arguments, unwritable output)
  2  invalid command line
  3  a workload regressed: the 95% interval of the change lies wholly beyond --threshold and
     the two builds' median intervals do not overlap (bench --compare's rule)

Example (what `./run-benchmarks.sh --ab main -m blocks` runs once it has built main):
  harness ab --base /tmp/base/harness --base-dir /tmp/base-tree -- -m blocks -w 2 -i 5")]
pub struct Args {
    /// The base build's harness executable.
    #[arg(long, value_name = "PATH")]
    base: PathBuf,
    /// The checkout the base build runs in, so its reports name its commit [default: the
    /// current directory].
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
    /// The current build's harness executable [default: this one].
    #[arg(long, value_name = "PATH")]
    current: Option<PathBuf>,
    /// The checkout the current build runs in [default: the current directory].
    #[arg(long, value_name = "DIR")]
    current_dir: Option<PathBuf>,
    /// Rounds: each runs both builds once, in alternating order (base first in odd rounds).
    /// The samples of a side's rounds are pooled, its median interval taken over rounds.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=50))]
    rounds: u32,
    /// Regression threshold, percent slower (finite, at least 0).
    #[arg(long, value_name = "PCT", default_value_t = 10.0, value_parser = crate::bench::parse_threshold)]
    threshold: f64,
    /// A new folder for the results (base.json, current.json with the comparison,
    /// current.html, comparison.txt and each round's JSON report); it appears whole or not at
    /// all [default: reports/ab-<UTC time>].
    #[arg(short = 'o', long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// `harness bench` arguments for both builds, after `--` (e.g. `-- -m blocks -w 2 -i 5`).
    /// Outputs, baselines and process pools are this command's: -o, --html, -c, --record,
    /// --save-outputs, --processes, --peers and --list are refused.
    #[arg(last = true, value_name = "BENCH ARGS")]
    bench: Vec<String>,
}

/// Bench flags `ab` sets or cannot honour.
const REFUSED: [&str; 12] = ["-o", "--output", "--html", "-c", "--compare", "--record", "--save-outputs", "--processes", "--peers", "--peer", "--list", "--conformance"];

fn check_bench_args(args: &[String]) -> Result<()> {
    for a in args {
        let flag = a.split('=').next().unwrap_or(a);
        if REFUSED.contains(&flag) {
            bail!("bench argument {a} is not for `ab`: it writes its own reports and compares the two builds with each other");
        }
    }
    Ok(())
}

/// One side of the comparison.
struct Side<'a> {
    name: &'static str,
    exe: &'a Path,
    dir: &'a Path,
}

impl Side<'_> {
    /// Run `bench ARGS` once, its report at `out`. Exit 4 (a missed target) still counts: the
    /// timing is what `ab` is after.
    fn run(&self, bench: &[String], out: &Path) -> Result<Report> {
        let o = Command::new(self.exe)
            .arg("bench")
            .args(bench)
            .args(if bench.iter().any(|a| a == "--quiet") { &[][..] } else { &["--quiet"][..] })
            .arg("-o")
            .arg(out)
            .arg("--html")
            .arg(out.with_extension("html"))
            .current_dir(self.dir)
            .env("HARNESS_REPO_ROOT", self.dir)
            .output()
            .with_context(|| format!("starting the {} build {}", self.name, self.exe.display()))?;
        if !(o.status.success() || o.status.code() == Some(i32::from(crate::bench::TARGET_MISSED_EXIT))) {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("the {} build failed ({}):\n{}", self.name, o.status, tail.join("\n"));
        }
        // The round's HTML is not kept: the pooled sides' page is.
        let _ = std::fs::remove_file(out.with_extension("html"));
        json::read(out).with_context(|| format!("the {} build's report", self.name))
    }
}

/// The rounds of one side as one report: the first round's machine and settings, every
/// round's samples pooled (intervals over rounds, as `bench --processes`).
fn pooled(mut reports: Vec<Report>) -> Result<Report> {
    let n = reports.len() as u32;
    let first = reports.first().cloned().context("no round ran")?;
    let workloads = crate::bench::processes::pool(std::mem::take(&mut reports))?;
    let mut r = first;
    r.workloads = workloads;
    r.settings.processes = Some(n);
    r.targets = vec![];
    Ok(r)
}

pub fn run(args: &Args) -> Result<ExitCode> {
    check_bench_args(&args.bench)?;
    let here = std::env::current_dir().context("the current directory")?;
    let this = std::env::current_exe().context("finding this executable")?;
    let base = Side { name: "base", exe: &args.base, dir: args.base_dir.as_deref().unwrap_or(&here) };
    let current = Side {
        name: "current",
        exe: args.current.as_deref().unwrap_or(&this),
        dir: args.current_dir.as_deref().unwrap_or(&here),
    };
    for s in [&base, &current] {
        if !s.exe.is_file() {
            bail!("the {} build {} is not a file", s.name, s.exe.display());
        }
        if !s.dir.is_dir() {
            bail!("the {} checkout {} is not a folder", s.name, s.dir.display());
        }
    }
    let output = args.output.clone().unwrap_or_else(|| {
        let root = std::env::var_os("HARNESS_REPO_ROOT").map_or_else(|| PathBuf::from("."), PathBuf::from);
        root.join("reports").join(format!("ab-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")))
    });
    if let Some(p) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let out = StagedDir::create("-o", &output)?;

    let bar = crate::progress::bar(u64::from(args.rounds) * 2, "runs", false);
    let sides = [&base, &current];
    let mut reports: [Vec<Report>; 2] = [Vec::new(), Vec::new()];
    for k in 0..args.rounds {
        let order = if k % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = sides[i];
            bar.set_message(format!("round {} of {}: {}", k + 1, args.rounds, side.name));
            reports[i].push(side.run(&args.bench, &out.path(&format!("round-{}-{}.json", k + 1, side.name))?)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let [bases, currents] = reports;
    let base_report = pooled(bases)?;
    let mut current_report = pooled(currents)?;
    compare::check_compatible(&base_report, &current_report, false)?;
    let name = format!("base {}", base_report.meta.git_commit.as_deref().map_or("(unknown commit)", |c| &c[..c.len().min(12)]));
    let c = compare::compare(&base_report, &name, &current_report, args.threshold);
    if c.deltas.is_empty() {
        bail!("the two builds measured no workload in common: nothing was compared");
    }
    let text = report::text::render_comparison(&c);
    let regressions = c.regressions().count();
    current_report.comparison = Some(c);
    json::write(&base_report, &out.path("base.json")?)?;
    json::write(&current_report, &out.path("current.json")?)?;
    json::write_atomic(&out.path("current.html")?, report::html::render(&current_report)?.as_bytes())?;
    let commits = format!(
        "base {} (in {}), current {}{} (in {}); {} rounds, order alternating, threshold {}%\n",
        base_report.meta.git_commit.as_deref().unwrap_or("unknown"),
        base.dir.display(),
        current_report.meta.git_commit.as_deref().unwrap_or("unknown"),
        if current_report.meta.git_dirty == Some(true) { " (dirty)" } else { "" },
        current.dir.display(),
        args.rounds,
        args.threshold
    );
    json::write_atomic(&out.path("comparison.txt")?, format!("{commits}{text}").as_bytes())?;
    let dir = out.finish()?;
    print!("{commits}{text}");
    println!("\nResults: {}", dir.display());
    if regressions > 0 {
        eprintln!("{regressions} regression(s) of the current build against the base (threshold {}%)", args.threshold);
        return Ok(ExitCode::from(compare::REGRESSION_EXIT));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_and_baselines_are_abs_own() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(check_bench_args(&s(&["-m", "blocks", "-i", "5"])).is_ok());
        for bad in ["-o", "--output=x.json", "--compare", "--processes", "--peers", "--record"] {
            let e = check_bench_args(&s(&["-m", "blocks", bad])).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    /// A stand-in for a build: a script that writes `report` wherever `-o` says.
    fn fake_build(dir: &Path, name: &str, report: &Report) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let r = dir.join(format!("{name}.json"));
        json::write(report, &r).unwrap();
        let exe = dir.join(name);
        std::fs::write(&exe, format!("#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done\ncp '{}' \"$out\"\n", r.display())).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        exe
    }

    fn args(base: PathBuf, current: PathBuf, dir: &Path, out: &str) -> Args {
        Args {
            base,
            base_dir: Some(dir.to_path_buf()),
            current: Some(current),
            current_dir: Some(dir.to_path_buf()),
            rounds: 2,
            threshold: 10.0,
            output: Some(dir.join(out)),
            bench: vec!["-m".into(), "blocks".into()],
        }
    }

    /// The gate's verdicts without timing anything: a build 1.5 times slower exits 3, the same
    /// build twice exits 0, and the results folder holds both sides and every round.
    #[test]
    fn a_slower_build_fails_the_gate_and_the_same_build_passes() {
        let d = tempfile::tempdir().unwrap();
        let base = fake_build(d.path(), "base", &report::sample_report(1.0));
        let slow = fake_build(d.path(), "slow", &report::sample_report(1.5));
        let same = fake_build(d.path(), "same", &report::sample_report(1.0));
        let code = |a: &Args| format!("{:?}", run(a).unwrap());
        assert_eq!(code(&args(base.clone(), slow, d.path(), "ab-slow")), format!("{:?}", ExitCode::from(compare::REGRESSION_EXIT)));
        assert_eq!(code(&args(base, same, d.path(), "ab-same")), format!("{:?}", ExitCode::SUCCESS));
        for f in ["base.json", "current.json", "current.html", "comparison.txt", "round-1-base.json", "round-2-current.json"] {
            assert!(d.path().join("ab-slow").join(f).is_file(), "{f} missing");
        }
        let cur = json::read(&d.path().join("ab-slow/current.json")).unwrap();
        assert!(cur.comparison.is_some_and(|c| c.regressions().count() > 0));
        // An existing results folder is never overwritten.
        let again = args(d.path().join("base"), d.path().join("same"), d.path(), "ab-same");
        assert!(run(&again).unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn rounds_pool_into_one_report_per_side() {
        let a = report::sample_report(1.0);
        let b = report::sample_report(1.5);
        let p = pooled(vec![a.clone(), b]).unwrap();
        assert_eq!(p.settings.processes, Some(2));
        let v = &p.workloads[0].variants["optimized"];
        assert_eq!(v.samples_s.len(), 2 * a.workloads[0].variants["optimized"].samples_s.len());
        assert_eq!(v.process_medians_s.len(), 2);
        assert!(pooled(vec![]).is_err());
    }
}
