//! Whisper's tokenizer: a HF `tokenizer.json` read by the `tokenizers` crate (byte-level BPE),
//! plus the special-token lookups decoding needs. Ids at or past the tokenizer's vocabulary
//! (Whisper's timestamp tokens `<|0.00|>`.. are not in older `tokenizer.json` files) are
//! special for decoding and never text.
use std::path::Path;

use crate::error::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(Self { inner: crate::text::read_tokenizer(path)? })
    }

    /// The id of a special (added) token such as `<|endoftext|>`.
    pub fn special_id(&self, content: &str) -> Option<i32> {
        self.inner.get_added_tokens_decoder().iter().find(|(_, t)| t.content == content).map(|(&id, _)| id as i32)
    }

    /// The content of a special (added) token.
    pub fn special_content(&self, id: i32) -> Option<String> {
        u32::try_from(id).ok().and_then(|id| self.inner.get_added_tokens_decoder().get(&id).map(|t| t.content.clone()))
    }

    /// Text tokens of `text` (no special tokens added), as openai-whisper's `encode`.
    pub fn encode(&self, text: &str) -> Result<Vec<i32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::InvalidArgument(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i32).collect())
    }

    /// Text of `ids`, special tokens (timestamps included) skipped.
    pub fn decode(&self, ids: &[i32]) -> String {
        let added = self.inner.get_added_tokens_decoder();
        let text: Vec<u32> = ids.iter().filter_map(|&i| u32::try_from(i).ok()).filter(|i| !added.contains_key(i) && self.inner.id_to_token(*i).is_some()).collect();
        // Decoding known ids of a byte-level BPE cannot fail; an unknown id is dropped above.
        self.inner.decode(&text, true).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level BPE tokenizer.json in HF's layout, with a few merges.
    const TOKENIZER: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [{"id": 23, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": null,
      "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
        "vocab": {"H": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7, "He": 8, "Hel": 9, "ll": 10, "Hell": 11, "Hello": 12, "Ġw": 13, "Ġwo": 14, "Ġwor": 15, "Ġworl": 16, "Ġworld": 17, "Ã": 18, "©": 19, "c": 20, "a": 21, "f": 22},
        "merges": ["H e", "He l", "Hel l", "Hell o", "Ġ w", "Ġw o", "Ġwo r", "Ġwor l", "Ġworl d"]}
    }"#;

    #[test]
    fn byte_level_bpe_round_trips_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, TOKENIZER).unwrap();
        let t = Tokenizer::from_file(&p).unwrap();
        assert_eq!(t.encode("Hello world").unwrap(), vec![12, 17]);
        // "Ã©" is UTF-8 é (0xC3 0xA9) in GPT-2's byte mapping.
        assert_eq!(t.encode("café").unwrap(), vec![20, 21, 22, 18, 19]);
        // Special tokens, and ids past the vocabulary (timestamps), are skipped.
        assert_eq!(t.decode(&[12, 17, 23, 4, 20, 21, 22, 18, 19, 50_000]), "Hello world café");
        assert_eq!(t.special_id("<|endoftext|>"), Some(23));
        assert_eq!(t.special_content(23).as_deref(), Some("<|endoftext|>"));
        std::fs::write(&p, "{}").unwrap();
        let e = Tokenizer::from_file(&p).err().unwrap().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
    }
}
