//! Files from the Hugging Face hub, pinned to a revision. The local cache (laid out as the hub
//! lays it out: `models--org--name/{refs,snapshots,blobs}`) is tried first, so pinned files
//! already present never touch the network; `HF_HUB_OFFLINE=1` (or `offline`) forbids
//! downloads altogether.
use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};

/// Where and how to look.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The hub cache folder; default `$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Never download (also when `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

fn default_cache() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(h) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(h).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cached path of `filename` in `repo_id` at `revision` (a branch, tag or commit hash).
pub fn cached(cache_dir: &Path, repo_id: &str, revision: &str, filename: &str) -> Option<PathBuf> {
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    if is_commit(revision) {
        // A commit needs no ref: its snapshot folder is named after it.
        let p = cache_dir.join(repo.folder_name()).join("snapshots").join(revision).join(filename);
        return p.exists().then_some(p);
    }
    Cache::new(cache_dir.to_path_buf()).repo(repo).get(filename)
}

/// `filename` of `repo_id` at `revision`: from the cache, else downloaded (unless offline).
pub fn fetch(repo_id: &str, revision: &str, filename: &str, opts: &HubOptions) -> Result<PathBuf> {
    let err = |reason: String| Error::Hub { repo: repo_id.to_string(), revision: revision.to_string(), reason };
    if repo_id.split('/').count() != 2 || repo_id.split('/').any(str::is_empty) {
        return Err(err(format!("'{repo_id}' is not a hub id of the form org/name")));
    }
    let cache_dir = opts.cache_dir.clone().or_else(default_cache).ok_or_else(|| err("no hub cache folder (set HF_HUB_CACHE)".into()))?;
    if let Some(p) = cached(&cache_dir, repo_id, revision, filename) {
        return Ok(p);
    }
    let offline = opts.offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if offline {
        return Err(err(format!("{filename} is not in the cache at {} and downloads are off (offline)", cache_dir.display())));
    }
    let api = hf_hub::api::sync::ApiBuilder::new().with_cache_dir(cache_dir).with_progress(true).build().map_err(|e| err(format!("cannot start the hub client: {e}")))?;
    api.repo(Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string())).get(filename).map_err(|e| err(format!("downloading {filename}: {e}")))
}

/// Fetch every one of `files` of `repo_id` at `revision` (see [`fetch`]); returns the snapshot
/// folder that holds them, named after the commit when it came through a hub cache.
pub fn fetch_snapshot(repo_id: &str, revision: &str, files: &[&str], opts: &HubOptions) -> Result<PathBuf> {
    let mut folder = None;
    for f in files {
        let path = fetch(repo_id, revision, f, opts)?;
        folder.get_or_insert(path.parent().map(Path::to_path_buf).unwrap_or_default());
    }
    folder.ok_or_else(|| Error::Hub { repo: repo_id.into(), revision: revision.into(), reason: "no files asked for".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A cache laid out as the hub's: blobs, a snapshot of symlinks, and a ref to the commit.
    fn hub_cache() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--openai--whisper-tiny.en");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots").join(COMMIT)).unwrap();
        std::fs::write(repo.join("blobs/abc123"), b"{\"d_model\": 384}").unwrap();
        std::os::unix::fs::symlink("../../blobs/abc123", repo.join("snapshots").join(COMMIT).join("config.json")).unwrap();
        std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
        dir
    }

    #[test]
    fn pinned_files_resolve_from_the_local_cache_offline() {
        let cache = hub_cache();
        let opts = HubOptions { cache_dir: Some(cache.path().to_path_buf()), offline: true };
        for rev in ["main", COMMIT] {
            let p = fetch("openai/whisper-tiny.en", rev, "config.json", &opts).unwrap();
            assert_eq!(std::fs::read_to_string(p).unwrap(), "{\"d_model\": 384}");
        }
    }

    #[test]
    fn offline_misses_say_what_is_missing() {
        let cache = hub_cache();
        let opts = HubOptions { cache_dir: Some(cache.path().to_path_buf()), offline: true };
        let e = fetch("openai/whisper-tiny.en", "main", "model.safetensors", &opts).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("offline") && e.contains("whisper-tiny.en@main"), "{e}");
        let e = fetch("openai/whisper-tiny.en", "v2", "config.json", &opts).unwrap_err().to_string();
        assert!(e.contains("@v2"), "{e}");
        assert!(fetch("not-a-hub-id", "main", "config.json", &opts).unwrap_err().to_string().contains("org/name"));
    }
}
