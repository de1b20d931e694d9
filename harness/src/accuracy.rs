//! `harness accuracy REFERENCE CANDIDATE`: how far the outputs of one run are from another's,
//! for the same workloads (`bench --save-outputs`). Made for the cost of a precision mode (the
//! same workloads at `--precision fp32` and `tf32`) or of a change: token and code agreement,
//! audio and embedding signal-to-noise ratio and cosine, against the reference run.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use mlx_rs::{Array, Dtype};
use models::weights;
use serde::Serialize;

#[derive(clap::Args)]
#[command(after_help = "\
Exit status:
  0  compared (the numbers are a measurement, not a verdict)
  1  a folder unreadable, not made by `bench --save-outputs`, or with no output in common")]
pub struct Args {
    /// The reference run's folder (`bench --save-outputs`), e.g. at --precision fp32.
    reference: PathBuf,
    /// The run to judge against it, e.g. the same workloads at --precision tf32.
    candidate: PathBuf,
    /// Print the rows as JSON.
    #[arg(long)]
    json: bool,
}

/// The saved outputs' folder of a `bench --save-outputs` run (a new folder, appearing whole
/// when the run ends, or not at all).
#[derive(Debug)]
pub struct OutputsDir(crate::outputs::StagedDir);

/// Workload ids become file names: each '/'-separated part a plain name (the file-name rule of
/// `models::config::check_file_stem`), the '/' becoming "__".
fn file_name(id: &str) -> Result<String> {
    for part in id.split('/') {
        models::config::check_file_stem("workload id part", part).map_err(|e| anyhow::anyhow!("workload id '{id}' cannot be a file name: {e}"))?;
    }
    Ok(format!("{}.safetensors", id.replace('/', "__")))
}

impl OutputsDir {
    /// Refuse an existing path (never overwritten) or a missing parent, before any work.
    pub fn create(target: &Path) -> Result<Self> {
        if target.exists() {
            bail!("--save-outputs {}: already exists (outputs go to a new folder)", target.display());
        }
        Ok(OutputsDir(crate::outputs::StagedDir::create("--save-outputs", target)?))
    }

    /// Save one workload's named outputs.
    pub fn save(&self, workload: &str, named: &[(String, Array)]) -> Result<()> {
        if named.is_empty() {
            return Ok(());
        }
        let path = self.0.path(&file_name(workload)?)?;
        weights::save_safetensors(&path, named, &[("workload", workload)]).with_context(|| format!("saving the outputs of {workload}"))
    }

    /// Move the folder into place.
    pub fn finish(self) -> Result<PathBuf> {
        self.0.finish()
    }
}

/// One output of one workload and variant, candidate against reference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub workload: String,
    /// "<variant>.<output>", e.g. "optimized.tokens".
    pub output: String,
    pub elements: usize,
    /// Bit-for-bit the same.
    pub identical: bool,
    /// Integer outputs (tokens, codes): the share of equal elements, and the first that differs
    /// (flat index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<usize>,
    /// Float outputs: 10 log10(sum ref^2 / sum (cand - ref)^2); absent when identical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snr_db: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs: Option<f64>,
    /// Why this output could not be compared (shapes differ, non-finite values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

fn is_integer(d: Dtype) -> bool {
    matches!(d, Dtype::Int8 | Dtype::Int16 | Dtype::Int32 | Dtype::Int64 | Dtype::Uint8 | Dtype::Uint16 | Dtype::Uint32 | Dtype::Uint64 | Dtype::Bool)
}

/// Compare one candidate output with its reference.
pub fn compare(workload: &str, output: &str, reference: &Array, candidate: &Array) -> Result<Row> {
    let mut row = Row {
        workload: workload.into(),
        output: output.into(),
        elements: reference.size(),
        identical: false,
        agreement: None,
        first_difference: None,
        snr_db: None,
        cosine: None,
        max_abs: None,
        problem: None,
    };
    if reference.shape() != candidate.shape() {
        row.problem = Some(format!("shape {:?}, the reference's {:?}", candidate.shape(), reference.shape()));
        return Ok(row);
    }
    if is_integer(reference.dtype()) && is_integer(candidate.dtype()) {
        let (r, c) = (flat::<i64>(reference, Dtype::Int64)?, flat::<i64>(candidate, Dtype::Int64)?);
        let equal = r.iter().zip(&c).filter(|(a, b)| a == b).count();
        row.identical = equal == r.len();
        row.agreement = Some(if r.is_empty() { 1.0 } else { equal as f64 / r.len() as f64 });
        row.first_difference = r.iter().zip(&c).position(|(a, b)| a != b);
        return Ok(row);
    }
    let (r, c) = (flat::<f32>(reference, Dtype::Float32)?, flat::<f32>(candidate, Dtype::Float32)?);
    if let Some(i) = r.iter().zip(&c).position(|(a, b)| !a.is_finite() || !b.is_finite()) {
        row.problem = Some(format!("non-finite value at {i} (reference {}, candidate {})", r[i], c[i]));
        return Ok(row);
    }
    let (mut sig, mut err, mut dot, mut nc, mut max_abs) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (&a, &b) in r.iter().zip(&c) {
        let (a, b) = (f64::from(a), f64::from(b));
        sig += a * a;
        err += (b - a) * (b - a);
        dot += a * b;
        nc += b * b;
        max_abs = max_abs.max((b - a).abs());
    }
    row.identical = err == 0.0;
    row.snr_db = (err > 0.0).then(|| 10.0 * (sig / err).log10());
    row.cosine = Some(if sig == 0.0 && nc == 0.0 { 1.0 } else { dot / (sig.sqrt() * nc.sqrt()).max(f64::MIN_POSITIVE) });
    row.max_abs = Some(max_abs);
    Ok(row)
}

