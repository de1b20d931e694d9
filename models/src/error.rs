//! The one error type of the `models` crate.

/// Errors from loading, configuring and running the models.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An MLX operation failed; the message is MLX's own.
    #[error("MLX: {0}")]
    Mlx(String),
    /// A weights file that is unreadable, corrupt, or does not match the model.
    #[error("{path}: {reason}")]
    Weights { path: String, reason: String },
    /// A model configuration that is unreadable or describes something unsupported.
    #[error("config {path}: {reason}")]
    Config { path: String, reason: String },
    /// A file could not be had from the Hugging Face hub or its local cache.
    #[error("hub {repo}@{revision}: {reason}")]
    Hub { repo: String, revision: String, reason: String },
    /// A caller passed something unusable; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
}

impl From<mlx_rs::error::Exception> for Error {
    fn from(e: mlx_rs::error::Exception) -> Self {
        Error::Mlx(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
