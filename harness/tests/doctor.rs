//! `harness doctor` runs as a plain binary (rpath, no LD_LIBRARY_PATH) and reports what it should.
use std::process::Command;

fn harness() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    // Prove the binary finds libmlx through its own rpath, as a user would run it.
    cmd.env_remove("LD_LIBRARY_PATH").env_remove("DYLD_LIBRARY_PATH");
    cmd
}

#[test]
fn doctor_json_has_the_documented_keys() {
    let out = harness().args(["doctor", "--json", "--device", "cpu", "--runs", "10"]).output().unwrap();
    assert!(out.status.success(), "doctor failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["mlx_version"].as_str().is_some_and(|s| s.starts_with("0.")), "{v}");
    assert_eq!(v["device"]["kind"], "cpu");
    assert!(v["matmul_gflops"].as_f64().is_some_and(|g| g > 0.0), "{v}");
    assert!(v["blas"].as_str().is_some_and(|s| !s.is_empty()));
    if cfg!(target_os = "linux") {
        assert_eq!(v["blas_is_openblas"], true, "{v}");
    }
}

#[test]
fn doctor_rejects_too_few_runs() {
    let out = harness().args(["doctor", "--runs", "3"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--runs"));
}

/// The BLAS line of `doctor --json` run with `env` set.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn blas_line(env: &[(&str, &str)]) -> String {
    let mut cmd = harness();
    cmd.args(["doctor", "--json", "--device", "cpu", "--runs", "10"]).env_remove("HARNESS_KEEP_BLAS_CORETYPE").env_remove("HARNESS_BLAS_CORETYPE_RAISED_FROM");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "doctor failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["blas"].as_str().unwrap_or_default().to_string()
}

/// An `OPENBLAS_CORETYPE` in the environment that cannot use the CPU's vectors (Prescott's SSE3
/// on any AVX2 machine) is raised, and the BLAS line says from what; asked to keep it, the
/// harness runs it as set.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn a_weaker_blas_family_from_the_environment_is_raised_unless_kept() {
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
        return;
    }
    let raised = blas_line(&[("OPENBLAS_CORETYPE", "Prescott")]);
    if !raised.contains("DYNAMIC_ARCH") {
        // A BLAS built for one family ignores the variable.
        return;
    }
    assert!(raised.contains("raised from the environment's Prescott"), "{raised}");
    assert!(!raised.contains("OPENBLAS_CORETYPE=Prescott"), "{raised}");
    let kept = blas_line(&[("OPENBLAS_CORETYPE", "Prescott"), ("HARNESS_KEEP_BLAS_CORETYPE", "1")]);
    assert!(kept.contains("OPENBLAS_CORETYPE=Prescott") && !kept.contains("raised"), "{kept}");
}
