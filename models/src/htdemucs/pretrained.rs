//! demucs' released models without Python: its `.th` checkpoints (`torch.save` of
//! `serialize_model`'s package: `klass`, `args`, `kwargs`, `state`, `training_args`), its bags
//! of models (`.yaml`: `models`, optional per-source `weights` and `segment`), and its names
//! (`htdemucs`, `htdemucs_ft`, `htdemucs_6s`), fetched from demucs' release location into
//! torch hub's checkpoint cache and checked against the checksum in their file names, as
//! demucs does.
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;
use sha2::{Digest, Sha256};

use super::{Chunking, HtDemucs, HtDemucsConfig};
use crate::checkpoint::Checkpointed;
use crate::error::{Error, Result};
use crate::torch_file::{self, TorchFile, Value};
use crate::Variant;

/// The class of the models this crate implements.
const HTDEMUCS: &str = "demucs.htdemucs.HTDemucs";
/// demucs' other architectures: named in a clear refusal rather than as unknown classes.
const OTHER_DEMUCS: [&str; 3] = ["demucs.hdemucs.HDemucs", "demucs.demucs.Demucs", "demucs.wdemucs.WDemucs"];

/// demucs' release location (`demucs/pretrained.py`'s `ROOT_URL`).
pub const ROOT_URL: &str = "https://dl.fbaipublicfiles.com/demucs/";

/// What demucs lists of its HTDemucs releases: `remote/files.txt` (folder, file) and the bags.
pub struct Remote {
    pub root_url: String,
    /// Signature to its path under the root (`hybrid_transformer/955717e8-8726e21a.th`).
    pub files: Vec<(String, String)>,
    pub bags: Vec<(String, BagSpec)>,
}

/// A bag as its `.yaml` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct BagSpec {
    pub models: Vec<String>,
    pub weights: Option<Vec<Vec<f64>>>,
    pub segment: Option<f64>,
}

