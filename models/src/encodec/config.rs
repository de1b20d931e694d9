//! EnCodec's configuration: the HF `config.json` of `facebook/encodec_24khz` and
//! `facebook/encodec_32khz`, with HF's defaults and checks, plus the geometry derived from it.
use serde::Deserialize;

pub use crate::config::ModelConfig;
use crate::error::{Error, Result};

fn d_bandwidths() -> Vec<f64> {
    vec![1.5, 3.0, 6.0, 12.0, 24.0]
}
fn d_sr() -> u32 {
    24_000
}
fn one() -> i32 {
    1
}
fn two() -> i32 {
    2
}
fn d_hidden() -> i32 {
    128
}
fn d_filters() -> i32 {
    32
}
fn d_ratios() -> Vec<i32> {
    vec![8, 5, 4, 2]
}
fn d_norm() -> String {
    "weight_norm".into()
}
fn seven() -> i32 {
    7
}
fn three() -> i32 {
    3
}
fn yes() -> bool {
    true
}
fn d_pad() -> String {
    "reflect".into()
}
fn d_trim() -> f64 {
    1.0
}
fn d_codebook() -> i32 {
    1024
}

/// Fields and defaults as in `transformers.EncodecConfig`; unknown fields are ignored, as HF does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EncodecConfig {
    #[serde(default = "d_bandwidths")]
    pub target_bandwidths: Vec<f64>,
    #[serde(default = "d_sr")]
    pub sampling_rate: u32,
    #[serde(default = "one")]
    pub audio_channels: i32,
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub chunk_length_s: Option<f64>,
    #[serde(default)]
    pub overlap: Option<f64>,
    #[serde(default = "d_hidden")]
    pub hidden_size: i32,
    #[serde(default = "d_filters")]
    pub num_filters: i32,
    #[serde(default = "one")]
    pub num_residual_layers: i32,
    #[serde(default = "d_ratios")]
    pub upsampling_ratios: Vec<i32>,
    #[serde(default = "d_norm")]
    pub norm_type: String,
    #[serde(default = "seven")]
    pub kernel_size: i32,
    #[serde(default = "seven")]
    pub last_kernel_size: i32,
    #[serde(default = "three")]
    pub residual_kernel_size: i32,
    #[serde(default = "two")]
    pub dilation_growth_rate: i32,
    #[serde(default = "yes")]
    pub use_causal_conv: bool,
    #[serde(default = "d_pad")]
    pub pad_mode: String,
    #[serde(default = "two")]
    pub compress: i32,
    #[serde(default = "two")]
    pub num_lstm_layers: i32,
    #[serde(default = "d_trim")]
    pub trim_right_ratio: f64,
    #[serde(default = "d_codebook")]
    pub codebook_size: i32,
    #[serde(default)]
    pub codebook_dim: Option<i32>,
    #[serde(default = "yes")]
    pub use_conv_shortcut: bool,
}

pub use crate::nn::ops::PadMode;

impl EncodecConfig {
    /// The configuration of `facebook/encodec_24khz`.
    pub fn encodec_24khz() -> Self {
        serde_json::from_str("{}").expect("HF defaults are the 24 kHz model")
    }

    /// The configuration of `facebook/encodec_32khz` (MusicGen's codec).
    pub fn encodec_32khz() -> Self {
        Self {
            sampling_rate: 32_000,
            target_bandwidths: vec![2.2],
            num_filters: 64,
            upsampling_ratios: vec![8, 5, 4, 4],
            codebook_size: 2048,
            use_causal_conv: false,
            use_conv_shortcut: false,
            ..Self::encodec_24khz()
        }
    }

    /// The configuration of `facebook/encodec_48khz`: stereo, GroupNorm after every
    /// convolution, each 1 s chunk (1% overlap) normalised by its RMS.
    pub fn encodec_48khz() -> Self {
        Self {
            sampling_rate: 48_000,
            audio_channels: 2,
            target_bandwidths: vec![3.0, 6.0, 12.0, 24.0],
            normalize: true,
            chunk_length_s: Some(1.0),
            overlap: Some(0.01),
            norm_type: "time_group_norm".into(),
            use_causal_conv: false,
            ..Self::encodec_24khz()
        }
    }

