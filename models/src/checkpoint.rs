//! The one way the models get their weights. A model's `build` asks a [`Vars`] for each tensor
//! where it uses it, by name (under the prefixes of the modules around it) and with the shape
//! it needs; the [`Store`] behind it hands out the checkpoint's tensor, or random values for a
//! model of real size, and records every request. From that one declaration come
//! - strictness: [`Store::finish`] lists every missing, unused and misshaped tensor by name
//!   (a missing or misshaped one is replaced by zeros of the declared shape meanwhile, so one
//!   pass finds every problem);
//! - quantization: matrices asked for with [`Vars::matrix`] are stored at the store's
//!   precision ([`Store::convert_to`]), everything else stays float32;
//! - saving: a recording store ([`Store::recording`]) keeps each tensor in the form it was
//!   stored, so [`Record::save`] writes a checkpoint that loads back under the same names.
//!
//! candle's `VarBuilder` and mlx-examples' module trees work the same way: a weight is named
//! once, where it is used.
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::Path;

use mlx_rs::{Array, Dtype};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::linear::{Linear, Weight};
use crate::nn::quant::{Precision, QuantWeight};
use crate::weights;

/// Metadata key of the precision of a saved checkpoint.
pub const PRECISION_KEY: &str = "mlx_audio_bench.precision";

/// How a random store fills one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Ones,
    Zeros,
    /// Standard normal times this scale.
    Normal(f32),
}

type InitFn = fn(&str, &[i32]) -> Init;

enum Source {
    File {
        dense: HashMap<String, Array>,
        quantized: HashMap<String, QuantWeight>,
        /// The precision recorded in the file's metadata (float32 when none is).
        precision: Precision,
    },
    /// Each tensor from its own key, derived from the seed and the rank of its name among all
    /// the model's names (`ranks`, from a dry build), so that the values do not depend on the
    /// order the model asks in; without ranks, zeros that are never evaluated (the dry build).
    Random { seed: u64, init: InitFn, ranks: Option<BTreeMap<String, u64>> },
}

#[derive(Default)]
struct Ledger {
    /// Every name asked for, with its declared (logical) shape.
    declared: BTreeMap<String, Vec<i32>>,
    missing: Vec<String>,
    misshaped: Vec<(String, Vec<i32>)>,
    twice: Vec<String>,
    /// The stored form of every tensor taken, when recording.
    kept: Option<Vec<(String, Array)>>,
    /// What to evaluate once the model is built.
    loaded: Vec<Array>,
}

/// A checkpoint's tensors (or random ones) and the record of what a model took from them.
pub struct Store {
    name: String,
    target: Option<Precision>,
    state: RefCell<(Source, Ledger)>,
}

/// A view of a [`Store`] under a name prefix: what a module builds itself from.
#[derive(Clone)]
pub struct Vars<'a> {
    store: &'a Store,
    prefix: String,
}

/// What a model took, from [`Store::finish`].
pub struct Record {
    /// Every tensor name with its logical shape.
    pub names: BTreeMap<String, Vec<i32>>,
    /// The tensors in their stored form (a recording store only).
    pub tensors: Vec<(String, Array)>,
    /// The precision of the matrices.
    pub precision: Precision,
}

fn stored_parts(name: &str, weight: &Weight) -> Vec<(String, Array)> {
    match weight {
        Weight::Dense(a) | Weight::Half(a) => vec![(name.to_string(), a.clone())],
        Weight::Quantized(q) => {
            let base = name.strip_suffix(".weight").unwrap_or(name);
            vec![(name.to_string(), q.packed.clone()), (format!("{base}.scales"), q.scales.clone()), (format!("{base}.biases"), q.biases.clone())]
        }
    }
}

