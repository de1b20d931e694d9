//! `harness bench` (what `./run-benchmarks.sh` runs): workloads, interleaved naive/optimized
//! timing, statistics, targets, baseline comparison and reports.
pub mod blocks;
mod clap_model;
pub mod encodec;
mod htdemucs;
pub mod musicgen;
pub mod peer_proc;
pub mod processes;
pub mod serve;
mod vad;
pub mod whisper;
pub mod workload;

use crate::variant_args::VariantsArg;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use models::runtime::{self, DeviceKind};

use crate::report::{self, compare, json, Memory, Report, Settings, Throughput, VariantResult, WorkloadResult};
use crate::{meta, stats, targets};
use workload::{Scale, Spec, Variant};

/// Exit code when a target of the current device class is missed or not measured.
pub const TARGET_MISSED_EXIT: u8 = 4;

/// `-m`'s name for the serving scenarios (never in a run that does not name them).
pub const SERVE: &str = "serve";

/// Every model name `-m` accepts, in run order.
pub const MODELS: [&str; 7] = ["blocks", "encodec", "whisper", "clap", "musicgen", "htdemucs", "vad"];

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Exit status:
  0  all ran; no regression; with --targets, every target of this device class passed
  1  an error (bad argument, unreadable or malformed baseline, unwritable output, MLX failure)
  2  invalid command line
  3  --compare found a regression: the 95% interval of the change lies wholly beyond
     --threshold, and the two runs' distribution-free median intervals do not overlap
  4  --targets: a measured target for this device class was missed (a target whose
     workload did not run is reported as not measured and does not change the exit status)

