//! MusicGen's configuration: HF `MusicgenConfig` (`config.json`), which nests the T5 text
//! encoder's, the decoder's and EnCodec's configurations.
use serde::Deserialize;

use crate::config::ModelConfig;
use crate::encodec::config::EncodecConfig;

fn d_buckets() -> i32 {
    32
}
fn d_distance() -> i32 {
    128
}
fn d_eps() -> f32 {
    1e-6
}
fn d_ff_proj() -> String {
    "relu".into()
}
fn d_act() -> String {
    "gelu".into()
}
fn one() -> i32 {
    1
}

/// The fields of HF `T5Config` the encoder uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct T5Config {
    pub vocab_size: i32,
    pub d_model: i32,
    pub d_kv: i32,
    pub d_ff: i32,
    pub num_layers: i32,
    pub num_heads: i32,
    #[serde(default = "d_buckets")]
    pub relative_attention_num_buckets: i32,
    #[serde(default = "d_distance")]
    pub relative_attention_max_distance: i32,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "d_ff_proj")]
    pub feed_forward_proj: String,
}

/// The fields of HF `MusicgenDecoderConfig` the decoder uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DecoderConfig {
    pub vocab_size: i32,
    pub max_position_embeddings: i32,
    pub num_hidden_layers: i32,
    pub ffn_dim: i32,
    pub num_attention_heads: i32,
    pub hidden_size: i32,
    pub num_codebooks: i32,
    #[serde(default = "one")]
    pub audio_channels: i32,
    pub pad_token_id: i32,
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "d_act")]
    pub activation_function: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MusicgenConfig {
    pub text_encoder: T5Config,
    pub decoder: DecoderConfig,
    pub audio_encoder: EncodecConfig,
    /// HF `MusicgenMelodyConfig` (`model_type` "musicgen_melody"): chroma bins of the melody.
    #[serde(default)]
    pub num_chroma: Option<i32>,
    /// MusicGen Melody: chroma frames the melody prefix is repeated or cut to.
    #[serde(default)]
    pub chroma_length: Option<i32>,
    #[serde(default)]
    pub model_type: Option<String>,
}

impl MusicgenConfig {
    /// Weights one decode step reads, at `bytes_per_weight` (see `Precision`): every layer's
    /// self-attention, the cross-attention's query and output (its K/V cached), the
    /// feed-forward, and the codebook heads; embedding rows and norms left out.
    pub fn decoder_step_weight_bytes(&self, bytes_per_weight: f64) -> f64 {
        let d = &self.decoder;
        let (h, ffn) = (f64::from(d.hidden_size), f64::from(d.ffn_dim));
        let cross = if self.is_melody() { 0.0 } else { 2.0 * h * h };
        let layer = 4.0 * h * h + cross + 2.0 * h * ffn;
        (f64::from(d.num_hidden_layers) * layer + f64::from(d.num_codebooks) * f64::from(d.vocab_size) * h) * bytes_per_weight
    }

    /// MusicGen Melody (`facebook/musicgen-melody`): a decoder without cross-attention, whose
    /// conditioning (the melody's chroma, then the text states) is a prefix of its sequence.
    pub fn is_melody(&self) -> bool {
        self.model_type.as_deref() == Some("musicgen_melody") || self.num_chroma.is_some()
    }
}