impl Store {
    /// Tensors read from `name` (a path, in errors), with its quantized matrices gathered by
    /// the precision `metadata` records: `X.weight` (packed codes), `X.scales` and `X.biases`
    /// become one matrix `X.weight`.
    pub fn new(mut dense: HashMap<String, Array>, metadata: &HashMap<String, String>, name: &str) -> Result<Self> {
        let bad = |reason: String| Error::Weights { path: name.into(), reason };
        let precision = match metadata.get(PRECISION_KEY) {
            Some(p) => p.parse::<Precision>().map_err(|e| bad(format!("metadata {PRECISION_KEY}: {e}")))?,
            None => Precision::F32,
        };
        let mut quantized = HashMap::new();
        if let Precision::Int { bits, group_size } = precision {
            let mut bases: Vec<String> = dense.keys().filter_map(|k| k.strip_suffix(".scales").map(str::to_string)).collect();
            bases.sort();
            for base in bases {
                let mut part = |p: &str| dense.remove(&format!("{base}.{p}")).ok_or_else(|| bad(format!("{base}.scales without {base}.{p}")));
                let (packed, scales, biases) = (part("weight")?, part("scales")?, part("biases")?);
                if packed.ndim() != 2 || packed.dtype() != Dtype::Uint32 {
                    return Err(bad(format!("{base}.weight: a {bits}-bit matrix must be 2-d uint32, found {:?} {:?}", packed.dtype(), packed.shape())));
                }
                let shape = [packed.shape()[0], packed.shape()[1] * 32 / bits];
                let q = QuantWeight::from_parts(packed, scales, biases, bits, group_size, shape, &base)?;
                quantized.insert(format!("{base}.weight"), q);
            }
        }
        Ok(Self::with_source(name, Source::File { dense, quantized, precision }))
    }

    /// Float tensors (a float32 checkpoint).
    pub fn from_tensors(tensors: HashMap<String, Array>, name: &str) -> Self {
        Self::with_source(name, Source::File { dense: tensors, quantized: HashMap::new(), precision: Precision::F32 })
    }

    /// `path` (safetensors, header checked first).
    pub fn open(path: &Path) -> Result<Self> {
        let (tensors, meta) = weights::read_safetensors_with_metadata(path)?;
        Self::new(tensors, &meta, &path.display().to_string())
    }

    /// Random tensors of every declared shape, filled as `init(name, shape)` says: tensor `i`
    /// of the sorted `names` from key `seed * 1000003 + i` (a model of any size reproduces,
    /// and a tensor's values do not move when code around it changes).
    pub fn random(seed: u64, init: InitFn, names: impl IntoIterator<Item = String>) -> Self {
        let mut sorted: Vec<String> = names.into_iter().collect();
        sorted.sort();
        let ranks = sorted.into_iter().enumerate().map(|(i, n)| (n, i as u64)).collect();
        Self::with_source(&format!("random weights (seed {seed})"), Source::Random { seed, init, ranks: Some(ranks) })
    }

    /// A store that hands out zeros of every declared shape, lazily (never evaluated): a build
    /// from it lists the model's names ([`Store::names`]) at no cost.
    pub fn dry() -> Self {
        fn zeros(_: &str, _: &[i32]) -> Init {
            Init::Zeros
        }
        Self::with_source("a dry build", Source::Random { seed: 0, init: zeros, ranks: None })
    }

    /// Every name taken so far.
    pub fn names(&self) -> Vec<String> {
        self.state.borrow().1.declared.keys().cloned().collect()
    }

    fn with_source(name: &str, source: Source) -> Self {
        Self { name: name.to_string(), target: None, state: RefCell::new((source, Ledger::default())) }
    }

    /// Store the matrices ([`Vars::matrix`]) at `precision` as they are taken (`None` keeps
    /// them as the checkpoint has them).
    pub fn convert_to(mut self, precision: Option<Precision>) -> Self {
        self.target = precision;
        self
    }

    /// Keep every tensor in its stored form, for [`Record::save`].
    pub fn recording(self) -> Self {
        self.state.borrow_mut().1.kept = Some(Vec::new());
        self
    }

