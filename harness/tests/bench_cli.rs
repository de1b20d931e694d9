//! `harness bench` end to end: reports, the compare gate, and refusals of bad input.
use std::path::Path;
use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).arg("bench").args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_prints_names_first() {
    let o = bench(&["--list"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let names: Vec<&str> = text.lines().map(|l| l.split('\t').next().unwrap()).collect();
    for want in ["blocks", "whisper", "blocks/decode-step-cache-64", "blocks/cross-attention", "blocks/eval-interval"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn bad_input_is_refused_before_any_timing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let out = out.to_str().unwrap();

    let o = bench(&["-m", "nosuchmodel", "-o", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown model or workload 'nosuchmodel'"), "{}", stderr(&o));

    let o = bench(&["-c", "/nonexistent/base.json", "-o", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read /nonexistent/base.json"), "{}", stderr(&o));

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"schema_version\": 1, \"meta\": 3}").unwrap();
    let o = bench(&["-c", bad.to_str().unwrap(), "-o", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a usable baseline"), "{}", stderr(&o));

    let o = bench(&["-o", "/nonexistent-dir/r.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    let peers = dir.path().join("peers.jsonl");
    std::fs::write(&peers, "{\"workload\": \"blocks/cross-attention\", \"peer\": \"PyTorch\", \"samples_s\": []}\n").unwrap();
    let o = bench(&["--peer", peers.to_str().unwrap(), "-o", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("peers.jsonl:1: samples_s of blocks/cross-attention"), "{}", stderr(&o));

    // Reports never land on a file the run reads, nor on each other; refused before timing.
    let base = dir.path().join("base.json");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../baselines/cuda-h200.json"), &base).unwrap();
    let before = std::fs::read(&base).unwrap();
    let spelled = dir.path().join(".").join("base.json");
    for args in [vec!["-c", base.to_str().unwrap(), "-o", spelled.to_str().unwrap()], vec!["-c", base.to_str().unwrap(), "-o", out, "--html", spelled.to_str().unwrap()]] {
        let o = bench(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains("same file as -c"), "{}", stderr(&o));
    }
    assert_eq!(std::fs::read(&base).unwrap(), before, "the baseline is untouched");
    let html_out = dir.path().join("r.html");
    let o = bench(&["-o", html_out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the HTML report are the same file"), "{}", stderr(&o));
    let o = bench(&["-o", out, "--html", out]);
    assert!(stderr(&o).contains("the HTML report are the same file"), "{}", stderr(&o));
    // A baseline of another device class is refused before timing, not after.
    let o = bench(&["--device", "cpu", "-c", base.to_str().unwrap(), "-o", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("device class 'cuda'"), "{}", stderr(&o));

    let o = bench(&["-i", "1"]);
    assert_eq!(o.status.code(), Some(2), "clap refuses fewer than 2 iterations");
    assert!(!Path::new(out).exists(), "nothing written for refused runs");
}

#[test]
fn run_compare_and_regression_gate() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r.json");
    let common = ["--device", "cpu", "-w", "1", "-i", "9", "--quiet", "-m", "blocks/decode-step-cache-64"];
    let history = dir.path().join("history");
    let o = bench(&[&common[..], &["-o", r.to_str().unwrap(), "--record", history.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(r.exists() && dir.path().join("r.html").exists(), "JSON and HTML written");
    // --record filed a copy under the machine's folder, which `history` reads.
    let recorded: Vec<_> = walk(&history);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(std::fs::read(&recorded[0]).unwrap(), std::fs::read(&r).unwrap());
    let page = dir.path().join("history.html");
    let o = Command::new(env!("CARGO_BIN_EXE_harness")).args(["history", history.to_str().unwrap(), "--html", page.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 report(s)"), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(std::fs::read_to_string(&page).unwrap().contains("blocks/decode-step-cache-64"));

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&r).unwrap()).unwrap();
    let w = &report["workloads"][0];
    assert_eq!(w["id"], "blocks/decode-step-cache-64");
    assert_eq!(w["variants"]["naive"]["samples_s"].as_array().unwrap().len(), 9);
    assert!(w["speedup"]["estimate"].as_f64().unwrap() > 0.0);
    assert_eq!(report["meta"]["precision"], "fp32");
    assert_eq!(report["settings"]["order"], "interleaved");

    // Judge fixed, low-noise samples (a loaded machine makes real ones too noisy to call a 2x
    // change significant): the current report as measured in shape, its times replaced by
    // 10 ms +- 1%, and a baseline at half those times.
    let with_samples = |report: &serde_json::Value, scale: f64| {
        let mut r = report.clone();
        for v in r["workloads"][0]["variants"].as_object_mut().unwrap().values_mut() {
            let samples: Vec<f64> = (0..9).map(|i| scale * 0.010 * (1.0 + 0.0025 * f64::from(i - 4))).collect();
            v["stats"] = serde_json::to_value(harness::stats::summarize(&samples)).unwrap();
            v["samples_s"] = serde_json::json!(samples);
        }
        r
    };
    let current = dir.path().join("current.json");
    std::fs::write(&current, serde_json::to_string(&with_samples(&report, 1.0)).unwrap()).unwrap();
    let halved = with_samples(&report, 0.5);
    let hb = dir.path().join("halved.json");
    std::fs::write(&hb, serde_json::to_string(&halved).unwrap()).unwrap();
    // Judged against the halved copy, the same measurements are a regression (no second timed
    // run: a test must not depend on how loaded the machine is).
    let o = Command::new(env!("CARGO_BIN_EXE_harness")).args(["compare", hb.to_str().unwrap(), current.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "regression exit code; stdout: {}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("REGRESSION"));
    // Against itself, nothing changed.
    let o = Command::new(env!("CARGO_BIN_EXE_harness")).args(["compare", r.to_str().unwrap(), r.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("unchanged"));

    // `merge` joins reports of one machine and attaches the peers' times by workload id.
    let mut other = report.clone();
    other["workloads"][0]["id"] = "blocks/decode-step-cache-256".into();
    let other_path = dir.path().join("other.json");
    std::fs::write(&other_path, serde_json::to_string(&other).unwrap()).unwrap();
    let peers = dir.path().join("peers.jsonl");
    std::fs::write(&peers, "# one peer line per workload\n{\"workload\": \"blocks/decode-step-cache-256\", \"peer\": \"PyTorch eager\", \"samples_s\": [0.5, 0.7, 0.6]}\n").unwrap();
    let merged = dir.path().join("merged.json");
    let harness = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_harness")).args(args).output().unwrap();
    let o = harness(&["merge", r.to_str().unwrap(), other_path.to_str().unwrap(), "--peer", peers.to_str().unwrap(), "-o", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Against the peers"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&merged).unwrap()).unwrap();
    let ids: Vec<&str> = m["workloads"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["blocks/decode-step-cache-64", "blocks/decode-step-cache-256"]);
    assert_eq!(m["workloads"][1]["peer"]["median_s"], 0.6);
    assert!(m["workloads"][0].get("peer").is_none());
    assert_eq!(m["settings"]["merged_from"].as_array().unwrap().len(), 2);
    assert!(std::fs::read_to_string(dir.path().join("merged.html")).unwrap().contains("PyTorch eager"));
    let o = harness(&["merge", r.to_str().unwrap(), r.to_str().unwrap(), "-o", dir.path().join("twice.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("blocks/decode-step-cache-64 is already in an earlier report"), "{}", stderr(&o));
    assert!(!dir.path().join("twice.json").exists(), "nothing written for a refused merge");

    // `bench -c` runs and prints the comparison (its verdict depends on the machine's load).
    let r2 = dir.path().join("r2.json");
    let o = bench(&[&common[..], &["-o", r2.to_str().unwrap(), "-c", r.to_str().unwrap()]].concat());
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Against baseline"));
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A stand-in for the peer environment's Python: answers the import check and then speaks
/// serve.py's protocol (scripts/peers/peerlib.py) with a fixed time, so `--peers` is tested
/// without PyTorch. It records its arguments.
fn fake_peer_python(dir: &Path, seconds: &str) -> std::path::PathBuf {
    let py = dir.join("python");
    let script = format!(
        r#"#!/usr/bin/env bash
[ "$1" = -c ] && exit 0
echo "$@" > "{args}"
while IFS= read -r line; do
  case "$line" in
    *'"list"'*) echo '{{"workloads": {{"clap/embed-text": {{"peer": "fake PyTorch", "note": "text", "precision": "fp32"}}}}}}' ;;
    *'"run"'*) echo '{{"seconds": {seconds}}}' ;;
    *) echo '{{"error": "bad request"}}' ;;
  esac
done
"#,
        args = dir.join("args").display()
    );
    std::fs::write(&py, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    py
}

/// `bench` of CLAP's text workload, optimized, 1 warm-up + 3, with the peer environment `py`
/// and the report at `out`; `extra` goes before `--peers`.
fn peer_bench(py: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--device", "cpu", "-m", "clap/embed-text", "--variant", "optimized", "-w", "1", "-i", "3", "--quiet"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--peers", "--peers-python", py.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    bench(&args)
}

#[test]
fn peers_run_in_the_same_rounds_and_a_missing_environment_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r.json");
    let py = fake_peer_python(dir.path(), "0.5");
    let o = peer_bench(&py, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let peer = &r["workloads"][0]["peer"];
    // One sample per timed round (the warm-up's call is not kept), the peer's own clock.
    assert_eq!(peer["samples_s"].as_array().unwrap().len(), r["workloads"][0]["variants"]["optimized"]["samples_s"].as_array().unwrap().len());
    assert_eq!(peer["median_s"], 0.5);
    assert_eq!(peer["name"], "fake PyTorch");
    assert!(peer["note"].as_str().unwrap().contains("alternating with ours"), "{peer}");
    // The peer got the CLAP script, on the CPU, with a thread count.
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert!(args.contains("serve.py clap_torch.py") && args.contains("--device cpu") && args.contains("--threads"), "{args}");
    // Blocked, the peer runs after ours, and its note says so.
    let o = peer_bench(&py, &out, &["--order", "blocked"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let note = r["workloads"][0]["peer"]["note"].as_str().unwrap().to_string();
    assert!(note.contains("after ours (blocked") && !note.contains("alternating"), "{note}");
    assert_eq!(r["settings"]["order"], "blocked");

    // No environment: refused before anything is timed, naming the way to make one.
    let o = bench(&["--device", "cpu", "-m", "clap/embed-text", "--peers", "--peers-python", "/nonexistent/python", "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("setup-peers.sh"), "{}", stderr(&o));
    // A peer that reports a time that is no time stops the run with its name.
    let bad = fake_peer_python(dir.path(), "-1");
    let o = peer_bench(&bad, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("clap peer timed clap/embed-text"), "{}", stderr(&o));
}
