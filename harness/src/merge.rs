//! `harness merge`: several `bench` reports from one machine become one, with the peers'
//! times attached and the targets judged over all of them. A GPU lease runs each model in its
//! own command (each command has a time limit); the committed baseline is their union.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::report::{self, json, Conformance, Report};
use crate::{peers, targets};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Exit status:
  0  merged (and with --targets, every target of the device class passed)
  1  an error: unreadable or malformed report or peer file, reports from different device
     classes or MLX versions, a workload in two reports, unwritable output
  4  --targets: a measured target for the device class was missed (one whose workload is in
     no report is not measured and does not change the exit status)")]
pub struct Args {
    /// Reports to combine (JSON from `bench -o`), in the order their workloads are listed.
    #[arg(required = true, value_name = "REPORT")]
    inputs: Vec<PathBuf>,
    /// Write the merged JSON report here (the HTML report goes next to it, same stem, .html).
    #[arg(short = 'o', long, value_name = "PATH")]
    output: PathBuf,
    /// Write the HTML report here instead of next to the JSON.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Peer timings to attach (JSON lines from scripts/peers/*.py; repeatable).
    #[arg(long = "peer", value_name = "FILE")]
    peers: Vec<PathBuf>,
    /// Parity results to embed as the conformance section (`harness parity -o FILE`, made on
    /// the reports' device in their precision mode); a report's own section is kept too.
    #[arg(long, value_name = "FILE")]
    conformance: Option<PathBuf>,
    /// Print the targets table and exit 4 on a miss.
    #[arg(short = 't', long)]
    targets: bool,
    /// Judge against another targets table (same format as harness/data/targets.json).
    #[arg(long, value_name = "PATH")]
    targets_file: Option<PathBuf>,
}

/// One report from several of the same device class; refuses mixed classes, MLX versions and
/// a workload measured twice.
pub fn merge(reports: Vec<(String, Report)>) -> Result<Report> {
    let mut it = reports.into_iter();
    let Some((first_name, mut out)) = it.next() else { bail!("nothing to merge") };
    out.comparison = None;
    let mut sources = vec![describe(&first_name, &out)];
    for (name, r) in it {
        let (pa, pb) = (report::compare::precision_of(&out).to_string(), report::compare::precision_of(&r).to_string());
        for (what, a, b) in [
            ("device class", &out.meta.device_class, &r.meta.device_class),
            ("device", &out.meta.device_name, &r.meta.device_name),
            ("MLX version", &out.meta.mlx_version, &r.meta.mlx_version),
            ("precision mode", &pa, &pb),
        ] {
            if a != b {
                bail!("{name}: {what} '{b}' differs from {first_name}'s '{a}'; only runs of one machine merge");
            }
        }
        sources.push(describe(&name, &r));
        if let Some(c) = r.conformance {
            add_conformance(&mut out.conformance, c).with_context(|| format!("{name}: conformance section"))?;
        }
        for w in r.workloads {
            if out.workloads.iter().any(|o| o.id == w.id) {
                bail!("{name}: workload {} is already in an earlier report", w.id);
            }
            out.workloads.push(w);
        }
        for m in r.settings.models {
            if !out.settings.models.contains(&m) {
                out.settings.models.push(m);
            }
        }
        out.settings.warmup = out.settings.warmup.min(r.settings.warmup);
        out.settings.iterations = out.settings.iterations.max(r.settings.iterations);
        out.settings.quick |= r.settings.quick;
        if out.meta.time < r.meta.time {
            out.meta.time = r.meta.time;
        }
    }
    out.settings.merged_from = sources;
    Ok(out)
}

/// Put `c` in `slot`, joined with what is there already.
fn add_conformance(slot: &mut Option<Conformance>, c: Conformance) -> Result<()> {
    *slot = Some(match slot.take() {
        None => c,
        Some(mine) => join_conformance(mine, c)?,
    });
    Ok(())
}

/// The fixtures of two conformance sections of one configuration; a fixture and variant in
/// both must agree.
fn join_conformance(mut a: Conformance, b: Conformance) -> Result<Conformance> {
    if (&a.device_kind, &a.device_name, &a.backend, &a.precision, &a.mlx_version) != (&b.device_kind, &b.device_name, &b.backend, &b.precision, &b.mlx_version) {
        bail!("made on {} {} in {}, the other on {} {} in {}", b.backend, b.device_name, b.precision, a.backend, a.device_name, a.precision);
    }
    for f in b.fixtures {
        match a.fixtures.iter().find(|o| o.fixture == f.fixture && o.variant == f.variant) {
            Some(o) if o.pass != f.pass => bail!("fixture {} ({}) passes in one report and fails in the other", f.fixture, f.variant),
            Some(_) => {}
            None => a.fixtures.push(f),
        }
    }
    Ok(a)
}