    /// The root of the name tree.
    pub fn root(&self) -> Vars<'_> {
        Vars { store: self, prefix: String::new() }
    }

    /// The name of the source, for errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the checkpoint holds `name` (always false for random weights).
    fn contains(&self, name: &str) -> bool {
        match &self.state.borrow().0 {
            Source::File { dense, quantized, .. } => dense.contains_key(name) || quantized.contains_key(name),
            Source::Random { .. } => false,
        }
    }

    /// Take `name` of logical `shape`, as a float array or a stored matrix. A missing or
    /// misshaped tensor is noted and replaced by zeros of `shape`.
    fn take(&self, name: String, shape: &[i32], matrix: bool) -> Result<Weight> {
        let mut state = self.state.borrow_mut();
        let (source, ledger) = &mut *state;
        if ledger.declared.insert(name.clone(), shape.to_vec()).is_some() {
            ledger.twice.push(name.clone());
        }
        let zeros = || -> Result<Weight> { Ok(Weight::Dense(mlx_rs::ops::zeros::<f32>(shape)?)) };
        let found = match source {
            Source::File { dense, quantized, precision } => {
                if let Some(q) = quantized.remove(&name) {
                    if q.shape.as_slice() != shape {
                        ledger.misshaped.push((name.clone(), q.shape.to_vec()));
                        return zeros();
                    }
                    if !matrix {
                        return Err(Error::Weights { path: self.name.clone(), reason: format!("{name} is quantized where the model needs a float tensor") });
                    }
                    Weight::Quantized(q)
                } else if let Some(a) = dense.remove(&name) {
                    if a.shape() != shape {
                        ledger.misshaped.push((name.clone(), a.shape().to_vec()));
                        return zeros();
                    }
                    // A float16 matrix stays float16 only in a checkpoint saved as fp16.
                    if matrix && *precision == Precision::F16 && a.dtype() == Dtype::Float16 {
                        Weight::Half(a)
                    } else if a.dtype() == Dtype::Float32 || !a.dtype().is_float() {
                        Weight::Dense(a)
                    } else {
                        Weight::Dense(a.as_dtype(Dtype::Float32)?)
                    }
                } else {
                    ledger.missing.push(name.clone());
                    return zeros();
                }
            }
            Source::Random { seed, init, ranks } => {
                let Some(ranks) = ranks else {
                    return zeros();
                };
                let rank = *ranks.get(&name).ok_or_else(|| Error::InvalidArgument(format!("{name}: not among the names of the dry build")))?;
                let key = mlx_rs::random::key(seed.wrapping_mul(1_000_003).wrapping_add(rank))?;
                // Constants made row-contiguous, as a loaded checkpoint's are: MLX's `ones` and
                // `zeros` are a broadcast scalar, which every kernel that needs contiguous
                // operands (layer norm, custom kernels) would copy again at each call.
                Weight::Dense(match init(&name, shape) {
                    Init::Ones => mlx_rs::ops::ones::<f32>(shape)?.contiguous()?,
                    Init::Zeros => mlx_rs::ops::zeros::<f32>(shape)?.contiguous()?,
                    Init::Normal(scale) => mlx_rs::random::normal::<f32>(shape, None, None, &key)?.multiply(mlx_rs::array!(scale))?,
                })
            }
        };
        let mut w = found;
        if matrix {
            if let Some(p) = self.target {
                w.convert(p).map_err(|e| Error::Weights { path: self.name.clone(), reason: format!("{name}: {e}") })?;
            }
        } else if let Weight::Dense(a) = &w {
            if !a.dtype().is_float() {
                // Integer buffers are checked for shape and kept as they are.
            } else if a.dtype() != Dtype::Float32 {
                w = Weight::Dense(a.as_dtype(Dtype::Float32)?);
            }
        }
        if let Some(kept) = &mut ledger.kept {
            kept.extend(stored_parts(&name, &w));
        }
        ledger.loaded.extend(w.arrays().into_iter().cloned());
        Ok(w)
    }

    /// Check that the model took every tensor with its shape and left nothing over, then
    /// evaluate what it took. Every problem is named.
    pub fn finish(self) -> Result<Record> {
        let (source, mut ledger) = self.state.into_inner();
        let precision = self.target.unwrap_or(match &source {
            Source::File { precision, .. } => *precision,
            Source::Random { .. } => Precision::F32,
        });
        let unused: Vec<(String, Vec<i32>)> = match source {
            Source::File { dense, quantized, .. } => {
                let mut u: Vec<(String, Vec<i32>)> = dense.iter().map(|(k, v)| (k.clone(), v.shape().to_vec())).collect();
                u.extend(quantized.iter().map(|(k, q)| (k.clone(), q.shape.to_vec())));
                u.sort();
                u
            }
            Source::Random { .. } => Vec::new(),
        };
        if !(ledger.missing.is_empty() && unused.is_empty() && ledger.misshaped.is_empty() && ledger.twice.is_empty()) {
            ledger.missing.sort();
            ledger.misshaped.sort();
            let mut msg = String::new();
            for k in &ledger.missing {
                let _ = write!(msg, "\n  missing: {k} (expected shape {:?})", ledger.declared[k]);
            }
            for (k, shape) in &unused {
                let _ = write!(msg, "\n  unused: {k} (shape {shape:?})");
            }
            for (k, found) in &ledger.misshaped {
                let _ = write!(msg, "\n  misshaped: {k} is {found:?}, expected {:?}", ledger.declared[k]);
            }
            for k in &ledger.twice {
                let _ = write!(msg, "\n  taken twice by the model: {k}");
            }
            return Err(Error::Weights { path: self.name, reason: format!("weights do not match the model:{msg}") });
        }
        mlx_rs::transforms::eval(ledger.loaded.iter())?;
        Ok(Record { names: ledger.declared, tensors: ledger.kept.unwrap_or_default(), precision })
    }
}

