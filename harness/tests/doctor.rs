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
