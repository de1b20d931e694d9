#![no_main]
//! Any bytes as a safetensors file: the header check must return Ok or an error, never panic.
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = models::weights::parse_header(Path::new("fuzz.safetensors"), data, data.len() as u64);
});
