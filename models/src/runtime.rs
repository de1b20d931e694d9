//! What MLX runs on: version, device, BLAS. Read through the C API and the dynamic loader, so
//! the answers describe the process as it actually runs (e.g. the CUDA libmlx swapped in through
//! `LD_LIBRARY_PATH`, or which library really serves `cblas_sgemm`).

use std::ffi::{c_char, CStr, CString};

use mlx_rs::{Device, DeviceType};

use crate::error::{Error, Result};

/// The version string of the libmlx loaded at run time, e.g. "0.32.4".
pub fn mlx_version() -> Result<String> {
    // SAFETY: mlx_string is an owned handle, freed below; mlx_string_data stays valid until then.
    unsafe {
        let mut s = mlx_sys::mlx_string_new();
        let status = mlx_sys::mlx_version(&mut s);
        let out = if status == 0 { Ok(cstr_to_string(mlx_sys::mlx_string_data(s))) } else { Err(Error::Mlx("mlx_version failed".into())) };
        mlx_sys::mlx_string_free(s);
        out
    }
}

fn cstr_to_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null C strings from MLX / libc are NUL-terminated.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Which kind of device MLX computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
        }
    }

    pub fn device(self) -> Device {
        match self {
            DeviceKind::Cpu => Device::cpu(),
            DeviceKind::Gpu => Device::gpu(),
        }
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "gpu" => Ok(DeviceKind::Gpu),
            other => Err(Error::InvalidArgument(format!("unknown device '{other}' (expected cpu or gpu)"))),
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True when this libmlx has a usable GPU backend (Metal or CUDA).
pub fn gpu_available() -> bool {
    let dev = CDevice::new(DeviceKind::Gpu);
    let mut avail = false;
    // SAFETY: plain out-parameter call on a valid device handle.
    let status = unsafe { mlx_sys::mlx_device_is_available(&mut avail, dev.0) };
    status == 0 && avail
}

/// The current default device of this thread's MLX.
pub fn default_device_kind() -> Result<DeviceKind> {
    let dev = Device::try_default().map_err(|e| Error::Mlx(e.to_string()))?;
    match dev.get_type().map_err(|e| Error::Mlx(e.to_string()))? {
        DeviceType::Cpu => Ok(DeviceKind::Cpu),
        DeviceType::Gpu => Ok(DeviceKind::Gpu),
    }
}

/// A GPU fusion that `MLX_AUDIO_UNFUSED` can switch off, so one build can time each with
/// and without it in one session (the GPU evidence of issue 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fusion {
    /// Biased linear layers over several rows as one `addmm` (a product with a bias epilogue).
    Addmm,
    /// The decoders' self-attention query, key and value weights stacked into one product.
    Qkv,
}

impl Fusion {
    fn name(self) -> &'static str {
        match self {
            Fusion::Addmm => "addmm",
            Fusion::Qkv => "qkv",
        }
    }
}

/// Whether `fusion` is switched off: `MLX_AUDIO_UNFUSED=1` (or `all`) switches off every
/// fusion, a comma-separated list (`addmm,qkv`) those named. Read once.
pub fn unfused(fusion: Fusion) -> bool {
    static UNFUSED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let off = UNFUSED.get_or_init(|| std::env::var("MLX_AUDIO_UNFUSED").map(|v| v.split(',').map(|s| s.trim().to_lowercase()).collect()).unwrap_or_default());
    off.iter().any(|s| s == "1" || s == "all" || s == fusion.name())
}

/// Whether MLX's default device is a GPU (false when it cannot be read).
pub fn on_gpu() -> bool {
    default_device_kind().is_ok_and(|k| k == DeviceKind::Gpu)
}

/// Make `kind` MLX's default device, failing clearly when no GPU backend is present.
pub fn select_device(kind: DeviceKind) -> Result<()> {
    if kind == DeviceKind::Gpu && !gpu_available() {
        return Err(Error::InvalidArgument("--device gpu: this libmlx has no usable GPU (CPU-only build, or no GPU found)".into()));
    }
    Device::set_default(&kind.device());
    Ok(())
}

