//! Whisper's configuration: the fields of HF `WhisperConfig` (`config.json`) this port uses,
//! and the published sizes from tiny to large-v3-turbo.
use serde::Deserialize;

pub use crate::config::ModelConfig;
use crate::error::{Error, Result};

fn d_vocab() -> i32 {
    51865
}
fn d_mels() -> i32 {
    80
}
fn four() -> i32 {
    4
}
fn six() -> i32 {
    6
}
fn d_ffn() -> i32 {
    1536
}
fn d_model() -> i32 {
    384
}
fn d_src() -> i32 {
    1500
}
fn d_tgt() -> i32 {
    448
}
fn d_start() -> i32 {
    50257
}
fn d_eos() -> i32 {
    50256
}
fn d_act() -> String {
    "gelu".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WhisperConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: i32,
    #[serde(default = "d_mels")]
    pub num_mel_bins: i32,
    #[serde(default = "four")]
    pub encoder_layers: i32,
    #[serde(default = "six")]
    pub encoder_attention_heads: i32,
    #[serde(default = "four")]
    pub decoder_layers: i32,
    #[serde(default = "six")]
    pub decoder_attention_heads: i32,
    #[serde(default = "d_ffn")]
    pub decoder_ffn_dim: i32,
    #[serde(default = "d_ffn")]
    pub encoder_ffn_dim: i32,
    #[serde(default = "d_model")]
    pub d_model: i32,
    #[serde(default = "d_src")]
    pub max_source_positions: i32,
    #[serde(default = "d_tgt")]
    pub max_target_positions: i32,
    #[serde(default = "d_start")]
    pub decoder_start_token_id: i32,
    #[serde(default = "d_eos")]
    pub eos_token_id: i32,
    #[serde(default = "d_act")]
    pub activation_function: String,
    #[serde(default)]
    pub scale_embedding: bool,
}

impl WhisperConfig {
    /// Weights one decode step reads, at `bytes_per_weight`: every decoder layer's
    /// self-attention, the cross-attention's query and output (its K/V cached), the
    /// feed-forward, and the logits (the token embedding, tied); embedding rows left out.
    pub fn decoder_step_weight_bytes(&self, bytes_per_weight: f64) -> f64 {
        let (d, ffn) = (f64::from(self.d_model), f64::from(self.decoder_ffn_dim));
        let layer = 6.0 * d * d + 2.0 * d * ffn;
        (f64::from(self.decoder_layers) * layer + f64::from(self.vocab_size) * d) * bytes_per_weight
    }

    /// A published size: tiny, tiny.en, base, small, medium, large-v3, large-v3-turbo.
    pub fn preset(name: &str) -> Result<Self> {
        let (d, enc, dec, heads, mels, vocab) = match name {
            "tiny" => (384, 4, 4, 6, 80, 51865),
            "tiny.en" => (384, 4, 4, 6, 80, 51864),
            "base" => (512, 6, 6, 8, 80, 51865),
            "small" => (768, 12, 12, 12, 80, 51865),
            "medium" => (1024, 24, 24, 16, 80, 51865),
            "large-v3" => (1280, 32, 32, 20, 128, 51866),
            "large-v3-turbo" => (1280, 32, 4, 20, 128, 51866),
            other => return Err(Error::InvalidArgument(format!("unknown Whisper size '{other}' (tiny, tiny.en, base, small, medium, large-v3, large-v3-turbo)"))),
        };
        let en = name.ends_with(".en");
        Ok(Self {
            vocab_size: vocab,
            num_mel_bins: mels,
            encoder_layers: enc,
            encoder_attention_heads: heads,
            decoder_layers: dec,
            decoder_attention_heads: heads,
            decoder_ffn_dim: 4 * d,
            encoder_ffn_dim: 4 * d,
            d_model: d,
            max_source_positions: 1500,
            max_target_positions: 448,
            decoder_start_token_id: if en { 50257 } else { 50258 },
            eos_token_id: if en { 50256 } else { 50257 },
            activation_function: "gelu".into(),
            scale_embedding: false,
        })
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::config::check_bounds(&[
            ("vocab_size", i64::from(self.vocab_size), 1 << 20),
            ("num_mel_bins", i64::from(self.num_mel_bins), 512),
            ("encoder_layers", i64::from(self.encoder_layers), 256),
            ("decoder_layers", i64::from(self.decoder_layers), 256),
            ("d_model", i64::from(self.d_model), 1 << 15),
            ("encoder_ffn_dim", i64::from(self.encoder_ffn_dim), 1 << 17),
            ("decoder_ffn_dim", i64::from(self.decoder_ffn_dim), 1 << 17),
            ("encoder_attention_heads", i64::from(self.encoder_attention_heads), 1024),
            ("decoder_attention_heads", i64::from(self.decoder_attention_heads), 1024),
            ("max_source_positions", i64::from(self.max_source_positions), 1 << 16),
            ("max_target_positions", i64::from(self.max_target_positions), 1 << 16),
        ])?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("num_mel_bins", self.num_mel_bins),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
            ("d_model", self.d_model),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("decoder_ffn_dim", self.decoder_ffn_dim),
            ("max_source_positions", self.max_source_positions),
            ("max_target_positions", self.max_target_positions),
        ] {
            if v < 1 {
                return Err(format!("{name} must be at least 1, got {v}"));
            }
        }
        for (name, h) in [("encoder_attention_heads", self.encoder_attention_heads), ("decoder_attention_heads", self.decoder_attention_heads)] {
            if h < 1 || self.d_model % h != 0 {
                return Err(format!("d_model {} is not divisible by {name} {h}", self.d_model));
            }
        }
        if self.activation_function != "gelu" {
            return Err(format!("activation_function '{}' is not supported (Whisper uses gelu)", self.activation_function));
        }
        if self.scale_embedding {
            return Err("scale_embedding is not supported (no Whisper checkpoint uses it)".into());
        }
        for (name, t) in [("decoder_start_token_id", self.decoder_start_token_id), ("eos_token_id", self.eos_token_id)] {
            if t < 0 || t >= self.vocab_size {
                return Err(format!("{name} {t} is outside the vocabulary of {}", self.vocab_size));
            }
        }
        Ok(())
    }

    /// Mel frames the encoder takes (two convolutions, the second with stride 2).
    pub fn n_frames(&self) -> i32 {
        2 * self.max_source_positions
    }
}

impl ModelConfig for WhisperConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        WhisperConfig::validate(self)
    }
}
