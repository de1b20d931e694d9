//! What a benchmark is: a named workload with a naive and an optimized variant over the same
//! modules and weights. Setup happens in `build` and `prepare`, outside the timed region; `run`
//! is timed and must force MLX evaluation of everything it computes.
use anyhow::Result;
use mlx_rs::Array;

use crate::report::{Work, WorkloadInfo};

pub use models::Variant;

/// Sizes chosen for the run.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// `--quick`: smaller inputs where a workload has a cheaper stand-in.
    pub quick: bool,
}

pub trait Workload {
    /// Untimed, before each timed run of `variant` (fresh caches, inputs). Nothing by default.
    fn prepare(&mut self, _variant: Variant) -> Result<()> {
        Ok(())
    }
    /// The timed region. Evaluates its results before returning.
    fn run(&mut self, variant: Variant) -> Result<()>;
    /// What one run of `variant` computes, by name (untimed; run again after the timing), for
    /// `bench --save-outputs` and `harness accuracy`: how far a precision mode or a change moves
    /// the results. Empty where a workload does not say.
    fn outputs(&mut self, _variant: Variant) -> Result<Vec<(String, Array)>> {
        Ok(vec![])
    }
}

/// Normal noise of `shape` times `scale` from key `seed`, evaluated (a workload's input, made
/// before timing).
pub fn noise(shape: &[i32], seed: u64, scale: f32) -> Result<Array> {
    let a = mlx_rs::random::normal::<f32>(shape, None, None, &mlx_rs::random::key(seed)?)?.multiply(mlx_rs::array!(scale))?;
    a.eval()?;
    Ok(a)
}

/// Token sequences (equal lengths) as an int32 array `[batch, length]`.
pub fn tokens_array(seqs: &[Vec<i32>]) -> Result<Array> {
    let n = seqs.first().map_or(0, Vec::len);
    anyhow::ensure!(seqs.iter().all(|s| s.len() == n), "token sequences of unequal lengths");
    Ok(Array::from_slice(&seqs.concat(), &[seqs.len() as i32, n as i32]))
}

/// A registered workload, described without building it (`--list` builds nothing).
pub struct Spec {
    /// Unique id, `<model>/<name>`.
    pub id: String,
    /// The model it belongs to, as `-m` selects it.
    pub model: &'static str,
    pub info: WorkloadInfo,
    pub work: Work,
    /// Too slow for a CPU run by default (minutes per round there): skipped on the CPU unless
    /// `--heavy` is passed or the workload is named with `-m`. Always run on a GPU.
    pub heavy: bool,
    pub build: Box<dyn Fn(Scale) -> Result<Box<dyn Workload>>>,
}