/// The name MLX gives a device ("device_name" in its device info), if it gives one.
pub fn device_name(kind: DeviceKind) -> Option<String> {
    let dev = CDevice::new(kind);
    let key = CString::new("device_name").ok()?;
    // SAFETY: info is an owned handle freed below; the returned string is copied before that.
    unsafe {
        let mut info = mlx_sys::mlx_device_info_new();
        let mut name = None;
        if mlx_sys::mlx_device_info_get(&mut info, dev.0) == 0 {
            let mut value: *const c_char = std::ptr::null();
            if mlx_sys::mlx_device_info_get_string(&mut value, info, key.as_ptr()) == 0 {
                name = Some(cstr_to_string(value)).filter(|s| !s.is_empty());
            }
        }
        mlx_sys::mlx_device_info_free(info);
        name
    }
}

/// A human name for the device: MLX's GPU name, or the CPU model.
pub fn device_label(kind: DeviceKind) -> String {
    match kind {
        DeviceKind::Gpu => device_name(kind).unwrap_or_else(|| "unknown GPU".into()),
        DeviceKind::Cpu => cpu_model(),
    }
}

/// The CPU model as the OS reports it.
pub fn cpu_model() -> String {
    #[cfg(target_os = "linux")]
    if let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") {
        if let Some(name) = text.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim())) {
            return name.to_string();
        }
    }
    #[cfg(target_os = "macos")]
    if let Ok(out) = std::process::Command::new("sysctl").args(["-n", "machdep.cpu.brand_string"]).output() {
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !s.is_empty() {
            return s;
        }
    }
    std::env::consts::ARCH.to_string()
}

/// The library that serves `cblas_sgemm` in this process, as the dynamic loader resolves it
/// for libmlx (global scope first), plus OpenBLAS's own configuration string when it is OpenBLAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlasInfo {
    /// Path of the shared object that defines `cblas_sgemm`.
    pub library: String,
    /// e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64".
    pub config: Option<String>,
    /// Whether mlx-sys's GEMV shim sits in front of it, sending matrix-vector products to
    /// `cblas_sgemv` and products of 2 to 4 rows against a transposed weight to its own kernel
    /// (`library` is then the BLAS behind the shim).
    pub gemv_shim: bool,
}

impl BlasInfo {
    pub fn is_openblas(&self) -> bool {
        self.config.as_deref().is_some_and(|c| c.starts_with("OpenBLAS")) || self.library.contains("openblas")
    }

    /// One-line description for reports.
    pub fn describe(&self) -> String {
        let shim = if self.gemv_shim { ", matrix-vector products via sgemv, 2-4 row products on the shim's kernel" } else { "" };
        let spin = match std::env::var(BLAS_SPIN_VAR) {
            Ok(v) if self.is_openblas() => format!(", idle workers spin 2^{} cycles ({BLAS_SPIN_VAR}={v})", v.trim()),
            _ => String::new(),
        };
        let core = match std::env::var(BLAS_CORE_VAR) {
            Ok(v) if self.is_openblas() => {
                let raised = match std::env::var(BLAS_CORE_RAISED_VAR) {
                    Ok(from) if !from.is_empty() => format!(" (raised from the environment's {from}, which cannot use this CPU's vectors; {BLAS_CORE_KEEP_VAR}=1 keeps it)"),
                    _ => String::new(),
                };
                format!(", kernels {BLAS_CORE_VAR}={}{raised}", v.trim())
            }
            _ => String::new(),
        };
        match &self.config {
            Some(cfg) => format!("{cfg} ({}{shim}{spin}{core})", self.library),
            None => format!("{}{shim}{spin}{core}", self.library),
        }
    }
}

