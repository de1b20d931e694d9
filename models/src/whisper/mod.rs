//! Whisper (HF `WhisperForConditionalGeneration`, weights under HF's names), tiny to
//! large-v3-turbo: the log-mel front end, the encoder, and a decoder whose three decode
//! optimizations from the seed are independent switches ([`DecodeOptions`]).
pub mod audio;
pub mod config;
pub mod ct2;
pub mod filters;
pub mod longform;
pub mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{ops, Array, Dtype};

pub use self::config::WhisperConfig;
pub use self::filters::{segments, LogitFilters, Segment, Timestamps};
use self::filters::TimestampState;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::nn::attention::{AttentionKernel, Mask, MultiHeadAttention};
use crate::nn::conv::conv_weight_from_torch;
use crate::nn::linear::{Linear, Weight};
use crate::nn::quant::{save_parts, Checkpoint, Precision, PRECISION_KEY};
use crate::nn::norm::LayerNorm;
use crate::nn::ops::gelu;
pub use crate::nn::decoder::{DecodeOptions, DecodeState};
use crate::weights::{self, Init};

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        self.fc2.forward(&gelu(&self.fc1.forward(x)?)?)
    }
}

struct EncoderLayer {
    attn: MultiHeadAttention,
    attn_ln: LayerNorm,
    mlp: Mlp,
    mlp_ln: LayerNorm,
}

struct DecoderLayer {
    attn: MultiHeadAttention,
    attn_ln: LayerNorm,
    cross: MultiHeadAttention,
    cross_ln: LayerNorm,
    mlp: Mlp,
    mlp_ln: LayerNorm,
}

pub struct Whisper {
    pub config: WhisperConfig,
    /// `[d, 3, n_mels]` and `[d, 3, d]` (MLX layout), with biases.
    conv1: (Array, Array),
    conv2: (Array, Array),
    enc_pos: Array,
    enc_layers: Vec<EncoderLayer>,
    enc_ln: LayerNorm,
    embed_tokens: Weight,
    dec_pos: Array,
    dec_layers: Vec<DecoderLayer>,
    dec_ln: LayerNorm,
}

/// Beam-search settings: beams, the most tokens to decode, and end-of-transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeamSearch {
    pub beam: usize,
    pub max_new: usize,
    pub eot: i32,
}

/// The result of a beam search: the chosen tokens (prompt and end-of-transcript excluded)
/// and its summed log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamResult {
    pub tokens: Vec<i32>,
    pub sum_logprob: f64,
}

