//! The command-line options every command that loads from the Hugging Face hub shares.
use std::path::PathBuf;

use models::hub::HubOptions;

#[derive(clap::Args, Clone, Debug)]
pub struct HubArgs {
    /// Hub revision: a commit hash pins the exact weights; a branch name is resolved through
    /// the local cache first.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Hub cache folder (default: $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Never download; use only the local hub cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl HubArgs {
    /// The model folder: `model_dir` when given, else the snapshot of hub repo `model` holding
    /// the files a text-conditioned model needs (config.json, model.safetensors,
    /// tokenizer.json), read from the local cache first.
    pub fn model_folder(&self, model_dir: Option<&PathBuf>, model: Option<&str>) -> anyhow::Result<PathBuf> {
        match (model_dir, model) {
            (Some(d), _) => Ok(d.clone()),
            (None, Some(repo)) => Ok(models::hub::fetch_snapshot(repo, &self.revision, &["config.json", "model.safetensors", "tokenizer.json"], &self.options())?),
            (None, None) => anyhow::bail!("give --model-dir or --model"),
        }
    }

    pub fn options(&self) -> HubOptions {
        HubOptions { cache_dir: self.cache_dir.clone(), offline: self.offline }
    }
}
