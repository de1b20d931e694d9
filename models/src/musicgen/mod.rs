//! MusicGen (HF `MusicgenForConditionalGeneration`, weights under its names): a T5 text
//! encoder, a decoder over `K` parallel codebooks with the delay pattern, classifier-free
//! guidance, and EnCodec to turn codes into audio. Decoding has the seed's switches
//! ([`DecodeOptions`]): the KV cache kind, cross-attention K/V cached or recomputed, and the
//! eval interval.
pub mod config;
pub mod t5;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{ops, Array, Dtype};

pub use self::config::MusicgenConfig;
use self::t5::T5Encoder;
use crate::config::ModelConfig;
use crate::encodec::Encodec;
use crate::error::{Error, Result};
use crate::nn::attention::{AttentionKernel, Mask, MultiHeadAttention};
use crate::nn::linear::{Linear, Weight};
use crate::nn::quant::{save_parts, Checkpoint, Precision, PRECISION_KEY};
use crate::nn::norm::LayerNorm;
use crate::nn::ops::gelu;
pub use crate::nn::decoder::{DecodeOptions, DecodeState};
use crate::weights;

struct Layer {
    attn: MultiHeadAttention,
    attn_ln: LayerNorm,
    cross: MultiHeadAttention,
    cross_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    ff_ln: LayerNorm,
}

pub struct MusicGen {
    pub config: MusicgenConfig,
    pub text: T5Encoder,
    /// T5 width to decoder width, when they differ.
    enc_to_dec: Option<Linear>,
    embed: Vec<Weight>,
    /// Sinusoidal positions `[max_positions, d]`.
    positions: Array,
    layers: Vec<Layer>,
    final_ln: LayerNorm,
    heads: Vec<Weight>,
    pub codec: Encodec,
}

/// Text conditioning ready for the decoder: projected states `[B, S, d]` and the additive
/// cross-attention mask `[B, 1, 1, S]`.
pub struct Conditioning {
    pub states: Array,
    pub mask: Array,
}

/// Token ids `[1, L]` and attention mask of `prompt` through the T5 `tokenizer.json` at `path`
/// (special tokens added, as HF's processor does: T5 appends `</s>`).
pub fn tokenize_prompt(path: &Path, prompt: &str) -> Result<(Array, Array)> {
    let tok = crate::text::read_tokenizer(path)?;
    let enc = tok.encode(prompt, true).map_err(|e| Error::InvalidArgument(format!("cannot tokenize the prompt: {e}")))?;
    let ids: Vec<i32> = enc.get_ids().iter().map(|&i| i as i32).collect();
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt has no tokens".into()));
    }
    let n = ids.len() as i32;
    Ok((Array::from_slice(&ids, &[1, n]), ops::ones::<i32>(&[1, n])?))
}

/// How each step's codes are chosen from the (guided) logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// The most likely code (HF `do_sample=False`; the tests' mode).
    Greedy,
    /// HF's sampling as MusicGen's generation config sets it: logits divided by `temperature`,
    /// all but the `top_k` largest dropped, then a draw from the softmax. `seed` fixes the
    /// draws (MLX's generator, so not the same draws as PyTorch's).
    TopK { top_k: i32, temperature: f32, seed: u64 },
}

impl Sampler {
    /// MusicGen's defaults: top-k 250, temperature 1.
    pub fn musicgen(seed: u64) -> Self {
        Sampler::TopK { top_k: 250, temperature: 1.0, seed }
    }

    /// Codes `[B, K]` from logits `[B, K, V]` at decode step `step`.
    fn pick(&self, logits: &Array, step: usize) -> Result<Array> {
        match *self {
            Sampler::Greedy => Ok(argmax_axis(logits, -1, false)?.as_dtype(Dtype::Int32)?),
            Sampler::TopK { top_k, temperature, seed } => {
                if !(temperature > 0.0 && temperature.is_finite()) || top_k < 1 {
                    return Err(Error::InvalidArgument(format!("sampling needs top_k >= 1 and a positive temperature, got top_k {top_k}, temperature {temperature}")));
                }
                let v = logits.shape()[logits.ndim() - 1];
                let mut l = logits.divide(mlx_rs::array!(temperature))?;
                if top_k < v {
                    // The k-th largest value per row; everything below it is dropped.
                    let kth = ops::partition_axis(&l, v - top_k, -1)?.index((.., .., (v - top_k)..(v - top_k + 1)));
                    l = ops::select(&l.lt(&kth)?, mlx_rs::array!(f32::NEG_INFINITY), &l)?;
                }
                let key = mlx_rs::random::key(seed.wrapping_mul(1_000_003).wrapping_add(step as u64))?;
                Ok(mlx_rs::random::categorical(&l, -1, None, &key)?.as_dtype(Dtype::Int32)?)
            }
        }
    }
}