impl Vars<'_> {
    /// The view under `name` (joined with a dot).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Vars { store: self.store, prefix: self.full(&name.to_string()) }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A float32 tensor of `shape` (integer buffers keep their type).
    pub fn tensor(&self, name: &str, shape: &[i32]) -> Result<Array> {
        match self.store.take(self.full(name), shape, false)? {
            Weight::Dense(a) => Ok(a),
            _ => Err(Error::InvalidArgument(format!("{} is not a float tensor", self.full(name)))),
        }
    }

    /// The first of `names` the checkpoint holds (older names of the same tensor); a missing
    /// tensor is reported under the first.
    pub fn tensor_any(&self, names: &[&str], shape: &[i32]) -> Result<Array> {
        let name = names.iter().find(|n| self.store.contains(&self.full(n))).unwrap_or(&names[0]);
        self.tensor(name, shape)
    }

    /// A tensor the checkpoint may or may not hold (a buffer some versions save, a tied
    /// matrix): checked for shape when present.
    pub fn optional(&self, name: &str, shape: &[i32]) -> Result<Option<Array>> {
        if self.store.contains(&self.full(name)) {
            self.tensor(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `a`, a weight computed at load (a folded norm, a transposed kernel), evaluated with the
    /// tensors when the store finishes so that no run pays for computing it.
    pub fn derived(&self, a: Array) -> Array {
        self.store.state.borrow_mut().1.loaded.push(a.clone());
        a
    }

    /// [`Self::derived`] for arrays a layer computed from its weights.
    pub fn materialize<'b>(&self, arrays: impl IntoIterator<Item = &'b Array>) {
        self.store.state.borrow_mut().1.loaded.extend(arrays.into_iter().cloned());
    }

    /// A `[out, in]` matrix at the store's precision: the ones quantization applies to.
    pub fn matrix(&self, name: &str, shape: [i32; 2]) -> Result<Weight> {
        self.store.take(self.full(name), &shape, true)
    }

    /// A linear layer (`weight` `[out, in]`, `bias` `[out]`) whose matrix is stored at the
    /// store's precision.
    pub fn linear(&self, out: i32, inn: i32, bias: bool) -> Result<Linear> {
        let w = self.matrix("weight", [out, inn])?;
        let b = if bias { Some(self.tensor("bias", &[out])?) } else { None };
        Linear::from_weight(w, b)
    }

    /// A linear layer that stays float32 whatever the store's precision.
    pub fn dense_linear(&self, out: i32, inn: i32, bias: bool) -> Result<Linear> {
        let w = self.tensor("weight", &[out, inn])?;
        let b = if bias { Some(self.tensor("bias", &[out])?) } else { None };
        Linear::new(w, b)
    }
}

impl Record {
    /// Write the recorded tensors as a checkpoint the same model loads back, with the
    /// precision in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.tensors.is_empty() {
            return Err(Error::InvalidArgument("nothing recorded to save (the store was not recording)".into()));
        }
        weights::save_safetensors(path, &self.tensors, &[(PRECISION_KEY, &self.precision.to_string())])
    }
}

/// A model built from a checkpoint: its configuration, how it takes its weights, and how a
/// random one of real size is filled. Loading, random weights and conversion come from these.
pub trait Checkpointed: Sized {
    type Config: ModelConfig + Clone;

