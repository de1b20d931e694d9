//! HTDemucs' configuration: demucs' own `HTDemucs.__init__` arguments, as JSON. Missing
//! fields take demucs' defaults; the released `htdemucs` model's values are [`HtDemucsConfig::htdemucs`].
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HtDemucsConfig {
    pub sources: Vec<String>,
    pub audio_channels: i32,
    pub channels: i32,
    pub channels_time: Option<i32>,
    pub growth: f64,
    pub nfft: i32,
    pub wiener_iters: i32,
    pub end_iters: i32,
    pub cac: bool,
    pub depth: i32,
    pub rewrite: bool,
    pub multi_freqs: Option<Vec<f64>>,
    pub freq_emb: f64,
    pub emb_scale: f64,
    pub kernel_size: i32,
    pub time_stride: i32,
    pub stride: i32,
    pub context: i32,
    pub context_enc: i32,
    pub norm_starts: i32,
    pub norm_groups: i32,
    pub dconv_mode: i32,
    pub dconv_depth: i32,
    pub dconv_comp: f64,
    pub bottom_channels: i32,
    pub t_layers: i32,
    pub t_emb: String,
    pub t_hidden_scale: f64,
    pub t_heads: i32,
    pub t_norm_in: bool,
    pub t_norm_in_group: bool,
    pub t_group_norm: bool,
    pub t_norm_first: bool,
    pub t_norm_out: bool,
    pub t_max_period: f64,
    pub t_layer_scale: bool,
    pub t_gelu: bool,
    pub t_weight_pos_embed: f64,
    pub t_sin_random_shift: i32,
    pub t_sparse_self_attn: bool,
    pub t_sparse_cross_attn: bool,
    pub t_cross_first: bool,
    pub samplerate: i32,
    pub segment: f64,
    pub use_train_segment: bool,
    /// The segment as demucs' checkpoints give it, an exact `Fraction` (numerator,
    /// denominator), when it came from one: `int(segment * samplerate)` is then exact (343980
    /// samples for 39/5 s at 44.1 kHz, where the float 7.8 gives 343979).
    #[serde(skip)]
    pub segment_fraction: Option<(i64, i64)>,
}

impl Default for HtDemucsConfig {
    /// demucs' defaults (which are not the released model's; see [`Self::htdemucs`]).
    fn default() -> Self {
        Self {
            sources: ["drums", "bass", "other", "vocals"].map(String::from).to_vec(),
            audio_channels: 2,
            channels: 48,
            channels_time: None,
            growth: 2.0,
            nfft: 4096,
            wiener_iters: 0,
            end_iters: 0,
            cac: true,
            depth: 4,
            rewrite: true,
            multi_freqs: None,
            freq_emb: 0.2,
            emb_scale: 10.0,
            kernel_size: 8,
            time_stride: 2,
            stride: 4,
            context: 1,
            context_enc: 0,
            norm_starts: 4,
            norm_groups: 4,
            dconv_mode: 1,
            dconv_depth: 2,
            dconv_comp: 8.0,
            bottom_channels: 0,
            t_layers: 5,
            t_emb: "sin".into(),
            t_hidden_scale: 4.0,
            t_heads: 8,
            t_norm_in: true,
            t_norm_in_group: false,
            t_group_norm: false,
            t_norm_first: true,
            t_norm_out: true,
            t_max_period: 10000.0,
            t_layer_scale: true,
            t_gelu: true,
            t_weight_pos_embed: 1.0,
            t_sin_random_shift: 0,
            t_sparse_self_attn: false,
            t_sparse_cross_attn: false,
            t_cross_first: false,
            samplerate: 44100,
            segment: 10.0,
            use_train_segment: true,
            segment_fraction: None,
        }
    }
}

impl HtDemucsConfig {
    /// The released `htdemucs` (demucs 4): DConv in encoder and decoder, a 512-wide
    /// bottleneck around the 5-layer cross-domain transformer, 7.8 s segments.
    pub fn htdemucs() -> Self {
        Self { dconv_mode: 3, bottom_channels: 512, segment: 7.8, ..Self::default() }
    }

    /// Samples in the training segment, the length the model runs on.
    pub fn training_length(&self) -> i32 {
        match self.segment_fraction {
            Some((n, d)) if d > 0 => (i128::from(self.samplerate) * i128::from(n) / i128::from(d)).clamp(0, i128::from(i32::MAX)) as i32,
            _ => (self.segment * f64::from(self.samplerate)) as i32,
        }
    }

    /// Output channels of encoder layer `i` (frequency and time branches alike).
    pub fn layer_channels(&self, i: i32) -> i32 {
        let mut c = self.channels;
        for _ in 0..i {
            c = (self.growth * f64::from(c)) as i32;
        }
        c
    }

    /// Channels the transformer works at (the bottleneck width when there is one).
    pub fn transformer_channels(&self) -> i32 {
        if self.bottom_channels > 0 {
            self.bottom_channels
        } else {
            self.layer_channels(self.depth - 1)
        }
    }

    /// Hidden width of a DConv branch on `channels` channels.
    pub fn dconv_hidden(&self, channels: i32) -> i32 {
        (f64::from(channels) / self.dconv_comp) as i32
    }

    /// Frequency bins entering encoder layer `i`.
    pub fn freqs_at(&self, i: i32) -> i32 {
        (self.nfft / 2) / self.stride.pow(i as u32)
    }
}

