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
    pub fn options(&self) -> HubOptions {
        HubOptions { cache_dir: self.cache_dir.clone(), offline: self.offline }
    }
}