Timing: each workload runs its warm-up, then --iterations timed runs per variant: in rounds in
which naive and optimized alternate (ABBA; --order interleaved, the CPU default) or one variant's
warm-up and runs after the other's (--order blocked, the GPU default); setup is untimed and MLX
evaluation is forced inside the timed region. The report records the order and the precision
mode (--precision).
Medians come with 95% bootstrap intervals; speedups are medians of per-round ratios.")]
pub struct Args {
    /// Write the JSON report here (the HTML report goes next to it, same stem, .html).
    /// Default: reports/bench-<UTC time>.json in the repository
    #[arg(short = 'o', long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Compare against a baseline report: per-workload change of the median with a 95% CI;
    /// exits 3 on a regression.
    #[arg(short = 'c', long, value_name = "PATH")]
    compare: Option<PathBuf>,
    /// Quick mode: fewer iterations (1 warm-up, 5 iterations unless -w/-i say otherwise).
    #[arg(short = 'q', long)]
    quick: bool,
    /// Run only this model's workloads, or this one workload by id (repeatable). See --list.
    #[arg(short = 'm', long = "model", value_name = "NAME")]
    models: Vec<String>,
    /// Warm-up runs per variant before timing [default: 3, quick: 1]; they stop early once
    /// they have taken --max-time.
    #[arg(short = 'w', long, value_name = "N")]
    warmup: Option<u32>,
    /// Timed runs per variant [default: 15, quick: 5; at least 2].
    #[arg(short = 'i', long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    iterations: Option<u32>,
    /// Time budget per workload, in seconds, for its timed rounds (one round runs every
    /// variant once): a workload whose round takes longer gets fewer than -i iterations, but
    /// never fewer than 3; slow warm-ups stop after one round [default: 30, quick: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_positive)]
    max_time: Option<f64>,
    /// Also run the heavy workloads on the CPU (full-size Whisper transcription and long
    /// decodes: minutes per round there). They always run on a GPU, and when named with -m.
    #[arg(long)]
    heavy: bool,
    /// Check the seed's performance targets (harness/data/targets.json) for this device class:
    /// prints measured median, target, verdict and margin; exits 4 on a miss.
    #[arg(short = 't', long)]
    targets: bool,
    #[command(flatten)]
    variant: VariantsArg,
    /// Device to run on [default: MLX's default, the GPU when the library has one].
    #[arg(long, value_parser = ["cpu", "gpu"])]
    device: Option<String>,
    /// Order of the variants' runs. interleaved: rounds of one run per variant, alternating
    /// which goes first (cancels drift; the CPU default). blocked: each variant's warm-up and
    /// timed runs together, one variant after the other, each from an empty buffer cache, as a
    /// program running one variant would (the GPU default; on the H200 neither order changed
    /// the optimized medians, whose spread is between processes: see --processes). auto:
    /// blocked on a GPU, interleaved on the CPU.
    #[arg(long, value_enum, default_value_t = Order::Auto)]
    order: Order,
    /// Run the timing in N fresh processes, one after another, and pool their samples (each
    /// variant's per-process medians are kept in the report). On a GPU a median can differ
    /// from one process to the next by more than a single process's interval shows (EnCodec's
    /// 5 s decode on the H200: 30 to 44 ms); pooling puts that spread into the result.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    processes: u32,
    /// Regression threshold for --compare, percent slower (finite, at least 0).
    #[arg(long, value_name = "PCT", default_value_t = 10.0, value_parser = parse_threshold)]
    threshold: f64,
    /// Compare even when the baseline comes from another device class.
    #[arg(long)]
    force: bool,
    /// List models and workloads (name first, one per line) and exit.
    #[arg(long)]
    list: bool,
    /// No progress bars (for CI logs).
    #[arg(long)]
    quiet: bool,
    /// Write the HTML report here instead of next to the JSON.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Use another targets table (same format as harness/data/targets.json).
    #[arg(long, value_name = "PATH")]
    targets_file: Option<PathBuf>,
    /// Save what each workload computes (one more untimed run per variant, after its timing)
    /// into this new folder, one safetensors file per workload, for `harness accuracy`: e.g.
    /// the same workloads at --precision fp32 and tf32. The folder must not exist yet; it
    /// appears whole when the run ends, or not at all.
    #[arg(long, value_name = "DIR")]
    save_outputs: Option<PathBuf>,
    /// Parity results to embed as the report's conformance section (`harness parity -o FILE`,
    /// run on the same device, in the same precision mode and MLX version: checked before any
    /// timing).
    #[arg(long, value_name = "FILE")]
    conformance: Option<PathBuf>,
    /// Peer timings of the same workloads on this machine, as JSON lines from
    /// scripts/peers/*.py (repeatable): the report shows them beside ours, per task.
    #[arg(long = "peer", value_name = "FILE", conflicts_with = "run_peers")]
    peers: Vec<PathBuf>,
    /// Run PyTorch's implementation of each workload that has one (scripts/peers/) in the same
    /// run, its timed calls alternating with ours round by round (with --order blocked: after
    /// ours, its warm-up and timed runs together), on as many threads as ours
    /// (OPENBLAS_NUM_THREADS, else the cores this process may use). With --targets on the CPU,
    /// every row is then judged as ours/PyTorch at most 1. Needs the peer environment:
    /// scripts/setup-peers.sh makes it (pinned torch, transformers, demucs).
    #[arg(long = "peers")]
    run_peers: bool,
    /// Also file the report into this history folder, under its machine and commit
    /// (DIR/MACHINE/TIME-COMMIT.json), for `harness history`.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Serving scenarios (`-m serve`, or one by id): single-stream queries, one after another
    /// [default: 100, quick: 30].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    queries: Option<u32>,
    /// Serving scenarios: queries per server trial, arriving as a Poisson process
    /// [default: 64, quick: 24].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    server_queries: Option<u32>,
    /// Serving scenarios: server trials, bisecting the arrival rate between zero and the
    /// offline throughput for the highest rate whose p99 meets --latency-bound [default: 5,
    /// quick: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    server_steps: Option<u32>,
    /// Serving scenarios: the server's p99 latency bound in milliseconds [default: 5 times the
    /// scenario's single-stream p50].
    #[arg(long, value_name = "MS", value_parser = parse_positive_ms)]
    latency_bound: Option<f64>,
    /// Serving scenarios: the largest batch (the offline batch and the server's batching
    /// limit; 1 serves one query at a time) [default: each scenario's own, 8 or 32].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    serve_batch: Option<u32>,
    /// The Python of the peer environment [default: $HARNESS_PEERS_PYTHON, else
    /// .peers-venv/bin/python in the repository].
    #[arg(long, value_name = "PATH", requires = "run_peers")]
    peers_python: Option<PathBuf>,
}

/// A regression threshold: a finite percentage, at least 0 (NaN or infinity would pass any
/// slowdown).
pub(crate) fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a finite percentage of at least 0")),
    }
}

fn parse_positive_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of milliseconds")),
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Auto,
    Interleaved,
    Blocked,
}

impl Order {
    /// `auto` resolved for a device: blocked on a GPU, interleaved on the CPU.
    pub fn resolve(self, kind: DeviceKind) -> Order {
        match (self, kind) {
            (Order::Auto, DeviceKind::Gpu) => Order::Blocked,
            (Order::Auto, DeviceKind::Cpu) => Order::Interleaved,
            (o, _) => o,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Order::Auto => "auto",
            Order::Interleaved => "interleaved",
            Order::Blocked => "blocked",
        }
    }
}

#[derive(clap::Args)]
pub struct CompareArgs {
    /// The baseline report (JSON from `bench -o`).
    baseline: PathBuf,
    /// The report to judge against it.
    current: PathBuf,
    /// Regression threshold, percent slower (finite, at least 0).
    #[arg(long, value_name = "PCT", default_value_t = 10.0, value_parser = parse_threshold)]
    threshold: f64,
    /// Compare even when the reports come from different device classes.
    #[arg(long)]
    force: bool,
}

