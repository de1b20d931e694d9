//! `bench --processes N`: the same workloads timed in N fresh processes, one after another, their
//! samples pooled. On the H200 the optimized EnCodec decode's median moved between about 30 and
//! 44 ms from one process to the next, whether or not the naive variant ran in the same
//! process; a single process's interval then says nothing about the next. Pooling processes
//! puts that spread into the result, and each variant keeps its per-process medians.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use crate::report::{json, Report, Throughput, WorkloadResult};
use crate::stats;

/// What every child runs: the parent's resolved settings, and the workloads by id.
pub struct ChildPlan<'a> {
    pub ids: Vec<&'a str>,
    pub device: &'a str,
    pub precision: &'a str,
    pub warmup: u32,
    pub iterations: u32,
    pub max_time: f64,
    pub variant: &'a str,
    pub order: &'a str,
    pub quick: bool,
}

impl ChildPlan<'_> {
    fn args(&self, out: &Path) -> Vec<String> {
        let mut a: Vec<String> = vec!["--precision".into(), self.precision.into(), "bench".into(), "--device".into(), self.device.into(), "--quiet".into()];
        for (flag, v) in [("-w", self.warmup.to_string()), ("-i", self.iterations.to_string()), ("--max-time", self.max_time.to_string())] {
            a.push(flag.into());
            a.push(v);
        }
        a.extend(["--variant".into(), self.variant.into(), "--order".into(), self.order.into()]);
        if self.quick {
            a.push("--quick".into());
        }
        for id in &self.ids {
            a.push("-m".into());
            a.push((*id).into());
        }
        a.push("-o".into());
        a.push(out.display().to_string());
        a.push("--html".into());
        a.push(out.with_extension("html").display().to_string());
        a
    }
}

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the plan in `n` processes of this executable and pool their results.
pub fn run(plan: &ChildPlan, n: u32, bar: &ProgressBar) -> Result<Vec<WorkloadResult>> {
    let exe = std::env::current_exe().context("finding the harness executable to run the processes")?;
    let scratch = Scratch(std::env::temp_dir().join(format!("harness-processes-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).with_context(|| format!("cannot create {}", scratch.0.display()))?;
    let mut reports = Vec::new();
    for k in 0..n {
        bar.set_message(format!("process {} of {n}", k + 1));
        let out = scratch.0.join(format!("process-{k}.json"));
        let o = Command::new(&exe).args(plan.args(&out)).output().with_context(|| format!("starting process {} of {n}", k + 1))?;
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("process {} of {n} failed ({}):\n{}", k + 1, o.status, tail.join("\n"));
        }
        reports.push(json::read(&out).with_context(|| format!("the report of process {} of {n}", k + 1))?);
        bar.inc(1);
    }
    pool(reports)
}

/// One result per workload from several runs of the same workloads: samples concatenated in
/// process order, statistics over the pool with the median's intervals from a bootstrap over
/// processes, each process's median kept.
pub fn pool(reports: Vec<Report>) -> Result<Vec<WorkloadResult>> {
    let mut it = reports.into_iter();
    let Some(first) = it.next() else { bail!("no process ran") };
    let mut out = first.workloads;
    // Per workload, each variant's samples process by process: the pool and the clusters of
    // its interval are both made from these.
    let mut runs: Vec<BTreeMap<String, Vec<Vec<f64>>>> = out.iter().map(|w| w.variants.iter().map(|(n, v)| (n.clone(), vec![v.samples_s.clone()])).collect()).collect();
    for v in out.iter_mut().flat_map(|w| w.variants.values_mut()) {
        v.process_medians_s = vec![v.stats.median];
    }
    for (k, r) in it.enumerate() {
        if r.workloads.len() != out.len() {
            bail!("process {} measured {} workloads, the first {}", k + 2, r.workloads.len(), out.len());
        }
        for ((mine, theirs), per) in out.iter_mut().zip(r.workloads).zip(runs.iter_mut()) {
            if mine.id != theirs.id {
                bail!("process {} measured {} where the first measured {}", k + 2, theirs.id, mine.id);
            }
            for (name, tv) in theirs.variants {
                let Some(mv) = mine.variants.get_mut(&name) else { bail!("process {} ran variant {name} of {}, the first did not", k + 2, mine.id) };
                mv.process_medians_s.push(tv.stats.median);
                mv.memory.peak_bytes = mv.memory.peak_bytes.max(tv.memory.peak_bytes);
                per.entry(name).or_default().push(tv.samples_s);
            }
        }
    }
    for (w, per) in out.iter_mut().zip(&runs) {
        for (name, v) in w.variants.iter_mut() {
            let clusters = &per[name];
            v.samples_s = clusters.concat();
            v.stats = stats::summarize(&v.samples_s);
            // The intervals over processes, not samples: a process's state is shared by all
            // its samples. The regression gate's interval too.
            if clusters.len() > 1 {
                let ci = stats::cluster_median_ci(clusters);
                v.stats.median_ci = ci;
                v.stats.median_ci_exact = ci;
            }
            v.throughput = Throughput::from_work(&w.work, v.stats.median);
        }
        w.speedup = match (w.variants.get("naive"), w.variants.get("optimized")) {
            (Some(a), Some(b)) => Some(stats::paired_speedup(&a.samples_s, &b.samples_s)),
            _ => None,
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_pool_their_samples_and_keep_their_medians() {
        let a = crate::report::sample_report(1.0);
        let b = crate::report::sample_report(2.0);
        let pooled = pool(vec![a.clone(), b.clone()]).unwrap();
        let v = &pooled[0].variants["optimized"];
        assert_eq!(v.samples_s.len(), a.workloads[0].variants["optimized"].samples_s.len() * 2);
        assert_eq!(v.process_medians_s, [a.workloads[0].variants["optimized"].stats.median, b.workloads[0].variants["optimized"].stats.median]);
        assert!(v.stats.median > a.workloads[0].variants["optimized"].stats.median && v.stats.median < b.workloads[0].variants["optimized"].stats.median);

        let mut other = b;
        other.workloads[0].id = "blocks/other".into();
        assert!(pool(vec![a, other]).unwrap_err().to_string().contains("where the first measured"));
    }

    #[test]
    fn children_get_the_parents_settings_and_no_outputs_of_its_own() {
        let plan = ChildPlan {
            ids: vec!["encodec/decode-5s"],
            device: "gpu",
            precision: "fp32",
            warmup: 2,
            iterations: 10,
            max_time: 30.0,
            variant: "both",
            order: "blocked",
            quick: false,
        };
        let a = plan.args(Path::new("/tmp/p/process-0.json"));
        let s = a.join(" ");
        assert!(
            s.starts_with(
                "--precision fp32 bench --device gpu --quiet -w 2 -i 10 --max-time 30 --variant both --order blocked -m encodec/decode-5s -o /tmp/p/process-0.json --html /tmp/p/process-0.html"
            ),
            "{s}"
        );
        assert!(!s.contains("--processes") && !s.contains("--peer") && !s.contains("-c "));
    }
}
