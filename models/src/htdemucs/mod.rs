//! HTDemucs (demucs 4.1.0 `demucs.htdemucs.HTDemucs`): so far its STFT front end and inverse.
pub mod spec;
