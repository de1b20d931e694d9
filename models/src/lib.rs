//! The model zoo: five audio networks on mlx-rs, each with a naive and an optimized path over
//! the same modules and weights.

pub mod error;
pub mod hub;
pub mod nn;
pub mod runtime;
pub mod weights;

pub use error::{Error, Result};
