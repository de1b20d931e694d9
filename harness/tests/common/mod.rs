//! Helpers the harness's CLI tests share.
use std::path::{Path, PathBuf};

/// A committed fixture folder (`fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

/// A model folder: the fixture's config and weights, and a tokenizer.json whose vocabulary
/// (498 byte-level pieces) and special tokens fit the fixture's ids (no speech 498, previous
/// text 499, start 500, end 501, no timestamps 502).
#[allow(dead_code)] // Used by the Whisper CLI tests only.
pub fn whisper_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("whisper-s0").join(f), dir.path().join(f)).unwrap();
    }
    let mut vocab = serde_json::Map::new();
    let printable: Vec<char> = ('!'..='~').collect();
    let letters: Vec<char> = ('a'..='z').collect();
    for (i, c) in printable.iter().enumerate() {
        vocab.insert(c.to_string(), i.into());
    }
    vocab.insert("Ġ".into(), printable.len().into());
    let mut id = printable.len() + 1;
    'pairs: for a in &letters {
        for b in &letters {
            if id == 498 {
                break 'pairs;
            }
            vocab.insert(format!("Ġ{a}{b}"), id.into());
            id += 1;
        }
    }
    let added = |id: u32, content: &str| serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(498, "<|nospeech|>"), added(499, "<|startofprev|>"), added(500, "<|startoftranscript|>"), added(501, "<|endoftext|>"), added(502, "<|notimestamps|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []},
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}