impl Whisper {
    /// Every weight name (HF `save_pretrained` of `WhisperForConditionalGeneration`) and shape.
    pub fn expected_weights(c: &WhisperConfig) -> BTreeMap<String, Vec<i32>> {
        let d = c.d_model;
        let mut e = BTreeMap::new();
        let mut attn = |p: &str| {
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                e.insert(format!("{p}.{proj}.weight"), vec![d, d]);
                if proj != "k_proj" {
                    e.insert(format!("{p}.{proj}.bias"), vec![d]);
                }
            }
        };
        for i in 0..c.encoder_layers {
            attn(&format!("model.encoder.layers.{i}.self_attn"));
        }
        for i in 0..c.decoder_layers {
            attn(&format!("model.decoder.layers.{i}.self_attn"));
            attn(&format!("model.decoder.layers.{i}.encoder_attn"));
        }
        let mut ln = |p: String| {
            e.insert(format!("{p}.weight"), vec![d]);
            e.insert(format!("{p}.bias"), vec![d]);
        };
        for i in 0..c.encoder_layers {
            ln(format!("model.encoder.layers.{i}.self_attn_layer_norm"));
            ln(format!("model.encoder.layers.{i}.final_layer_norm"));
        }
        for i in 0..c.decoder_layers {
            ln(format!("model.decoder.layers.{i}.self_attn_layer_norm"));
            ln(format!("model.decoder.layers.{i}.encoder_attn_layer_norm"));
            ln(format!("model.decoder.layers.{i}.final_layer_norm"));
        }
        ln("model.encoder.layer_norm".into());
        ln("model.decoder.layer_norm".into());
        for (half, n, ffn) in [("encoder", c.encoder_layers, c.encoder_ffn_dim), ("decoder", c.decoder_layers, c.decoder_ffn_dim)] {
            for i in 0..n {
                e.insert(format!("model.{half}.layers.{i}.fc1.weight"), vec![ffn, d]);
                e.insert(format!("model.{half}.layers.{i}.fc1.bias"), vec![ffn]);
                e.insert(format!("model.{half}.layers.{i}.fc2.weight"), vec![d, ffn]);
                e.insert(format!("model.{half}.layers.{i}.fc2.bias"), vec![d]);
            }
        }
        e.insert("model.encoder.conv1.weight".into(), vec![d, c.num_mel_bins, 3]);
        e.insert("model.encoder.conv1.bias".into(), vec![d]);
        e.insert("model.encoder.conv2.weight".into(), vec![d, d, 3]);
        e.insert("model.encoder.conv2.bias".into(), vec![d]);
        e.insert("model.encoder.embed_positions.weight".into(), vec![c.max_source_positions, d]);
        e.insert("model.decoder.embed_positions.weight".into(), vec![c.max_target_positions, d]);
        e.insert("model.decoder.embed_tokens.weight".into(), vec![c.vocab_size, d]);
        e
    }

    /// Build from checkpoint tensors (`source` names them in errors). `proj_out.weight`, tied
    /// to the token embedding, is accepted when present and must equal its shape.
    pub fn from_tensors(config: WhisperConfig, tensors: HashMap<String, Array>, source: &str) -> Result<Self> {
        Self::from_checkpoint(config, Checkpoint::dense(tensors), source)
    }

    /// Build from a checkpoint whose matrices may be stored at any [`Precision`].
    pub fn from_checkpoint(config: WhisperConfig, mut ck: Checkpoint, source: &str) -> Result<Self> {
        config.validate().map_err(|reason| Error::Config { path: source.into(), reason })?;
        let mut expected = Self::expected_weights(&config);
        let shapes = ck.shapes();
        if shapes.contains_key("proj_out.weight") {
            expected.insert("proj_out.weight".into(), vec![config.vocab_size, config.d_model]);
        }
        weights::check_shapes(source, &shapes, &expected)?;
        let ck = &mut ck;
        fn lin(ck: &mut Checkpoint, p: &str, bias: bool) -> Result<Linear> {
            let weight = ck.take_weight(&format!("{p}.weight"))?;
            let b = if bias { Some(ck.take(&format!("{p}.bias"))?) } else { None };
            Linear::from_weight(weight, b)
        }
        let attn = |ck: &mut Checkpoint, p: &str, heads: i32| -> Result<MultiHeadAttention> {
            Ok(MultiHeadAttention {
                query: lin(ck, &format!("{p}.q_proj"), true)?,
                key: lin(ck, &format!("{p}.k_proj"), false)?,
                value: lin(ck, &format!("{p}.v_proj"), true)?,
                out: lin(ck, &format!("{p}.out_proj"), true)?,
                n_head: heads,
                kernel: AttentionKernel::Fused,
            })
        };
        let ln = |ck: &mut Checkpoint, p: &str| -> Result<LayerNorm> { Ok(LayerNorm { weight: ck.take(&format!("{p}.weight"))?, bias: ck.take(&format!("{p}.bias"))? }) };
        let mlp = |ck: &mut Checkpoint, p: &str| -> Result<Mlp> { Ok(Mlp { fc1: lin(ck, &format!("{p}.fc1"), true)?, fc2: lin(ck, &format!("{p}.fc2"), true)? }) };
        let c = &config;
        let mut enc_layers = Vec::new();
        for i in 0..c.encoder_layers {
            let p = format!("model.encoder.layers.{i}");
            enc_layers.push(EncoderLayer {
                attn: attn(ck, &format!("{p}.self_attn"), c.encoder_attention_heads)?,
                attn_ln: ln(ck, &format!("{p}.self_attn_layer_norm"))?,
                mlp: mlp(ck, &p)?,
                mlp_ln: ln(ck, &format!("{p}.final_layer_norm"))?,
            });
        }
        let mut dec_layers = Vec::new();
        for i in 0..c.decoder_layers {
            let p = format!("model.decoder.layers.{i}");
            dec_layers.push(DecoderLayer {
                attn: attn(ck, &format!("{p}.self_attn"), c.decoder_attention_heads)?,
                attn_ln: ln(ck, &format!("{p}.self_attn_layer_norm"))?,
                cross: attn(ck, &format!("{p}.encoder_attn"), c.decoder_attention_heads)?,
                cross_ln: ln(ck, &format!("{p}.encoder_attn_layer_norm"))?,
                mlp: mlp(ck, &p)?,
                mlp_ln: ln(ck, &format!("{p}.final_layer_norm"))?,
            });
        }
        let enc_ln = ln(ck, "model.encoder.layer_norm")?;
        let dec_ln = ln(ck, "model.decoder.layer_norm")?;
        let conv1 = (conv_weight_from_torch(&ck.take("model.encoder.conv1.weight")?)?, ck.take("model.encoder.conv1.bias")?);
        let conv2 = (conv_weight_from_torch(&ck.take("model.encoder.conv2.weight")?)?, ck.take("model.encoder.conv2.bias")?);
        let enc_pos = ck.take("model.encoder.embed_positions.weight")?;
        let dec_pos = ck.take("model.decoder.embed_positions.weight")?;
        let embed_tokens = ck.take_weight("model.decoder.embed_tokens.weight")?;
        let model = Self { config, conv1, conv2, enc_pos, enc_layers, enc_ln, embed_tokens, dec_pos, dec_layers, dec_ln };
        model.materialize()?;
        Ok(model)
    }

    /// Every linear layer, encoder then decoder, with its checkpoint name.
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.enc_layers.iter_mut().enumerate() {
            let p = format!("model.encoder.layers.{i}");
            let EncoderLayer { attn, mlp, .. } = l;
            out.extend(attn.projections_mut().map(|(n, l)| (format!("{p}.self_attn.{n}"), l)));
            out.push((format!("{p}.fc1"), &mut mlp.fc1));
            out.push((format!("{p}.fc2"), &mut mlp.fc2));
        }
        for (i, l) in self.dec_layers.iter_mut().enumerate() {
            let p = format!("model.decoder.layers.{i}");
            let DecoderLayer { attn, cross, mlp, .. } = l;
            for (name, a) in [("self_attn", attn), ("encoder_attn", cross)] {
                out.extend(a.projections_mut().map(|(n, l)| (format!("{p}.{name}.{n}"), l)));
            }
            out.push((format!("{p}.fc1"), &mut mlp.fc1));
            out.push((format!("{p}.fc2"), &mut mlp.fc2));
        }
        out
    }

    /// Store every linear and embedding matrix of the encoder and decoder at `precision`
    /// (quantization at load time). Convolutions, norms and positions stay float32.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        self.embed_tokens.check_convert(precision)?;
        for (_, l) in self.linears_mut() {
            l.weight.check_convert(precision)?;
        }
        for (_, l) in self.linears_mut() {
            l.weight.convert(precision)?;
        }
        self.embed_tokens.convert(precision)?;
        self.materialize()
    }

    /// The precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.embed_tokens.precision()
    }

    /// Write the model as a checkpoint `load_dir` reads back (HF names; quantized matrices as
    /// `X.weight` codes plus `X.scales` and `X.biases`; the precision in the metadata).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let precision = self.precision();
        let mut t: Vec<(String, Array)> = Vec::new();
        for (name, l) in self.linears_mut() {
            t.extend(save_parts(&format!("{name}.weight"), &l.weight));
            if let Some(b) = &l.bias {
                t.push((format!("{name}.bias"), b.clone()));
            }
        }
        t.extend(save_parts("model.decoder.embed_tokens.weight", &self.embed_tokens));
        let torch_conv = |w: &Array| -> Result<Array> { Ok(w.transpose_axes(&[0, 2, 1])?) };
        t.push(("model.encoder.conv1.weight".into(), torch_conv(&self.conv1.0)?));
        t.push(("model.encoder.conv1.bias".into(), self.conv1.1.clone()));
        t.push(("model.encoder.conv2.weight".into(), torch_conv(&self.conv2.0)?));
        t.push(("model.encoder.conv2.bias".into(), self.conv2.1.clone()));
        t.push(("model.encoder.embed_positions.weight".into(), self.enc_pos.clone()));
        t.push(("model.decoder.embed_positions.weight".into(), self.dec_pos.clone()));
        let mut norm = |p: String, n: &LayerNorm| {
            t.push((format!("{p}.weight"), n.weight.clone()));
            t.push((format!("{p}.bias"), n.bias.clone()));
        };
        for (i, l) in self.enc_layers.iter().enumerate() {
            norm(format!("model.encoder.layers.{i}.self_attn_layer_norm"), &l.attn_ln);
            norm(format!("model.encoder.layers.{i}.final_layer_norm"), &l.mlp_ln);
        }
        for (i, l) in self.dec_layers.iter().enumerate() {
            norm(format!("model.decoder.layers.{i}.self_attn_layer_norm"), &l.attn_ln);
            norm(format!("model.decoder.layers.{i}.encoder_attn_layer_norm"), &l.cross_ln);
            norm(format!("model.decoder.layers.{i}.final_layer_norm"), &l.mlp_ln);
        }
        norm("model.encoder.layer_norm".into(), &self.enc_ln);
        norm("model.decoder.layer_norm".into(), &self.dec_ln);
        weights::save_safetensors(path, &t, &[(PRECISION_KEY, &precision.to_string())])
    }

    fn materialize(&self) -> Result<()> {
        let mut a: Vec<&Array> = vec![&self.conv1.0, &self.conv2.0, &self.enc_pos, &self.dec_pos];
        a.extend(self.embed_tokens.arrays());
        fn lin(l: &MultiHeadAttention) -> Vec<&Array> {
            [&l.query, &l.key, &l.value, &l.out].iter().flat_map(|x| x.weight.arrays()).collect()
        }
        for l in &self.enc_layers {
            a.extend(lin(&l.attn));
            a.extend(l.mlp.fc1.weight.arrays().into_iter().chain(l.mlp.fc2.weight.arrays()));
        }
        for l in &self.dec_layers {
            a.extend(lin(&l.attn));
            a.extend(lin(&l.cross));
            a.extend(l.mlp.fc1.weight.arrays().into_iter().chain(l.mlp.fc2.weight.arrays()));
        }
        mlx_rs::transforms::eval(a)?;
        Ok(())
    }

    /// `config.json` + `model.safetensors` from a folder, at the precision it was saved.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let config = WhisperConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        let source = path.display().to_string();
        let (tensors, meta) = weights::read_safetensors_with_metadata(&path)?;
        Self::from_checkpoint(config, Checkpoint::new(tensors, &meta, &source)?, &source)
    }

    /// A model of `config`'s size with random weights (benchmarks).
    pub fn random(config: WhisperConfig, seed: u64) -> Result<Self> {
        let tensors = weights::random_tensors(Self::expected_weights(&config), seed, |name| {
            if name.contains("layer_norm") && name.ends_with("weight") {
                Init::Ones
            } else {
                Init::Normal(0.02)
            }
        })?;
        Self::from_tensors(config, tensors, &format!("random weights (seed {seed})"))
    }

    /// Switch every attention layer between the fused kernel and explicit softmax(QK^T)V.
    pub fn set_attention_kernel(&mut self, kernel: AttentionKernel) {
        for l in &mut self.enc_layers {
            l.attn.kernel = kernel;
        }
        for l in &mut self.dec_layers {
            l.attn.kernel = kernel;
            l.cross.kernel = kernel;
        }
    }

    /// Encoder output `[B, 1500, d]` for log-mel `[B, n_mels, 3000]` (or `[n_mels, 3000]`).
    pub fn encode(&self, mel: &Array) -> Result<Array> {
        let mel = if mel.ndim() == 2 { mel.reshape(&[1, mel.shape()[0], mel.shape()[1]])? } else { mel.clone() };
        let s = mel.shape();
        if s.len() != 3 || s[1] != self.config.num_mel_bins || s[2] != self.config.n_frames() {
            return Err(Error::InvalidArgument(format!(
                "mel of shape {s:?}: expected [batch, {}, {}]",
                self.config.num_mel_bins,
                self.config.n_frames()
            )));
        }
        let x = mel.transpose_axes(&[0, 2, 1])?;
        let x = gelu(&ops::conv1d(&x, &self.conv1.0, 1, 1, 1, 1)?.add(&self.conv1.1)?)?;
        let x = gelu(&ops::conv1d(&x, &self.conv2.0, 2, 1, 1, 1)?.add(&self.conv2.1)?)?;
        let mut h = x.add(&self.enc_pos)?;
        for l in &self.enc_layers {
            h = h.add(l.attn.self_attention(&l.attn_ln.forward(&h)?, None, Mask::None)?)?;
            h = h.add(l.mlp.forward(&l.mlp_ln.forward(&h)?)?)?;
        }
        self.enc_ln.forward(&h)
    }

    /// Fresh decoder state for one decode with `opts`.
    pub fn new_state(&self, opts: &DecodeOptions) -> DecodeState {
        DecodeState::new(self.dec_layers.len(), opts, self.config.max_target_positions)
    }

    /// Logits `[B, T, vocab]` for `tokens` `[B, T]` following what `state` has seen.
    pub fn decode_step(&self, tokens: &Array, audio: &Array, state: &mut DecodeState) -> Result<Array> {
        let t = tokens.shape()[1];
        if state.offset() + t > self.config.max_target_positions {
            return Err(Error::InvalidArgument(format!(
                "decoding past the text context: {} + {t} tokens > {}",
                state.offset(), self.config.max_target_positions
            )));
        }
        let pos = self.dec_pos.index(state.offset()..state.offset() + t);
        let mut h = self.embed_tokens.rows(tokens)?.add(&pos)?;
        for (i, l) in self.dec_layers.iter().enumerate() {
            let (self_cache, cache) = state.layer(i);
            h = h.add(l.attn.self_attention(&l.attn_ln.forward(&h)?, Some(self_cache), Mask::Causal)?)?;
            h = h.add(l.cross.cross_attention(&l.cross_ln.forward(&h)?, audio, cache)?)?;
            h = h.add(l.mlp.forward(&l.mlp_ln.forward(&h)?)?)?;
        }
        state.advance(t);
        let h = self.dec_ln.forward(&h)?;
        self.embed_tokens.matmul_t(&h)
    }

    /// Language detection as openai-whisper's `detect_language`: one decoder pass over
    /// `<|startoftranscript|>`, the most likely of the `language_ids`; returns it and its
    /// probability among them.
    pub fn detect_language(&self, audio: &Array, language_ids: &[i32]) -> Result<(i32, f32)> {
        if language_ids.is_empty() {
            return Err(Error::InvalidArgument("no language tokens to choose from".into()));
        }
        let mut state = self.new_state(&DecodeOptions::optimized());
        let sot = Array::from_slice(&[self.config.decoder_start_token_id], &[1, 1]);
        let logits = self.decode_step(&sot, &audio.index((0..1, .., ..)), &mut state)?.index((0, -1, ..));
        let ids = Array::from_slice(language_ids, &[language_ids.len() as i32]);
        let l = logits.take_axis(&ids, 0)?;
        let p = mlx_rs::ops::softmax_axis(&l, -1, true)?;
        let best = argmax_axis(&p, -1, false)?.item_cast::<i32>();
        Ok((language_ids[best as usize], p.index(best).item_cast::<f32>()))
    }

    /// Beam search as openai-whisper's `BeamSearchDecoder` (patience 1) and
    /// `MaximumLikelihoodRanker` (no length penalty) do it: the beams run as one batch through
    /// the caches (reordered as beams survive), each beam proposes its `beam + 1` best tokens,
    /// identical sequences merge, the best `beam` unfinished ones continue, and decoding ends
    /// once `beam` sequences have finished; the winner has the highest log-probability per
    /// token. `audio` is one clip, `[1, frames, d]`. The selection reads every step's scores,
    /// so `opts.eval_every` does not apply.
    pub fn beam_search(&self, audio: &Array, prompt: &[i32], search: &BeamSearch, opts: &DecodeOptions, filters: &LogitFilters) -> Result<BeamResult> {
        let BeamSearch { beam, max_new, eot } = *search;
        if beam < 1 {
            return Err(Error::InvalidArgument("beam size must be at least 1".into()));
        }
        if audio.shape()[0] != 1 {
            return Err(Error::InvalidArgument(format!("beam search takes one clip, got a batch of {}", audio.shape()[0])));
        }
        let filters = filters.compile(self.config.vocab_size)?;
        let b = beam as i32;
        let (mut input, room) = self.start(prompt, b)?;
        let audio = ops::broadcast_to(audio, &[b, audio.shape()[1], audio.shape()[2]])?;
        let mut state = self.new_state(opts);
        let mut seqs: Vec<Vec<i32>> = vec![prompt.to_vec(); beam];
        let mut sum_lp: Vec<f32> = vec![0.0; beam];
        let mut finished: Vec<(Vec<i32>, f64)> = Vec::new();
        for step in 0..max_new.min(room) {
            let ts_state = filters.timestamps.map(|ts| TimestampState::of(&ts, &seqs.iter().map(|s| &s[prompt.len()..]).collect::<Vec<_>>()));
            let last = filters.apply(self.decode_step(&input, &audio, &mut state)?.index((.., -1, ..)), step, ts_state.as_ref())?;
            let logprobs = last.subtract(&mlx_rs::ops::logsumexp_axis(&last, -1, true)?)?;
            // The best beam + 1 tokens of each beam, best first.
            let k = (beam + 1) as i32;
            let order = mlx_rs::ops::argsort_axis(&logprobs.negative()?, -1)?.index((.., ..k));
            let vals = logprobs.take_along_axis(&order, -1)?;
            mlx_rs::transforms::eval([&order, &vals])?;
            let (ids, lps) = (order.as_dtype(Dtype::Int32)?, vals);
            ids.eval()?;
            let (ids, lps) = (ids.as_slice::<i32>().to_vec(), lps.as_slice::<f32>().to_vec());
            // Candidates in insertion order; a repeated sequence keeps its first place and
            // takes the later score (a Python dict assignment).
            let mut cands: Vec<(Vec<i32>, f32, usize)> = Vec::new();
            for j in 0..beam {
                for c in 0..beam + 1 {
                    let (tok, lp) = (ids[j * (beam + 1) + c], lps[j * (beam + 1) + c]);
                    let mut s = seqs[j].clone();
                    s.push(tok);
                    let score = sum_lp[j] + lp;
                    match cands.iter_mut().find(|(q, _, _)| *q == s) {
                        Some(e) => {
                            e.1 = score;
                            e.2 = j;
                        }
                        None => cands.push((s, score, j)),
                    }
                }
            }
            let mut idx: Vec<usize> = (0..cands.len()).collect();
            idx.sort_by(|&x, &y| cands[y].1.total_cmp(&cands[x].1));
            let (mut next, mut next_lp, mut sources, mut newly) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for i in idx {
                let (s, score, src) = &cands[i];
                if s.last() == Some(&eot) {
                    newly.push((s.clone(), f64::from(*score)));
                } else {
                    next.push(s.clone());
                    next_lp.push(*score);
                    sources.push(*src as i32);
                    if next.len() == beam {
                        break;
                    }
                }
            }
            for (s, score) in newly {
                if finished.len() >= beam {
                    break;
                }
                match finished.iter_mut().find(|(q, _)| *q == s) {
                    Some(e) => e.1 = score,
                    None => finished.push((s, score)),
                }
            }
            if finished.len() >= beam || next.len() < beam {
                break;
            }
            let rows = Array::from_slice(&sources, &[b]);
            state.reorder(&rows)?;
            input = Array::from_slice(&next.iter().map(|s| s[s.len() - 1]).collect::<Vec<_>>(), &[b, 1]);
            seqs = next;
            sum_lp = next_lp;
        }
        if finished.len() < beam {
            // Not enough finished: the live beams, best first, end here.
            let mut order: Vec<usize> = (0..seqs.len()).collect();
            order.sort_by(|&x, &y| sum_lp[y].total_cmp(&sum_lp[x]));
            for j in order {
                if finished.len() >= beam {
                    break;
                }
                let mut s = seqs[j].clone();
                s.push(eot);
                if !finished.iter().any(|(q, _)| *q == s) {
                    finished.push((s, f64::from(sum_lp[j])));
                }
            }
        }
        let n = prompt.len();
        let body = |s: &Vec<i32>| -> Vec<i32> { s[n..].iter().take_while(|&&t| t != eot).copied().collect() };
        let mut best: Option<(f64, usize)> = None;
        for (i, (s, lp)) in finished.iter().enumerate() {
            let score = lp / body(s).len().max(1) as f64;
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, i));
            }
        }
        let (_, i) = best.ok_or_else(|| Error::InvalidArgument("beam search produced no sequence".into()))?;
        Ok(BeamResult { tokens: body(&finished[i].0), sum_logprob: finished[i].1 })
    }

    /// Check `prompt` and repeat it for `batch` rows; also the tokens left in the text
    /// context after it.
    fn start(&self, prompt: &[i32], batch: i32) -> Result<(Array, usize)> {
        if prompt.is_empty() {
            return Err(Error::InvalidArgument("the decoder prompt is empty".into()));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t < 0 || t >= self.config.vocab_size) {
            return Err(Error::InvalidArgument(format!("prompt token {bad} is outside the vocabulary of {}", self.config.vocab_size)));
        }
        let p = Array::from_slice(prompt, &[1, prompt.len() as i32]);
        let room = (self.config.max_target_positions as usize).saturating_sub(prompt.len());
        Ok((ops::broadcast_to(&p, &[batch, prompt.len() as i32])?, room))
    }

    /// Greedy decoding from `prompt` (e.g. the start-of-transcript sequence) for at most
    /// `max_new` tokens, stopping after `eot` unless `None` (benchmarks force a fixed length).
    /// Returns the new tokens of each batch row (through the first `eot`).
    pub fn greedy(&self, audio: &Array, prompt: &[i32], max_new: usize, eot: Option<i32>, opts: &DecodeOptions) -> Result<Vec<Vec<i32>>> {
        self.greedy_with(audio, prompt, max_new, eot, opts, &LogitFilters::default())
    }

    /// [`Self::greedy`] with openai-whisper's logit filters (suppressed tokens, timestamp rules).
    pub fn greedy_with(&self, audio: &Array, prompt: &[i32], max_new: usize, eot: Option<i32>, opts: &DecodeOptions, filters: &LogitFilters) -> Result<Vec<Vec<i32>>> {
        let filters = filters.compile(self.config.vocab_size)?;
        let b = audio.shape()[0];
        let mut ts_state = filters.timestamp_state(b)?;
        let (mut input, room) = self.start(prompt, b)?;
        let max_new = max_new.min(room);
        let mut state = self.new_state(opts);
        let mut pending: Vec<Array> = Vec::new();
        let mut out: Vec<Vec<i32>> = vec![Vec::new(); b as usize];
        let mut done = vec![false; b as usize];
        let every = opts.eval_every.max(1) as usize;
        for step in 0..max_new {
            let last = filters.apply(self.decode_step(&input, audio, &mut state)?.index((.., -1, ..)), step, ts_state.as_ref())?;
            let next = argmax_axis(&last, -1, false)?.as_dtype(Dtype::Int32)?;
            if let (Some(st), Some(ts)) = (&mut ts_state, &filters.timestamps) {
                st.push(ts, &next)?;
            }
            input = next.reshape(&[b, 1])?;
            pending.push(next);
            if (step + 1) % every == 0 || step + 1 == max_new {
                let stacked = ops::stack(&pending, 1)?;
                // Evaluating the tokens evaluates everything they depend on, caches included.
                stacked.eval()?;
                let n = pending.len();
                let vals = stacked.as_slice::<i32>().to_vec();
                pending.clear();
                for (r, row) in out.iter_mut().enumerate() {
                    for &tok in &vals[r * n..(r + 1) * n] {
                        if !done[r] {
                            row.push(tok);
                            done[r] = eot == Some(tok);
                        }
                    }
                }
                if eot.is_some() && done.iter().all(|&d| d) {
                    break;
                }
            }
        }
        Ok(out)
    }
}
