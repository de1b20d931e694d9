//! Build script for our mlx-sys 0.7.0 replacement.
//!
//! 1. find the mlx-c sources: `MLX_C_SRC_DIR`, else the copy packaged inside the crates.io
//!    mlx-sys 0.7.0 crate, located with a nested `cargo metadata`;
//! 2. find a prebuilt MLX: `MLX_DIR` / `MLX_PREFIX`, else `$MLX_PYTHON -m mlx --cmake-dir`
//!    (`MLX_PYTHON` is set to the project's `.venv` by `.cargo/config.toml`);
//! 3. on Linux, find OpenBLAS, which every final binary links so that MLX's CPU matmul does not
//!    run on the reference BLAS bundled in the `mlx-cpu` wheel;
//! 4. build mlx-c as a static library with CMake (`MLX_C_USE_SYSTEM_MLX=ON`);
//! 5. generate bindings for `mlx/c/*.h` with bindgen;
//! 6. tell Cargo how to link, and export `DEP_MLX_{LIBDIR,BLAS,VERSION,INCLUDE}` for the
//!    `mlx-link` helper that consumer build scripts call (rpath + OpenBLAS in every binary).
//!
//! Every failure names what is missing and how to get it, then exits non-zero.

use std::env;
use std::ffi::OsStr;
use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const UPSTREAM_NAME: &str = "mlx-sys";
const UPSTREAM_VERSION: &str = "0.7.0";
const SETUP_HINT: &str = "run ./scripts/setup.sh from the project root (it installs what is missing)";

/// Print a clear, framed error and stop the build.
fn fail(what: impl Display) -> ! {
    eprintln!("\n==================== mlx-sys build error ====================");
    eprintln!("{what}");
    eprintln!("=============================================================\n");
    std::process::exit(1);
}

fn out_dir() -> PathBuf {
    PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set (not run by cargo?)")))
}

fn is_mlx_c_root(dir: &Path) -> bool {
    dir.join("CMakeLists.txt").is_file() && dir.join("mlx/c/mlx.h").is_file()
}

// -------------------------------------------------------------------------------------------
// 1. mlx-c sources
// -------------------------------------------------------------------------------------------

fn locate_mlx_c() -> PathBuf {
    println!("cargo:rerun-if-env-changed=MLX_C_SRC_DIR");
    if let Some(dir) = env::var_os("MLX_C_SRC_DIR") {
        let dir = PathBuf::from(dir);
        if !is_mlx_c_root(&dir) {
            fail(format!("MLX_C_SRC_DIR={} is not an mlx-c checkout (it needs CMakeLists.txt and mlx/c/mlx.h)", dir.display()));
        }
        return dir;
    }

    // A throw-away manifest that depends on the real crates.io mlx-sys. It is its own
    // workspace, so the consumer's [patch] does not apply, and `cargo metadata` makes Cargo
    // download and unpack that crate and report where it is.
    let probe = out_dir().join("mlx-c-probe");
    let write = |path: PathBuf, text: String| {
        fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).and_then(|_| fs::write(&path, text)).unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())))
    };
    write(
        probe.join("Cargo.toml"),
        format!(
            "[package]\nname = \"mlx-sys-source-probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[dependencies]\n{UPSTREAM_NAME} = {{ version = \"={UPSTREAM_VERSION}\", \
             default-features = false }}\n\n[workspace]\n"
        ),
    );
    write(probe.join("src/lib.rs"), String::new());

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut last_err = String::new();
    // Offline first: no network and no index update when the crate is already cached.
    for offline in [true, false] {
        let mut cmd = Command::new(&cargo);
        cmd.args(["metadata", "--format-version=1", "--manifest-path"]).arg(probe.join("Cargo.toml")).env("CARGO_TARGET_DIR", probe.join("target"));
        if offline {
            cmd.arg("--offline");
        }
        let output = match cmd.output() {
            Ok(o) => o,
            Err(e) => fail(format!("could not run `{} metadata`: {e}", cargo.to_string_lossy())),
        };
        if !output.status.success() {
            last_err = String::from_utf8_lossy(&output.stderr).into_owned();
            continue;
        }
        let meta: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| fail(format!("nested cargo metadata printed invalid JSON: {e}")));
        let manifest = meta["packages"].as_array().and_then(|pkgs| {
            pkgs.iter().find_map(|p| {
                let registry = p["source"].as_str().is_some_and(|s| s.starts_with("registry+"));
                (p["name"] == UPSTREAM_NAME && p["version"] == UPSTREAM_VERSION && registry).then(|| PathBuf::from(p["manifest_path"].as_str().unwrap_or_default()))
            })
        });
        if let Some(manifest) = manifest {
            let root = manifest.parent().unwrap_or(Path::new("/")).join("src/mlx-c");
            if !is_mlx_c_root(&root) {
                fail(format!("{} has no packaged mlx-c under src/mlx-c", manifest.display()));
            }
            return root;
        }
        last_err = format!("{UPSTREAM_NAME} {UPSTREAM_VERSION} missing from cargo metadata");
    }
    fail(format!(
        "could not obtain the mlx-c sources from crates.io {UPSTREAM_NAME} {UPSTREAM_VERSION}.\n\
         Either let cargo reach crates.io once, or set MLX_C_SRC_DIR to an mlx-c v0.x checkout.\n\
         cargo said: {last_err}"
    ))
}