/// `harness compare BASELINE CURRENT`.
pub fn compare_reports(args: &CompareArgs) -> Result<ExitCode> {
    let baseline = json::read(&args.baseline).with_context(|| format!("baseline {}", args.baseline.display()))?;
    let current = json::read(&args.current).with_context(|| format!("report {}", args.current.display()))?;
    compare::check_compatible(&baseline, &current, args.force)?;
    let c = compare::compare(&baseline, &args.baseline.display().to_string(), &current, args.threshold);
    if c.deltas.is_empty() {
        bail!("{} and {} have no workload in common: nothing was compared", args.baseline.display(), args.current.display());
    }
    print!("{}", report::text::render_comparison(&c));
    let n = c.regressions().count();
    if n > 0 {
        eprintln!("{n} regression(s) against {} (threshold {}%)", c.baseline, c.threshold_pct);
        return Ok(ExitCode::from(compare::REGRESSION_EXIT));
    }
    Ok(ExitCode::SUCCESS)
}

/// All registered workloads.
pub fn registry(scale: Scale) -> Vec<Spec> {
    let mut specs = blocks::specs(scale);
    specs.extend(encodec::specs(scale));
    specs.extend(whisper::specs(scale));
    specs.extend(musicgen::specs(scale));
    specs.extend(htdemucs::specs(scale));
    specs.extend(clap_model::specs(scale));
    specs.extend(vad::specs(scale));
    specs
}

