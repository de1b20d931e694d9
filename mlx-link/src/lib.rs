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
    let blas = env::var("DEP_MLX_BLAS").ok().filter(|b| !b.is_empty());
    emit_link_args(&libdir, blas.as_deref());
}

/// The link arguments themselves, for this package's final binaries: an rpath to `libdir` and,
/// when given, the BLAS shared library linked `--no-as-needed`. `mlx-sys` calls this for its
/// own tests with the values it has just found.
pub fn emit_link_args(libdir: &str, blas: Option<&str>) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    if let Some(blas) = blas {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed");
        println!("cargo:rustc-link-arg={blas}");
        println!("cargo:rustc-link-arg=-Wl,--pop-state");
    }
}
