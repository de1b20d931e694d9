//! Run metadata for reports: build, MLX, device and machine.
use std::process::Command;

use models::runtime::{self, DeviceKind};

use crate::report::Meta;

/// The repository the harness was built from, or `HARNESS_REPO_ROOT` (run-benchmarks.sh sets
/// it): its git facts, the peer scripts and the peer environment are there.
pub fn repo_root() -> std::path::PathBuf {
    std::env::var_os("HARNESS_REPO_ROOT").map_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), std::path::PathBuf::from)
}

/// Git facts of the repository the harness was built from (or HARNESS_REPO_ROOT), wherever it
/// is run from.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(repo_root()).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn memory_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: u64 = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    }
    #[cfg(target_os = "macos")]
    {
        let out = Command::new("sysctl").args(["-n", "hw.memsize"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    None
}

/// The targets table's device class for the device in use.
pub fn device_class(kind: DeviceKind) -> &'static str {
    match (kind, cfg!(target_os = "macos")) {
        (DeviceKind::Gpu, true) => "apple-silicon",
        (DeviceKind::Gpu, false) => "cuda",
        (DeviceKind::Cpu, _) => "cpu",
    }
}

/// What a result depends on of where it was computed, for reports (`Meta`) and conformance
/// files alike, so the two are compared on values made the same way.
pub struct Computed {
    pub device_kind: &'static str,
    pub device_name: String,
    pub backend: &'static str,
    /// The precision mode in force on this backend ("fp32" on the CPU whatever was asked).
    pub precision: &'static str,
    pub mlx_version: String,
}

pub fn computed(kind: DeviceKind) -> Computed {
    let backend = runtime::backend(kind);
    Computed {
        device_kind: kind.as_str(),
        device_name: runtime::device_label(kind),
        backend,
        precision: runtime::requested_precision().effective(backend).as_str(),
        mlx_version: runtime::mlx_version().unwrap_or_else(|_| "unknown".into()),
    }
}

pub fn collect(kind: DeviceKind) -> Meta {
    let c = computed(kind);
    Meta {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        git_commit: git(&["rev-parse", "HEAD"]),
        git_dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        build_commit: option_env!("HARNESS_BUILD_COMMIT").map(str::to_string),
        harness_version: env!("CARGO_PKG_VERSION").to_string(),
        mlx_version: c.mlx_version,
        backend: c.backend.into(),
        device_kind: c.device_kind.into(),
        device_name: c.device_name,
        device_class: device_class(kind).into(),
        precision: Some(c.precision.into()),
        cpu_model: runtime::cpu_model(),
        read_bandwidth_bytes_per_s: None,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: memory_bytes(),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        blas: runtime::blas_info().map_or_else(|| "none loaded".into(), |b| b.describe()),
        host_allocator: runtime::host_allocator().map(str::to_string),
    }
}
