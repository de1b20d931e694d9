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
