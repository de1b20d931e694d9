//! Model configurations read from `config.json`: parse, then check what the implementation
//! relies on, with errors that name the file and the field.
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub trait ModelConfig: DeserializeOwned {
    /// Everything the implementation relies on; the message names the field.
    fn validate(&self) -> std::result::Result<(), String>;

    /// Parse `config.json` text; `path` names it in errors.
    fn from_json(text: &str, path: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| Error::Config { path: path.into(), reason: e.to_string() })?;
        cfg.validate().map_err(|reason| Error::Config { path: path.into(), reason })?;
        Ok(cfg)
    }

    fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config { path: path.display().to_string(), reason: format!("cannot read: {e}") })?;
        Self::from_json(&text, &path.display().to_string())
    }
}

/// Every `(field, value, max)` at least 1 and at most `max`: the bounds of a configuration,
/// checked before anything is sized from it (a layer count of 10^9 would exhaust memory before
/// any weight is read). Maxima sit far above every released checkpoint.
pub fn check_bounds(fields: &[(&str, i64, i64)]) -> std::result::Result<(), String> {
    for &(name, v, max) in fields {
        if v < 1 {
            return Err(format!("{name} must be at least 1, got {v}"));
        }
        if v > max {
            return Err(format!("{name} {v}: larger than any released model (at most {max})"));
        }
    }
    Ok(())
}

/// The one rule for a name read from a file that becomes part of a file name (HTDemucs' source
/// names become `<name>.wav`): 1 to 64 characters of ASCII letters, digits, '-', '_' and '.',
/// not starting with '.', so it can name no other folder, hidden file or device.
pub fn check_file_stem(what: &str, name: &str) -> std::result::Result<(), String> {
    let ok = (1..=64).contains(&name.len()) && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {name:?}: not usable as a file name (1 to 64 of A-Z a-z 0-9 - _ ., not starting with '.')"))
    }
}

/// [`check_file_stem`] for every name, and no name twice (compared without case, as on
/// macOS's and Windows' file systems, where they would overwrite each other).
pub fn check_file_stems(what: &str, names: &[String]) -> std::result::Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        check_file_stem(what, n)?;
        if !seen.insert(n.to_ascii_lowercase()) {
            return Err(format!("{what} {n:?}: named twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_files_cannot_leave_the_output_folder() {
        for bad in ["", "../x", "/etc/passwd", "a/b", "a\\b", ".hidden", "..", "x\0y", "dr ums", &"x".repeat(65)] {
            assert!(check_file_stem("source", bad).is_err(), "{bad:?} accepted");
        }
        for good in ["drums", "vocals_2", "bass-left", "other.v1"] {
            assert!(check_file_stem("source", good).is_ok(), "{good:?} refused");
        }
        let twice = check_file_stems("sources", &["drums".into(), "Drums".into()]).unwrap_err();
        assert!(twice.contains("named twice"), "{twice}");
    }
}