    /// Build from `vs`, taking every weight by name and shape where it is used.
    fn build(config: Self::Config, vs: &Vars) -> Result<Self>;

    /// How a random model fills `name`.
    fn init(name: &str, shape: &[i32]) -> Init;

    /// Build from `store` and check it strictly.
    fn from_store(config: Self::Config, store: Store) -> Result<(Self, Record)> {
        config.validate().map_err(|reason| Error::Config { path: store.name().into(), reason })?;
        let model = Self::build(config, &store.root())?;
        let record = store.finish()?;
        Ok((model, record))
    }

    /// From float checkpoint tensors; `source` names them in errors.
    fn from_tensors(config: Self::Config, tensors: HashMap<String, Array>, source: &str) -> Result<Self> {
        Ok(Self::from_store(config, Store::from_tensors(tensors, source))?.0)
    }

    /// `config.json` and `model.safetensors` from a folder, as stored.
    fn load_dir(dir: &Path) -> Result<Self> {
        Self::load_dir_as(dir, None)
    }

    /// [`Self::load_dir`] with the matrices stored at `precision` (quantization at load).
    fn load_dir_as(dir: &Path, precision: Option<Precision>) -> Result<Self> {
        let config = Self::Config::from_file(&dir.join("config.json"))?;
        Ok(Self::from_store(config, Store::open(&dir.join("model.safetensors"))?.convert_to(precision))?.0)
    }

    /// A model of `config`'s size with random weights from `seed` (benchmarks).
    fn random(config: Self::Config, seed: u64) -> Result<Self> {
        Self::random_as(config, seed, None)
    }

    /// [`Self::random`] with the matrices stored at `precision`. A dry build lists the names
    /// first, so each tensor's values depend only on the seed and its name's rank.
    fn random_as(config: Self::Config, seed: u64, precision: Option<Precision>) -> Result<Self> {
        config.validate().map_err(|reason| Error::Config { path: "random weights".into(), reason })?;
        let dry = Store::dry();
        Self::build(config.clone(), &dry.root())?;
        Ok(Self::from_store(config, Store::random(seed, Self::init, dry.names()).convert_to(precision))?.0)
    }

    /// Convert the checkpoint in `dir` to `precision` and write it to `out` (a
    /// `model.safetensors` path): every tensor under its own name, the matrices converted.
    fn convert_checkpoint(dir: &Path, precision: Precision, out: &Path) -> Result<Record> {
        let config = Self::Config::from_file(&dir.join("config.json"))?;
        let store = Store::open(&dir.join("model.safetensors"))?.convert_to(Some(precision)).recording();
        let (_, record) = Self::from_store(config, store)?;
        record.save(out)?;
        Ok(record)
    }
}

/// The usual random fill of a transformer: unit norm gains, small normal elsewhere.
pub fn transformer_init(name: &str, _shape: &[i32]) -> Init {
    if name.contains("layer_norm") && name.ends_with("weight") {
        Init::Ones
    } else {
        Init::Normal(0.02)
    }
}

