//! Per-phase profiles: a forward pass given a [`Phases`] evaluates at each phase boundary and
//! records the wall time since the previous one. Evaluating there costs the pipelining that one
//! evaluation at the end allows, so the phases add up to more than an unprofiled run; they say
//! where the time goes, not what a run takes.
use std::time::Instant;

use mlx_rs::Array;

use crate::error::Result;

#[derive(Debug, Clone)]
pub struct Phases {
    clock: Instant,
    /// `(phase, milliseconds)` in the order run.
    pub rows: Vec<(String, f64)>,
}

impl Default for Phases {
    fn default() -> Self {
        Self { clock: Instant::now(), rows: Vec::new() }
    }
}

impl Phases {
    /// Restart the clock (before the first phase).
    pub fn start(&mut self) {
        self.clock = Instant::now();
    }

    /// Evaluate `arrays` and record the time since the last mark under `name`.
    pub fn mark(&mut self, name: impl Into<String>, arrays: &[&Array]) -> Result<()> {
        mlx_rs::transforms::eval(arrays.iter().copied())?;
        self.rows.push((name.into(), self.clock.elapsed().as_secs_f64() * 1e3));
        self.clock = Instant::now();
        Ok(())
    }
}

/// [`Phases::mark`] when profiling, nothing otherwise.
pub fn mark(p: &mut Option<&mut Phases>, name: impl FnOnce() -> String, arrays: &[&Array]) -> Result<()> {
    match p {
        Some(p) => p.mark(name(), arrays),
        None => Ok(()),
    }
}