impl ModelConfig for MusicgenConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let (t, d) = (&self.text_encoder, &self.decoder);
        crate::config::check_bounds(&[
            ("text_encoder.d_model", i64::from(t.d_model), 1 << 15),
            ("text_encoder.d_kv", i64::from(t.d_kv), 1 << 12),
            ("text_encoder.num_heads", i64::from(t.num_heads), 1024),
            ("text_encoder.num_layers", i64::from(t.num_layers), 256),
            ("text_encoder.relative_attention_num_buckets", i64::from(t.relative_attention_num_buckets), 1 << 12),
            ("decoder.hidden_size", i64::from(d.hidden_size), 1 << 15),
            ("decoder.num_attention_heads", i64::from(d.num_attention_heads), 1024),
            ("decoder.num_hidden_layers", i64::from(d.num_hidden_layers), 256),
            ("decoder.num_codebooks", i64::from(d.num_codebooks), 64),
            ("decoder.vocab_size", i64::from(d.vocab_size), 1 << 16),
        ])?;
        for (name, v) in [
            ("text_encoder.d_model", t.d_model),
            ("text_encoder.d_kv", t.d_kv),
            ("text_encoder.num_heads", t.num_heads),
            ("text_encoder.num_layers", t.num_layers),
            ("text_encoder.relative_attention_num_buckets", t.relative_attention_num_buckets),
            ("decoder.hidden_size", d.hidden_size),
            ("decoder.num_attention_heads", d.num_attention_heads),
            ("decoder.num_hidden_layers", d.num_hidden_layers),
            ("decoder.num_codebooks", d.num_codebooks),
            ("decoder.vocab_size", d.vocab_size),
        ] {
            if v < 1 {
                return Err(format!("{name} is {v}; it must be positive"));
            }
        }
        if t.feed_forward_proj != "relu" {
            return Err(format!("text_encoder.feed_forward_proj \"{}\": only \"relu\" (t5-base, as MusicGen uses) is implemented", t.feed_forward_proj));
        }
        if t.relative_attention_num_buckets < 4 || t.relative_attention_max_distance <= t.relative_attention_num_buckets / 4 {
            return Err("text_encoder relative attention: needs at least 4 buckets and a max distance past a quarter of them".into());
        }
        if d.hidden_size % d.num_attention_heads != 0 {
            return Err(format!("decoder.hidden_size {} is not a multiple of num_attention_heads {}", d.hidden_size, d.num_attention_heads));
        }
        if d.hidden_size % 2 != 0 {
            return Err(format!("decoder.hidden_size {} must be even (sinusoidal positions)", d.hidden_size));
        }
        if d.activation_function != "gelu" {
            return Err(format!("decoder.activation_function \"{}\": only \"gelu\" is implemented", d.activation_function));
        }
        if !(d.audio_channels == 1 || d.audio_channels == 2) || d.num_codebooks % d.audio_channels != 0 {
            return Err(format!("decoder.audio_channels {} with {} codebooks: mono, or stereo with an even number of codebooks (left and right interleaved)", d.audio_channels, d.num_codebooks));
        }
        if self.audio_encoder.audio_channels != 1 || self.audio_encoder.chunk_length_s.is_some() || self.audio_encoder.normalize {
            return Err("audio_encoder: MusicGen's codec is a mono, unchunked EnCodec (stereo decodes each channel's codebooks with it)".into());
        }
        if self.is_melody() {
            let (c, l) = (self.num_chroma.unwrap_or(12), self.chroma_length.unwrap_or(235));
            if !(1..=128).contains(&c) || !(1..=100_000).contains(&l) {
                return Err(format!("num_chroma {c} / chroma_length {l}: out of range"));
            }
        }
        if d.vocab_size != self.audio_encoder.codebook_size {
            return Err(format!("decoder.vocab_size {} differs from audio_encoder.codebook_size {}", d.vocab_size, self.audio_encoder.codebook_size));
        }
        self.audio_encoder.validate().map_err(|e| format!("audio_encoder: {e}"))
    }
}

impl MusicgenConfig {
    /// `facebook/musicgen-small` (decoder 1024 wide, 24 layers) or `facebook/musicgen-medium`
    /// (1536, 48 layers), with t5-base and EnCodec 32 kHz, as their `config.json` files give.
    pub fn preset(name: &str) -> crate::error::Result<Self> {
        let (hidden, layers, heads) = match name {
            "small" => (1024, 24, 16),
            "medium" => (1536, 48, 24),
            other => return Err(crate::error::Error::InvalidArgument(format!("unknown MusicGen size '{other}' (small, medium)"))),
        };
        Ok(Self {
            text_encoder: T5Config {
                vocab_size: 32128,
                d_model: 768,
                d_kv: 64,
                d_ff: 3072,
                num_layers: 12,
                num_heads: 12,
                relative_attention_num_buckets: 32,
                relative_attention_max_distance: 128,
                layer_norm_epsilon: 1e-6,
                feed_forward_proj: "relu".into(),
            },
            decoder: DecoderConfig {
                vocab_size: 2048,
                max_position_embeddings: 2048,
                num_hidden_layers: layers,
                ffn_dim: 4 * hidden,
                num_attention_heads: heads,
                hidden_size: hidden,
                num_codebooks: 4,
                audio_channels: 1,
                pad_token_id: 2048,
                scale_embedding: false,
                activation_function: "gelu".into(),
            },
            audio_encoder: EncodecConfig::encodec_32khz(),
            num_chroma: None,
            chroma_length: None,
            model_type: None,
        })
    }
}
