//! Reading a Hugging Face `tokenizer.json` through the `tokenizers` crate (Whisper's byte-level
//! BPE, MusicGen's T5 Unigram), with errors that name the file.
use std::path::Path;

use crate::error::{Error, Result};

pub fn read_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let bad = |reason: String| Error::Config { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    text.parse().map_err(|e| bad(format!("not a tokenizer.json the tokenizers crate reads: {e}")))
}