/// HF's `MusicgenSinusoidalPositionalEmbedding`: `[cos | sin]` of position × frequency.
fn sinusoids(n: i32, d: i32) -> Array {
    let half = d / 2;
    let step = (10000f64.ln() / f64::from(half - 1)) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut v = Vec::with_capacity((n * d) as usize);
    for p in 0..n {
        let row: Vec<f32> = freqs.iter().map(|f| p as f32 * f).collect();
        v.extend(row.iter().map(|x| x.cos()));
        v.extend(row.iter().map(|x| x.sin()));
    }
    Array::from_slice(&v, &[n, d])
}

impl MusicGen {
    /// Every weight of the text encoder, projection and decoder (EnCodec's are checked by
    /// its own loader under `audio_encoder.`).
    pub fn expected_weights(c: &MusicgenConfig) -> BTreeMap<String, Vec<i32>> {
        let mut e = T5Encoder::expected_weights(&c.text_encoder, "text_encoder.");
        let d = &c.decoder;
        let h = d.hidden_size;
        if c.text_encoder.d_model != h {
            e.insert("enc_to_dec_proj.weight".into(), vec![h, c.text_encoder.d_model]);
            e.insert("enc_to_dec_proj.bias".into(), vec![h]);
        }
        let p = "decoder.model.decoder";
        for k in 0..d.num_codebooks {
            e.insert(format!("{p}.embed_tokens.{k}.weight"), vec![d.vocab_size + 1, h]);
            e.insert(format!("decoder.lm_heads.{k}.weight"), vec![d.vocab_size, h]);
        }
        e.insert(format!("{p}.layer_norm.weight"), vec![h]);
        e.insert(format!("{p}.layer_norm.bias"), vec![h]);
        for i in 0..d.num_hidden_layers {
            let l = format!("{p}.layers.{i}");
            for a in ["self_attn", "encoder_attn"] {
                for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    e.insert(format!("{l}.{a}.{n}.weight"), vec![h, h]);
                }
            }
            for n in ["self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"] {
                e.insert(format!("{l}.{n}.weight"), vec![h]);
                e.insert(format!("{l}.{n}.bias"), vec![h]);
            }
            e.insert(format!("{l}.fc1.weight"), vec![d.ffn_dim, h]);
            e.insert(format!("{l}.fc2.weight"), vec![h, d.ffn_dim]);
        }
        e
    }

    pub fn from_tensors(config: MusicgenConfig, tensors: HashMap<String, Array>, source: &str) -> Result<Self> {
        Self::from_checkpoint(config, Checkpoint::dense(tensors), source)
    }

    /// From a checkpoint whose decoder matrices may be stored at any [`Precision`].
    pub fn from_checkpoint(config: MusicgenConfig, mut ck: Checkpoint, source: &str) -> Result<Self> {
        config.validate().map_err(|reason| Error::Config { path: source.into(), reason })?;
        let audio_keys: Vec<String> = ck.dense.keys().filter(|k| k.starts_with("audio_encoder.")).cloned().collect();
        let audio: HashMap<String, Array> = audio_keys.into_iter().filter_map(|k| ck.dense.remove(&k).map(|v| (k["audio_encoder.".len()..].to_string(), v))).collect();
        let codec = Encodec::from_tensors(config.audio_encoder.clone(), audio, &format!("{source} (audio_encoder.)"))?;
        Self::build(config, ck, codec, source)
    }

    fn build(config: MusicgenConfig, mut ck: Checkpoint, codec: Encodec, source: &str) -> Result<Self> {
        weights::check_shapes(source, &ck.shapes(), &Self::expected_weights(&config))?;
        // The text encoder stays float32.
        let text_keys: Vec<String> = ck.dense.keys().filter(|k| k.starts_with("text_encoder.")).cloned().collect();
        let mut w: HashMap<String, Array> = text_keys.into_iter().filter_map(|k| ck.dense.remove(&k).map(|v| (k, v))).map(|(k, v)| Ok((k, v.as_dtype(Dtype::Float32)?))).collect::<Result<_>>()?;
        let text = T5Encoder::take(config.text_encoder.clone(), &mut w, "text_encoder.")?;
        let ck = std::cell::RefCell::new(ck);
        let take = |k: String| ck.borrow_mut().take(&k);
        let take_weight = |k: String| ck.borrow_mut().take_weight(&k);
        let d = config.decoder.clone();
        let enc_to_dec = if config.text_encoder.d_model != d.hidden_size {
            Some(Linear::new(take("enc_to_dec_proj.weight".into())?, Some(take("enc_to_dec_proj.bias".into())?))?)
        } else {
            None
        };
        let p = "decoder.model.decoder";
        let embed = (0..d.num_codebooks).map(|k| take_weight(format!("{p}.embed_tokens.{k}.weight"))).collect::<Result<Vec<_>>>()?;
        let heads = (0..d.num_codebooks).map(|k| take_weight(format!("decoder.lm_heads.{k}.weight"))).collect::<Result<Vec<_>>>()?;
        let mut layers = Vec::new();
        for i in 0..d.num_hidden_layers {
            let l = format!("{p}.layers.{i}");
            let lin = |n: String| Linear::from_weight(take_weight(format!("{l}.{n}.weight"))?, None);
            let attn = |a: &str| -> Result<MultiHeadAttention> {
                Ok(MultiHeadAttention {
                    query: lin(format!("{a}.q_proj"))?,
                    key: lin(format!("{a}.k_proj"))?,
                    value: lin(format!("{a}.v_proj"))?,
                    out: lin(format!("{a}.out_proj"))?,
                    n_head: d.num_attention_heads,
                    kernel: AttentionKernel::Fused,
                })
            };
            let (sa, ca) = (attn("self_attn")?, attn("encoder_attn")?);
            let (fc1, fc2) = (lin("fc1".into())?, lin("fc2".into())?);
            let norm = |n: &str| -> Result<LayerNorm> { Ok(LayerNorm { weight: take(format!("{l}.{n}.weight"))?, bias: take(format!("{l}.{n}.bias"))? }) };
            layers.push(Layer { attn: sa, attn_ln: norm("self_attn_layer_norm")?, cross: ca, cross_ln: norm("encoder_attn_layer_norm")?, fc1, fc2, ff_ln: norm("final_layer_norm")? });
        }
        let final_ln = LayerNorm { weight: take(format!("{p}.layer_norm.weight"))?, bias: take(format!("{p}.layer_norm.bias"))? };
        let positions = sinusoids(d.max_position_embeddings, d.hidden_size);
        Ok(Self { config, text, enc_to_dec, embed, positions, layers, final_ln, heads, codec })
    }

    /// A model of `config`'s size with random weights (benchmarks).
    pub fn random(config: MusicgenConfig, seed: u64) -> Result<Self> {
        let t = weights::random_tensors(Self::expected_weights(&config), seed, |name| {
            if name.contains("layer_norm") && name.ends_with("weight") {
                weights::Init::Ones
            } else {
                weights::Init::Normal(0.02)
            }
        })?;
        let codec = Encodec::random(config.audio_encoder.clone(), seed + 1)?;
        config.validate().map_err(|reason| Error::Config { path: "random weights".into(), reason })?;
        Self::build(config, Checkpoint::dense(t), codec, &format!("random weights (seed {seed})"))
    }

    /// `config.json` + `model.safetensors` from a folder, at the precision it was saved.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let config = MusicgenConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        let source = path.display().to_string();
        let (tensors, meta) = weights::read_safetensors_with_metadata(&path)?;
        Self::from_checkpoint(config, Checkpoint::new(tensors, &meta, &source)?, &source)
    }

    /// The decoder's matrices with their checkpoint names: every linear layer, the codebook
    /// embeddings and the output heads.
    fn decoder_weights_mut(&mut self) -> Vec<(String, &mut Weight)> {
        let p = "decoder.model.decoder";
        let mut out: Vec<(String, &mut Weight)> = Vec::new();
        for (k, e) in self.embed.iter_mut().enumerate() {
            out.push((format!("{p}.embed_tokens.{k}.weight"), e));
        }
        for (k, h) in self.heads.iter_mut().enumerate() {
            out.push((format!("decoder.lm_heads.{k}.weight"), h));
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            let Layer { attn, cross, fc1, fc2, .. } = l;
            for (a, m) in [("self_attn", attn), ("encoder_attn", cross)] {
                out.extend(m.projections_mut().map(|(n, l)| (format!("{p}.layers.{i}.{a}.{n}.weight"), &mut l.weight)));
            }
            out.push((format!("{p}.layers.{i}.fc1.weight"), &mut fc1.weight));
            out.push((format!("{p}.layers.{i}.fc2.weight"), &mut fc2.weight));
        }
        out
    }

    /// Store the decoder's linear layers, codebook embeddings and heads at `precision`
    /// (quantization at load time). T5, the projection and EnCodec stay float32.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        for (_, w) in self.decoder_weights_mut() {
            w.check_convert(precision)?;
        }
        let mut arrays = Vec::new();
        for (_, w) in self.decoder_weights_mut() {
            w.convert(precision)?;
            arrays.extend(w.arrays().into_iter().cloned());
        }
        mlx_rs::transforms::eval(arrays.iter())?;
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.heads[0].precision()
    }

    /// Save the model at its precision as a checkpoint `load_dir` reads back: the tensors of
    /// `source` (the float checkpoint it was loaded from) with the decoder's matrices replaced
    /// by their stored form, and the precision in the metadata.
    pub fn save(&mut self, source: &Path, path: &Path) -> Result<()> {
        let precision = self.precision();
        let mut tensors = weights::read_safetensors(source)?;
        let mut out: Vec<(String, Array)> = Vec::new();
        for (name, w) in self.decoder_weights_mut() {
            if tensors.remove(&name).is_none() {
                return Err(Error::Weights { path: source.display().to_string(), reason: format!("{name} is not in the source checkpoint") });
            }
            out.extend(save_parts(&name, w));
        }
        out.extend(tensors);
        weights::save_safetensors(path, &out, &[(PRECISION_KEY, &precision.to_string())])
    }

    /// Text states for the decoder, with the classifier-free-guidance batch appended when
    /// `guidance` is set: zero states, fully masked (HF's "null" conditioning).
    pub fn condition(&self, ids: &Array, mask: &Array, guidance: bool) -> Result<Conditioning> {
        let mut states = self.text.forward(ids, Some(mask))?;
        if let Some(p) = &self.enc_to_dec {
            states = p.forward(&states)?;
        }
        let mut mask = mask.as_dtype(Dtype::Float32)?;
        if guidance {
            states = ops::concatenate(&[states.clone(), ops::zeros_like(&states)?], 0)?;
            mask = ops::concatenate(&[mask.clone(), ops::zeros_like(&mask)?], 0)?;
        }
        let s = mask.shape().to_vec();
        let additive = ops::subtract(mlx_rs::array!(1.0f32), &mask)?.multiply(mlx_rs::array!(f32::MIN))?.reshape(&[s[0], 1, 1, s[1]])?;
        Ok(Conditioning { states, mask: additive })
    }

    /// Fresh decoder state for up to `steps` positions (a preallocated cache is sized to it).
    pub fn new_state(&self, opts: &DecodeOptions, steps: usize) -> DecodeState {
        let max = (steps as i32).clamp(1, self.config.decoder.max_position_embeddings);
        DecodeState::new(self.layers.len(), opts, max)
    }

    /// Logits `[B, K, T, vocab]` for codes `[B, K, T]` following what `state` has seen.
    pub fn decode_step(&self, codes: &Array, cond: &Conditioning, state: &mut DecodeState) -> Result<Array> {
        let d = &self.config.decoder;
        let s = codes.shape();
        if s.len() != 3 || s[1] != d.num_codebooks {
            return Err(Error::InvalidArgument(format!("codes of shape {s:?}: expected [batch, {}, steps]", d.num_codebooks)));
        }
        let t = s[2];
        if state.offset() + t > d.max_position_embeddings {
            return Err(Error::InvalidArgument(format!("decoding past {} positions", d.max_position_embeddings)));
        }
        let mut h = self.positions.index(state.offset()..state.offset() + t);
        for (k, e) in self.embed.iter().enumerate() {
            h = e.rows(&codes.index((.., k as i32, ..)))?.add(&h)?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let (self_cache, cache) = state.layer(i);
            h = h.add(l.attn.self_attention(&l.attn_ln.forward(&h)?, Some(self_cache), Mask::Causal)?)?;
            h = h.add(l.cross.cross_attention_masked(&l.cross_ln.forward(&h)?, &cond.states, cache, Mask::Additive(&cond.mask))?)?;
            h = h.add(l.fc2.forward(&gelu(&l.fc1.forward(&l.ff_ln.forward(&h)?)?)?)?)?;
        }
        state.advance(t);
        let h = self.final_ln.forward(&h)?;
        let logits: Vec<Array> = self.heads.iter().map(|w| w.matmul_t(&h)).collect::<Result<_>>()?;
        Ok(ops::stack(&logits, 1)?)
    }

    /// Greedy generation of `steps` decoder steps as HF `generate(do_sample=False)`: the delay
    /// pattern (codebook `k` runs `k` steps behind the first), classifier-free guidance with
    /// scale `guidance` when above 1. Returns the codes `[B, K, steps + 1 - K]` with the delay
    /// undone.
    pub fn generate_greedy(&self, ids: &Array, mask: &Array, steps: usize, guidance: f32, opts: &DecodeOptions) -> Result<Array> {
        self.generate(ids, mask, steps, guidance, &Sampler::Greedy, opts, |_, _| {})
    }

    /// [`Self::generate_greedy`] with any [`Sampler`]; `progress(done, steps)` follows each
    /// evaluated step.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(&self, ids: &Array, mask: &Array, steps: usize, guidance: f32, sampler: &Sampler, opts: &DecodeOptions, progress: impl FnMut(usize, usize)) -> Result<Array> {
        let cond = self.condition(ids, mask, guidance > 1.0)?;
        self.generate_from(&cond, steps, guidance, sampler, opts, progress)
    }

    /// [`Self::generate`] from conditioning already computed (with the guidance batch
    /// appended when `guidance` is above 1).
    pub fn generate_from(&self, cond: &Conditioning, steps: usize, guidance: f32, sampler: &Sampler, opts: &DecodeOptions, mut progress: impl FnMut(usize, usize)) -> Result<Array> {
        let d = &self.config.decoder;
        let kb = d.num_codebooks;
        let total = steps as i32 + 1;
        if total < 2 * kb - 1 {
            return Err(Error::InvalidArgument(format!("{steps} steps: the delay pattern of {kb} codebooks needs at least {}", 2 * kb - 2)));
        }
        let cfg = guidance > 1.0;
        let rows = cond.states.shape()[0];
        let b = if cfg { rows / 2 } else { rows };
        let pad = d.pad_token_id;
        // Position t of codebook k is generated when k < t < k + total - kb + 1, else padding.
        let valid = |k: i32, t: i32| k < t && t < k + total - kb + 1;
        let mut state = self.new_state(opts, steps);
        let mut input = ops::full::<i32>(&[rows, kb, 1], mlx_rs::array!(pad))?;
        let mut columns: Vec<Array> = Vec::new();
        let every = opts.eval_every.max(1) as usize;
        for step in 0..steps {
            let logits = self.decode_step(&input, cond, &mut state)?.index((.., .., -1, ..)); // [rows, K, V]
            let logits = if cfg {
                let (c, u) = (logits.index(0..b), logits.index(b..));
                u.add(c.subtract(&u)?.multiply(mlx_rs::array!(guidance))?)?
            } else {
                logits
            };
            let next = sampler.pick(&logits, step)?; // [B, K]
            let t = step as i32 + 1;
            let keep: Vec<bool> = (0..kb).map(|k| valid(k, t)).collect();
            let next = ops::select(Array::from_slice(&keep, &[1, kb]), &next, mlx_rs::array!(pad))?;
            columns.push(next.clone());
            let col = next.reshape(&[b, kb, 1])?;
            input = if cfg { ops::concatenate(&[col.clone(), col], 0)? } else { col };
            if (step + 1) % every == 0 || step + 1 == steps {
                input.eval()?;
                progress(step + 1, steps);
            }
        }
        // Undo the delay: codebook k's frame f sits at step f + k (column f + k of the new ones).
        let all = ops::stack(&columns, 2)?; // [B, K, steps]
        let frames = total - kb;
        let per: Vec<Array> = (0..kb).map(|k| all.index((.., k..k + 1, k..k + frames))).collect();
        let codes = ops::concatenate(&per, 1)?;
        codes.eval()?;
        Ok(codes)
    }
}
