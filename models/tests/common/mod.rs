//! Helpers the model parity tests share (each test binary uses some of them).
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use mlx_rs::{ops, Array};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

/// Max error beyond the fixtures' float tolerance `1e-4 + 1e-3 |want|` (0 when every element is
/// within it), and the max absolute error.
pub fn excess(got: &Array, want: &Array) -> (f32, f32) {
    assert_eq!(got.shape(), want.shape());
    let err = got.subtract(want).unwrap().abs().unwrap();
    let bound = want.abs().unwrap().multiply(mlx_rs::array!(1e-3f32)).unwrap().add(mlx_rs::array!(1e-4f32)).unwrap();
    let over = ops::maximum(err.subtract(&bound).unwrap(), mlx_rs::array!(0.0f32)).unwrap();
    (over.max(None).unwrap().item_cast::<f32>(), err.max(None).unwrap().item_cast::<f32>())
}
