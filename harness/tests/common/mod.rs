//! Helpers the harness's CLI tests share.
use std::path::{Path, PathBuf};

/// A committed fixture folder (`fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}
