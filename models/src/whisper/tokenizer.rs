//! Token ids to text for Whisper's byte-level BPE vocabulary, read from a HF `tokenizer.json`
//! (`model.vocab` plus `added_tokens`). Decoding only: the ids are looked up, special tokens
//! skipped, and GPT-2's byte-to-unicode mapping reversed to UTF-8.
use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

pub struct Tokenizer {
    pieces: HashMap<i32, String>,
    special: HashMap<i32, String>,
    byte_of: HashMap<char, u8>,
}

/// GPT-2's reversible byte-to-printable-character table.
fn bytes_to_unicode() -> HashMap<char, u8> {
    let mut bs: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter().zip(cs).filter_map(|(b, c)| char::from_u32(c).map(|c| (c, b as u8))).collect()
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Config { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let vocab = v.pointer("/model/vocab").and_then(|x| x.as_object()).ok_or_else(|| bad("no model.vocab (not a BPE tokenizer.json)".into()))?;
        let mut pieces = HashMap::new();
        for (piece, id) in vocab {
            let id = id.as_i64().ok_or_else(|| bad(format!("vocab entry '{piece}' has a non-integer id")))?;
            pieces.insert(id as i32, piece.clone());
        }
        let mut special = HashMap::new();
        for t in v.get("added_tokens").and_then(|a| a.as_array()).into_iter().flatten() {
            if let (Some(id), Some(content)) = (t.get("id").and_then(|i| i.as_i64()), t.get("content").and_then(|c| c.as_str())) {
                special.insert(id as i32, content.to_string());
            }
        }
        Ok(Self { pieces, special, byte_of: bytes_to_unicode() })
    }

    /// The id of a special token such as `<|endoftext|>`.
    pub fn special_id(&self, content: &str) -> Option<i32> {
        self.special.iter().find(|(_, c)| c.as_str() == content).map(|(&id, _)| id)
    }

    /// The content of a special token.
    pub fn special_content(&self, id: i32) -> Option<&str> {
        self.special.get(&id).map(String::as_str)
    }

    /// Text of `ids`, special tokens (and unknown ids) skipped.
    pub fn decode(&self, ids: &[i32]) -> String {
        let mut bytes = Vec::new();
        for id in ids {
            if self.special.contains_key(id) {
                continue;
            }
            if let Some(p) = self.pieces.get(id) {
                bytes.extend(p.chars().filter_map(|c| self.byte_of.get(&c).copied()));
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_pieces_decode_to_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        // "Ġ" is the space byte; "Ã©" is UTF-8 é (0xC3 0xA9) in GPT-2's mapping.
        std::fs::write(&p, r#"{"model": {"vocab": {"Hello": 0, "Ġworld": 1, "Ġcaf": 2, "Ã©": 3}}, "added_tokens": [{"id": 9, "content": "<|endoftext|>"}]}"#).unwrap();
        let t = Tokenizer::from_file(&p).unwrap();
        assert_eq!(t.decode(&[0, 1, 2, 3, 9]), "Hello world café");
        assert_eq!(t.special_id("<|endoftext|>"), Some(9));
        std::fs::write(&p, "{}").unwrap();
        assert!(Tokenizer::from_file(&p).err().unwrap().to_string().contains("model.vocab"));
    }
}
