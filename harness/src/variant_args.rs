//! `--variant`, declared once: the commands that run one implementation flatten
//! [`VariantArg`], the ones that compare both flatten [`VariantsArg`]. Either way the value is a
//! [`models::Variant`], parsed by clap, which each command hands to the models as their strategy.
use models::Variant;

/// `--variant naive|optimized` (default optimized).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct VariantArg {
    /// Which implementation runs: naive (the straightforward port: PyTorch's layout with
    /// transposes inside, explicit attention, concatenating KV cache, cross-attention K/V
    /// recomputed, eval every step) or optimized (the seed's optimizations).
    #[arg(long, value_enum, default_value_t = Variant::Optimized)]
    pub variant: Variant,
}

/// Which of the two implementations a comparing command runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variants {
    Naive,
    Optimized,
    /// Naive and optimized, side by side.
    Both,
}

impl Variants {
    pub fn as_str(self) -> &'static str {
        match self {
            Variants::Naive => "naive",
            Variants::Optimized => "optimized",
            Variants::Both => "both",
        }
    }

    pub fn list(self) -> Vec<Variant> {
        match self {
            Variants::Naive => vec![Variant::Naive],
            Variants::Optimized => vec![Variant::Optimized],
            Variants::Both => vec![Variant::Naive, Variant::Optimized],
        }
    }
}

/// `--variant naive|optimized|both` (default both).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct VariantsArg {
    /// Which implementations run (naive, optimized, or both side by side).
    #[arg(long, value_enum, default_value_t = Variants::Both)]
    pub variant: Variants,
}