// -------------------------------------------------------------------------------------------
// 2. prebuilt MLX
// -------------------------------------------------------------------------------------------

struct Mlx {
    /// Folder holding MLXConfig.cmake.
    cmake_dir: PathBuf,
    include_dir: PathBuf,
    lib_dir: PathBuf,
}

fn locate_mlx() -> Mlx {
    for var in ["MLX_DIR", "MLX_PREFIX", "MLX_PYTHON"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let prefix = if let Some(dir) = env::var_os("MLX_DIR") {
        // CMake style: the folder with MLXConfig.cmake, i.e. <prefix>/share/cmake/MLX.
        PathBuf::from(dir).join("../../..")
    } else if let Some(prefix) = env::var_os("MLX_PREFIX") {
        PathBuf::from(prefix)
    } else {
        let python = env::var_os("MLX_PYTHON").unwrap_or_else(|| "python3".into());
        let shown = python.to_string_lossy().into_owned();
        let output = Command::new(&python).args(["-m", "mlx", "--cmake-dir"]).output().unwrap_or_else(|e| {
            fail(format!(
                "MLX not found: could not run `{shown} -m mlx --cmake-dir` ({e}).\n\
                     The project's MLX lives in .venv (pip mlx-cpu + mlx 0.32.4 on Linux, mlx on macOS):\n  \
                     {SETUP_HINT}\n\
                     or point MLX_PYTHON at a Python with mlx, or MLX_DIR at a folder with MLXConfig.cmake."
            ))
        });
        if !output.status.success() {
            fail(format!(
                "MLX not found: `{shown} -m mlx --cmake-dir` failed:\n{}\n  {SETUP_HINT}\n\
                 or set MLX_PYTHON / MLX_DIR / MLX_PREFIX.",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    };
    let prefix = prefix.canonicalize().unwrap_or_else(|e| fail(format!("MLX prefix {}: {e}\n  {SETUP_HINT}", prefix.display())));
    let mlx = Mlx {
        cmake_dir: prefix.join("share/cmake/MLX"),
        include_dir: prefix.join("include"),
        lib_dir: prefix.join("lib"),
    };
    for needed in [mlx.cmake_dir.join("MLXConfig.cmake"), mlx.include_dir.join("mlx/mlx.h")] {
        if !needed.is_file() {
            fail(format!("MLX at {} is incomplete: no {}\n  {SETUP_HINT}", prefix.display(), needed.display()));
        }
    }
    mlx
}

/// "0.32.4" from mlx/version.h.
fn mlx_version(mlx: &Mlx) -> Option<String> {
    let text = fs::read_to_string(mlx.include_dir.join("mlx/version.h")).ok()?;
    let part = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("#define")?.trim();
            rest.strip_prefix(name)?.trim().parse::<u32>().ok()
        })
    };
    Some(format!("{}.{}.{}", part("MLX_VERSION_MAJOR")?, part("MLX_VERSION_MINOR")?, part("MLX_VERSION_PATCH")?))
}

/// True when the installed mlx/ops.h declares gather_qmm with the `global_scale` parameter
/// that MLX added after the 0.32.2 pin of mlx-c.
fn gather_qmm_has_global_scale(mlx: &Mlx) -> bool {
    let Ok(ops) = fs::read_to_string(mlx.include_dir.join("mlx/ops.h")) else {
        return false;
    };
    let Some(start) = ops.find("array gather_qmm(") else {
        return false;
    };
    let decl = &ops[start..];
    decl[..decl.find(");").unwrap_or(decl.len())].contains("global_scale")
}

// -------------------------------------------------------------------------------------------
// 3. OpenBLAS (Linux)
// -------------------------------------------------------------------------------------------

/// The OpenBLAS shared library every final binary must link. `OPENBLAS_LIB` overrides;
/// `MLX_SYS_REFERENCE_BLAS=1` opts out (MLX then runs on the wheel's ~35x slower reference BLAS).
fn locate_openblas() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=OPENBLAS_LIB");
    println!("cargo:rerun-if-env-changed=MLX_SYS_REFERENCE_BLAS");
    if env::var_os("MLX_SYS_REFERENCE_BLAS").is_some_and(|v| v == "1") {
        println!("cargo:warning=MLX_SYS_REFERENCE_BLAS=1: MLX's CPU matmul will use the slow reference BLAS");
        return None;
    }
    if let Some(lib) = env::var_os("OPENBLAS_LIB") {
        let lib = PathBuf::from(lib);
        if !lib.is_file() {
            fail(format!("OPENBLAS_LIB={} is not a file", lib.display()));
        }
        return Some(lib);
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let candidates = [format!("/usr/lib/{arch}-linux-gnu"), "/usr/lib64".into(), "/usr/lib".into(), "/usr/local/lib".into()];
    // The SONAME file (libopenblas.so.0), so only the runtime package is strictly needed.
    let found = candidates.iter().map(|dir| Path::new(dir).join("libopenblas.so.0")).find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None => fail(format!(
            "OpenBLAS not found (looked for libopenblas.so.0 in {}).\n\
             MLX's CPU matmul must not run on the wheel's reference BLAS (~35x slower).\n  \
             {SETUP_HINT}\n  or: apt-get install libopenblas-dev\n  \
             or set OPENBLAS_LIB=/path/to/libopenblas.so.0 (MLX_SYS_REFERENCE_BLAS=1 skips this, slowly).",
            candidates.join(", ")
        )),
    }
}

