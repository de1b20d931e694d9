//! The one progress-bar style of the harness's long runs (benchmarks, transcription).
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar on stderr for `total` steps of `unit`, hidden when `quiet`.
pub fn bar(total: u64, unit: &str, quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden()) } else { ProgressBar::new(total) };
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}
