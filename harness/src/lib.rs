//! The harness as a library: the CLI in `main.rs` is a thin layer over these modules (and the
//! fuzz targets in `fuzz/` reach the parsers through it).
pub mod ab;
pub mod accuracy;
pub mod audio;
pub mod bench;
pub mod codec;
pub mod doctor;
pub mod embed_cmd;
pub mod eval;
mod fuzz_parsers;
pub mod history;
pub mod hub_args;
pub mod merge;
pub mod meta;
pub mod musicgen_cmd;
pub mod outputs;
pub mod parity;
pub mod peers;
pub mod progress;
pub mod quant_args;
pub mod report;
pub mod separate_cmd;
pub mod stats;
pub mod targets;
pub mod vad_cmd;
pub mod variant_args;
pub mod whisper_cmd;