// -------------------------------------------------------------------------------------------
// 4. mlx-c via CMake
// -------------------------------------------------------------------------------------------

fn check_cmake() {
    println!("cargo:rerun-if-env-changed=CMAKE");
    let cmake = env::var_os("CMAKE").unwrap_or_else(|| "cmake".into());
    let ok = Command::new(&cmake).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        fail(format!(
            "cmake not found (tried `{} --version`); it builds mlx-c.\n  {SETUP_HINT}\n  \
             or: apt-get install cmake (Linux) / brew install cmake (macOS)",
            cmake.to_string_lossy()
        ));
    }
}

fn build_mlx_c(mlx_c: &Path, mlx: &Mlx, compat_header: &Path) -> PathBuf {
    // CMake refuses a build tree configured for another source dir and caches find_package
    // results; start over when either input moved.
    let dst = out_dir().join("mlx-c");
    let stamp = dst.join("inputs.txt");
    let inputs = format!("src={}\nmlx={}\n", mlx_c.display(), mlx.cmake_dir.display());
    if fs::read_to_string(&stamp).ok().as_deref() != Some(inputs.as_str()) {
        let _ = fs::remove_dir_all(&dst);
        fs::create_dir_all(&dst).and_then(|_| fs::write(&stamp, &inputs)).unwrap_or_else(|e| fail(format!("preparing {}: {e}", dst.display())));
    }

    let mut cfg = cmake::Config::new(mlx_c);
    cfg.out_dir(&dst)
        .profile("Release")
        .define("MLX_C_USE_SYSTEM_MLX", "ON")
        .define("MLX_C_BUILD_EXAMPLES", "OFF")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("CMAKE_INSTALL_LIBDIR", "lib")
        .define("MLX_DIR", &mlx.cmake_dir)
        .cxxflag(format!("-include {}", compat_header.display()));
    if gather_qmm_has_global_scale(mlx) {
        cfg.cxxflag("-DMLX_SYS_GATHER_QMM_GLOBAL_SCALE");
    }
    cfg.build()
}