fn check_writable(path: &Path) -> Result<()> {
    let dir = json::existing_parent(path)?;
    let probe = dir.join(format!(".harness-write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write {}: folder {} is not writable", path.display(), dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// `<repo>/reports/bench-<UTC time>.json` when run through run-benchmarks.sh, else under ./reports.
fn default_output() -> PathBuf {
    let dir = std::env::var_os("HARNESS_REPO_ROOT").map_or_else(|| PathBuf::from("reports"), |r| PathBuf::from(r).join("reports"));
    dir.join(format!("bench-{}.json", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")))
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let scale = Scale { quick: args.quick };
    let specs = registry(scale);
    let scenarios = serve::specs();
    if args.list {
        for model in MODELS {
            let n = specs.iter().filter(|s| s.model == model).count();
            println!("{model}\tmodel, {n} workload(s){}", if n == 0 { " (not implemented yet)" } else { "" });
        }
        println!("{SERVE}\tserving scenarios, {} workload(s) (single-stream, offline, server; only when named)", scenarios.len());
        for s in &specs {
            println!("{}\t{}{}: {}", s.id, if s.heavy { "(heavy) " } else { "" }, s.info.input, s.info.timed);
        }
        for s in &scenarios {
            println!("{}\t(scenario; run when named) {}: {}", s.id, s.info.input, s.info.timed);
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Everything that can be refused is refused before any timing.
    for m in &args.models {
        if specs.iter().any(|s| s.id == *m) || m == SERVE || scenarios.iter().any(|s| s.id == *m) {
            continue;
        }
        if !MODELS.contains(&m.as_str()) {
            bail!("unknown model or workload '{m}' (models: {}, {SERVE}; --list shows workloads)", MODELS.join(", "));
        }
        if !specs.iter().any(|s| s.model == m) {
            bail!("model '{m}' has no workloads yet (not implemented in this version)");
        }
    }
    let table = targets::Table::load(args.targets_file.as_deref())?;
    let baseline = args.compare.as_deref().map(json::read).transpose()?;
    let peer_times = if args.peers.is_empty() { None } else { Some(crate::peers::read_all(&args.peers)?) };
    let output = args.output.clone().unwrap_or_else(default_output);
    let html_path = args.html.clone().unwrap_or_else(|| output.with_extension("html"));
    if args.output.is_none() {
        std::fs::create_dir_all(output.parent().unwrap_or(Path::new("."))).ok();
    }
    // The reports never land on a file this run reads.
    let mut inputs: Vec<(&str, &Path)> = Vec::new();
    inputs.extend(args.compare.as_deref().map(|p| ("-c", p)));
    inputs.extend(args.conformance.as_deref().map(|p| ("--conformance", p)));
    inputs.extend(args.targets_file.as_deref().map(|p| ("--targets-file", p)));
    inputs.extend(args.peers.iter().map(|p| ("--peer", p.as_path())));
    crate::outputs::check_report_paths(&output, &html_path, &inputs)?;
    check_writable(&output)?;
    check_writable(&html_path)?;
    if let Some(d) = args.record.as_deref().filter(|d| d.exists() && !d.is_dir()) {
        bail!("--record {}: not a folder", d.display());
    }
    if args.processes > 1 && args.save_outputs.is_some() {
        bail!("--save-outputs runs in one process: leave out --processes");
    }
    if args.processes > 1 && args.run_peers {
        bail!("--peers runs in one process: leave out --processes");
    }
    let peers_python = args.run_peers.then(|| peer_proc::python(args.peers_python.as_deref(), &meta::repo_root())).map(|p| check_peer_python(&p).map(|()| p)).transpose()?;
    let outputs_dir = args.save_outputs.as_deref().map(crate::accuracy::OutputsDir::create).transpose()?;

    if let Some(d) = &args.device {
        runtime::select_device(d.parse()?)?;
    }
    let kind: DeviceKind = runtime::default_device_kind()?;
    let warmup = args.warmup.unwrap_or(if args.quick { 1 } else { 3 });
    let iterations = args.iterations.unwrap_or(if args.quick { 5 } else { 15 });
    let max_time = args.max_time.unwrap_or(if args.quick { 10.0 } else { 30.0 });
    let variants = args.variant.variant.list();
    let order = args.order.resolve(kind);
    let wanted: Vec<&Spec> = specs.iter().filter(|s| args.models.is_empty() || args.models.iter().any(|m| m == s.model || *m == s.id)).collect();
    // With --targets, the workloads this device class's rows are judged on run, heavy or not.
    let judged = if args.targets { table.peer_workloads_of(meta::device_class(kind)) } else { vec![] };
    let (selected, skipped): (Vec<&Spec>, Vec<&Spec>) = wanted.into_iter().partition(|s| !s.heavy || kind == DeviceKind::Gpu || args.heavy || args.models.contains(&s.id) || judged.contains(&s.id));
    if !skipped.is_empty() && !args.quiet {
        eprintln!("Skipping {} heavy workload(s) on the CPU (pass --heavy, or name one with -m): {}", skipped.len(), skipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", "));
    }
    let mut meta = meta::collect(kind);
    // The decode floors' basis, measured only when a decode workload will use it.
    if selected.iter().any(|s| s.work.weight_bytes_per_token.is_some()) {
        meta.read_bandwidth_bytes_per_s = read_bandwidth().ok();
    }
    if let Some(b) = &baseline {
        compare::check_compatible_meta(&b.meta, &meta, args.force)?;
    }
    if let Some(p) = &peer_times {
        crate::peers::check_precision(p, meta.precision.as_deref())?;
    }
    let conformance = match &args.conformance {
        Some(p) => {
            let c = report::Conformance::read(p)?;
            c.check_matches(&meta).with_context(|| format!("--conformance {}", p.display()))?;
            Some(c.summary())
        }
        None => None,
    };
    let settings = Settings {
        quick: args.quick,
        warmup,
        iterations,
        variants: variants.iter().map(|v| v.as_str().to_string()).collect(),
        models: if args.models.is_empty() { MODELS.iter().map(|s| s.to_string()).collect() } else { args.models.clone() },
        device: kind.as_str().into(),
        threshold_pct: args.threshold,
        max_time_s: Some(max_time),
        order: Some(order.as_str().into()),
        processes: (args.processes > 1).then_some(args.processes),
        merged_from: vec![],
    };
    if !args.quiet {
        eprintln!(
            "Running {} workload(s){} on {} ({}, precision {}, variants {}), {} warm-up + {} timed run(s) per variant",
            selected.len(),
            match scenarios.iter().filter(|s| args.models.iter().any(|m| m == SERVE || *m == s.id)).count() {
                0 => String::new(),
                n => format!(" and {n} serving scenario(s)"),
            },
            meta.device_name,
            meta.device_class,
            meta.precision.as_deref().unwrap_or("?"),
            order.as_str(),
            warmup,
            iterations
        );
    }

    let mut results = Vec::new();
    if args.processes > 1 {
        let plan = processes::ChildPlan {
            ids: selected.iter().map(|s| s.id.as_str()).collect(),
            device: kind.as_str(),
            precision: meta.precision.as_deref().unwrap_or("fp32"),
            warmup,
            iterations,
            max_time,
            variant: args.variant.variant.as_str(),
            order: order.as_str(),
            quick: args.quick,
        };
        let bar = crate::progress::bar(u64::from(args.processes), "processes", args.quiet);
        results = processes::run(&plan, args.processes, &bar)?;
        bar.finish_and_clear();
    } else {
        let total = selected.len() as u64 * variants.len() as u64 * u64::from(warmup + iterations);
        let bar = crate::progress::bar(total, "runs", args.quiet);
        let mut server: Option<peer_proc::PeerServer> = None;
        for spec in &selected {
            if let Some(py) = &peers_python {
                // One peer process per model, started when its first workload comes up.
                if server.as_ref().is_none_or(|s| s.model != spec.model) && peer_proc::script_for(spec.model).is_some() {
                    // The last model's peer goes first: two models' weights need not coexist.
                    drop(server.take());
                    bar.set_message(format!("{} (starting the PyTorch peer)", spec.id));
                    server = Some(peer_proc::PeerServer::start(py, &meta::repo_root().join("scripts/peers"), spec.model, kind.as_str(), peer_proc::threads())?);
                }
            }
            let peer = server.as_mut().filter(|s| s.model == spec.model && s.workloads.contains_key(&spec.id));
            bar.set_message(format!("{} (building)", spec.id));
            let plan = Plan { warmup, iterations, max_time };
            // A heavy workload that runs only because a targets row is judged on it runs only
            // the variant the row judges (on the CPU, the turbo encoder's naive variant alone
            // would take minutes per round).
            let only_judged = spec.heavy && kind == DeviceKind::Cpu && !args.heavy && !args.models.contains(&spec.id) && judged.contains(&spec.id);
            let vs: Vec<Variant> = if only_judged { variants.iter().copied().filter(|&v| v == Variant::Optimized).collect() } else { variants.clone() };
            if vs.is_empty() {
                continue;
            }
            let r = measure(spec, scale, &vs, order, plan, &bar, outputs_dir.as_ref(), peer).with_context(|| format!("workload {}", spec.id))?;
            results.push(r);
        }
        drop(server);
        bar.finish_and_clear();
    }

    let chosen: Vec<&serve::ScenarioSpec> = scenarios.iter().filter(|s| args.models.iter().any(|m| m == SERVE || *m == s.id)).collect();
    let mut scenario_results = Vec::new();
    if !chosen.is_empty() {
        let ss = serve::Settings {
            queries: args.queries.unwrap_or(if args.quick { 30 } else { 100 }) as usize,
            server_queries: args.server_queries.unwrap_or(if args.quick { 24 } else { 64 }) as usize,
            server_steps: args.server_steps.unwrap_or(if args.quick { 3 } else { 5 }) as usize,
            latency_bound_s: args.latency_bound.map(|ms| ms / 1e3),
            max_batch: args.serve_batch.map(|b| b as usize),
            offline_runs: 3,
        };
        let bar = crate::progress::bar(serve::runs_per_scenario(&ss) * (chosen.len() * variants.len()) as u64, "queries", args.quiet);
        for spec in &chosen {
            for &v in &variants {
                scenario_results.push(serve::measure(spec, v, &ss, &bar).with_context(|| format!("scenario {}", spec.id))?);
            }
        }
        bar.finish_and_clear();
    }
    let scenarios = scenario_results;

    report::fill_step_floors(&mut results, meta.read_bandwidth_bytes_per_s);
    let mut rep = Report {
        schema_version: report::SCHEMA_VERSION,
        meta,
        settings,
        workloads: results,
        targets: vec![],
        comparison: None,
        conformance,
        scenarios,
    };
    if let Some(p) = peer_times {
        let unmatched = crate::peers::attach(&mut rep, p);
        if !unmatched.is_empty() && !args.quiet {
            eprintln!("peer times for workloads that did not run (left out): {}", unmatched.join(", "));
        }
    }
    rep.targets = table.evaluate(&rep.meta.device_class, &rep.workloads);
    if let (Some(b), Some(path)) = (&baseline, &args.compare) {
        compare::check_compatible(b, &rep, args.force)?;
        rep.comparison = Some(compare::compare(b, &path.display().to_string(), &rep, args.threshold));
    }

    let html = report::html::render(&rep)?;
    json::write(&rep, &output)?;
    json::write_atomic(&html_path, html.as_bytes())?;
    let saved = outputs_dir.map(crate::accuracy::OutputsDir::finish).transpose()?;
    let mut text = report::text::render(&rep);
    if !args.targets {
        // The targets table is printed on request; the JSON always carries it.
        if let Some(i) = text.find("\nTargets (") {
            let end = text[i + 1..].find("\n\n").map_or(text.len(), |j| i + 1 + j);
            text.replace_range(i..end, "");
        }
    }
    print!("{text}");
    if args.targets {
        println!("Targets from: {}", table.source);
    }
    println!("\nReports: {} and {}", output.display(), html_path.display());
    if let Some(dir) = &args.record {
        println!("Recorded: {}", crate::history::record(&rep, dir)?.display());
    }
    if let Some(d) = saved {
        println!("Outputs: {} (compare two such folders with `harness accuracy`)", d.display());
    }
    if let Ok(summary) = std::env::var("GITHUB_STEP_SUMMARY") {
        use std::io::Write;
        let md = report::markdown::render(&rep);
        std::fs::OpenOptions::new().create(true).append(true).open(&summary).and_then(|mut f| f.write_all(md.as_bytes())).with_context(|| format!("writing the step summary to {summary}"))?;
    }

    if let Some(c) = &rep.comparison {
        let n = c.regressions().count();
        if n > 0 {
            eprintln!("{n} regression(s) against {} (threshold {}%)", c.baseline, c.threshold_pct);
            return Ok(ExitCode::from(compare::REGRESSION_EXIT));
        }
    }
    if args.targets {
        if let Some(code) = targets::verdict_exit(&rep.targets, &rep.meta.device_class, "their workloads did not run in this invocation") {
            return Ok(ExitCode::from(code));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The peer environment imports what the peer scripts need, before any timing starts.
fn check_peer_python(py: &Path) -> Result<()> {
    let how = "make it with scripts/setup-peers.sh, or name one with --peers-python (or HARNESS_PEERS_PYTHON)";
    if !py.exists() {
        bail!("--peers: no peer environment at {}: {how}", py.display());
    }
    let out = std::process::Command::new(py)
        .args(["-c", "import torch, transformers, demucs, numpy; print(torch.__version__, transformers.__version__)"])
        .output()
        .with_context(|| format!("--peers: cannot run {}", py.display()))?;
    if !out.status.success() {
        bail!("--peers: {} lacks the peer packages ({}): {how}", py.display(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("import failed"));
    }
    Ok(())
}

/// How many runs a workload gets.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: u32,
    iterations: u32,
    /// Seconds of timed rounds the workload may use.
    max_time: f64,
}

impl Plan {
    /// Timed rounds for a workload whose round takes `round_s`: all `iterations` when they fit
    /// in the budget, else as many as fit, but at least [`report::MIN_ROUNDS`].
    fn rounds(&self, round_s: f64) -> u32 {
        let fit = (self.max_time / round_s.max(1e-9)).floor() as u32;
        self.iterations.min(fit.max(report::MIN_ROUNDS))
    }
}

/// Time one workload's variants in `order`. MLX peak and active memory are read around every
/// timed run, the peak reset before each.
#[allow(clippy::too_many_arguments)]
fn measure(
    spec: &Spec,
    scale: Scale,
    variants: &[Variant],
    order: Order,
    plan: Plan,
    bar: &ProgressBar,
    save: Option<&crate::accuracy::OutputsDir>,
    peer: Option<&mut peer_proc::PeerServer>,
) -> Result<WorkloadResult> {
    let mut w = (spec.build)(scale)?;
    bar.set_message(spec.id.clone());
    let load_before = report::load_average();
    let mut timed = Timed::default();
    let mut peer_run = peer.map(|p| PeerRun { server: p, id: spec.id.as_str(), samples: Vec::new() });
    match order {
        Order::Blocked => {
            // Each variant its own warm-up and its share of the time budget.
            let share = Plan { max_time: plan.max_time / variants.len() as f64, ..plan };
            for &v in variants {
                // Each variant starts from an empty buffer cache, as in a process of its own
                // (HARNESS_BLOCKED_KEEP_CACHE=1 keeps it: the experiment that showed why).
                if std::env::var_os("HARNESS_BLOCKED_KEEP_CACHE").is_none() {
                    mlx_rs::memory::clear_cache()?;
                }
                time_rounds(w.as_mut(), &[v], share, bar, &mut timed, &real_clock, None)?;
            }
            if let Some(p) = peer_run.as_mut() {
                time_rounds(w.as_mut(), &[], share, bar, &mut timed, &real_clock, Some(p))?;
            }
        }
        Order::Interleaved | Order::Auto => time_rounds(w.as_mut(), variants, plan, bar, &mut timed, &real_clock, peer_run.as_mut())?,
    }
    let peer_result = match peer_run {
        Some(run) if !run.samples.is_empty() => {
            let m = &run.server.workloads[&spec.id];
            let when = match order {
                Order::Blocked => "run in this bench process after ours (blocked: its warm-up and timed runs together)",
                Order::Interleaved | Order::Auto => "run in this bench process's rounds, alternating with ours",
            };
            let how = format!("{when}, {} thread(s) each", run.server.threads);
            Some(report::Peer {
                name: m.peer.clone(),
                median_s: stats::median(&run.samples),
                samples_s: run.samples,
                precision: m.precision.clone(),
                note: Some(m.note.as_ref().map_or(how.clone(), |n| format!("{n}; {how}"))),
            })
        }
        _ => None,
    };
    if let Some(dir) = save {
        let mut named = Vec::new();
        for &v in variants {
            for (name, a) in w.outputs(v)? {
                named.push((format!("{}.{name}", v.as_str()), a));
            }
        }
        dir.save(&spec.id, &named)?;
    }
    let mut out = BTreeMap::new();
    for &v in variants {
        let memory = timed.memory.remove(&v).unwrap_or(Memory { peak_bytes: 0, active_bytes: 0 });
        let s = timed.samples.remove(&v).unwrap_or_default();
        let st = stats::summarize(&s);
        let throughput = Throughput::from_work(&spec.work, st.median);
        out.insert(v.as_str().to_string(), VariantResult { stats: st, samples_s: s, throughput, memory, process_medians_s: vec![] });
    }
    let speedup = match (out.get("naive"), out.get("optimized")) {
        (Some(n), Some(o)) => Some(stats::paired_speedup(&n.samples_s, &o.samples_s)),
        _ => None,
    };
    Ok(WorkloadResult {
        id: spec.id.clone(),
        model: spec.model.to_string(),
        info: spec.info.clone(),
        work: spec.work,
        variants: out,
        speedup,
        peer: peer_result,
        load: load_before.zip(report::load_average()).map(|(before, after)| report::LoadChange { before, after }),
    })
}

/// Samples and peak memory per variant.
#[derive(Default)]
struct Timed {
    samples: BTreeMap<Variant, Vec<f64>>,
    memory: BTreeMap<Variant, Memory>,
}

/// Seconds on the monotonic clock since the first call: what the timing loop reads (tests give
/// it a clock of their own).
/// The rate at which the default device streams weights through a matrix-vector product, as
/// a decode step does: the best of five products of a 16384 x 16384 float32 matrix (1 GiB,
/// large enough that a GPU's launch costs little beside it) with a vector, bytes per second.
fn read_bandwidth() -> Result<f64> {
    let n = 16384;
    let a = mlx_rs::random::normal::<f32>(&[n, n], None, None, &mlx_rs::random::key(1)?)?;
    let x = mlx_rs::random::normal::<f32>(&[n, 1], None, None, &mlx_rs::random::key(2)?)?;
    mlx_rs::transforms::eval([&a, &x])?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        a.matmul(&x)?.eval()?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(f64::from(n) * f64::from(n) * 4.0 / best)
}

fn real_clock() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Warm up, then time rounds of `variants` (one run each per round, alternating which goes
/// first), adding to `timed`. `clock` gives seconds.
/// A peer taking part in the rounds: its server, the workload id, its samples so far.
struct PeerRun<'a> {
    server: &'a mut peer_proc::PeerServer,
    id: &'a str,
    samples: Vec<f64>,
}

/// Warm up, then time rounds of `variants` (one run each per round, alternating which goes
/// first), adding to `timed`; a `peer` runs once per round too, first or last in turn (its
/// samples are its own clock's). `clock` gives seconds.
fn time_rounds(w: &mut dyn workload::Workload, variants: &[Variant], plan: Plan, bar: &ProgressBar, timed: &mut Timed, clock: &dyn Fn() -> f64, mut peer: Option<&mut PeerRun>) -> Result<()> {
    let mut round_s: f64 = 0.0;
    let warm_start = clock();
    for i in 0..plan.warmup {
        let t = clock();
        for &v in variants {
            w.prepare(v)?;
            w.run(v)?;
            bar.inc(1);
        }
        if let Some(p) = peer.as_deref_mut() {
            p.server.run(p.id)?;
        }
        round_s = clock() - t;
        // A round longer than a quarter of the budget is warm after one; and the warm-ups
        // together never take more than the budget (-w 4294967295 would never end).
        if round_s > plan.max_time / 4.0 || clock() - warm_start > plan.max_time {
            bar.inc(u64::from(plan.warmup - i - 1) * variants.len() as u64);
            break;
        }
    }
    // Without a warm-up, the first timed round sets the pace.
    let mut rounds = if plan.warmup == 0 { None } else { Some(plan.rounds(round_s)) };
    if let Some(r) = rounds {
        bar.inc(u64::from(plan.iterations - r) * variants.len() as u64);
    }
    let mut round = 0;
    while rounds.is_none_or(|r| round < r) {
        let started = clock();
        let order: Vec<Variant> = if round % 2 == 0 { variants.to_vec() } else { variants.iter().rev().copied().collect() };
        let peer_first = round % 2 == 1;
        if let Some(p) = peer.as_deref_mut().filter(|_| peer_first) {
            let s = p.server.run(p.id)?;
            p.samples.push(s);
        }
        for v in order {
            w.prepare(v)?;
            mlx_rs::memory::reset_peak_memory()?;
            let t = clock();
            w.run(v)?;
            timed.samples.entry(v).or_default().push(clock() - t);
            let m = Memory {
                peak_bytes: mlx_rs::memory::peak_memory()? as u64,
                active_bytes: mlx_rs::memory::active_memory()? as u64,
            };
            let e = timed.memory.entry(v).or_insert(m);
            e.peak_bytes = e.peak_bytes.max(m.peak_bytes);
            bar.inc(1);
        }
        if let Some(p) = peer.as_deref_mut().filter(|_| !peer_first) {
            let s = p.server.run(p.id)?;
            p.samples.push(s);
        }
        if rounds.is_none() {
            let r = plan.rounds(clock() - started);
            bar.inc(u64::from(plan.iterations - r) * variants.len() as u64);
            rounds = Some(r);
        }
        round += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_workloads_get_fewer_rounds_but_never_fewer_than_three() {
        let plan = Plan { warmup: 3, iterations: 15, max_time: 30.0 };
        assert_eq!(plan.rounds(0.01), 15);
        assert_eq!(plan.rounds(3.0), 10);
        assert_eq!(plan.rounds(37.0), 3);
        assert_eq!(Plan { iterations: 2, ..plan }.rounds(37.0), 2, "-i below the floor wins");
    }

    /// A workload on a fake clock (hyperfine's `MockExecutor`): each run of a variant advances
    /// the clock by that variant's cost, and every call is logged.
    struct Mock {
        now: std::rc::Rc<std::cell::Cell<f64>>,
        cost: BTreeMap<Variant, f64>,
        log: Vec<String>,
    }

    impl workload::Workload for Mock {
        fn prepare(&mut self, v: Variant) -> Result<()> {
            self.log.push(format!("prepare {}", v.as_str()));
            Ok(())
        }
        fn run(&mut self, v: Variant) -> Result<()> {
            self.now.set(self.now.get() + self.cost[&v]);
            self.log.push(format!("run {}", v.as_str()));
            Ok(())
        }
    }

    fn mock(naive_s: f64, optimized_s: f64) -> Mock {
        Mock {
            now: Default::default(),
            cost: BTreeMap::from([(Variant::Naive, naive_s), (Variant::Optimized, optimized_s)]),
            log: Vec::new(),
        }
    }

    fn time(w: &mut Mock, variants: &[Variant], plan: Plan) -> Timed {
        let now = w.now.clone();
        let mut timed = Timed::default();
        time_rounds(w, variants, plan, &ProgressBar::hidden(), &mut timed, &move || now.get(), None).unwrap();
        timed
    }

    const BOTH: [Variant; 2] = [Variant::Naive, Variant::Optimized];

    #[test]
    fn rounds_alternate_which_variant_goes_first_and_each_run_is_prepared() {
        let mut w = mock(2.0, 1.0);
        let timed = time(&mut w, &BOTH, Plan { warmup: 1, iterations: 4, max_time: 100.0 });
        let runs: Vec<&str> = w.log.iter().filter_map(|l| l.strip_prefix("run ")).collect();
        // One warm-up round, then four timed rounds alternating the lead.
        assert_eq!(runs, ["naive", "optimized", "naive", "optimized", "optimized", "naive", "naive", "optimized", "optimized", "naive"]);
        assert!(w.log.chunks(2).all(|p| p[0].strip_prefix("prepare ") == p[1].strip_prefix("run ")), "{:?}", w.log);
        // Each sample is exactly the run's cost on the fake clock: nothing else is timed.
        assert_eq!(timed.samples[&Variant::Naive], [2.0; 4]);
        assert_eq!(timed.samples[&Variant::Optimized], [1.0; 4]);
        assert_eq!(timed.memory.len(), 2);
    }

    #[test]
    fn the_budget_bounds_rounds_and_warm_ups() {
        // Rounds of 3 s in a 10 s budget: 3 of the 15 asked for.
        let mut w = mock(2.0, 1.0);
        let timed = time(&mut w, &BOTH, Plan { warmup: 1, iterations: 15, max_time: 10.0 });
        assert_eq!(timed.samples[&Variant::Naive].len(), 3);
        // A warm-up round over a quarter of the budget is enough: one of the five asked for.
        let mut w = mock(2.0, 1.0);
        time(&mut w, &BOTH, Plan { warmup: 5, iterations: 3, max_time: 10.0 });
        assert_eq!(w.log.iter().filter(|l| l.starts_with("run")).count(), 2 + 3 * 2);
        // Without a warm-up the first timed round sets the pace: 40 s rounds, still 3 rounds.
        let mut w = mock(30.0, 10.0);
        let timed = time(&mut w, &BOTH, Plan { warmup: 0, iterations: 15, max_time: 30.0 });
        assert_eq!(timed.samples[&Variant::Optimized], [10.0; 3]);
        // One variant alone: no alternation to do.
        let mut w = mock(2.0, 1.0);
        let timed = time(&mut w, &[Variant::Optimized], Plan { warmup: 0, iterations: 5, max_time: 100.0 });
        assert_eq!(timed.samples[&Variant::Optimized], [1.0; 5]);
        assert!(!timed.samples.contains_key(&Variant::Naive));
    }
}
