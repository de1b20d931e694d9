//! PyTorch peers run beside ours in one bench run (`--peers`): one `scripts/peers/serve.py`
//! process per model, holding the peer's model, asked for one timed call at a time so that its
//! runs alternate with ours round by round (see `scripts/peers/peerlib.py`, serve mode).
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// The peer script and its arguments for each model's workloads: the sizes ours runs.
pub fn script_for(model: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match model {
        "htdemucs" => ("htdemucs_torch.py", &[]),
        "encodec" => ("encodec_torch.py", &[]),
        "clap" => ("clap_torch.py", &["--batches", "1,8"]),
        "whisper" => ("whisper_torch.py", &["--tokens", "224"]),
        "musicgen" => ("musicgen_torch.py", &["--size", "small", "--steps", "50", "--decode-only"]),
        _ => return None,
    })
}

/// Where the peers' Python is: `--peers-python`, else `HARNESS_PEERS_PYTHON`, else the
/// environment `scripts/setup-peers.sh` makes in the repository.
pub fn python(explicit: Option<&Path>, repo: &Path) -> PathBuf {
    explicit.map(Path::to_path_buf).or_else(|| std::env::var_os("HARNESS_PEERS_PYTHON").map(PathBuf::from)).unwrap_or_else(|| repo.join(".peers-venv/bin/python"))
}

/// Threads the peer gets: ours are OpenBLAS' count where set, else the cores this process may
/// run on (a `taskset` mask included); the peer gets the same.
pub fn threads() -> usize {
    std::env::var("OPENBLAS_NUM_THREADS").ok().and_then(|v| v.trim().parse().ok()).filter(|&n| n > 0).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeerMeta {
    pub peer: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub precision: Option<String>,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    workloads: Option<BTreeMap<String, PeerMeta>>,
    #[serde(default)]
    seconds: Option<f64>,
    #[serde(default)]
    error: Option<String>,
}

/// One running peer server.
pub struct PeerServer {
    pub model: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub workloads: BTreeMap<String, PeerMeta>,
    pub threads: usize,
}

impl PeerServer {
    /// Start the server for `model` with `python` on `threads` threads, and list its workloads.
    pub fn start(python: &Path, scripts: &Path, model: &str, device: &str, threads: usize) -> Result<Self> {
        let (script, args) = script_for(model).ok_or_else(|| anyhow!("no peer script for {model}"))?;
        let mut child = Command::new(python)
            .arg(scripts.join("serve.py"))
            .arg(script)
            .args(args)
            .args(["--threads", &threads.to_string(), "--device", if device == "gpu" { "cuda" } else { "cpu" }])
            .current_dir(scripts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start the peer ({} {script}): run scripts/setup-peers.sh, or name the Python with --peers-python", python.display()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("peer stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("peer stdout"))?);
        let mut s = Self { model: model.to_string(), child, stdin, stdout, workloads: BTreeMap::new(), threads };
        let r = s.request(&serde_json::json!({"cmd": "list"}))?;
        s.workloads = r.workloads.ok_or_else(|| anyhow!("peer {script}: no workload list in its reply"))?;
        Ok(s)
    }

    fn request(&mut self, req: &serde_json::Value) -> Result<Reply> {
        writeln!(self.stdin, "{req}").and_then(|()| self.stdin.flush()).with_context(|| format!("the {} peer is gone", self.model))?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line).with_context(|| format!("reading the {} peer's reply", self.model))? == 0 {
            bail!("the {} peer exited (its messages are above)", self.model);
        }
        let r: Reply = serde_json::from_str(line.trim()).with_context(|| format!("the {} peer's reply is not JSON: {}", self.model, line.trim()))?;
        if let Some(e) = r.error {
            bail!("the {} peer: {e}", self.model);
        }
        Ok(r)
    }

    /// One timed call of `workload`, in seconds as the peer measured it (synchronised).
    pub fn run(&mut self, workload: &str) -> Result<f64> {
        let r = self.request(&serde_json::json!({"cmd": "run", "workload": workload}))?;
        match r.seconds {
            Some(s) if s.is_finite() && s > 0.0 => Ok(s),
            other => bail!("the {} peer timed {workload} as {other:?}", self.model),
        }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        // Closing stdin ends the serve loop; kill in case it is stuck in a call.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