fn flat<T: mlx_rs::ArrayElement + Copy>(a: &Array, d: Dtype) -> Result<Vec<T>> {
    let a = a.as_dtype(d)?.reshape(&[-1])?;
    a.eval()?;
    Ok(a.try_as_slice::<T>().map_err(|e| anyhow::anyhow!("reading an output: {e}"))?.to_vec())
}

/// The `.safetensors` files of a saved-outputs folder, by name.
fn files(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".safetensors") && !name.starts_with('.') {
            out.insert(name);
        }
    }
    if out.is_empty() {
        bail!("{}: no saved outputs (made by `bench --save-outputs`)", dir.display());
    }
    Ok(out)
}

/// Every output present in both folders, compared; plus the names present in one only.
pub fn compare_dirs(reference: &Path, candidate: &Path) -> Result<(Vec<Row>, Vec<String>)> {
    let (rf, cf) = (files(reference)?, files(candidate)?);
    let mut rows = Vec::new();
    let mut unmatched: Vec<String> = rf.symmetric_difference(&cf).cloned().collect();
    for name in rf.intersection(&cf) {
        let (rmap, rmeta) = weights::read_safetensors_with_metadata(&reference.join(name))?;
        let (cmap, _) = weights::read_safetensors_with_metadata(&candidate.join(name))?;
        let workload = rmeta.get("workload").cloned().unwrap_or_else(|| name.trim_end_matches(".safetensors").replace("__", "/"));
        let mut keys: Vec<&String> = rmap.keys().collect();
        keys.sort();
        for k in keys {
            match cmap.get(k) {
                Some(c) => rows.push(compare(&workload, k, &rmap[k], c)?),
                None => unmatched.push(format!("{name}: {k}")),
            }
        }
    }
    if rows.is_empty() {
        bail!("{} and {} have no output in common", reference.display(), candidate.display());
    }
    Ok((rows, unmatched))
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let (rows, unmatched) = compare_dirs(&args.reference, &args.candidate)?;
    if args.json {
        let v = serde_json::json!({"reference": args.reference, "candidate": args.candidate, "rows": rows, "unmatched": unmatched});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} against the reference {}:", args.candidate.display(), args.reference.display());
    println!("{:<34} {:<22} {:>10}  result", "workload", "output", "elements");
    for r in &rows {
        let result = if let Some(p) = &r.problem {
            format!("not comparable: {p}")
        } else if r.identical {
            "identical".into()
        } else if let Some(a) = r.agreement {
            format!("{:.2}% agree, first difference at {}", a * 100.0, r.first_difference.map_or("-".into(), |i| i.to_string()))
        } else {
            format!("SNR {:.1} dB, cosine {:.7}, max abs {:.2e}", r.snr_db.unwrap_or(f64::INFINITY), r.cosine.unwrap_or(1.0), r.max_abs.unwrap_or(0.0))
        };
        println!("{:<34} {:<22} {:>10}  {result}", r.workload, r.output, r.elements);
    }
    if !unmatched.is_empty() {
        println!("in one folder only: {}", unmatched.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_agree_by_position_and_audio_by_snr() {
        let a = Array::from_slice(&[1i32, 2, 3, 4], &[1, 4]);
        let b = Array::from_slice(&[1i32, 2, 9, 4], &[1, 4]);
        let r = compare("w", "tokens", &a, &b).unwrap();
        assert_eq!((r.agreement, r.first_difference, r.identical), (Some(0.75), Some(2), false));
        assert!(compare("w", "tokens", &a, &a).unwrap().identical);

        let x = Array::from_slice(&[1.0f32, -1.0, 1.0, -1.0], &[4]);
        let y = Array::from_slice(&[1.1f32, -1.0, 1.0, -1.0], &[4]);
        let r = compare("w", "audio", &x, &y).unwrap();
        // Signal 4, error 0.01: 26 dB.
        assert!((r.snr_db.unwrap() - 10.0 * 400f64.log10()).abs() < 1e-3, "{r:?}");
        assert!(r.cosine.unwrap() > 0.99 && r.cosine.unwrap() < 1.0);
        let same = compare("w", "audio", &x, &x).unwrap();
        assert!(same.identical && same.snr_db.is_none());
    }

    #[test]
    fn misshapen_and_non_finite_outputs_are_not_comparable() {
        let x = Array::from_slice(&[1.0f32, 2.0], &[2]);
        let r = compare("w", "o", &x, &Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])).unwrap();
        assert!(r.problem.unwrap().contains("shape"));
        let r = compare("w", "o", &x, &Array::from_slice(&[1.0f32, f32::NAN], &[2])).unwrap();
        assert!(r.problem.unwrap().contains("non-finite"));
    }

    #[test]
    fn an_outputs_folder_appears_whole_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        let d = OutputsDir::create(&target).unwrap();
        d.save("encodec/decode-5s", &[("optimized.audio".into(), Array::from_slice(&[0.5f32], &[1]))]).unwrap();
        assert!(!target.exists(), "not there before the run ends");
        drop(d);
        assert!(!target.exists() && std::fs::read_dir(tmp.path()).unwrap().count() == 0, "an unfinished folder leaves nothing");

        let d = OutputsDir::create(&target).unwrap();
        d.save("encodec/decode-5s", &[("optimized.audio".into(), Array::from_slice(&[0.5f32], &[1]))]).unwrap();
        d.finish().unwrap();
        assert!(target.join("encodec__decode-5s.safetensors").is_file());
        assert!(OutputsDir::create(&target).unwrap_err().to_string().contains("already exists"));
        let (rows, unmatched) = compare_dirs(&target, &target).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].identical && rows[0].workload == "encodec/decode-5s" && unmatched.is_empty());
        assert!(file_name("../x").is_err() && file_name("a//b").is_err());
    }
}