// -------------------------------------------------------------------------------------------
// 5. bindings
// -------------------------------------------------------------------------------------------

fn mlx_c_headers(mlx_c: &Path) -> Vec<PathBuf> {
    let dir = mlx_c.join("mlx/c");
    let mut headers: Vec<PathBuf> =
        fs::read_dir(&dir).unwrap_or_else(|e| fail(format!("reading {}: {e}", dir.display()))).filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension() == Some(OsStr::new("h"))).collect();
    headers.sort();
    headers
}

fn generate_bindings(mlx_c: &Path, compat_header: &Path) {
    let mut builder = bindgen::Builder::default()
        // mlx-rs 0.33 was written against bindings generated for Rust 1.73 (plain `extern "C"`
        // blocks; C enums as `<enum>_<VARIANT>` consts, bindgen's default).
        .rust_target(bindgen::RustTarget::stable(73, 0).unwrap_or_else(|e| fail(format!("bindgen target: {e}"))))
        .clang_arg(format!("-I{}", mlx_c.display()))
        .clang_arg("-DMLX_SYS_BINDGEN")
        .clang_arg("-include")
        .clang_arg(compat_header.display().to_string())
        // Only mlx-c's API (and what it uses); keeps libc's headers out.
        .allowlist_function("_?mlx_.*")
        .allowlist_type("_?mlx_.*|float16_t|bfloat16_t")
        .allowlist_var("_?mlx_.*|MLX_.*")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for header in mlx_c_headers(mlx_c) {
        builder = builder.header(header.display().to_string());
    }
    // bindgen panics when it cannot load libclang; turn that into a message that says what to do.
    let generated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.generate()));
    let bindings = match generated {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => fail(format!("bindgen failed on the mlx-c headers: {e}")),
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            fail(format!(
                "bindgen could not run: {msg}\nlibclang is needed to generate the mlx-c bindings.\n  \
                 {SETUP_HINT}\n  or: apt-get install libclang-dev (Linux) / xcode-select --install (macOS)\n  \
                 or set LIBCLANG_PATH to the folder holding libclang.so"
            ))
        }
    };
    let path = out_dir().join("bindings.rs");
    bindings.write_to_file(&path).unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
}

// -------------------------------------------------------------------------------------------
// 6. linking
// -------------------------------------------------------------------------------------------

/// Cargo puts `rustc-link-search` folders inside the target dir on the library path of
/// `cargo run` / `cargo test`. A symlink inside OUT_DIR to the real lib folder qualifies, and
/// since it links the folder, libmlx's own `$ORIGIN/../../mlx_cpu.libs` RUNPATH still resolves.
/// (Binaries also get an rpath, from `mlx-link`; this keeps crates without it working.)
fn runtime_lib_link(lib_dir: &Path) -> PathBuf {
    let link = out_dir().join("mlx-lib");
    let _ = fs::remove_file(&link);
    #[cfg(unix)]
    if std::os::unix::fs::symlink(lib_dir, &link).is_ok() {
        return link;
    }
    lib_dir.to_path_buf()
}

