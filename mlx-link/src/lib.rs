//! Call [`emit`] from the build script of every package with binaries, tests or benches that
//! use MLX (the package must depend on `mlx-sys` directly, so that Cargo hands its build script
//! the `DEP_MLX_*` variables).
//!
//! `cargo:rustc-link-arg` reaches only the targets of the package whose build script prints it,
//! so `mlx-sys` cannot do this for its dependents. What it adds to each final link:
//! - an rpath to the prebuilt libmlx, so binaries run directly (no LD_LIBRARY_PATH);
//! - on Linux, OpenBLAS as a direct, `--no-as-needed` dependency. The dynamic loader searches
//!   the executable's own DT_NEEDED libraries before libmlx's, so `cblas_sgemm` and friends
//!   resolve to OpenBLAS instead of the reference BLAS bundled in the `mlx-cpu` wheel;
//! - ahead of it, mlx-sys's GEMV shim (`mlx-sys/shim/gemv_shim.c`), which sends matrix-vector
//!   products to `cblas_sgemv`; an rpath to its folder.

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
    let libs: Vec<String> = env::var_os("DEP_MLX_BLAS").map(|v| env::split_paths(&v).map(|p| p.display().to_string()).filter(|p| !p.is_empty()).collect()).unwrap_or_default();
    emit_link_args(&libdir, &libs);
}

/// The link arguments themselves, for this package's final binaries: an rpath to `libdir` and,
/// in order, the given shared libraries linked `--no-as-needed` (with an rpath to each one's
/// folder). `mlx-sys` calls this for its own tests with the values it has just found.
pub fn emit_link_args(libdir: &str, libs: &[String]) {
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    if libs.is_empty() {
        return;
    }
    for lib in libs {
        if let Some(dir) = std::path::Path::new(lib).parent() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        }
    }
    println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed");
    for lib in libs {
        println!("cargo:rustc-link-arg={lib}");
    }
    println!("cargo:rustc-link-arg=-Wl,--pop-state");
}