impl Remote {
    /// demucs 4.1.0's HTDemucs entries (`remote/files.txt`, `remote/htdemucs*.yaml`).
    pub fn released() -> Self {
        let file = |sig: &str, name: &str| (sig.to_string(), format!("hybrid_transformer/{name}"));
        let bag = |name: &str, models: &[&str], weights: Option<Vec<Vec<f64>>>| (name.to_string(), BagSpec { models: models.iter().map(|m| m.to_string()).collect(), weights, segment: None });
        let one_hot = (0..4).map(|i| (0..4).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
        Self {
            root_url: ROOT_URL.into(),
            files: vec![
                file("955717e8", "955717e8-8726e21a.th"),
                file("f7e0c4bc", "f7e0c4bc-ba3fe64a.th"),
                file("d12395a8", "d12395a8-e57c48e6.th"),
                file("92cfc3b6", "92cfc3b6-ef3bcb9c.th"),
                file("04573f0d", "04573f0d-f3cf25b2.th"),
                file("5c90dfd2", "5c90dfd2-34c22ccb.th"),
            ],
            bags: vec![bag("htdemucs", &["955717e8"], None), bag("htdemucs_ft", &["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"], Some(one_hot)), bag("htdemucs_6s", &["5c90dfd2"], None)],
        }
    }
}

/// Where downloaded checkpoints live, and whether downloading is allowed.
#[derive(Debug, Clone, Default)]
pub struct CacheOptions {
    /// Default: torch hub's checkpoint folder (`$TORCH_HOME/hub/checkpoints`, else
    /// `$XDG_CACHE_HOME/torch/hub/checkpoints`, else `~/.cache/torch/hub/checkpoints`), where
    /// demucs itself keeps them, so models demucs downloaded are used as they are.
    pub dir: Option<PathBuf>,
    pub offline: bool,
}

impl CacheOptions {
    pub fn folder(&self) -> Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let torch = var("TORCH_HOME").or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("torch"))).or_else(|| var("HOME").map(|h| h.join(".cache/torch")));
        torch.map(|t| t.join("hub/checkpoints")).ok_or_else(|| Error::InvalidArgument("no cache folder for demucs checkpoints (set TORCH_HOME)".into()))
    }
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum prefix a demucs file name carries (`SIG-CHECKSUM.th`), if any.
fn name_checksum(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    stem.rsplit_once('-').map(|(_, c)| c.to_string()).filter(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Read `path`, checking it against the checksum its name carries (as demucs' `check_checksum`).
fn read_checked(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Weights { path: path.display().to_string(), reason: format!("cannot read: {e}") })?;
    if let Some(want) = name_checksum(path) {
        let got = sha256_hex(&bytes);
        if !got.starts_with(&want.to_ascii_lowercase()) {
            return Err(Error::Weights {
                path: path.display().to_string(),
                reason: format!("checksum mismatch: its name says SHA-256 {want}..., the file's is {}... (corrupt or incomplete; delete it and fetch again)", &got[..want.len().min(64)]),
            });
        }
    }
    Ok(bytes)
}

/// An HTDemucs from the bytes of a demucs `.th` checkpoint; `name` names it in errors.
pub fn from_th_bytes(bytes: &[u8], name: &str) -> Result<HtDemucs> {
    let bad = |reason: String| Error::Weights { path: name.into(), reason };
    let mut classes = vec![HTDEMUCS];
    classes.extend(OTHER_DEMUCS);
    let file = TorchFile::read(bytes, &classes).map_err(bad)?;
    let field = |k: &str| file.root.get(k).ok_or_else(|| bad(format!("not a demucs package: no '{k}' (a state_dict alone? demucs' serialize_model writes klass, args, kwargs and state)")));
    match field("klass")? {
        Value::Class(c) if c == HTDEMUCS => {}
        Value::Class(c) => return Err(bad(format!("a {c}: only {HTDEMUCS} (htdemucs, htdemucs_ft, htdemucs_6s) is implemented"))),
        other => return Err(bad(format!("klass is a {other:?}, not a class"))),
    }
    if field("args")?.items().is_none_or(|a| !a.is_empty()) {
        return Err(bad("positional constructor arguments (demucs passes every argument by name)".into()));
    }
    let kwargs = field("kwargs")?;
    let json = torch_file::to_json(&kwargs).ok_or_else(|| bad("kwargs hold something other than plain values".into()))?;
    let mut config: HtDemucsConfig = serde_json::from_value(json).map_err(|e| Error::Config { path: name.into(), reason: format!("kwargs: {e}") })?;
    if let Some(Value::Fraction(n, d)) = kwargs.get("segment") {
        config.segment_fraction = Some((n, d));
    }
    let state = field("state")?;
    if state.get("__quantized").is_some() {
        return Err(bad("a diffq-quantized state (the _q models): not supported".into()));
    }
    let Value::Dict(entries) = state else {
        return Err(bad("state is not a dict".into()));
    };
    let mut tensors = HashMap::new();
    for (k, v) in entries.borrow().iter() {
        let (Value::Str(k), Value::Tensor(t)) = (k, v) else {
            return Err(bad(format!("state entry {k:?} is not a named tensor")));
        };
        let a: Array = file.tensor(t).map_err(|e| bad(format!("{k}: {e}")))?;
        tensors.insert(k.clone(), a);
    }
    HtDemucs::from_tensors(config, tensors, name)
}

/// An HTDemucs from a demucs `.th` file (checked against the checksum in its name, if any).
pub fn load_th(path: &Path) -> Result<HtDemucs> {
    from_th_bytes(&read_checked(path)?, &path.display().to_string())
}

/// Models run on the same track and averaged per source, as demucs' `BagOfModels` with
/// `apply_model`. A single model is a bag of one.
pub struct Bag {
    pub models: Vec<HtDemucs>,
    /// Per model, per source.
    pub weights: Vec<Vec<f32>>,
}

impl Bag {
    pub fn single(model: HtDemucs) -> Self {
        let w = vec![1.0; model.sources().len()];
        Self { models: vec![model], weights: vec![w] }
    }

    /// demucs' `BagOfModels(models, weights, segment)`: the models must agree on sources, rate
    /// and channels; `segment` lowers an HTDemucs' segment (never raises it).
    pub fn new(mut models: Vec<HtDemucs>, weights: Option<Vec<Vec<f64>>>, segment: Option<f64>, name: &str) -> Result<Self> {
        let bad = |reason: String| Error::Config { path: name.into(), reason };
        let first = models.first().ok_or_else(|| bad("a bag of no models".into()))?;
        let (sources, rate, channels) = (first.config.sources.clone(), first.config.samplerate, first.config.audio_channels);
        for (i, m) in models.iter().enumerate() {
            if m.config.sources != sources || m.config.samplerate != rate || m.config.audio_channels != channels {
                return Err(bad(format!(
                    "model {i} has sources {:?} at {} Hz, {} channels; model 0 {sources:?} at {rate} Hz, {channels}",
                    m.config.sources, m.config.samplerate, m.config.audio_channels
                )));
            }
        }
        if let Some(s) = segment {
            if !(s.is_finite() && s > 0.0) {
                return Err(bad(format!("segment {s}: must be positive")));
            }
            for m in &mut models {
                if s <= m.config.segment {
                    m.config.segment = s;
                    m.config.segment_fraction = None;
                }
            }
        }
        let weights: Vec<Vec<f32>> = match weights {
            None => vec![vec![1.0; sources.len()]; models.len()],
            Some(w) => {
                if w.len() != models.len() || w.iter().any(|r| r.len() != sources.len() || r.iter().any(|v| !v.is_finite())) {
                    return Err(bad(format!("weights: {} rows of finite numbers, one per model, each with one weight per source ({}) expected", models.len(), sources.len())));
                }
                w.iter().map(|r| r.iter().map(|&v| v as f32).collect()).collect()
            }
        };
        for (k, s) in sources.iter().enumerate() {
            if weights.iter().map(|r| r[k]).sum::<f32>() == 0.0 {
                return Err(bad(format!("weights: source {s} has a total weight of 0")));
            }
        }
        Ok(Self { models, weights })
    }

    pub fn config(&self) -> &HtDemucsConfig {
        &self.models[0].config
    }

    pub fn sources(&self) -> &[String] {
        self.models[0].sources()
    }

    /// [`HtDemucs::separate_track`] for the bag, as demucs' `Separator` with `apply_model`: the
    /// track normalised once, every model's sources weighted per source and divided by the
    /// total weight, the normalisation undone. `chunking` gives each model's chunking;
    /// `progress(done, total)` counts chunks over all models.
    pub fn separate_track(&self, channels: &[Vec<f32>], variant: Variant, chunking: impl Fn(&HtDemucs) -> Chunking, mut progress: impl FnMut(usize, usize)) -> Result<Array> {
        let n = self.models.len();
        // The models agree on channels (checked in `new`).
        let track = self.models[0].normalise_track(channels)?;
        let mut sum: Option<Array> = None;
        let mut totals = vec![0.0f32; self.sources().len()];
        for (i, (model, w)) in self.models.iter().zip(&self.weights).enumerate() {
            let out = model.separate(&track.mix, variant, chunking(model), |done, total| progress(i * total + done, n * total))?.index(0);
            let ws = Array::from_slice(w, &[w.len() as i32, 1, 1]);
            let weighted = out.multiply(&ws)?;
            sum = Some(match sum {
                None => weighted,
                Some(s) => s.add(&weighted)?,
            });
            for (t, v) in totals.iter_mut().zip(w) {
                *t += v;
            }
        }
        let sum = sum.ok_or_else(|| Error::InvalidArgument("a bag of no models".into()))?;
        track.restore(&sum.divide(Array::from_slice(&totals, &[totals.len() as i32, 1, 1]))?)
    }
}

/// demucs' bag `.yaml`: `models` (a list of signatures), optional `weights` (a list of lists)
/// and `segment` (a number), in the flow style demucs writes (`[1., 0.]`, trailing commas).
pub fn parse_bag_yaml(text: &str, name: &str) -> Result<BagSpec> {
    let bad = |reason: String| Error::Config { path: name.into(), reason };
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.split_once('#').map_or(line, |(a, _)| a);
        if line.trim().is_empty() {
            continue;
        }
        match (line.starts_with(char::is_whitespace) || line.starts_with(']'), fields.last_mut()) {
            (true, Some((_, v))) => {
                v.push(' ');
                v.push_str(line.trim());
            }
            (true, None) => return Err(bad(format!("an indented line before any key: {line:?}"))),
            (false, _) => {
                let (k, v) = line.split_once(':').ok_or_else(|| bad(format!("not a `key: value` line: {line:?}")))?;
                fields.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    let mut spec = BagSpec { models: Vec::new(), weights: None, segment: None };
    for (k, v) in fields {
        let value = flow(&v).map_err(|e| bad(format!("{k}: {e}")))?;
        match k.as_str() {
            "models" => {
                spec.models = value
                    .as_array()
                    .ok_or_else(|| bad("models: not a list".into()))?
                    .iter()
                    .map(|m| m.as_str().map(str::to_string).or_else(|| m.as_number().map(|n| n.to_string())))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad("models: not a list of signatures".into()))?
            }
            "weights" => spec.weights = Some(serde_json::from_value(value).map_err(|_| bad("weights: not a list of lists of numbers".into()))?),
            "segment" => spec.segment = Some(value.as_f64().ok_or_else(|| bad("segment: not a number".into()))?),
            other => return Err(bad(format!("unknown field {other:?} (a demucs bag has models, weights and segment)"))),
        }
    }
    if spec.models.is_empty() {
        return Err(bad("no models".into()));
    }
    Ok(spec)
}

/// A YAML flow value of lists, quoted or plain strings and numbers, as JSON.
fn flow(text: &str) -> std::result::Result<serde_json::Value, String> {
    fn value(s: &[char], i: &mut usize, depth: usize) -> std::result::Result<serde_json::Value, String> {
        while s.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
        match s.get(*i) {
            Some('[') if depth < 8 => {
                *i += 1;
                let mut items = Vec::new();
                loop {
                    while s.get(*i).is_some_and(|c| c.is_whitespace() || *c == ',') {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(']') => {
                            *i += 1;
                            return Ok(serde_json::Value::Array(items));
                        }
                        None => return Err("an unclosed [".into()),
                        _ => items.push(value(s, i, depth + 1)?),
                    }
                }
            }
            Some('[') => Err("lists nested too deep".into()),
            Some(q @ ('\'' | '"')) => {
                let q = *q;
                let start = *i + 1;
                let end = s[start..].iter().position(|&c| c == q).ok_or("an unclosed quote")? + start;
                *i = end + 1;
                Ok(serde_json::Value::String(s[start..end].iter().collect()))
            }
            Some(_) => {
                let start = *i;
                while s.get(*i).is_some_and(|c| !matches!(c, ',' | ']' | '[')) {
                    *i += 1;
                }
                let word: String = s[start..*i].iter().collect::<String>().trim().to_string();
                Ok(match word.parse::<f64>() {
                    Ok(f) if word.contains(['.', 'e', 'E']) => serde_json::json!(f),
                    _ => word.parse::<i64>().map_or(serde_json::Value::String(word), |n| serde_json::json!(n)),
                })
            }
            None => Err("a missing value".into()),
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let v = value(&chars, &mut i, 0)?;
    if chars[i..].iter().any(|c| !c.is_whitespace()) {
        return Err(format!("unexpected text after the value: {:?}", chars[i..].iter().collect::<String>()));
    }
    Ok(v)
}

/// A folder laid out as demucs' `--repo`: `SIG[-CHECKSUM].th` files and `NAME.yaml` bags.
pub struct LocalRepo {
    pub dir: PathBuf,
    files: Vec<(String, PathBuf)>,
}

impl LocalRepo {
    pub fn open(dir: &Path) -> Result<Self> {
        let read = std::fs::read_dir(dir).map_err(|e| Error::InvalidArgument(format!("--repo {}: {e}", dir.display())))?;
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for entry in read.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "th") {
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                let sig = stem.rsplit_once('-').map_or(stem, |(s, _)| s).to_string();
                if files.iter().any(|(s, _)| *s == sig) {
                    return Err(Error::InvalidArgument(format!("--repo {}: two checkpoints for signature {sig}", dir.display())));
                }
                files.push((sig, p));
            }
        }
        files.sort();
        Ok(Self { dir: dir.to_path_buf(), files })
    }

    /// A signature's checkpoint, or a bag's (`NAME.yaml`) models.
    pub fn load(&self, name: &str) -> Result<Bag> {
        if let Some((_, p)) = self.files.iter().find(|(s, _)| s == name) {
            return Ok(Bag::single(load_th(p)?));
        }
        let yaml = self.dir.join(format!("{name}.yaml"));
        if crate::config::check_file_stem("bag", name).is_err() || !yaml.is_file() {
            let sigs: Vec<&str> = self.files.iter().map(|(s, _)| s.as_str()).collect();
            return Err(Error::InvalidArgument(format!("{name} is neither a checkpoint signature nor a bag in {} (signatures: {sigs:?})", self.dir.display())));
        }
        let text = std::fs::read_to_string(&yaml).map_err(|e| Error::Config { path: yaml.display().to_string(), reason: e.to_string() })?;
        let spec = parse_bag_yaml(&text, &yaml.display().to_string())?;
        let mut models = Vec::new();
        for sig in &spec.models {
            let (_, p) =
                self.files.iter().find(|(s, _)| s == sig).ok_or_else(|| Error::Config { path: yaml.display().to_string(), reason: format!("model {sig} is not in {}", self.dir.display()) })?;
            models.push(load_th(p)?);
        }
        Bag::new(models, spec.weights, spec.segment, &yaml.display().to_string())
    }
}

impl Remote {
    /// The local path of signature `sig`'s checkpoint: from the cache, else downloaded into it
    /// (unless offline) and checked. `note` hears of each download before it starts.
    pub fn fetch(&self, sig: &str, cache: &CacheOptions, note: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        let (_, rel) = self.files.iter().find(|(s, _)| s == sig).ok_or_else(|| Error::InvalidArgument(format!("no released checkpoint has signature {sig}")))?;
        let file = rel.rsplit('/').next().unwrap_or(rel);
        let dir = cache.folder()?;
        let path = dir.join(file);
        let url = format!("{}{rel}", self.root_url);
        if path.is_file() {
            return Ok(path);
        }
        if cache.offline {
            return Err(Error::InvalidArgument(format!("{file} is not in the cache ({}) and downloads are off; fetch {url} into that folder", dir.display())));
        }
        note(&url);
        std::fs::create_dir_all(&dir).map_err(|e| Error::InvalidArgument(format!("cannot create the cache folder {}: {e}", dir.display())))?;
        let response = ureq::get(&url).call().map_err(|e| Error::InvalidArgument(format!("downloading {url}: {e}")))?;
        let mut bytes = Vec::new();
        response.into_reader().take(4 << 30).read_to_end(&mut bytes).map_err(|e| Error::InvalidArgument(format!("downloading {url}: {e}")))?;
        // Checked before it is named as the cached file, so the cache never holds a bad one.
        let part = dir.join(format!(".{file}.part"));
        std::fs::write(&part, &bytes).map_err(|e| Error::InvalidArgument(format!("writing {}: {e}", part.display())))?;
        if let Some(want) = name_checksum(&path) {
            if !sha256_hex(&bytes).starts_with(&want) {
                let _ = std::fs::remove_file(&part);
                return Err(Error::InvalidArgument(format!("{url}: the download's SHA-256 does not start with {want} (corrupt download)")));
            }
        }
        std::fs::rename(&part, &path).map_err(|e| Error::InvalidArgument(format!("moving the download to {}: {e}", path.display())))?;
        Ok(path)
    }

    /// A released name (`htdemucs`, `htdemucs_ft`, `htdemucs_6s`) or signature, as a bag.
    pub fn load(&self, name: &str, cache: &CacheOptions, note: &mut dyn FnMut(&str)) -> Result<Bag> {
        let spec = match self.bags.iter().find(|(n, _)| n == name) {
            Some((_, b)) => b.clone(),
            None if self.files.iter().any(|(s, _)| s == name) => BagSpec { models: vec![name.to_string()], weights: None, segment: None },
            None => {
                let names: Vec<&str> = self.bags.iter().map(|(n, _)| n.as_str()).collect();
                return Err(Error::InvalidArgument(format!(
                    "{name} is not a released HTDemucs model (known: {names:?}; demucs' older architectures, hdemucs_mmi and the mdx models, are not implemented)"
                )));
            }
        };
        let mut models = Vec::new();
        for sig in &spec.models {
            models.push(load_th(&self.fetch(sig, cache, note)?)?);
        }
        Bag::new(models, spec.weights, spec.segment, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torch_file::zip::{tests::stored_zip, Zip};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/htdemucs-th-s0/repo")
    }

    /// The bytes of the fixture's 6-source checkpoint.
    fn six() -> (PathBuf, Vec<u8>) {
        let p = repo().join("sixx0002-fa72d13a.th");
        let b = std::fs::read(&p).unwrap();
        (p, b)
    }

    /// `bytes` with its data.pkl edited by `edit`, re-archived (so its CRC is right).
    fn with_pickle(bytes: &[u8], edit: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
        let zip = Zip::new(bytes).unwrap();
        let mut files: Vec<(String, Vec<u8>)> = zip.names().map(|n| (n.to_string(), zip.read(n).unwrap().unwrap().to_vec())).collect();
        let pkl = files.iter_mut().find(|(n, _)| n.ends_with("data.pkl")).unwrap();
        edit(&mut pkl.1);
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        stored_zip(&refs)
    }

    fn replace(b: &mut Vec<u8>, from: &[u8], to: &[u8]) {
        let at = b.windows(from.len()).position(|w| w == from).unwrap_or_else(|| panic!("{:?} not in the pickle", String::from_utf8_lossy(from)));
        b.splice(at..at + from.len(), to.iter().copied());
    }

    fn refusal(bytes: &[u8]) -> String {
        match from_th_bytes(bytes, "x.th") {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_demucs_checkpoint_reads_as_demucs_wrote_it() {
        let (path, _) = six();
        let m = load_th(&path).unwrap();
        assert_eq!(m.sources(), ["drums", "bass", "other", "vocals", "guitar", "piano"]);
        // The exact Fraction segment: 9/35 s is 11340 samples (the float would give 11339).
        assert_eq!(m.config.segment_fraction, Some((9, 35)));
        assert_eq!(m.config.training_length(), 11340);
        // Through the same re-archiving the refusals use, unchanged it still loads.
        let again = from_th_bytes(&with_pickle(&six().1, |_| {}), "re-archived").unwrap();
        assert_eq!(again.config, m.config);
    }

    #[test]
    fn broken_checkpoints_are_refused_by_name() {
        let (_, bytes) = six();
        let e = refusal(&bytes[..bytes.len() / 2]);
        assert!(e.contains("x.th") && e.contains("zip"), "truncated: {e}");
        let e = refusal(&with_pickle(&bytes, |p| replace(p, b"demucs.htdemucs\nHTDemucs\n", b"builtins\neval\n")));
        assert!(e.contains("builtins.eval") && e.contains("refused"), "unexpected class: {e}");
        let e = refusal(&with_pickle(&bytes, |p| replace(p, b"demucs.htdemucs\nHTDemucs\n", b"demucs.hdemucs\nHDemucs\n")));
        assert!(e.contains("demucs.hdemucs.HDemucs") && e.contains("only"), "another architecture: {e}");
        // A state whose tensor went missing (its name changed): both names are reported.
        let e = refusal(&with_pickle(&bytes, |p| replace(p, b"encoder.1.conv.weight", b"encoder.1.conv.weighz")));
        assert!(e.contains("missing: encoder.1.conv.weight") && e.contains("unused: encoder.1.conv.weighz"), "missing tensor: {e}");
        // Constructor arguments that do not fit the state: every misshaped tensor is named.
        let e = refusal(&with_pickle(&bytes, |p| {
            // `'channels'`, its memo slot (BINPUT n), then BININT1 4.
            let key = b"X\x08\x00\x00\x00channelsq";
            let at = p.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 1;
            assert_eq!(&p[at..at + 2], b"K\x04");
            p[at + 1] = 5;
        }));
        assert!(e.contains("misshaped: encoder.0.conv.weight"), "wrong shapes: {e}");
        // A storage record that went missing.
        let zip = Zip::new(&bytes).unwrap();
        let files: Vec<(String, Vec<u8>)> = zip.names().filter(|n| !n.ends_with("data/3")).map(|n| (n.to_string(), zip.read(n).unwrap().unwrap().to_vec())).collect();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let e = refusal(&stored_zip(&refs));
        assert!(e.contains("data/3") && e.contains("not in the archive"), "missing storage: {e}");
    }

    #[test]
    fn a_checkpoint_that_does_not_match_its_checksum_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut bytes) = six();
        let n = bytes.len();
        bytes[n - 30] ^= 1;
        let p = dir.path().join("sixx0002-fa72d13a.th");
        std::fs::write(&p, &bytes).unwrap();
        let e = load_th(&p).err().unwrap().to_string();
        assert!(e.contains("checksum mismatch") && e.contains("fa72d13a"), "{e}");
    }

    /// A release table over the fixture's files, at an address nothing listens on.
    fn fixture_remote() -> Remote {
        let spec = parse_bag_yaml(&std::fs::read_to_string(repo().join("bag.yaml")).unwrap(), "bag.yaml").unwrap();
        Remote {
            root_url: "http://127.0.0.1:9/demucs/".into(),
            files: vec![("axxx0000".into(), "t/axxx0000-fdc3a25b.th".into()), ("bxxx0001".into(), "t/bxxx0001-dd7eca5b.th".into())],
            bags: vec![("tiny_ft".into(), spec)],
        }
    }

    #[test]
    fn released_models_come_from_the_cache_offline() {
        let cache = tempfile::tempdir().unwrap();
        let opts = CacheOptions { dir: Some(cache.path().to_path_buf()), offline: true };
        let remote = fixture_remote();
        let mut notes = Vec::new();
        let e = remote.load("tiny_ft", &opts, &mut |u| notes.push(u.to_string())).err().unwrap().to_string();
        assert!(e.contains("axxx0000-fdc3a25b.th") && e.contains("http://127.0.0.1:9/demucs/t/axxx0000-fdc3a25b.th") && e.contains("downloads are off"), "{e}");
        for f in ["axxx0000-fdc3a25b.th", "bxxx0001-dd7eca5b.th"] {
            std::fs::copy(repo().join(f), cache.path().join(f)).unwrap();
        }
        let bag = remote.load("tiny_ft", &opts, &mut |u| notes.push(u.to_string())).unwrap();
        assert_eq!((bag.models.len(), bag.weights[1].clone()), (2, vec![0.0, 1.0, 0.5, 0.25]));
        assert!(notes.is_empty(), "nothing was downloaded");
        // A corrupt cached file is named, not used.
        let p = cache.path().join("bxxx0001-dd7eca5b.th");
        let mut b = std::fs::read(&p).unwrap();
        b.truncate(b.len() - 1);
        std::fs::write(&p, b).unwrap();
        let e = remote.load("tiny_ft", &opts, &mut |_| {}).err().unwrap().to_string();
        assert!(e.contains("bxxx0001-dd7eca5b.th") && e.contains("checksum mismatch"), "{e}");
        let e = remote.load("mdx_extra", &opts, &mut |_| {}).err().unwrap().to_string();
        assert!(e.contains("not a released HTDemucs model") && e.contains("tiny_ft"), "{e}");
    }

    #[test]
    fn the_release_table_names_demucs_files() {
        let r = Remote::released();
        for (name, sigs) in [("htdemucs", 1), ("htdemucs_ft", 4), ("htdemucs_6s", 1)] {
            let (_, spec) = r.bags.iter().find(|(n, _)| n == name).unwrap();
            assert_eq!(spec.models.len(), sigs);
            for s in &spec.models {
                let (_, f) = r.files.iter().find(|(x, _)| x == s).unwrap();
                assert!(f.starts_with(&format!("hybrid_transformer/{s}-")) && f.ends_with(".th"));
            }
        }
        let home = CacheOptions::default();
        if std::env::var_os("TORCH_HOME").is_none() && std::env::var_os("XDG_CACHE_HOME").is_none() {
            assert!(home.folder().unwrap().ends_with(".cache/torch/hub/checkpoints"));
        }
    }

    #[test]
    fn demucs_bag_yaml_reads_as_demucs_writes_it() {
        let ft = "models: ['f7e0c4bc', 'd12395a8', '92cfc3b6', '04573f0d']\nweights: [\n  [1., 0., 0., 0.],\n  [0., 1., 0., 0.],\n  [0., 0., 1., 0.],\n  [0., 0., 0., 1.],\n]";
        let spec = parse_bag_yaml(ft, "htdemucs_ft.yaml").unwrap();
        assert_eq!(spec.models, ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"]);
        assert_eq!(spec.weights.as_ref().unwrap()[2], [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(parse_bag_yaml("models: ['75fc33f5']\nsegment: 44\n", "x").unwrap().segment, Some(44.0));
        assert_eq!(parse_bag_yaml("models: [\"a\", b]  # two\n", "x").unwrap().models, ["a", "b"]);
        for bad in ["", "models: [", "models: 'a'", "weights: [[1]]", "models: ['a']\nlr: 3", "models: ['a']\nweights: [['x']]", "  [1]", "models: ['a'] x"] {
            assert!(parse_bag_yaml(bad, "bad.yaml").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checksums_come_from_the_file_name() {
        assert_eq!(name_checksum(Path::new("/c/955717e8-8726e21a.th")).as_deref(), Some("8726e21a"));
        assert_eq!(name_checksum(Path::new("/c/955717e8.th")), None);
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