    /// Everything this implementation relies on, with a message that names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::config::check_bounds(&[
            ("sampling_rate", i64::from(self.sampling_rate), 768_000),
            ("audio_channels", i64::from(self.audio_channels), 2),
            ("hidden_size", i64::from(self.hidden_size), 1 << 14),
            ("num_filters", i64::from(self.num_filters), 1 << 14),
            ("num_residual_layers", i64::from(self.num_residual_layers), 16),
            ("kernel_size", i64::from(self.kernel_size), 64),
            ("last_kernel_size", i64::from(self.last_kernel_size), 64),
            ("residual_kernel_size", i64::from(self.residual_kernel_size), 64),
            ("dilation_growth_rate", i64::from(self.dilation_growth_rate), 16),
            ("compress", i64::from(self.compress), 64),
            ("num_lstm_layers", i64::from(self.num_lstm_layers), 16),
            ("codebook_size", i64::from(self.codebook_size), 1 << 16),
            ("upsampling_ratios (count)", self.upsampling_ratios.len() as i64, 8),
            ("target_bandwidths (count)", self.target_bandwidths.len() as i64, 32),
        ])?;
        for (i, &r) in self.upsampling_ratios.iter().enumerate() {
            crate::config::check_bounds(&[(&format!("upsampling_ratios[{i}]"), i64::from(r), 64)])?;
        }
        // Their product is the hop; bounded as a whole, so it cannot overflow or reach zero.
        let hop: i64 = self.upsampling_ratios.iter().map(|&r| i64::from(r)).product();
        crate::config::check_bounds(&[("the product of upsampling_ratios (the hop)", hop, 1 << 16)])?;
        if let Some(b) = self.target_bandwidths.iter().find(|b| !(b.is_finite() && **b > 0.0 && **b <= 1000.0)) {
            return Err(format!("target_bandwidths: {b} kbps is not a bandwidth (0 to 1000)"));
        }
        let pos = |name: &str, v: i32| if v >= 1 { Ok(()) } else { Err(format!("{name} must be at least 1, got {v}")) };
        pos("audio_channels", self.audio_channels)?;
        pos("hidden_size", self.hidden_size)?;
        pos("num_filters", self.num_filters)?;
        pos("num_residual_layers", self.num_residual_layers)?;
        pos("kernel_size", self.kernel_size)?;
        pos("last_kernel_size", self.last_kernel_size)?;
        pos("residual_kernel_size", self.residual_kernel_size)?;
        pos("dilation_growth_rate", self.dilation_growth_rate)?;
        pos("compress", self.compress)?;
        pos("num_lstm_layers", self.num_lstm_layers)?;
        pos("codebook_dim", self.codebook_dim())?;
        if self.audio_channels > 2 {
            return Err(format!("audio_channels must be 1 or 2, got {}", self.audio_channels));
        }
        if self.upsampling_ratios.is_empty() || self.upsampling_ratios.iter().any(|&r| r < 1) {
            return Err(format!("upsampling_ratios must be a non-empty list of positive integers, got {:?}", self.upsampling_ratios));
        }
        if self.codebook_size < 2 || (self.codebook_size & (self.codebook_size - 1)) != 0 {
            return Err(format!("codebook_size must be a power of 2, got {}", self.codebook_size));
        }
        if self.codebook_dim() != self.hidden_size {
            return Err(format!("codebook_dim {} differs from hidden_size {}: EnCodec quantizes the encoder output directly", self.codebook_dim(), self.hidden_size));
        }
        if self.num_filters * (1 << self.upsampling_ratios.len()) % self.compress != 0 || self.num_filters % self.compress != 0 {
            return Err(format!("num_filters {} is not divisible by compress {}", self.num_filters, self.compress));
        }
        if self.target_bandwidths.is_empty() || self.target_bandwidths.iter().any(|b| !(b.is_finite() && *b > 0.0)) {
            return Err(format!("target_bandwidths must be positive numbers, got {:?}", self.target_bandwidths));
        }
        if self.norm_type != "weight_norm" && self.norm_type != "time_group_norm" {
            return Err(format!("norm_type '{}' is not supported (weight_norm or time_group_norm, as HF)", self.norm_type));
        }
        if let Some(c) = self.chunk_length_s {
            if !(c.is_finite() && c > 0.0 && c <= 3600.0) || self.chunk_length().is_none_or(|n| n < 1) {
                return Err(format!("chunk_length_s {c}: must be positive, at most an hour, and at least one sample"));
            }
            if self.overlap.is_some_and(|o| !(0.0..1.0).contains(&o)) {
                return Err(format!("overlap {:?}: must lie in [0, 1)", self.overlap));
            }
        }
        if !self.use_causal_conv && self.trim_right_ratio != 1.0 {
            return Err("trim_right_ratio != 1.0 only makes sense for causal convolutions".into());
        }
        if !(0.0..=1.0).contains(&self.trim_right_ratio) {
            return Err(format!("trim_right_ratio must lie in [0, 1], got {}", self.trim_right_ratio));
        }
        self.pad()?;
        if self.num_quantizers() < 1 {
            return Err(format!("target_bandwidths {:?} allow no quantizer at {} bits per codebook and {} frames/s", self.target_bandwidths, self.codebook_bits(), self.frame_rate()));
        }
        Ok(())
    }

    pub fn pad(&self) -> std::result::Result<PadMode, String> {
        match self.pad_mode.as_str() {
            "reflect" => Ok(PadMode::Reflect),
            "constant" => Ok(PadMode::Constant),
            "replicate" => Ok(PadMode::Replicate),
            m => Err(format!("pad_mode '{m}' is not supported (reflect, constant or replicate)")),
        }
    }

    /// Samples per encoded chunk (`chunk_length_s` at the rate; HF's `chunk_length`), when the
    /// model encodes in chunks (encodec_48khz).
    pub fn chunk_length(&self) -> Option<i32> {
        self.chunk_length_s.map(|c| (c * f64::from(self.sampling_rate)).clamp(0.0, f64::from(i32::MAX)) as i32)
    }

    /// Samples between chunk starts (HF's `chunk_stride`): `(1 - overlap) * chunk_length`, at
    /// least 1; the whole chunk without an overlap.
    pub fn chunk_stride(&self) -> Option<i32> {
        let n = self.chunk_length()?;
        Some(self.overlap.map_or(n, |o| (((1.0 - o) * f64::from(n)) as i32).max(1)))
    }

    pub fn codebook_dim(&self) -> i32 {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Samples per code frame.
    pub fn hop_length(&self) -> i32 {
        self.upsampling_ratios.iter().product()
    }

    /// Code frames per second (rounded up, as HF does).
    pub fn frame_rate(&self) -> i32 {
        (self.sampling_rate as i32 + self.hop_length() - 1) / self.hop_length()
    }

    pub fn codebook_bits(&self) -> i32 {
        (self.codebook_size as f64).log2().ceil() as i32
    }

    /// Codebooks at the highest bandwidth.
    pub fn num_quantizers(&self) -> i32 {
        let top = self.target_bandwidths.iter().cloned().fold(f64::MIN, f64::max);
        ((1000.0 * top) / f64::from(self.frame_rate() * self.codebook_bits())).floor() as i32
    }

    /// Codebooks used at `bandwidth` kbps, which must be one of `target_bandwidths`;
    /// `None` means the smallest, as HF's `encode` defaults.
    pub fn quantizers_for_bandwidth(&self, bandwidth: Option<f64>) -> Result<i32> {
        let bw = bandwidth.unwrap_or(self.target_bandwidths[0]);
        if !self.target_bandwidths.iter().any(|b| (b - bw).abs() < 1e-9) {
            return Err(Error::InvalidArgument(format!("bandwidth {bw} kbps is not one this model supports: choose one of {:?}", self.target_bandwidths)));
        }
        let per_q = f64::from(self.codebook_bits()) * f64::from(self.frame_rate());
        Ok(((bw * 1000.0 / per_q).floor() as i32).max(1).min(self.num_quantizers()))
    }
}