/// Find the BLAS in use; `None` when no `cblas_sgemm` is loaded at all.
pub fn blas_info() -> Option<BlasInfo> {
    let sym = CString::new("cblas_sgemm").ok()?;
    // SAFETY: dlsym/dladdr with RTLD_DEFAULT only read the loader's tables.
    unsafe {
        let addr = libc::dlsym(libc::RTLD_DEFAULT, sym.as_ptr());
        if addr.is_null() {
            return None;
        }
        let mut info: libc::Dl_info = std::mem::zeroed();
        let mut library = if libc::dladdr(addr, &mut info) != 0 { cstr_to_string(info.dli_fname) } else { "unknown".to_string() };
        // The shim takes the products only where the loader bound `cblas_sgemm` to it: a BLAS
        // preloaded ahead of it (MKL's libmkl_rt, say) takes them itself.
        let gemv_shim = library.contains("mlx_gemv_shim");
        if let Some(t) = exported_string("mlx_gemv_shim_target").filter(|_| gemv_shim) {
            library = t;
        }
        let config = if library.contains("mkl") { None } else { exported_string("openblas_get_config") };
        Some(BlasInfo { library, config, gemv_shim })
    }
}

/// What a loaded library's exported `const char *name(void)` returns, trimmed; `None` where no
/// loaded object exports `name`. Only for functions of that signature returning a static
/// string (OpenBLAS' `openblas_get_config` and `openblas_get_corename`, the GEMV shim's
/// `mlx_gemv_shim_target`).
fn exported_string(name: &str) -> Option<String> {
    let c = CString::new(name).ok()?;
    // SAFETY: dlsym with RTLD_DEFAULT only reads the loader's tables; the names passed here are
    // functions taking no arguments and returning a static NUL-terminated string.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr());
        if f.is_null() {
            return None;
        }
        let f: extern "C" fn() -> *const c_char = std::mem::transmute(f);
        Some(cstr_to_string(f()).trim().to_string())
    }
}

/// OpenBLAS reads how long an idle worker thread spins (2^N cycles, yielding the core in a loop)
/// before it sleeps from this variable, once, when the library loads.
pub const BLAS_SPIN_VAR: &str = "OPENBLAS_THREAD_TIMEOUT";

/// The spin this project's programs run with: 2^20 cycles, about 0.3 ms. OpenBLAS' default,
/// 2^28 (about 0.1 s), keeps its worker spinning through a whole decode step, since every
/// multithreaded matrix-vector product wakes it again: on a 2-core CPU it then takes a core from
/// the host kernels' threads. Measured on this project's 2-core EPYC (bench, 1 warm-up + 3):
/// Whisper turbo's int8 64-token decode 4.49 s at the default, 3.54 s at 2^20; float32 4.02 and
/// 4.06 s; EnCodec 5 s decode 1.30 and 1.22 s; CLAP 10 s 0.35 and 0.28 s; MusicGen small's
/// 50 steps 9.27 and 9.38 s. At 2^4 (sleep at once) the MusicGen decode lost 11%.
pub const BLAS_SPIN_LOG2_CYCLES: u32 = 20;

/// OpenBLAS reads which kernel family to run from this variable, once, when the library loads
/// (a `DYNAMIC_ARCH` build; otherwise it detects the CPU itself).
pub const BLAS_CORE_VAR: &str = "OPENBLAS_CORETYPE";

/// Set (to anything but empty or `0`) to keep an [`BLAS_CORE_VAR`] from the environment even
/// where it names a family that cannot use this CPU's vectors.
pub const BLAS_CORE_KEEP_VAR: &str = "HARNESS_KEEP_BLAS_CORETYPE";

/// Set by [`tune_blas_environment`] for the program it runs again, to the environment's
/// [`BLAS_CORE_VAR`] it raised (empty where there was none): reports name the raise, and the
/// family is raised once only.
pub const BLAS_CORE_RAISED_VAR: &str = "HARNESS_BLAS_CORETYPE_RAISED_FROM";

/// The kernel family OpenBLAS chose when it loaded (`openblas_get_corename`), e.g. "Haswell";
/// `None` without OpenBLAS.
pub fn blas_core() -> Option<String> {
    exported_string("openblas_get_corename")
}

