//! Call [`emit`] from the build script of every package with binaries, tests or benches that
//! use MLX (the package must depend on `mlx-sys` directly, so that Cargo hands its build script
//! the `DEP_MLX_*` variables).
//!
//! `cargo:rustc-link-arg` reaches only the targets of the package whose build script prints it,
//! so `mlx-sys` cannot do this for its dependents. What it adds to each final link:
//! - an rpath to the prebuilt libmlx, so binaries run directly (no LD_LIBRARY_PATH);
//! - on Linux, OpenBLAS as a direct, `--no-as-needed` dependency. The dynamic loader searches
//!   the executable's own DT_NEEDED libraries before libmlx's, so `cblas_sgemm` and friends
//!   resolve to OpenBLAS instead of the reference BLAS bundled in the `mlx-cpu` wheel.

use std::env;

pub fn emit() {
    println!("cargo:rerun-if-env-changed=DEP_MLX_LIBDIR");
    println!("cargo:rerun-if-env-changed=DEP_MLX_BLAS");
    let Ok(libdir) = env::var("DEP_MLX_LIBDIR") else {
        println!(
            "cargo:warning=mlx-link: DEP_MLX_LIBDIR is unset; add `mlx-sys` to this package's \
             [dependencies] so its binaries get the libmlx rpath and OpenBLAS"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    match env::var("DEP_MLX_BLAS") {
        Ok(blas) if !blas.is_empty() => {
            println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed");
            println!("cargo:rustc-link-arg={blas}");
            println!("cargo:rustc-link-arg=-Wl,--pop-state");
        }
        _ => {}
    }
}
