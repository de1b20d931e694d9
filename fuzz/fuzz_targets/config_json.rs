#![no_main]
//! Any bytes as a model's `config.json` (every model's parser and its checks): an error or a
//! valid config, never a panic; and a config that passes its checks gives the derived sizes
//! the models compute from it without overflow or division by zero.
use libfuzzer_sys::fuzz_target;
use models::config::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = models::whisper::config::WhisperConfig::from_json(text, "config.json");
    let _ = models::musicgen::config::MusicgenConfig::from_json(text, "config.json");
    let _ = models::encodec::EncodecConfig::from_json(text, "config.json");
    if let Ok(c) = models::htdemucs::HtDemucsConfig::from_json(text, "config.json") {
        let _ = (c.training_length(), c.transformer_channels(), c.layer_channels(c.depth - 1), c.freqs_at(1));
    }
    if let Ok(c) = models::clap::ClapConfig::from_json(text, "config.json") {
        let _ = c.resolutions();
    }
    if let Ok(c) = models::clap::FeatureConfig::from_json(text, "preprocessor_config.json") {
        let _ = c.max_samples();
    }
});
