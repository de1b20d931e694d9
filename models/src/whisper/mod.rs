//! Whisper (HF `WhisperForConditionalGeneration`, weights under HF's names), tiny to
//! large-v3-turbo: the log-mel front end, the encoder, and a decoder whose three decode
//! optimizations from the seed are independent switches ([`DecodeOptions`]).
pub mod audio;
pub mod config;
pub mod ct2;
pub mod filters;
pub mod longform;
pub mod seek;
pub mod timing;
pub mod tokenizer;
pub mod transcribe;

use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{ops, Array, Dtype};

pub use self::config::WhisperConfig;
use self::filters::TimestampState;
pub use self::filters::{segments, LogitFilters, Segment, Timestamps};
use crate::checkpoint::{transformer_init, Checkpointed, Init, Vars};
use crate::error::{Error, Result};
use crate::nn::attention::{AttentionKernel, Mask, MultiHeadAttention};
use crate::nn::conv::conv_weight_from_torch;
use crate::nn::decoder::DecoderLayer;
pub use crate::nn::decoder::{DecodeOptions, DecodeState};
use crate::nn::linear::{Linear, Weight};
use crate::nn::norm::LayerNorm;
use crate::nn::ops::gelu;
use crate::nn::quant::Precision;

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
    /// The decoder's output projection, tied to the token embedding (`proj_out.weight` is
    /// accepted when a checkpoint holds it, and must equal the embedding's shape).
    fn tied_head(vs: &Vars, c: &WhisperConfig) -> Result<()> {
        vs.optional("proj_out.weight", &[c.vocab_size, c.d_model])?;
        Ok(())
    }

    /// Store every linear and embedding matrix at `precision` by building a fresh model (see
    /// [`Checkpointed::load_dir_as`]); this reports the precision of the linear layers.
    pub fn precision(&self) -> Precision {
        self.embed_tokens.precision()
    }

    /// Encoder output `[B, 1500, d]` for log-mel `[B, n_mels, 3000]` (or `[n_mels, 3000]`),
    /// attention by `kernel`.
    pub fn encode(&self, mel: &Array, kernel: AttentionKernel) -> Result<Array> {
        let mel = if mel.ndim() == 2 { mel.reshape(&[1, mel.shape()[0], mel.shape()[1]])? } else { mel.clone() };
        let s = mel.shape();
        if s.len() != 3 || s[1] != self.config.num_mel_bins || s[2] != self.config.n_frames() {
            return Err(Error::InvalidArgument(format!("mel of shape {s:?}: expected [batch, {}, {}]", self.config.num_mel_bins, self.config.n_frames())));
        }
        let x = mel.transpose_axes(&[0, 2, 1])?;
        let x = gelu(&ops::conv1d(&x, &self.conv1.0, 1, 1, 1, 1)?.add(&self.conv1.1)?)?;
        let x = gelu(&ops::conv1d(&x, &self.conv2.0, 2, 1, 1, 1)?.add(&self.conv2.1)?)?;
        let mut h = x.add(&self.enc_pos)?;
        for l in &self.enc_layers {
            h = h.add(l.attn.self_attention(&l.attn_ln.forward(&h)?, None, Mask::None, kernel)?)?;
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
            return Err(Error::InvalidArgument(format!("decoding past the text context: {} + {t} tokens > {}", state.offset(), self.config.max_target_positions)));
        }
        let pos = self.dec_pos.index(state.offset()..state.offset() + t);
        let h = self.embed_tokens.rows(tokens)?.add(&pos)?;
        let h = state.forward_layers(&self.dec_layers, &h, audio, Mask::None)?;
        let h = self.dec_ln.forward(&h)?;
        self.embed_tokens.matmul_t(&h)
    }

    /// What word timestamps need from one uncached forward pass over `tokens` attending to
    /// `audio` (`[1, frames, d]`), as openai-whisper's `find_alignment` runs it: the
    /// cross-attention logits (queries times keys, scaled, before the softmax) of `heads`,
    /// `(layer, head)` in that order, `[heads, T, frames]`, and the logits `[T, vocab]`.
    pub fn alignment(&self, audio: &Array, tokens: &[i32], heads: &[(usize, usize)], kernel: AttentionKernel) -> Result<(Array, Array)> {
        let t = tokens.len();
        if t == 0 || t > self.config.max_target_positions as usize {
            return Err(Error::InvalidArgument(format!("{t} tokens to align: expected 1 to {}", self.config.max_target_positions)));
        }
        let n_head = self.config.decoder_attention_heads as usize;
        if let Some(&(l, h)) = heads.iter().find(|&&(l, h)| l >= self.dec_layers.len() || h >= n_head) {
            return Err(Error::InvalidArgument(format!("alignment head ({l}, {h}) is outside the decoder's {} layers of {n_head} heads", self.dec_layers.len())));
        }
        if heads.is_empty() {
            return Err(Error::InvalidArgument("no alignment heads".into()));
        }
        let ids = Array::from_slice(tokens, &[1, t as i32]);
        let mut h = self.embed_tokens.rows(&ids)?.add(self.dec_pos.index(0..t as i32))?;
        let mut picked = Vec::new();
        for (i, l) in self.dec_layers.iter().enumerate() {
            h = h.add(l.attn.self_attention(&l.attn_ln.forward(&h)?, None, Mask::Causal, kernel)?)?;
            if let Some((cross, ln)) = &l.cross {
                let x = ln.forward(&h)?;
                let want: Vec<i32> = heads.iter().filter(|&&(li, _)| li == i).map(|&(_, hh)| hh as i32).collect();
                if !want.is_empty() {
                    let q = cross.split_heads(&cross.query.forward(&x)?)?;
                    let k = cross.split_heads(&cross.key.forward(audio)?)?;
                    let scale = (self.config.d_model as f32 / n_head as f32).powf(-0.5);
                    let qk = q.matmul(&k.transpose_axes(&[0, 1, 3, 2])?)?.multiply(mlx_rs::array!(scale))?;
                    picked.push(qk.index(0).take_axis(Array::from_slice(&want, &[want.len() as i32]), 0)?);
                }
                h = h.add(cross.cross_attention(&x, audio, None, kernel)?)?;
            }
            h = h.add(l.fc2.forward(&gelu(&l.fc1.forward(&l.ff_ln.forward(&h)?)?)?)?)?;
        }
        let logits = self.embed_tokens.matmul_t(&self.dec_ln.forward(&h)?)?.index(0);
        Ok((ops::concatenate(&picked, 0)?, logits))
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
        if audio.shape()[0] != 1 {
            return Err(Error::InvalidArgument(format!("beam search takes one clip, got a batch of {}", audio.shape()[0])));
        }
        self.beam_search_batch(audio, prompt, search, opts, filters)?.pop().ok_or_else(|| Error::InvalidArgument("beam search produced no sequence".into()))
    }

    /// [`Self::beam_search`] of several clips at once (`audio` `[N, frames, d]`): their
    /// `N x beam` rows go through the decoder as one batch, each clip's beams chosen among its
    /// own candidates, so each result equals that clip's own search. A clip that has finished
    /// keeps its rows (unchanged) until every clip has, as openai-whisper's batched decoding
    /// does.
    pub fn beam_search_batch(&self, audio: &Array, prompt: &[i32], search: &BeamSearch, opts: &DecodeOptions, filters: &LogitFilters) -> Result<Vec<BeamResult>> {
        let BeamSearch { beam, max_new, eot } = *search;
        if beam < 1 {
            return Err(Error::InvalidArgument("beam size must be at least 1".into()));
        }
        let clips = audio.shape()[0] as usize;
        if clips == 0 {
            return Err(Error::InvalidArgument("beam search of no clips".into()));
        }
        let filters = filters.compile(self.config.vocab_size)?;
        let rows = (clips * beam) as i32;
        let (mut input, room) = self.start(prompt, rows)?;
        let s = audio.shape();
        // Each clip's encoding repeated for its beams, clip-major.
        let audio = ops::broadcast_to(audio.reshape(&[s[0], 1, s[1], s[2]])?, &[s[0], beam as i32, s[1], s[2]])?.reshape(&[rows, s[1], s[2]])?;
        let mut state = self.new_state(opts);
        let mut seqs: Vec<Vec<i32>> = vec![prompt.to_vec(); clips * beam];
        let mut sum_lp: Vec<f32> = vec![0.0; clips * beam];
        let mut finished: Vec<Vec<(Vec<i32>, f64)>> = vec![Vec::new(); clips];
        let mut done = vec![false; clips];
        for step in 0..max_new.min(room) {
            let ts_state = filters.timestamps.map(|ts| TimestampState::of(&ts, &seqs.iter().map(|s| &s[prompt.len()..]).collect::<Vec<_>>()));
            let last = filters.apply(self.decode_step(&input, &audio, &mut state)?.index((.., -1, ..)), step, ts_state.as_ref())?;
            let logprobs = last.subtract(&mlx_rs::ops::logsumexp_axis(&last, -1, true)?)?;
            // The best beam + 1 tokens of each row, best first.
            let k = (beam + 1) as i32;
            let order = mlx_rs::ops::argsort_axis(&logprobs.negative()?, -1)?.index((.., ..k));
            let vals = logprobs.take_along_axis(&order, -1)?;
            mlx_rs::transforms::eval([&order, &vals])?;
            state.commit()?;
            let (ids, lps) = (order.as_dtype(Dtype::Int32)?, vals);
            ids.eval()?;
            let (ids, lps) = (ids.as_slice::<i32>().to_vec(), lps.as_slice::<f32>().to_vec());
            let mut sources: Vec<i32> = (0..rows).collect();
            let mut next_seqs = seqs.clone();
            let mut next_sum = sum_lp.clone();
            for c in 0..clips {
                if done[c] {
                    continue;
                }
                // Candidates in insertion order; a repeated sequence keeps its first place and
                // takes the later score (a Python dict assignment).
                let mut cands: Vec<(Vec<i32>, f32, usize)> = Vec::new();
                for j in c * beam..(c + 1) * beam {
                    for q in 0..beam + 1 {
                        let (tok, lp) = (ids[j * (beam + 1) + q], lps[j * (beam + 1) + q]);
                        let mut s = seqs[j].clone();
                        s.push(tok);
                        let score = sum_lp[j] + lp;
                        match cands.iter_mut().find(|(x, _, _)| *x == s) {
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
                let (mut next, mut newly) = (Vec::new(), Vec::new());
                for i in idx {
                    let (s, score, src) = &cands[i];
                    if s.last() == Some(&eot) {
                        newly.push((s.clone(), f64::from(*score)));
                    } else {
                        next.push((s.clone(), *score, *src));
                        if next.len() == beam {
                            break;
                        }
                    }
                }
                let fin = &mut finished[c];
                for (s, score) in newly {
                    if fin.len() >= beam {
                        break;
                    }
                    match fin.iter_mut().find(|(q, _)| *q == s) {
                        Some(e) => e.1 = score,
                        None => fin.push((s, score)),
                    }
                }
                if fin.len() >= beam || next.len() < beam {
                    done[c] = true;
                    continue;
                }
                for (r, (s, score, src)) in next.into_iter().enumerate() {
                    let row = c * beam + r;
                    next_seqs[row] = s;
                    next_sum[row] = score;
                    sources[row] = src as i32;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            state.reorder(&Array::from_slice(&sources, &[rows]))?;
            input = Array::from_slice(&next_seqs.iter().map(|s| s[s.len() - 1]).collect::<Vec<_>>(), &[rows, 1]);
            seqs = next_seqs;
            sum_lp = next_sum;
        }
        let n = prompt.len();
        let body = |s: &Vec<i32>| -> Vec<i32> { s[n..].iter().take_while(|&&t| t != eot).copied().collect() };
        let mut out = Vec::with_capacity(clips);
        for (c, mut fin) in finished.into_iter().enumerate() {
            if fin.len() < beam {
                // Not enough finished: the live beams, best first, end here.
                let mut order: Vec<usize> = (c * beam..(c + 1) * beam).collect();
                order.sort_by(|&x, &y| sum_lp[y].total_cmp(&sum_lp[x]));
                for j in order {
                    if fin.len() >= beam {
                        break;
                    }
                    let mut s = seqs[j].clone();
                    s.push(eot);
                    if !fin.iter().any(|(q, _)| *q == s) {
                        fin.push((s, f64::from(sum_lp[j])));
                    }
                }
            }
            let mut best: Option<(f64, usize)> = None;
            for (i, (s, lp)) in fin.iter().enumerate() {
                let score = lp / body(s).len().max(1) as f64;
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, i));
                }
            }
            let (_, i) = best.ok_or_else(|| Error::InvalidArgument("beam search produced no sequence".into()))?;
            out.push(BeamResult { tokens: body(&fin[i].0), sum_logprob: fin[i].1 });
        }
        Ok(out)
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
        // The rows still in the batch, by their index in `out`: a row that reached the end of
        // transcript leaves the batch (its caches, encoder states and timestamp state with it),
        // so a batch's later steps cost what its unfinished clips need.
        let mut live: Vec<usize> = (0..b as usize).collect();
        let mut audio = audio.clone();
        let every = opts.eval_every.max(1) as usize;
        for step in 0..max_new {
            let last = filters.apply(self.decode_step(&input, &audio, &mut state)?.index((.., -1, ..)), step, ts_state.as_ref())?;
            let next = argmax_axis(&last, -1, false)?.as_dtype(Dtype::Int32)?;
            if let (Some(st), Some(ts)) = (&mut ts_state, &filters.timestamps) {
                st.push(ts, &next)?;
            }
            input = next.reshape(&[live.len() as i32, 1])?;
            pending.push(next);
            if (step + 1) % every == 0 || step + 1 == max_new {
                let stacked = ops::stack(&pending, 1)?;
                // Evaluating the tokens evaluates everything they depend on, caches included.
                stacked.eval()?;
                state.commit()?;
                let n = pending.len();
                let vals = stacked.as_slice::<i32>().to_vec();
                pending.clear();
                for (r, &row) in live.iter().enumerate() {
                    for &tok in &vals[r * n..(r + 1) * n] {
                        if !done[row] {
                            out[row].push(tok);
                            done[row] = eot == Some(tok);
                        }
                    }
                }
                if eot.is_some() && done.iter().all(|&d| d) {
                    break;
                }
                let keep: Vec<i32> = (0..live.len()).filter(|&r| !done[live[r]]).map(|r| r as i32).collect();
                if keep.len() < live.len() {
                    let rows = Array::from_slice(&keep, &[keep.len() as i32]);
                    state.keep_rows(&rows)?;
                    audio = audio.take_axis(&rows, 0)?;
                    input = input.take_axis(&rows, 0)?;
                    if let Some(st) = &mut ts_state {
                        st.keep_rows(&rows)?;
                    }
                    live = keep.iter().map(|&r| live[r as usize]).collect();
                }
            }
        }
        Ok(out)
    }
}

impl Checkpointed for Whisper {
    type Config = WhisperConfig;

    /// HF `save_pretrained` names of `WhisperForConditionalGeneration`. The linear layers and
    /// the token embedding are the matrices a precision applies to; convolutions, norms and
    /// positions stay float32.
    fn build(config: WhisperConfig, vs: &Vars) -> Result<Self> {
        let c = &config;
        let d = c.d_model;
        let mlp = |vs: &Vars, ffn: i32| -> Result<Mlp> { Ok(Mlp { fc1: vs.pp("fc1").linear(ffn, d, true)?, fc2: vs.pp("fc2").linear(d, ffn, true)? }) };
        let (enc, dec) = (vs.pp("model.encoder"), vs.pp("model.decoder"));
        let enc_layers = (0..c.encoder_layers)
            .map(|i| {
                let l = enc.pp(format!("layers.{i}"));
                Ok(EncoderLayer {
                    attn: MultiHeadAttention::load(&l.pp("self_attn"), d, c.encoder_attention_heads, true)?,
                    attn_ln: LayerNorm::load(&l.pp("self_attn_layer_norm"), d)?,
                    mlp: mlp(&l, c.encoder_ffn_dim)?,
                    mlp_ln: LayerNorm::load(&l.pp("final_layer_norm"), d)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec_layers = (0..c.decoder_layers).map(|i| DecoderLayer::load(&dec.pp(format!("layers.{i}")), d, c.decoder_attention_heads, c.decoder_ffn_dim, true)).collect::<Result<Vec<_>>>()?;
        let conv = |name: &str, cin: i32| -> Result<(Array, Array)> {
            let p = enc.pp(name);
            Ok((p.derived(conv_weight_from_torch(&p.tensor("weight", &[d, cin, 3])?)?), p.tensor("bias", &[d])?))
        };
        let (conv1, conv2) = (conv("conv1", c.num_mel_bins)?, conv("conv2", d)?);
        Self::tied_head(vs, c)?;
        let model = Self {
            conv1,
            conv2,
            enc_pos: enc.tensor("embed_positions.weight", &[c.max_source_positions, d])?,
            enc_layers,
            enc_ln: LayerNorm::load(&enc.pp("layer_norm"), d)?,
            embed_tokens: dec.matrix("embed_tokens.weight", [c.vocab_size, d])?,
            dec_pos: dec.tensor("embed_positions.weight", &[c.max_target_positions, d])?,
            dec_layers,
            dec_ln: LayerNorm::load(&dec.pp("layer_norm"), d)?,
            config,
        };
        Ok(model)
    }

    fn init(name: &str, shape: &[i32]) -> Init {
        transformer_init(name, shape)
    }
}