/// How wide a vector OpenBLAS' kernel family `core` uses for float32 products: 3 for the
/// AVX-512 families, 2 for the AVX2 ones, 1 for the older fallbacks; `None` for a name not
/// listed (left alone).
fn blas_core_rank(core: &str) -> Option<u8> {
    match core.to_ascii_lowercase().as_str() {
        "skylakex" | "cooperlake" | "sapphirerapids" => Some(3),
        "haswell" | "zen" => Some(2),
        "prescott" | "core2" | "penryn" | "dunnington" | "nehalem" | "atom" | "sandybridge" | "katmai" | "coppermine" | "northwood" | "banias" | "opteron" | "barcelona" | "bobcat" => Some(1),
        _ => None,
    }
}

/// The kernel family to ask OpenBLAS for when the one it chose (`core`) cannot use the vectors
/// this CPU has: OpenBLAS 0.3.21 (Debian bookworm's) does not know newer Intel models, and on
/// a cloud VM whose CPU reports "Intel(R) Xeon(R) Processor" with AVX-512 it fell back to
/// Prescott (SSE3): 42-46 GFLOP/s for a 1024x1024 float32 product on 2 cores, against 272 with
/// SkylakeX's kernels and 133 with Haswell's (harness doctor, this project's 2-core Xeon VM).
/// AMD's Zen family is left as chosen.
pub fn blas_core_upgrade(core: &str) -> Option<&'static str> {
    let have = blas_core_rank(core)?;
    if core.eq_ignore_ascii_case("zen") {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512cd");
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        let (want, rank) = if avx512 {
            ("SkylakeX", 3)
        } else if avx2 {
            ("Haswell", 2)
        } else {
            return None;
        };
        if rank > have {
            return Some(want);
        }
    }
    None
}

/// Where the process's BLAS is OpenBLAS, set what it reads only when it loads, before `main`,
/// and run this same program again with it: [`BLAS_SPIN_VAR`] to [`BLAS_SPIN_LOG2_CYCLES`]
/// when unset, and [`BLAS_CORE_VAR`] to [`blas_core_upgrade`]'s family where the family that
/// loaded (OpenBLAS' choice, or the environment's) cannot use this CPU's vectors, unless
/// [`BLAS_CORE_KEEP_VAR`] is set. Returns when there is nothing to do, or when the new program
/// could not be started (then this one carries on as it is). Any other value already in the
/// environment is kept.
pub fn tune_blas_environment() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if !blas_info().is_some_and(|b| b.is_openblas()) {
            return;
        }
        let mut set: Vec<(&str, String)> = Vec::new();
        if std::env::var_os(BLAS_SPIN_VAR).is_none() {
            set.push((BLAS_SPIN_VAR, BLAS_SPIN_LOG2_CYCLES.to_string()));
        }
        // OpenBLAS has loaded with the environment's family where one is set, so `blas_core`
        // is what runs either way. A family set by the environment is raised too (a machine
        // image's `OPENBLAS_CORETYPE=Haswell` halved the products on an AVX-512 EPYC), unless
        // asked to keep it; once only, in case OpenBLAS does not take the new name.
        let keep = std::env::var(BLAS_CORE_KEEP_VAR).is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0");
        if !keep && std::env::var_os(BLAS_CORE_RAISED_VAR).is_none() {
            if let Some(core) = blas_core().as_deref().and_then(blas_core_upgrade) {
                let from = std::env::var(BLAS_CORE_VAR).unwrap_or_default();
                set.push((BLAS_CORE_VAR, core.to_string()));
                set.push((BLAS_CORE_RAISED_VAR, from.trim().to_string()));
            }
        }
        if set.is_empty() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        // `exec` returns only on failure.
        let _ = std::process::Command::new(&exe).arg0(arg0).args(args).envs(set).exec();
    }
}

/// An owned mlx-c device handle, for the few mlx-c calls mlx-rs does not wrap (mlx-rs keeps its
/// own handle crate-private).
struct CDevice(mlx_sys::mlx_device);