/// The fan-in of a PyTorch weight of `shape` (every axis but the first).
pub fn fan_in(shape: &[i32]) -> f32 {
    shape.iter().skip(1).product::<i32>().max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_wide(vs: &Vars, inn: i32) -> Result<(Linear, Array)> {
        let enc = vs.pp("encoder");
        Ok((enc.linear(4, inn, true)?, vs.tensor("scale", &[])?))
    }

    fn build(vs: &Vars) -> Result<(Linear, Array)> {
        build_wide(vs, 2)
    }

    #[test]
    fn every_problem_is_named_in_one_pass() {
        let mut t = HashMap::new();
        t.insert("encoder.weight".to_string(), mlx_rs::ops::zeros::<f32>(&[4, 3]).unwrap());
        t.insert("encoder.bais".to_string(), mlx_rs::ops::zeros::<f32>(&[4]).unwrap());
        let store = Store::from_tensors(t, "m.safetensors");
        build(&store.root()).unwrap();
        let err = store.finish().err().unwrap().to_string();
        for part in ["m.safetensors", "missing: encoder.bias (expected shape [4])", "missing: scale", "unused: encoder.bais", "misshaped: encoder.weight is [4, 3], expected [4, 2]"] {
            assert!(err.contains(part), "'{part}' not in: {err}");
        }
    }

    #[test]
    fn a_complete_checkpoint_loads_and_saves_back_at_its_precision() {
        let key = mlx_rs::random::key(3).unwrap();
        let w = mlx_rs::random::normal::<f32>(&[4, 64], None, None, &key).unwrap();
        let mut t = HashMap::new();
        t.insert("encoder.weight".to_string(), w.clone());
        t.insert("encoder.bias".to_string(), mlx_rs::ops::ones::<f32>(&[4]).unwrap());
        t.insert("scale".to_string(), mlx_rs::array!(2.0f32));
        let store = Store::from_tensors(t, "m").convert_to(Some(Precision::int(8, 64).unwrap())).recording();
        let (lin, scale) = build_wide(&store.root(), 64).unwrap();
        assert_eq!(scale.item_cast::<f32>(), 2.0);
        assert!(matches!(lin.weight, Weight::Quantized(_)));
        let record = store.finish().unwrap();
        assert_eq!(record.names.keys().collect::<Vec<_>>(), ["encoder.bias", "encoder.weight", "scale"]);
        let saved: Vec<&str> = record.tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(saved, ["encoder.weight", "encoder.scales", "encoder.biases", "encoder.bias", "scale"]);
        // Read back through the metadata: the matrix comes back quantized, nothing is left over.
        let back: HashMap<String, Array> = record.tensors.iter().cloned().collect();
        let meta = HashMap::from([(PRECISION_KEY.to_string(), record.precision.to_string())]);
        let store = Store::new(back, &meta, "saved").unwrap();
        let (lin2, _) = build_wide(&store.root(), 64).unwrap();
        store.finish().unwrap();
        let x = mlx_rs::random::normal::<f32>(&[1, 64], None, None, &mlx_rs::random::key(4).unwrap()).unwrap();
        let d = lin.forward(&x).unwrap().subtract(lin2.forward(&x).unwrap()).unwrap().abs().unwrap().max(None).unwrap();
        assert_eq!(d.item_cast::<f32>(), 0.0);
    }

    #[test]
    fn a_name_taken_twice_is_a_model_bug_and_named() {
        let store = Store::random(1, |_, _| Init::Zeros, ["a".to_string()]);
        let vs = store.root();
        vs.tensor("a", &[2]).unwrap();
        vs.tensor("a", &[2]).unwrap();
        let err = store.finish().err().unwrap().to_string();
        assert!(err.contains("taken twice by the model: a"), "{err}");
    }

    #[test]
    fn random_stores_fill_by_name_and_reproduce() {
        let fill = |seed| {
            let store = Store::random(seed, |n, _| if n.ends_with("gain") { Init::Ones } else { Init::Normal(1.0) }, ["m.gain".to_string(), "m.w".to_string()]);
            let vs = store.root().pp("m");
            let (g, w) = (vs.tensor("gain", &[3]).unwrap(), vs.tensor("w", &[3]).unwrap());
            store.finish().unwrap();
            (g.as_slice::<f32>().to_vec(), w.as_slice::<f32>().to_vec())
        };
        let (g, w) = fill(5);
        assert_eq!(g, [1.0; 3]);
        assert_eq!(fill(5).1, w);
        assert_ne!(fill(6).1, w);
    }

    #[test]
    fn random_values_depend_on_the_name_not_on_the_order_of_requests() {
        let names = ["a.w".to_string(), "b.w".to_string()];
        let fill = |first: &str, second: &str| {
            let store = Store::random(9, |_, _| Init::Normal(1.0), names.clone());
            let vs = store.root();
            let x = vs.tensor(first, &[4]).unwrap();
            let y = vs.tensor(second, &[4]).unwrap();
            store.finish().unwrap();
            (x.as_slice::<f32>().to_vec(), y.as_slice::<f32>().to_vec())
        };
        let (a1, b1) = fill("a.w", "b.w");
        let (b2, a2) = fill("b.w", "a.w");
        assert_eq!((a1, b1), (a2, b2));
        // A dry build hands out zeros and lists what was asked for.
        let dry = Store::dry();
        dry.root().pp("m").tensor("w", &[2]).unwrap();
        assert_eq!(dry.names(), ["m.w"]);
    }
}
