//! JSON export and import, written atomically (temp file in the same folder, then rename).
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{Report, SCHEMA_VERSION};

/// The folder `path` would be written in, which must exist.
pub fn existing_parent(path: &Path) -> Result<&Path> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("cannot write {}: folder {} does not exist", path.display(), dir.display());
    }
    Ok(dir)
}

/// Write `bytes` to `path` so readers see the old file or the whole new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = existing_parent(path)?;
    let name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

pub fn to_string(report: &Report) -> Result<String> {
    Ok(serde_json::to_string_pretty(report)?)
}

pub fn write(report: &Report, path: &Path) -> Result<()> {
    write_atomic(path, to_string(report)?.as_bytes())
}

/// Parse a report, refusing other schema versions with a message that says which.
pub fn parse(text: &str) -> Result<Report> {
    let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    match value.get("schema_version").and_then(|v| v.as_u64()) {
        None => bail!("not a harness report: no schema_version field"),
        Some(v) if v != u64::from(SCHEMA_VERSION) => {
            bail!("report schema_version {v} is not this harness's ({SCHEMA_VERSION}); re-run the baseline with this version")
        }
        Some(_) => {}
    }
    let report: Report = serde_json::from_value(value).context("report does not match schema version 1")?;
    if report.workloads.is_empty() {
        bail!("the report holds no workloads: there is nothing to compare against");
    }
    for w in &report.workloads {
        for (name, v) in &w.variants {
            if v.samples_s.is_empty() || v.samples_s.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                bail!("workload {} variant {name}: samples_s must be non-empty, finite and positive (a zero time can never regress)", w.id);
            }
        }
    }
    Ok(report)
}

pub fn read(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("{} is not a usable baseline", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_baselines_are_refused_with_a_reason() {
        assert!(parse("{not json").unwrap_err().to_string().contains("not valid JSON"));
        assert!(parse("{}").unwrap_err().to_string().contains("schema_version"));
        assert!(parse(r#"{"schema_version": 99}"#).unwrap_err().to_string().contains("99"));
        assert!(parse(r#"{"schema_version": 1, "meta": {}}"#).is_err());
        let mut r = crate::report::sample_report(1.0);
        r.workloads[0].variants.get_mut("naive").unwrap().samples_s = vec![];
        let text = to_string(&r).unwrap();
        assert!(parse(&text).unwrap_err().to_string().contains("samples_s"));
    }

    #[test]
    fn atomic_write_replaces_whole_files_and_refuses_missing_folders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
        let err = write_atomic(&dir.path().join("missing/r.json"), b"x").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