impl ModelConfig for HtDemucsConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let unsupported = |what: &str| Err(format!("{what} is not supported (the released HTDemucs models do not use it)"));
        // Bounds far above any real model, so that a corrupt config is refused rather than
        // building millions of layers.
        for (name, v, max) in [
            ("sources", self.sources.len() as i64, 64),
            ("audio_channels", i64::from(self.audio_channels), 64),
            ("channels", i64::from(self.channels), 1 << 14),
            ("depth", i64::from(self.depth), 12),
            ("nfft", i64::from(self.nfft), 1 << 16),
            ("dconv_depth", i64::from(self.dconv_depth), 16),
            ("bottom_channels", i64::from(self.bottom_channels), 1 << 14),
            ("t_layers", i64::from(self.t_layers), 64),
            ("t_heads", i64::from(self.t_heads), 256),
            ("kernel_size", i64::from(self.kernel_size), 64),
            ("stride", i64::from(self.stride), 64),
            ("context", i64::from(self.context), 16),
            ("context_enc", i64::from(self.context_enc), 16),
        ] {
            if v > max {
                return Err(format!("{name} {v}: larger than any HTDemucs (at most {max})"));
            }
        }
        let in_range = (1.0..=8.0).contains(&self.growth) && self.t_hidden_scale > 0.0 && self.t_hidden_scale <= 64.0 && (1.0..=1024.0).contains(&self.dconv_comp);
        if !in_range {
            return Err(format!("growth {} / t_hidden_scale {} / dconv_comp {}: out of range", self.growth, self.t_hidden_scale, self.dconv_comp));
        }
        if self.segment > 3600.0 || self.samplerate > 1_000_000 || f64::from(self.layer_channels(self.depth - 1).max(0)) > 65536.0 {
            return Err(format!("segment {} s / samplerate {} / widest layer {}: out of range", self.segment, self.samplerate, self.layer_channels(self.depth.clamp(1, 12) - 1)));
        }
        if self.sources.is_empty() {
            return Err("sources: at least one source is needed".into());
        }
        // Each becomes `<name>.wav` in `separate`'s output folder.
        crate::config::check_file_stems("sources:", &self.sources)?;
        if self.audio_channels < 1 || self.samplerate < 1 || self.segment <= 0.0 || !self.segment.is_finite() {
            return Err(format!("audio_channels {}, samplerate {}, segment {}: must be positive", self.audio_channels, self.samplerate, self.segment));
        }
        if !self.cac {
            return unsupported("cac = false (masking with Wiener filtering)");
        }
        if self.wiener_iters != 0 || self.end_iters != 0 {
            return unsupported("wiener_iters / end_iters other than 0");
        }
        if self.multi_freqs.as_ref().is_some_and(|m| !m.is_empty()) {
            return unsupported("multi_freqs");
        }
        if self.channels_time.is_some_and(|c| c != self.channels) {
            return unsupported("channels_time different from channels");
        }
        if self.nfft < 16 || self.nfft % 4 != 0 || !(self.nfft as u32).is_power_of_two() {
            return Err(format!("nfft {}: must be a power of two, at least 16", self.nfft));
        }
        if self.depth < 1 || self.stride < 2 || self.kernel_size < 4 || self.kernel_size % 4 != 0 {
            return Err(format!("depth {}, stride {}, kernel_size {}: need depth >= 1, stride >= 2, kernel_size a multiple of 4", self.depth, self.stride, self.kernel_size));
        }
        for i in 0..self.depth {
            let f = self.freqs_at(i);
            if f <= self.kernel_size || f % self.stride != 0 {
                return unsupported(&format!("a frequency axis that collapses before the transformer ({f} bins at layer {i} with kernel {}; merging the branches)", self.kernel_size));
            }
        }
        if self.norm_starts < self.depth {
            return unsupported(&format!("GroupNorm in the encoder/decoder layers (norm_starts {} < depth {})", self.norm_starts, self.depth));
        }
        if !(0..=3).contains(&self.dconv_mode) || self.dconv_depth < 1 {
            return Err(format!("dconv_mode {} / dconv_depth {}: mode must be 0..3, depth at least 1", self.dconv_mode, self.dconv_depth));
        }
        if self.dconv_mode != 0 && self.dconv_hidden(self.channels) < 1 {
            return Err(format!("dconv_comp {} leaves no hidden channels at {} channels", self.dconv_comp, self.channels));
        }
        if self.context < 0 || self.context_enc < 0 {
            return Err("context and context_enc must not be negative".into());
        }
        if self.t_layers < 1 {
            return unsupported("t_layers = 0 (no transformer)");
        }
        if self.t_emb != "sin" || self.t_sin_random_shift != 0 {
            return unsupported(&format!("t_emb {:?} / t_sin_random_shift {} (only \"sin\" without shift)", self.t_emb, self.t_sin_random_shift));
        }
        if !self.t_norm_in || self.t_norm_in_group || self.t_group_norm || !self.t_norm_first {
            return unsupported("a transformer without t_norm_in, t_norm_first, or with group norms");
        }
        if self.t_sparse_self_attn || self.t_sparse_cross_attn {
            return unsupported("sparse attention");
        }
        let tc = self.transformer_channels();
        if self.t_heads < 1 || tc % self.t_heads != 0 || tc % 4 != 0 {
            return Err(format!("transformer width {tc} must split into t_heads {} and be a multiple of 4", self.t_heads));
        }
        Ok(())
    }
}