/// Build `shim/gemv_shim.c` as a shared library (see the file: matrix-vector products go to
/// `cblas_sgemv`). `MLX_SYS_NO_GEMV_SHIM=1` leaves MLX's calls to OpenBLAS's sgemm.
fn build_gemv_shim() -> Option<PathBuf> {
    println!("cargo:rerun-if-changed=shim/gemv_shim.c");
    println!("cargo:rerun-if-env-changed=MLX_SYS_NO_GEMV_SHIM");
    println!("cargo:rerun-if-env-changed=CC");
    if env::var_os("MLX_SYS_NO_GEMV_SHIM").is_some_and(|v| v == "1") {
        return None;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("libmlx_gemv_shim.so");
    let src = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("shim/gemv_shim.c");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wl,-soname,libmlx_gemv_shim.so", "-o"])
        .arg(&out)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .status()
        .unwrap_or_else(|e| fail(format!("cannot run the C compiler `{cc}` for the GEMV shim: {e}\n  apt-get install gcc, or set CC")));
    if !status.success() {
        fail(format!("compiling {} failed ({status})", src.display()));
    }
    Some(out)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=include/mlx_sys_compat.h");

    let apple = env::var("CARGO_CFG_TARGET_VENDOR").is_ok_and(|v| v == "apple");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|v| v == "linux");

    // Cheap checks first, so a missing tool is reported before minutes of work.
    check_cmake();
    let mlx = locate_mlx();
    let blas = if linux { locate_openblas() } else { None };
    let mlx_c = locate_mlx_c();

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let compat_header = manifest_dir.join("include/mlx_sys_compat.h");
    // Bindings first: a missing libclang fails in seconds, before the CMake build.
    generate_bindings(&mlx_c, &compat_header);
    let dst = build_mlx_c(&mlx_c, &mlx, &compat_header);

    // Static mlx-c first, then what it needs.
    println!("cargo:rustc-link-search=native={}", dst.join("lib").display());
    println!("cargo:rustc-link-lib=static=mlxc");
    println!("cargo:rustc-link-search=native={}", runtime_lib_link(&mlx.lib_dir).display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    println!("cargo:rustc-link-lib=dylib={}", if apple { "c++" } else { "stdc++" });

    // The GEMV shim goes ahead of OpenBLAS, so libmlx's cblas_sgemm binds to it.
    let shim = if blas.is_some() { build_gemv_shim() } else { None };
    let libs: Vec<String> = shim.iter().chain(blas.iter()).map(|p| p.display().to_string()).collect();
    let blas_arg = env::join_paths(&libs).unwrap_or_else(|e| fail(format!("library paths: {e}"))).to_string_lossy().into_owned();

    // This crate's own test binaries get what `mlx-link` gives consumers.
    mlx_link::emit_link_args(&mlx.lib_dir.display().to_string(), &libs);

    // Metadata for direct dependents (DEP_MLX_*), read by the `mlx-link` helper.
    let include = env::join_paths([mlx.include_dir.as_path(), mlx_c.as_path()]).unwrap_or_else(|e| fail(format!("include paths: {e}")));
    println!("cargo::metadata=include={}", include.to_string_lossy());
    println!("cargo::metadata=libdir={}", mlx.lib_dir.display());
    println!("cargo::metadata=blas={blas_arg}");
    if let Some(version) = mlx_version(&mlx) {
        println!("cargo::metadata=version={version}");
        println!("cargo:rustc-env=MLX_SYS_MLX_VERSION={version}");
    }

    for header in mlx_c_headers(&mlx_c) {
        println!("cargo:rerun-if-changed={}", header.display());
    }
    println!("cargo:rerun-if-changed={}", mlx.include_dir.join("mlx/version.h").display());
}
