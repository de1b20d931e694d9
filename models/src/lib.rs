//! The model zoo: five audio networks on mlx-rs, each with a naive and an optimized path over
//! the same modules and weights.

pub mod checkpoint;
pub mod chunked;
pub mod clap;
pub mod config;
pub mod encodec;
pub mod error;
pub mod htdemucs;
pub mod hub;
pub mod musicgen;
pub mod nn;
pub mod runtime;
pub mod text;
pub mod weights;
pub mod whisper;

pub use error::{Error, Result};

/// The two paths every model offers over the same modules and weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// The straightforward port: what the seed's optimizations are measured against.
    Naive,
    /// The seed's optimizations applied.
    Optimized,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Naive => "naive",
            Variant::Optimized => "optimized",
        }
    }
}
