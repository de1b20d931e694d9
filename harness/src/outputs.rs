//! Where the commands write: outputs are checked before any work starts, never land on an
//! input (however the two paths are spelled), and a folder of several files appears whole or
//! not at all.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The path as the file system resolves it: an existing path canonicalised (links, `..`);
/// otherwise its existing folder canonicalised, plus the name.
pub fn resolved(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let name = path.file_name().with_context(|| format!("{}: no file name", path.display()))?;
    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let parent = parent.canonicalize().with_context(|| format!("cannot write {}: folder {} does not exist", path.display(), parent.display()))?;
    Ok(parent.join(name))
}

/// True when `a` and `b` name the same file or folder, however spelled.
pub fn same_path(a: &Path, b: &Path) -> bool {
    matches!((resolved(a), resolved(b)), (Ok(x), Ok(y)) if x == y)
}

/// Refuse to write `output` (`what`, e.g. "-o") over any of `inputs` (each with its flag), or
/// inside an input folder's tree when `output` is a folder that replaces one.
pub fn refuse_overwrite(what: &str, output: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    for (name, input) in inputs {
        if same_path(output, input) {
            bail!("{what} {} is the same file as {name} {}: refusing to overwrite an input", output.display(), input.display());
        }
    }
    Ok(())
}

/// Refuse an output file that cannot be written, before any work: its folder must exist and
/// it must not itself be a folder.
pub fn check_file(what: &str, path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!("{what} {}: folder {} does not exist", path.display(), dir.display());
    }
    if path.is_dir() {
        bail!("{what} {}: is a folder, not a file", path.display());
    }
    Ok(())
}

/// The checks of a report's two outputs, JSON and HTML (`bench`, `merge`), before any work:
/// each writable as a file, not the same file, and neither one of the run's `inputs`.
pub fn check_report_paths(json: &Path, html: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    check_file("-o", json)?;
    check_file("--html", html)?;
    if same_path(json, html) {
        bail!("-o {} and the HTML report are the same file: give -o a .json name, or --html another path", json.display());
    }
    refuse_overwrite("-o", json, inputs)?;
    refuse_overwrite("--html", html, inputs)
}

/// A folder of outputs, written under a temporary name beside its target and moved into place
/// by [`StagedDir::finish`], so it appears whole or not at all. Dropped unfinished (an error, a
/// panic), it leaves nothing behind.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: Option<PathBuf>,
}

impl StagedDir {
    /// Check `target` (`what` names the flag) and create the staging folder, before any work.
    /// The target must not exist, or be an empty folder (replaced at the end): existing files
    /// are never overwritten.
    pub fn create(what: &str, target: &Path) -> Result<Self> {
        if target.exists() {
            let empty = target.is_dir() && std::fs::read_dir(target).map(|mut d| d.next().is_none()).unwrap_or(false);
            if !empty {
                bail!("{what} {}: already exists and is not an empty folder (outputs never replace files)", target.display());
            }
        }
        let resolved = resolved(target)?;
        let parent = resolved.parent().context("the output folder has no parent")?;
        let name = resolved.file_name().context("the output folder has no name")?.to_string_lossy().into_owned();
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        std::fs::create_dir(&staging).with_context(|| format!("{what}: cannot create {}", staging.display()))?;
        Ok(StagedDir { target: target.to_path_buf(), staging: Some(staging) })
    }

    /// Where to write a file named `name` (one path component, checked) until the folder is
    /// finished.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let Some(dir) = &self.staging else { bail!("the output folder is already finished") };
        if name.is_empty() || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
            bail!("{name:?} cannot name a file in the output folder");
        }
        Ok(dir.join(name))
    }

    /// Move the folder into place (an empty target folder is replaced).
    pub fn finish(mut self) -> Result<PathBuf> {
        let staging = self.staging.take().context("the output folder is already finished")?;
        if self.target.is_dir() {
            // Empty when created; refuse if something appeared since.
            if std::fs::remove_dir(&self.target).is_err() {
                let _ = std::fs::remove_dir_all(&staging);
                bail!("{}: files appeared in it during the run; nothing was replaced", self.target.display());
            }
        } else if self.target.exists() {
            let _ = std::fs::remove_dir_all(&staging);
            bail!("{}: appeared during the run; nothing was replaced", self.target.display());
        }
        std::fs::rename(&staging, &self.target).with_context(|| format!("moving the outputs into {}", self.target.display()))?;
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if let Some(p) = self.staging.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_spelled_two_ways_is_the_same_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("m")).unwrap();
        std::fs::write(d.path().join("m/in.wav"), b"x").unwrap();
        let other = d.path().join("m/../m/in.wav");
        assert!(same_path(&d.path().join("m/in.wav"), &other));
        assert!(same_path(&d.path().join("m"), &d.path().join("m/../m")), "folders too");
        assert!(!same_path(&d.path().join("m/in.wav"), &d.path().join("m/out.wav")));
        let err = refuse_overwrite("-o", &other, &[("input", &d.path().join("m/in.wav"))]).unwrap_err().to_string();
        assert!(err.contains("same file as input"), "{err}");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.path().join("m/in.wav"), d.path().join("link.wav")).unwrap();
            assert!(same_path(&d.path().join("link.wav"), &d.path().join("m/in.wav")), "through a link");
        }
    }

    #[test]
    fn a_staged_folder_appears_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("out");
        let s = StagedDir::create("-o", &target).unwrap();
        std::fs::write(s.path("a.wav").unwrap(), b"a").unwrap();
        assert!(!target.exists());
        assert!(s.path("../x").is_err() && s.path("..").is_err());
        drop(s);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "nothing left behind");

        std::fs::create_dir(&target).unwrap();
        let s = StagedDir::create("-o", &target).unwrap();
        std::fs::write(s.path("a.wav").unwrap(), b"a").unwrap();
        s.finish().unwrap();
        assert_eq!(std::fs::read(target.join("a.wav")).unwrap(), b"a", "an empty folder is filled");
        let err = StagedDir::create("-o", &target).unwrap_err().to_string();
        assert!(err.contains("not an empty folder"), "{err}");
        assert!(StagedDir::create("-o", &d.path().join("missing/out")).is_err());
    }
}