impl CDevice {
    fn new(kind: DeviceKind) -> Self {
        let ty = match kind {
            DeviceKind::Gpu => mlx_sys::mlx_device_type__MLX_GPU,
            DeviceKind::Cpu => mlx_sys::mlx_device_type__MLX_CPU,
        };
        // SAFETY: returns a new owned handle, freed in Drop.
        CDevice(unsafe { mlx_sys::mlx_device_new_type(ty, 0) })
    }
}

impl Drop for CDevice {
    fn drop(&mut self) {
        // SAFETY: the handle was created by mlx_device_new_type and is freed once.
        unsafe { mlx_sys::mlx_device_free(self.0) };
    }
}

/// How float32 matrix products and convolutions are computed. MLX's CUDA backend (and Metal on
/// chips with neural accelerators) runs them in TF32 unless `MLX_ENABLE_TF32=0`; TF32 keeps 10
/// mantissa bits of the inputs, so errors of 1e-3 are normal and parity at 1e-4 fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Full float32 products (the mode in which parity passes).
    #[default]
    Fp32,
    /// TF32 products where the backend has them (faster, less accurate).
    Tf32,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
        }
    }

    /// Put this mode in force for the process. MLX reads `MLX_ENABLE_TF32` once, at its first
    /// matrix product, so this must run before any computation; the harness calls it first
    /// thing in `main`, before other threads exist.
    pub fn apply(self) {
        std::env::set_var(TF32_VAR, if self == Precision::Tf32 { "1" } else { "0" });
    }

    /// The mode in force on `backend` ("cpu", "cuda" or "metal"): MLX's CPU backend has no TF32,
    /// so a TF32 request computes in fp32 there.
    pub fn effective(self, backend: &str) -> Precision {
        if backend == "cpu" {
            Precision::Fp32
        } else {
            self
        }
    }
}

/// The environment variable MLX reads for its TF32 switch.
pub const TF32_VAR: &str = "MLX_ENABLE_TF32";

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            other => Err(Error::InvalidArgument(format!("unknown precision '{other}' (expected fp32 or tf32)"))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The precision mode this process computes in, as set by [`Precision::apply`] (or the
/// environment): fp32 only when `MLX_ENABLE_TF32` is set to 0, MLX's own default being TF32.
pub fn requested_precision() -> Precision {
    match std::env::var(TF32_VAR) {
        Ok(v) if v.trim().parse::<i64>().is_ok_and(|n| n == 0) => Precision::Fp32,
        _ => Precision::Tf32,
    }
}

/// The backend name of a device kind in this build: "cpu", "metal" or "cuda".
pub fn backend(kind: DeviceKind) -> &'static str {
    match (kind, cfg!(target_os = "macos")) {
        (DeviceKind::Cpu, _) => "cpu",
        (DeviceKind::Gpu, true) => "metal",
        (DeviceKind::Gpu, false) => "cuda",
    }
}

/// The number of streaming multiprocessors of CUDA device 0, when this process runs MLX's CUDA
/// backend (libcuda loaded); `None` on the CPU-only and Metal builds. Read through the driver API
/// that libmlx already loaded, so nothing new is linked.
pub fn cuda_sm_count() -> Option<i32> {
    // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT in cuda.h.
    static COUNT: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| cuda_device_attribute(16))
}

/// The most shared memory one block of CUDA device 0 may opt in to, in bytes (227 KiB on an
/// H100/H200, 99 KiB on an RTX 30 or 40); `None` as for [`cuda_sm_count`].
pub fn cuda_max_shared_per_block() -> Option<i32> {
    // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN in cuda.h.
    static BYTES: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| cuda_device_attribute(97))
}

