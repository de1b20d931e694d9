//! CLAP's configurations, as HF writes them: `config.json` (`ClapConfig` with its audio and
//! text parts) and `preprocessor_config.json` (`ClapFeatureExtractor`).
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::ModelConfig;

/// An int or a pair of ints (HF allows either for patch sizes and strides).
fn int_or_pair<'de, D: Deserializer<'de>>(d: D) -> Result<[i32; 2], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum P {
        One(i32),
        Two([i32; 2]),
    }
    Ok(match P::deserialize(d)? {
        P::One(v) => [v, v],
        P::Two(p) => p,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClapAudioConfig {
    pub spec_size: i32,
    pub num_mel_bins: i32,
    #[serde(deserialize_with = "int_or_pair")]
    pub patch_size: [i32; 2],
    #[serde(deserialize_with = "int_or_pair")]
    pub patch_stride: [i32; 2],
    pub patch_embeds_hidden_size: i32,
    pub depths: Vec<i32>,
    pub num_attention_heads: Vec<i32>,
    pub window_size: i32,
    pub hidden_size: i32,
    #[serde(default = "mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    #[serde(default = "eps5")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub enable_fusion: bool,
    /// `aff_2d` (or unset) with `enable_fusion`: attentional feature fusion of the local chunks.
    #[serde(default)]
    pub fusion_type: Option<String>,
    #[serde(default = "four")]
    pub aff_block_r: i32,
    #[serde(default = "yes")]
    pub enable_patch_layer_norm: bool,
    #[serde(default = "one")]
    pub patch_embed_input_channels: i32,
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClapTextConfig {
    pub vocab_size: i32,
    pub hidden_size: i32,
    pub num_hidden_layers: i32,
    pub num_attention_heads: i32,
    pub intermediate_size: i32,
    pub max_position_embeddings: i32,
    pub pad_token_id: i32,
    pub type_vocab_size: i32,
    pub layer_norm_eps: f64,
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClapConfig {
    pub audio_config: ClapAudioConfig,
    pub text_config: ClapTextConfig,
    pub projection_dim: i32,
    #[serde(default = "relu")]
    pub projection_hidden_act: String,
}

fn mlp_ratio() -> f64 {
    4.0
}
fn yes() -> bool {
    true
}
fn eps5() -> f64 {
    1e-5
}
fn four() -> i32 {
    4
}
fn one() -> i32 {
    1
}
fn gelu() -> String {
    "gelu".into()
}
fn relu() -> String {
    "relu".into()
}

impl ClapConfig {
    /// `laion/clap-htsat-unfused`: HTSAT (Swin-T layout, 256x256 input of 64 mel bins) and
    /// RoBERTa-base, 512-wide projections.
    pub fn htsat_unfused() -> Self {
        Self {
            audio_config: ClapAudioConfig {
                spec_size: 256,
                num_mel_bins: 64,
                patch_size: [4, 4],
                patch_stride: [4, 4],
                patch_embeds_hidden_size: 96,
                depths: vec![2, 2, 6, 2],
                num_attention_heads: vec![4, 8, 16, 32],
                window_size: 8,
                hidden_size: 768,
                mlp_ratio: 4.0,
                qkv_bias: true,
                layer_norm_eps: 1e-5,
                enable_fusion: false,
                fusion_type: None,
                aff_block_r: 4,
                enable_patch_layer_norm: true,
                patch_embed_input_channels: 1,
                hidden_act: "gelu".into(),
            },
            text_config: ClapTextConfig {
                vocab_size: 50265,
                hidden_size: 768,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                intermediate_size: 3072,
                max_position_embeddings: 514,
                pad_token_id: 1,
                type_vocab_size: 1,
                layer_norm_eps: 1e-12,
                hidden_act: "gelu".into(),
            },
            projection_dim: 512,
            projection_hidden_act: "relu".into(),
        }
    }

    /// `laion/clap-htsat-fused`: the same sizes with attentional feature fusion of three local
    /// chunks for clips longer than 10 s (its extractor uses `fusion` truncation).
    pub fn htsat_fused() -> Self {
        let mut c = Self::htsat_unfused();
        c.audio_config.enable_fusion = true;
        c.audio_config.fusion_type = Some("aff_2d".into());
        c
    }

    /// The Swin stages' token grid sides, `(height, width)` per stage.
    pub fn resolutions(&self) -> Vec<(i32, i32)> {
        let a = &self.audio_config;
        let (h, w) = (a.spec_size / a.patch_stride[0], a.spec_size / a.patch_stride[1]);
        (0..a.depths.len() as u32).map(|i| (h >> i, w >> i)).collect()
    }
}

impl ModelConfig for ClapConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let a = &self.audio_config;
        let t = &self.text_config;
        // Bounds far above any real model, so that a corrupt config is refused rather than
        // building millions of layers.
        let stages_ok = a.depths.len() <= 8 && a.depths.iter().all(|&d| (1..=64).contains(&d)) && a.num_attention_heads.iter().all(|&h| h <= 1024);
        if !stages_ok
            || !(1..=4096).contains(&a.spec_size)
            || !(1..=4096).contains(&a.patch_embeds_hidden_size)
            || a.window_size < 1
            || a.window_size > 64
            || a.patch_size.iter().chain(&a.patch_stride).any(|&p| !(1..=64).contains(&p))
            || !(a.mlp_ratio > 0.0 && a.mlp_ratio <= 64.0)
        {
            return Err("audio_config: sizes out of range (at most 8 stages of 64 blocks, 1024 heads, a 4096 spec and width, windows and patches of 64)".into());
        }
        if !(1..=10_000_000).contains(&t.vocab_size)
            || !(1..=65536).contains(&t.hidden_size)
            || !(1..=256).contains(&t.num_hidden_layers)
            || !(1..=1 << 20).contains(&t.intermediate_size)
            || !(1..=1 << 20).contains(&t.max_position_embeddings)
            || !(1..=1024).contains(&t.type_vocab_size)
            || !(1..=65536).contains(&self.projection_dim)
        {
            return Err("text_config / projection_dim: sizes out of range".into());
        }
        if a.enable_fusion && !matches!(a.fusion_type.as_deref(), None | Some("aff_2d")) {
            return Err(format!("audio_config.fusion_type {:?}: only aff_2d fusion is supported", a.fusion_type));
        }
        if a.enable_fusion && (a.aff_block_r < 1 || a.patch_embeds_hidden_size % a.aff_block_r != 0) {
            return Err(format!("audio_config.aff_block_r {} must divide patch_embeds_hidden_size {}", a.aff_block_r, a.patch_embeds_hidden_size));
        }
        if a.patch_embed_input_channels != 1 || a.patch_size != a.patch_stride {
            return Err(format!(
                "audio_config: patch_size {:?} / patch_stride {:?} / {} input channels: only non-overlapping patches of one channel are supported",
                a.patch_size, a.patch_stride, a.patch_embed_input_channels
            ));
        }
        if a.hidden_act != "gelu" || t.hidden_act != "gelu" || self.projection_hidden_act != "relu" {
            return Err("only gelu hidden activations and relu projections are supported".into());
        }
        if a.depths.is_empty() || a.depths.len() != a.num_attention_heads.len() {
            return Err(format!("audio_config: {} depths for {} head counts", a.depths.len(), a.num_attention_heads.len()));
        }
        if a.num_mel_bins < 1 || a.spec_size % a.num_mel_bins != 0 || a.spec_size / a.num_mel_bins < 1 {
            return Err(format!("audio_config: spec_size {} must be a multiple of num_mel_bins {}", a.spec_size, a.num_mel_bins));
        }
        let ratio = a.spec_size / a.num_mel_bins;
        if a.spec_size / ratio != a.num_mel_bins {
            return Err(format!("audio_config: the image height {} must equal num_mel_bins {}", a.spec_size / ratio, a.num_mel_bins));
        }
        let widest = a.patch_embeds_hidden_size << (a.depths.len() - 1);
        if widest != a.hidden_size {
            return Err(format!("audio_config: hidden_size {} must be patch_embeds_hidden_size x 2^(stages - 1) = {widest}", a.hidden_size));
        }
        for (i, ((h, w), heads)) in self.resolutions().into_iter().zip(&a.num_attention_heads).enumerate() {
            if h.min(w) < a.window_size {
                return Err(format!("audio_config: stage {i} is smaller ({h}x{w} tokens) than the window {} (HF cannot run it either)", a.window_size));
            }
            // A stage that is not a whole number of windows is padded to one, as HF pads it.
            if i + 1 < a.depths.len() && (h % 2 != 0 || w % 2 != 0) {
                return Err(format!("audio_config: stage {i} ({h}x{w} tokens) has an odd side, which patch merging cannot halve"));
            }
            if *heads < 1 || (a.patch_embeds_hidden_size << i) % heads != 0 {
                return Err(format!("audio_config: stage {i}'s width {} does not split into {heads} heads", a.patch_embeds_hidden_size << i));
            }
        }
        if t.num_attention_heads < 1 || t.hidden_size % t.num_attention_heads != 0 || t.type_vocab_size < 1 || t.pad_token_id < 0 || t.pad_token_id >= t.vocab_size {
            return Err(format!("text_config: hidden_size {} / {} heads / pad_token_id {} do not fit", t.hidden_size, t.num_attention_heads, t.pad_token_id));
        }
        Ok(())
    }
}

/// `preprocessor_config.json` of `ClapFeatureExtractor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    pub feature_size: i32,
    pub sampling_rate: i32,
    pub hop_length: i32,
    pub max_length_s: f64,
    pub fft_window_size: i32,
    #[serde(default)]
    pub frequency_min: f64,
    pub frequency_max: f64,
    #[serde(default)]
    pub top_db: Option<f64>,
    pub truncation: String,
    pub padding: String,
}

impl FeatureConfig {
    /// `laion/clap-htsat-unfused`'s: 48 kHz, 10 s, 64 mel bins up to 14 kHz, rand_trunc, repeatpad.
    pub fn htsat_unfused() -> Self {
        Self {
            feature_size: 64,
            sampling_rate: 48_000,
            hop_length: 480,
            max_length_s: 10.0,
            fft_window_size: 1024,
            frequency_min: 0.0,
            frequency_max: 14_000.0,
            top_db: None,
            truncation: "rand_trunc".into(),
            padding: "repeatpad".into(),
        }
    }

    pub fn max_samples(&self) -> usize {
        (self.max_length_s * f64::from(self.sampling_rate)) as usize
    }
}

impl ModelConfig for FeatureConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        if self.top_db.is_some() {
            return Err("top_db is not supported (CLAP's checkpoints leave it unset)".into());
        }
        if !["rand_trunc", "fusion"].contains(&self.truncation.as_str()) || !["repeatpad", "repeat", "pad"].contains(&self.padding.as_str()) {
            return Err(format!("truncation {:?} / padding {:?}: expected rand_trunc|fusion and repeatpad|repeat|pad", self.truncation, self.padding));
        }
        if self.fft_window_size < 16 || self.hop_length < 1 || self.feature_size < 1 || self.sampling_rate < 1 || self.max_length_s.is_nan() || self.max_length_s <= 0.0 {
            return Err("fft_window_size, hop_length, feature_size, sampling_rate and max_length_s must be positive".into());
        }
        if !(self.frequency_max > self.frequency_min && self.frequency_max <= f64::from(self.sampling_rate) / 2.0) {
            return Err(format!("frequency range {}..{} Hz does not fit under {} Hz / 2", self.frequency_min, self.frequency_max, self.sampling_rate));
        }
        Ok(())
    }
}