fn describe(name: &str, r: &Report) -> String {
    format!(
        "{name}: {} at {}, warm-up {}, iterations {}{}",
        r.settings.models.join(" "),
        r.meta.time,
        r.settings.warmup,
        r.settings.iterations,
        r.settings.max_time_s.map_or(String::new(), |t| format!(", budget {t} s"))
    )
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let table = targets::Table::load(args.targets_file.as_deref())?;
    let mut reports = Vec::new();
    for p in &args.inputs {
        reports.push((p.display().to_string(), json::read(p)?));
    }
    let extra = match &args.conformance {
        Some(p) => Some((p, Conformance::read(p)?)),
        None => None,
    };
    let output_html = args.html.clone().unwrap_or_else(|| args.output.with_extension("html"));
    let mut inputs: Vec<(&str, &std::path::Path)> = args.inputs.iter().map(|p| ("report", p.as_path())).collect();
    inputs.extend(args.conformance.as_deref().map(|p| ("--conformance", p)));
    inputs.extend(args.targets_file.as_deref().map(|p| ("--targets-file", p)));
    inputs.extend(args.peers.iter().map(|p| ("--peer", p.as_path())));
    crate::outputs::check_report_paths(&args.output, &output_html, &inputs)?;
    let mut rep = merge(reports)?;
    if let Some((p, c)) = extra {
        c.check_matches(&rep.meta).with_context(|| format!("--conformance {}", p.display()))?;
        add_conformance(&mut rep.conformance, c.summary()).with_context(|| format!("--conformance {}", p.display()))?;
    }
    if !args.peers.is_empty() {
        let p = peers::read_all(&args.peers)?;
        peers::check_precision(&p, rep.meta.precision.as_deref())?;
        let unmatched = peers::attach(&mut rep, p);
        if !unmatched.is_empty() {
            eprintln!("peer times for workloads in no report (left out): {}", unmatched.join(", "));
        }
    }
    rep.targets = table.evaluate(&rep.meta.device_class, &rep.workloads);
    let html = report::html::render(&rep)?;
    json::write(&rep, &args.output)?;
    json::write_atomic(&output_html, html.as_bytes())?;
    print!("{}", report::text::render(&rep));
    println!("\nReports: {} and {}", args.output.display(), output_html.display());
    if args.targets {
        if let Some(code) = targets::verdict_exit(&rep.targets, &rep.meta.device_class, "in no merged report") {
            return Ok(ExitCode::from(code));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_of_one_machine_merge_and_others_are_refused() {
        let a = report::sample_report(1.0);
        let mut b = report::sample_report(2.0);
        b.workloads[0].id = "blocks/cross-attention".into();
        b.settings.models = vec!["blocks".into(), "clap".into()];
        b.settings.iterations = 20;
        let m = merge(vec![("a.json".into(), a.clone()), ("b.json".into(), b.clone())]).unwrap();
        assert_eq!(m.workloads.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["blocks/decode-step-cache-64", "blocks/cross-attention"]);
        assert_eq!(m.settings.models, ["blocks", "clap"]);
        assert_eq!(m.settings.iterations, 20);
        assert_eq!(m.settings.merged_from.len(), 2);
        assert!(m.settings.merged_from[1].starts_with("b.json: blocks clap"));
        // The merged report is a report: it reads back.
        assert_eq!(json::parse(&json::to_string(&m).unwrap()).unwrap(), m);

        let dup = merge(vec![("a.json".into(), a.clone()), ("a2.json".into(), a.clone())]).unwrap_err().to_string();
        assert!(dup.contains("already in an earlier report"), "{dup}");
        let mut gpu = b.clone();
        gpu.meta.device_class = "cuda".into();
        let err = merge(vec![("a.json".into(), a.clone()), ("gpu.json".into(), gpu)]).unwrap_err().to_string();
        assert!(err.contains("device class 'cuda'"), "{err}");
        let mut other_mlx = b;
        other_mlx.meta.mlx_version = "0.99.0".into();
        assert!(merge(vec![("a.json".into(), a), ("m.json".into(), other_mlx)]).unwrap_err().to_string().contains("MLX version"));
    }
}