/// A positive attribute of CUDA device 0 through the driver API libmlx loaded.
fn cuda_device_attribute(attribute: i32) -> Option<i32> {
    type GetDevice = unsafe extern "C" fn(*mut i32, i32) -> i32;
    type GetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
    let lib = CString::new("libcuda.so.1").ok()?;
    let (get_name, attr_name) = (CString::new("cuDeviceGet").ok()?, CString::new("cuDeviceGetAttribute").ok()?);
    // SAFETY: RTLD_NOLOAD only returns a handle to a library already in the process (never
    // loads one); the two symbols have the driver API's documented C signatures, and are
    // called with valid out-pointers. The handle's reference is released with dlclose.
    unsafe {
        let handle = libc::dlopen(lib.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let (get, attr) = (libc::dlsym(handle, get_name.as_ptr()), libc::dlsym(handle, attr_name.as_ptr()));
        let mut value = None;
        if !get.is_null() && !attr.is_null() {
            let get: GetDevice = std::mem::transmute(get);
            let attr: GetAttribute = std::mem::transmute(attr);
            let (mut dev, mut n) = (0i32, 0i32);
            if get(&mut dev, 0) == 0 && attr(&mut n, attribute, dev) == 0 && n > 0 {
                value = Some(n);
            }
        }
        libc::dlclose(handle);
        value
    }
}

/// Environment variable that leaves the C library's allocator as it is (`system`) instead of
/// [`retain_freed_memory`]'s setting.
pub const HOST_MALLOC_VAR: &str = "HARNESS_HOST_MALLOC";

/// Keep freed host memory in the process for reuse instead of handing it back to the kernel.
///
/// MLX's CPU-only build allocates every array with plain `malloc` and frees it with `free`
/// (its buffer cache exists only on the GPU backends). glibc serves blocks above its mmap
/// threshold (128 KiB, rising to at most 32 MiB) with a fresh `mmap` and returns them with
/// `munmap`, so every large intermediate of a forward pass costs a page fault and a zeroed page
/// per 4 KiB on first touch: on this project's 2-core box, 4.5 s of system time in a 23 s
/// HTDemucs segment. With mmap off and no trimming, freed blocks stay on the heap and the next
/// array of similar size reuses them. The peak footprint is the same; what is freed is kept.
///
/// Returns a one-line description for reports, or `None` where nothing was changed (not glibc,
/// or `HARNESS_HOST_MALLOC=system`). Call once, early, before large allocations.
pub fn retain_freed_memory() -> Option<&'static str> {
    *HOST_ALLOCATOR.get_or_init(|| {
        if std::env::var(HOST_MALLOC_VAR).is_ok_and(|v| v.trim() == "system") {
            return None;
        }
        tune_malloc()
    })
}

/// What [`retain_freed_memory`] set, once it has run (`None` before, or where it changed nothing).
pub fn host_allocator() -> Option<&'static str> {
    HOST_ALLOCATOR.get().copied().flatten()
}

static HOST_ALLOCATOR: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();

fn tune_malloc() -> Option<&'static str> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters; these three are documented
        // and take effect for later allocations. A block glibc cannot take from the heap (a
        // thread's arena full) still falls back to mmap inside malloc.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1 };
        ok.then_some("glibc heap, freed blocks kept for reuse (mmap off, no trim; HARNESS_HOST_MALLOC=system for the default)")
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod blas_core_tests {
    use super::*;

    #[test]
    fn only_weaker_known_families_are_upgraded() {
        // Families that already use the widest vectors, AMD's, and names not listed: kept.
        for core in ["SkylakeX", "Cooperlake", "SapphireRapids", "Zen", "ARMV8", "Neoverse", ""] {
            assert_eq!(blas_core_upgrade(core), None, "{core}");
        }
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512cd");
            let best = if avx512 {
                Some("SkylakeX")
            } else if avx2 {
                Some("Haswell")
            } else {
                None
            };
            // The SSE fallbacks get this CPU's best family; Haswell only where AVX-512 is there.
            assert_eq!(blas_core_upgrade("Prescott"), best);
            assert_eq!(blas_core_upgrade("sandybridge"), best);
            assert_eq!(blas_core_upgrade("Haswell"), if avx512 { Some("SkylakeX") } else { None });
        }
    }
}
