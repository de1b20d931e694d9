//! Building blocks shared by the five networks.
pub mod attention;
pub mod cache;
pub mod conv;
pub mod decoder;
pub mod fixed_step;
pub mod host;
pub mod host_attention;
mod host_blas;
pub mod host_conv;
pub mod host_quant;
pub mod kv_cache;
pub mod linear;
pub mod lstm;
pub mod lstm_cuda;
pub mod norm;
pub mod ops;
pub mod profile;
pub mod quant;