impl ModelConfig for EncodecConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        EncodecConfig::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_configs_have_the_published_geometry() {
        let c24 = EncodecConfig::encodec_24khz();
        assert_eq!((c24.hop_length(), c24.frame_rate(), c24.num_quantizers()), (320, 75, 32));
        let q: Vec<i32> = c24.target_bandwidths.iter().map(|&b| c24.quantizers_for_bandwidth(Some(b)).unwrap()).collect();
        assert_eq!(q, [2, 4, 8, 16, 32]);
        let c32 = EncodecConfig::encodec_32khz();
        assert_eq!((c32.hop_length(), c32.frame_rate(), c32.num_quantizers()), (640, 50, 4));
        assert_eq!(c32.quantizers_for_bandwidth(None).unwrap(), 4);
        assert!(c24.validate().is_ok() && c32.validate().is_ok());
        let c48 = EncodecConfig::encodec_48khz();
        assert_eq!((c48.hop_length(), c48.frame_rate(), c48.num_quantizers(), c48.chunk_length(), c48.chunk_stride()), (320, 150, 16, Some(48_000), Some(47_520)));
        assert!(c48.validate().is_ok());
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, want) in [
            (r#"{"codebook_size": 1000}"#, "codebook_size must be a power of 2"),
            (r#"{"norm_type": "batch_norm"}"#, "norm_type 'batch_norm'"),
            (r#"{"pad_mode": "circular"}"#, "pad_mode 'circular'"),
            (r#"{"upsampling_ratios": []}"#, "upsampling_ratios"),
            (r#"{"hidden_size": 0}"#, "hidden_size must be at least 1"),
            (r#"{"chunk_length_s": -1.0, "normalize": true}"#, "chunk_length_s -1"),
            (r#"{"chunk_length_s": 1.0, "overlap": 1.0}"#, "overlap"),
            (r#"{"hidden_size": "big"}"#, "invalid type"),
            (r#"{"target_bandwidths": [0.01]}"#, "allow no quantizer"),
        ] {
            let err = EncodecConfig::from_json(json, "cfg.json").unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("cfg.json"), "{json}: {err}");
        }
        let err = EncodecConfig::encodec_24khz().quantizers_for_bandwidth(Some(5.0)).unwrap_err().to_string();
        assert!(err.contains("bandwidth 5 kbps") && err.contains("1.5"), "{err}");
    }
}
