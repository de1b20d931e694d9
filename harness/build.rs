use std::path::PathBuf;
use std::process::Command;

fn main() {
    mlx_link::emit();
    // The commit the binary is built from, for reports run where the repository's git state
    // differs (a copied working tree on a device machine).
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("..");
    for p in [".git/HEAD", ".git/index", ".git/refs/heads", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let out = Command::new("git").arg("-C").arg(&root).args(["rev-parse", "HEAD"]).output();
    if let Ok(o) = out {
        if o.status.success() {
            println!("cargo:rustc-env=HARNESS_BUILD_COMMIT={}", String::from_utf8_lossy(&o.stdout).trim());
        }
    }
}
