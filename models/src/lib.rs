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
pub mod rng;
pub mod runtime;
pub mod text;
pub mod torch_file;
pub mod vad;
pub mod weights;
pub mod whisper;

pub use error::{Error, Result};

/// The two paths every model offers over the same modules and weights. Each model maps it to
/// its own strategy (layouts, kernels, decode switches); with the `cli` feature it is also the
/// command line's `--variant` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Variant {
    /// The straightforward port: what the seed's optimizations are measured against.
    Naive,
    /// The seed's optimizations applied.
    #[default]
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

/// `--variant`'s values (a hand-written impl: the derive's paths would name this crate's
/// `clap` module, the model).
#[cfg(feature = "cli")]
impl ::clap::ValueEnum for Variant {
    fn value_variants<'a>() -> &'a [Self] {
        &[Variant::Naive, Variant::Optimized]
    }

    fn to_possible_value(&self) -> Option<::clap::builder::PossibleValue> {
        let help = match self {
            Variant::Naive => "the straightforward port the optimizations are measured against",
            Variant::Optimized => "the seed's optimizations applied",
        };
        Some(::clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}
