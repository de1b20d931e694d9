//! Parity as a conformance record: the device and precision it ran in, written with `-o`,
//! embedded in reports by `bench --conformance` and `merge --conformance`, and refused where
//! its configuration is not the timings'.
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::fixture;

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn parity_records_device_and_precision_and_reports_embed_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.json");
    let (a0, a1) = (fixture("attention-s0"), fixture("attention-s1"));
    let o = harness(&["parity", "--device", "cpu", "--fixture", a0.to_str().unwrap(), "--fixture", a1.to_str().unwrap(), "-o", conf.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("parity on") && out.contains("precision fp32") && out.contains("4 of 4 fixture runs pass"), "{out}");
    let c = json(&conf);
    assert_eq!((c["device_kind"].as_str(), c["backend"].as_str(), c["precision"].as_str()), (Some("cpu"), Some("cpu"), Some("fp32")));
    let runs = c["fixtures"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "two fixtures x two variants");
    assert!(runs.iter().all(|r| r["pass"] == true && r["worst"]["used"].as_f64().unwrap() <= 1.0 && !r["checks"].as_array().unwrap().is_empty()));

    // bench embeds it (summaries only); targets whose workloads did not run are "not
    // measured" and leave the exit status alone.
    let r = dir.path().join("r.json");
    let o =
        harness(&["bench", "--device", "cpu", "-m", "blocks/decode-step-cache-64", "-w", "1", "-i", "2", "--quiet", "--targets", "--conformance", conf.to_str().unwrap(), "-o", r.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rep = json(&r);
    assert_eq!(rep["meta"]["precision"], "fp32");
    assert_eq!(rep["settings"]["order"], "interleaved", "the CPU default");
    assert_eq!(rep["conformance"]["fixtures"].as_array().unwrap().len(), 4);
    assert!(rep["conformance"]["fixtures"][0].get("checks").is_none(), "a report embeds the summary");
    assert!(text(&o.stdout).contains("Conformance: 4 of 4 fixture runs pass on cpu"), "{}", text(&o.stdout));
    assert!(std::fs::read_to_string(dir.path().join("r.html")).unwrap().contains("<h2>Conformance</h2>"));

    // merge keeps it.
    let m = dir.path().join("m.json");
    let o = harness(&["merge", r.to_str().unwrap(), "-o", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json(&m)["conformance"], rep["conformance"]);

    // Conformance from another precision mode (or device) is refused before any timing, and
    // nothing is written.
    let mut other = c.clone();
    other["precision"] = "tf32".into();
    let tf32 = dir.path().join("tf32.json");
    std::fs::write(&tf32, serde_json::to_string(&other).unwrap()).unwrap();
    let r2 = dir.path().join("r2.json");
    let o = harness(&["bench", "--device", "cpu", "-m", "blocks/decode-step-cache-64", "--quiet", "--conformance", tf32.to_str().unwrap(), "-o", r2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("precision mode 'tf32'"), "{}", text(&o.stderr));
    assert!(!r2.exists());
    let m2 = dir.path().join("m2.json");
    let o = harness(&["merge", r.to_str().unwrap(), "--conformance", tf32.to_str().unwrap(), "-o", m2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!m2.exists());
    // A conformance file without fixtures checks nothing and is refused.
    other["fixtures"] = serde_json::json!([]);
    std::fs::write(&tf32, serde_json::to_string(&other).unwrap()).unwrap();
    let o = harness(&["merge", r.to_str().unwrap(), "--conformance", tf32.to_str().unwrap(), "-o", m2.to_str().unwrap()]);
    assert!(text(&o.stderr).contains("no fixture was checked"), "{}", text(&o.stderr));
}

#[test]
fn parity_over_a_folder_checks_each_fixture_and_names_the_ones_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str, to: &str| {
        let dest = dir.path().join(to);
        std::fs::create_dir(&dest).unwrap();
        for f in std::fs::read_dir(fixture(name)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dest.join(f.file_name())).unwrap();
        }
        dest
    };
    copy("attention-s0", "a");
    std::fs::create_dir(dir.path().join("not-a-fixture")).unwrap();
    let broken = copy("attention-s1", "b");
    std::fs::remove_file(broken.join("model.safetensors")).unwrap();
    let o = harness(&["parity", "--device", "cpu", "--variant", "optimized", "--fixtures", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(1), "one fixture cannot run");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = v["fixtures"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "a's optimized run and b's failure; the folder without a manifest is no fixture");
    assert_eq!((runs[0]["fixture"].as_str(), runs[0]["pass"].as_bool()), (Some("a"), Some(true)));
    assert_eq!((runs[1]["fixture"].as_str(), runs[1]["pass"].as_bool()), (Some("b"), Some(false)));
    assert!(runs[1]["error"].as_str().unwrap().contains("model.safetensors"), "{}", runs[1]);
    assert!(text(&o.stderr).contains("error: fixture"), "{}", text(&o.stderr));

    let empty = tempfile::tempdir().unwrap();
    let o = harness(&["parity", "--fixtures", empty.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no subfolder holds a manifest.json"), "{}", text(&o.stderr));
}

#[test]
fn a_fixture_that_checks_nothing_or_too_loosely_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(fixture("attention-s0")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let manifest = dir.path().join("manifest.json");
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for (tolerances, want) in [
        (serde_json::json!({}), "names no output to check"),
        (serde_json::json!({"self_attention": {"atol": 1.0, "rtol": 0.0}}), "looser than the ceilings"),
        (serde_json::json!({"self_attention": {"cosine": 0.5}}), "looser than the ceilings"),
        (serde_json::json!({"self_attention": {"exact": false}}), "looser than the ceilings"),
    ] {
        let mut m = original.clone();
        m["tolerances"] = tolerances.clone();
        std::fs::write(&manifest, m.to_string()).unwrap();
        let o = harness(&["parity", "--device", "cpu", "--fixture", dir.path().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{tolerances}");
        assert!(text(&o.stderr).contains(want), "{tolerances}: {}", text(&o.stderr));
    }
}

#[test]
fn gates_refuse_vacuous_or_non_finite_input() {
    let dir = tempfile::tempdir().unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../baselines/cuda-h200.json");
    let b = base.to_str().unwrap();
    for t in ["NaN", "inf", "-1"] {
        let o = harness(&["compare", b, b, &format!("--threshold={t}")]);
        assert_eq!(o.status.code(), Some(2), "--threshold {t}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("finite percentage"), "{}", text(&o.stderr));
    }
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&base).unwrap()).unwrap();
    v["workloads"] = serde_json::json!([]);
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, v.to_string()).unwrap();
    let o = harness(&["compare", empty.to_str().unwrap(), b]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("holds no workloads"), "{}", text(&o.stderr));
    let mut z: serde_json::Value = serde_json::from_slice(&std::fs::read(&base).unwrap()).unwrap();
    for var in z["workloads"][0]["variants"].as_object_mut().unwrap().values_mut() {
        var["samples_s"] = serde_json::json!([0.0, 0.0, 0.0]);
    }
    let zero = dir.path().join("zero.json");
    std::fs::write(&zero, z.to_string()).unwrap();
    let o = harness(&["compare", zero.to_str().unwrap(), b]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("finite and positive"), "{}", text(&o.stderr));
}
