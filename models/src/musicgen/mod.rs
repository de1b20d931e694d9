//! MusicGen (HF `MusicgenForConditionalGeneration`, weights under its names): a T5 text
//! encoder, a decoder over `K` parallel codebooks with the delay pattern, classifier-free
//! guidance, and EnCodec to turn codes into audio. Decoding has the seed's switches
//! ([`DecodeOptions`]): the KV cache kind, cross-attention K/V cached or recomputed, and the
//! eval interval.
pub mod chroma;
pub mod config;
pub mod t5;

use std::path::Path;

use mlx_rs::ops::indexing::{argmax_axis, IndexOp};
use mlx_rs::{ops, Array, Dtype};

pub use self::config::MusicgenConfig;
use self::t5::T5Encoder;
use crate::checkpoint::{transformer_init, Checkpointed, Init, Vars};
use crate::encodec::Encodec;
use crate::error::{Error, Result};
use crate::nn::attention::Mask;
use crate::nn::decoder::DecoderLayer;
pub use crate::nn::decoder::{DecodeOptions, DecodeState};
use crate::nn::linear::{Linear, Weight};
use crate::nn::norm::LayerNorm;
use crate::nn::quant::Precision;
use crate::Variant;

pub struct MusicGen {
    pub config: MusicgenConfig,
    pub text: T5Encoder,
    /// T5 width to decoder width, when they differ.
    enc_to_dec: Option<Linear>,
    /// MusicGen Melody: chroma to decoder width (when they differ), chroma bins, prefix length.
    melody: Option<(Option<Linear>, i32, i32)>,
    embed: Vec<Weight>,
    /// Sinusoidal positions `[max_positions, d]`.
    positions: Array,
    layers: Vec<DecoderLayer>,
    final_ln: LayerNorm,
    heads: Vec<Weight>,
    pub codec: Encodec,
}

/// Text conditioning ready for the decoder: projected states `[B, S, d]` and the additive
/// cross-attention mask `[B, 1, 1, S]`; or for MusicGen Melody (`prefix`) the sequence the
/// decoder's own tokens follow (chroma, then text; the mask unused).
pub struct Conditioning {
    pub states: Array,
    pub mask: Array,
    pub prefix: bool,
    /// Whether the cross-attention needs the mask at all (see [`Conditioning::new`]).
    pub cross_mask: bool,
}

impl Conditioning {
    /// Conditioning over `states` under the additive `mask` (`[B, 1, 1, S]`, 0 or `f32::MIN`).
    /// The mask changes nothing when every row is either unmasked or masked whole over states
    /// that are all zero (guidance's null half, as HF builds it): the keys of such a row are
    /// all zero (the cross-attention's key projection has no bias), so its scores are equal
    /// with or without the mask and its weights uniform either way. Then the cross-attention
    /// runs unmasked, which lets a GPU use MLX's fused vector attention (one kernel a layer
    /// where the masked form takes five).
    pub fn new(states: Array, mask: Array, prefix: bool) -> Result<Self> {
        let cross_mask = prefix || Self::mask_needed(&states, &mask)?;
        Ok(Self { states, mask, prefix, cross_mask })
    }

    fn mask_needed(states: &Array, mask: &Array) -> Result<bool> {
        let (ms, ss) = (mask.shape().to_vec(), states.shape().to_vec());
        if ms.len() != 4 || ss.len() != 3 || ms[0] != ss[0] || ms[1] != 1 || ms[2] != 1 || ms[3] != ss[1] {
            return Ok(true);
        }
        let m = mask.as_dtype(Dtype::Float32)?;
        let (b, s) = (ms[0] as usize, ms[3] as usize);
        let m = m.as_slice::<f32>();
        for r in 0..b {
            let row = &m[r * s..(r + 1) * s];
            if row.iter().all(|&x| x == 0.0) {
                continue;
            }
            let zero_states = states.index(r as i32).abs()?.max(None)?.item_cast::<f32>() == 0.0;
            if row.iter().all(|&x| x == f32::MIN) && zero_states {
                continue;
            }
            return Ok(true);
        }
        Ok(false)
    }
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

/// What [`MusicGen::generate_audio`] makes: how many seconds, with which guidance scale and
/// sampler, on which path.
#[derive(Debug, Clone)]
pub struct AudioRequest {
    pub seconds: f64,
    /// Classifier-free guidance scale (1 = none).
    pub guidance: f32,
    pub sampler: Sampler,
    pub variant: Variant,
    /// MusicGen Melody: the melody's chroma `[1, frames, num_chroma]` (see [`chroma`]).
    pub chroma: Option<Array>,
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
    /// The decode options of MusicGen's generation for `v`: [`DecodeOptions::for_variant`],
    /// except that with overlapped evaluation (the optimized path on a GPU) every step is
    /// started as soon as it is built. Nothing on the host waits for the codes, so the device
    /// never waits for a whole interval to be built: on the H200, MusicGen medium's 500 guided
    /// steps took 2.367 s this way against 2.492 s evaluating every 8 steps (overlapped both).
    pub fn decode_options(v: Variant) -> DecodeOptions {
        let o = DecodeOptions::for_variant(v);
        if o.overlap {
            DecodeOptions { eval_every: 1, ..o }
        } else {
            o
        }
    }

    pub fn precision(&self) -> Precision {
        self.heads[0].precision()
    }

    /// Text states for the decoder, with the classifier-free-guidance batch appended when
    /// `guidance` is set: zero states, fully masked (HF's "null" conditioning).
    pub fn condition(&self, ids: &Array, mask: &Array, guidance: bool) -> Result<Conditioning> {
        self.condition_with(ids, mask, None, guidance)
    }

    /// Whether this is MusicGen Melody (conditioned on a melody's chroma as well as text).
    pub fn is_melody(&self) -> bool {
        self.melody.is_some()
    }

    /// [`Self::condition`] with a melody: `chroma` `[B, frames, num_chroma]` (see
    /// [`chroma::ChromaExtractor`]) for MusicGen Melody, as HF's generate prepares it: the text
    /// states masked, the chroma (or, without one, a constant first bin) projected and repeated
    /// or cut to `chroma_length` frames, then chroma before text; the guidance half has zero
    /// text and the constant chroma. Models without melody refuse a chroma.
    pub fn condition_with(&self, ids: &Array, mask: &Array, chroma: Option<&Array>, guidance: bool) -> Result<Conditioning> {
        let mut states = self.text.forward(ids, Some(mask))?;
        if let Some(p) = &self.enc_to_dec {
            states = p.forward(&states)?;
        }
        let mut mask = mask.as_dtype(Dtype::Float32)?;
        if guidance {
            states = ops::concatenate(&[states.clone(), ops::zeros_like(&states)?], 0)?;
            mask = ops::concatenate(&[mask.clone(), ops::zeros_like(&mask)?], 0)?;
        }
        let Some((proj, bins, length)) = &self.melody else {
            if chroma.is_some() {
                return Err(Error::InvalidArgument("a melody was given, but this MusicGen has no melody conditioning (use facebook/musicgen-melody)".into()));
            }
            let s = mask.shape().to_vec();
            let additive = ops::subtract(mlx_rs::array!(1.0f32), &mask)?.multiply(mlx_rs::array!(f32::MIN))?.reshape(&[s[0], 1, 1, s[1]])?;
            return Conditioning::new(states, additive, false);
        };
        let b = ids.shape()[0];
        let text = states.multiply(mask.expand_dims(-1)?)?;
        // The null melody: all energy in the first bin.
        let null = |frames: i32| -> Result<Array> {
            let mut v = vec![0f32; (b * frames * bins) as usize];
            v.iter_mut().step_by(*bins as usize).for_each(|x| *x = 1.0);
            Ok(Array::from_slice(&v, &[b, frames, *bins]))
        };
        let audio = match chroma {
            Some(c) => {
                if c.ndim() != 3 || c.shape()[0] != b || c.shape()[2] != *bins || c.shape()[1] < 1 {
                    return Err(Error::InvalidArgument(format!("chroma of shape {:?}: expected [{b}, frames >= 1, {bins}]", c.shape())));
                }
                c.as_dtype(Dtype::Float32)?
            }
            None => null(1)?,
        };
        let audio = if guidance { ops::concatenate(&[audio.clone(), null(audio.shape()[1])?], 0)? } else { audio };
        let audio = match proj {
            Some(p) => p.forward(&audio)?,
            None => audio,
        };
        let frames = audio.shape()[1];
        let repeats = (*length + frames - 1) / frames;
        let audio = if repeats > 1 { ops::tile(&audio, &[1, repeats, 1])? } else { audio };
        let audio = audio.index((.., ..*length, ..));
        let states = ops::concatenate(&[audio, text], 1)?;
        Conditioning::new(states, mask, true)
    }

    /// Fresh decoder state for up to `steps` positions (a preallocated cache is sized to it).
    pub fn new_state(&self, opts: &DecodeOptions, steps: usize) -> DecodeState {
        let max = (steps as i32).clamp(1, self.config.decoder.max_position_embeddings);
        DecodeState::new(self.layers.len(), opts, max)
    }

    /// [`Self::new_state`] for decoding after `cond`, whose prefix (MusicGen Melody) takes
    /// positions too.
    pub fn new_state_for(&self, cond: &Conditioning, opts: &DecodeOptions, steps: usize) -> DecodeState {
        let extra = if cond.prefix { cond.states.shape()[1] as usize } else { 0 };
        self.new_state(opts, steps + extra)
    }

    /// Logits `[B, K, T, vocab]` for codes `[B, K, T]` following what `state` has seen.
    pub fn decode_step(&self, codes: &Array, cond: &Conditioning, state: &mut DecodeState) -> Result<Array> {
        let d = &self.config.decoder;
        let s = codes.shape();
        if s.len() != 3 || s[1] != d.num_codebooks {
            return Err(Error::InvalidArgument(format!("codes of shape {s:?}: expected [batch, {}, steps]", d.num_codebooks)));
        }
        let t = s[2];
        // MusicGen Melody: the first step runs the conditioning prefix before the tokens.
        let prefix = if cond.prefix && state.offset() == 0 { Some(&cond.states) } else { None };
        let p = prefix.map_or(0, |x| x.shape()[1]);
        if state.offset() + p + t > d.max_position_embeddings {
            return Err(Error::InvalidArgument(format!("decoding past {} positions", d.max_position_embeddings)));
        }
        let mut h: Option<Array> = None;
        for (k, e) in self.embed.iter().enumerate() {
            let x = e.rows(&codes.index((.., k as i32, ..)))?;
            h = Some(match h {
                None => x,
                Some(h) => h.add(x)?,
            });
        }
        let mut h = h.ok_or_else(|| Error::InvalidArgument("no codebooks".into()))?;
        if let Some(x) = prefix {
            h = ops::concatenate(&[x.clone(), h], 1)?;
        }
        let h = h.add(self.positions.index(state.offset()..state.offset() + p + t))?;
        let mask = if cond.cross_mask { Mask::Additive(&cond.mask) } else { Mask::None };
        let h = state.forward_layers(&self.layers, &h, &cond.states, mask)?;
        let h = if p > 0 { h.index((.., p.., ..)) } else { h };
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

    /// The decode steps and audio frames `seconds` of audio take: one step per frame plus the
    /// delay pattern's `K - 1`. Refused past the decoder's positions, naming the longest length.
    pub fn steps_for(&self, seconds: f64) -> Result<(usize, usize)> {
        if !(seconds > 0.0 && seconds.is_finite()) {
            return Err(Error::InvalidArgument(format!("{seconds} s: the length must be a positive number of seconds")));
        }
        let rate = f64::from(self.codec.config.frame_rate());
        let kb = self.channel_codebooks() as usize;
        let frames = (seconds * rate).round().max(1.0) as usize;
        let steps = frames + kb - 1;
        let limit = self.config.decoder.max_position_embeddings as usize;
        if steps > limit {
            return Err(Error::InvalidArgument(format!("{seconds} s: {steps} decode steps exceed the decoder's {limit} positions (at most {:.1} s)", (limit + 1 - kb) as f64 / rate)));
        }
        Ok((steps, frames))
    }

    /// Audio channels (2 for the stereo checkpoints, whose codebooks interleave left and right).
    pub fn audio_channels(&self) -> i32 {
        self.config.decoder.audio_channels
    }

    /// Codebooks per channel: the length of the delay pattern.
    pub fn channel_codebooks(&self) -> i32 {
        self.config.decoder.num_codebooks / self.audio_channels()
    }

    /// Codebook `k`'s delay in steps: its index within its channel (left and right codebooks
    /// alternate, so stereo codebooks `2j` and `2j + 1` both run `j` steps behind).
    fn delay(&self, k: i32) -> i32 {
        k / self.audio_channels()
    }

    /// Audio `[B, channels, T * hop]` for codes `[B, K, T]`: EnCodec decodes each channel's
    /// codebooks (stereo: the even ones left, the odd ones right), as HF's `generate`.
    pub fn decode_audio(&self, codes: &Array, variant: Variant) -> Result<Array> {
        let c = self.audio_channels();
        if c == 1 {
            return self.codec.decode(codes, variant);
        }
        let k = codes.shape().get(1).copied().unwrap_or(0);
        let parts = (0..c)
            .map(|ch| {
                let idx: Vec<i32> = (ch..k).step_by(c as usize).collect();
                self.codec.decode(&codes.take_axis(Array::from_slice(&idx, &[idx.len() as i32]), 1)?, variant)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ops::concatenate(&parts, 1)?)
    }

    /// Text to audio as [`AudioRequest`] asks: one sample list per channel at the codec's rate
    /// for the prompt `ids`/`mask` (see [`tokenize_prompt`]), decoded by EnCodec and cut to
    /// length. `progress(step, steps)` follows the decode.
    pub fn generate_audio(&self, ids: &Array, mask: &Array, req: &AudioRequest, progress: impl FnMut(usize, usize)) -> Result<Vec<Vec<f32>>> {
        let (steps, frames) = self.steps_for(req.seconds)?;
        let cond = self.condition_with(ids, mask, req.chroma.as_ref(), req.guidance > 1.0)?;
        let codes = self.generate_from(&cond, steps, req.guidance, &req.sampler, &Self::decode_options(req.variant), progress)?;
        let audio = self.decode_audio(&codes, req.variant)?;
        let n = (frames as f64 * f64::from(self.codec.config.sampling_rate) / f64::from(self.codec.config.frame_rate())) as i32;
        let n = n.min(audio.shape()[2]);
        (0..audio.shape()[1])
            .map(|c| {
                let ch = audio.index((0, c, ..n)).contiguous()?;
                ch.eval()?;
                Ok(ch.as_slice::<f32>().to_vec())
            })
            .collect()
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
    pub fn generate_from(&self, cond: &Conditioning, steps: usize, guidance: f32, sampler: &Sampler, opts: &DecodeOptions, progress: impl FnMut(usize, usize)) -> Result<Array> {
        self.generate_inner(cond, (steps, guidance), sampler, opts, None, progress)
    }

    /// Greedy generation teacher-forced by `forced` codes (`[B, K, frames]`, delay undone, e.g.
    /// a reference's): each step's choice is ours, given the reference's earlier codes, so that
    /// a tie decided the other way at one step does not change every step after it.
    pub fn generate_forced(&self, ids: &Array, mask: &Array, steps: usize, guidance: f32, opts: &DecodeOptions, forced: &Array) -> Result<Array> {
        self.generate_forced_with(ids, mask, None, steps, guidance, opts, forced)
    }

    /// [`Self::generate_forced`] with a melody's `chroma` (MusicGen Melody).
    #[allow(clippy::too_many_arguments)]
    pub fn generate_forced_with(&self, ids: &Array, mask: &Array, chroma: Option<&Array>, steps: usize, guidance: f32, opts: &DecodeOptions, forced: &Array) -> Result<Array> {
        let cond = self.condition_with(ids, mask, chroma, guidance > 1.0)?;
        self.generate_inner(&cond, (steps, guidance), &Sampler::Greedy, opts, Some(forced), |_, _| {})
    }

    /// The generation loop: `(steps, guidance)`, choices by `sampler`, inputs from those
    /// choices or from `forced` codes.
    fn generate_inner(
        &self,
        cond: &Conditioning,
        (steps, guidance): (usize, f32),
        sampler: &Sampler,
        opts: &DecodeOptions,
        forced: Option<&Array>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Array> {
        let d = &self.config.decoder;
        let kb = d.num_codebooks;
        // The delay pattern runs over each channel's codebooks.
        let kc = self.channel_codebooks();
        let total = steps as i32 + 1;
        if total < 2 * kc - 1 {
            return Err(Error::InvalidArgument(format!("{steps} steps: the delay pattern of {kc} codebooks needs at least {}", 2 * kc - 2)));
        }
        let cfg = guidance > 1.0;
        let rows = cond.states.shape()[0];
        let b = if cfg { rows / 2 } else { rows };
        let pad = d.pad_token_id;
        // Position t of codebook k (delay d) is generated when d < t < d + total - kc + 1, else
        // padding.
        let valid = |k: i32, t: i32| self.delay(k) < t && t < self.delay(k) + total - kc + 1;
        let mut state = self.new_state_for(cond, opts, steps);
        let mut input = ops::full::<i32>(&[rows, kb, 1], mlx_rs::array!(pad))?;
        let mut columns: Vec<Array> = Vec::new();
        let every = opts.eval_every.max(1) as usize;
        // With `opts.overlap`: the interval being evaluated, and the steps it completes.
        let mut in_flight: Option<(Array, usize)> = None;
        let forced = match forced {
            Some(f) => {
                let want = [b, kb, total - kc];
                if f.shape() != want {
                    return Err(Error::InvalidArgument(format!("forced codes {:?}: expected {want:?}", f.shape())));
                }
                Some(f.as_dtype(Dtype::Int32)?)
            }
            None => None,
        };
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
            // The next input: our choice, or under teacher forcing the reference's (codebook
            // k's frame t - 1 - k, padding outside the delay pattern).
            let next = match &forced {
                Some(f) => {
                    let cols = (0..kb).map(|k| if valid(k, t) { Ok(f.index((.., k, t - 1 - self.delay(k)))) } else { Ok(ops::full::<i32>(&[b], mlx_rs::array!(pad))?) }).collect::<Result<Vec<_>>>()?;
                    ops::stack(&cols, 1)?
                }
                None => next,
            };
            let col = next.reshape(&[b, kb, 1])?;
            input = if cfg { ops::concatenate(&[col.clone(), col], 0)? } else { col };
            if (step + 1) % every == 0 || step + 1 == steps {
                if opts.overlap && step + 1 < steps {
                    // Start this interval, then wait for the one before it: the device runs
                    // this one while the host builds the next.
                    mlx_rs::transforms::async_eval([&input])?;
                    if let Some((prev, done)) = in_flight.replace((input.clone(), step + 1)) {
                        prev.eval()?;
                        progress(done, steps);
                    }
                } else {
                    input.eval()?;
                    if let Some((_, done)) = in_flight.take() {
                        progress(done, steps);
                    }
                    progress(step + 1, steps);
                }
                state.commit()?;
            }
        }
        // Undo the delay: codebook k's frame f sits at step f + delay(k).
        let all = ops::stack(&columns, 2)?; // [B, K, steps]
        let frames = total - kc;
        let per: Vec<Array> = (0..kb).map(|k| all.index((.., k..k + 1, self.delay(k)..self.delay(k) + frames))).collect();
        let codes = ops::concatenate(&per, 1)?;
        codes.eval()?;
        Ok(codes)
    }
}

impl Checkpointed for MusicGen {
    type Config = MusicgenConfig;

    /// HF `MusicgenForConditionalGeneration` names. The decoder's linear layers, codebook
    /// embeddings and heads are the matrices a precision applies to; T5, the projection and
    /// EnCodec (under `audio_encoder.`) stay float32.
    fn build(config: MusicgenConfig, vs: &Vars) -> Result<Self> {
        let text = T5Encoder::build(config.text_encoder.clone(), &vs.pp("text_encoder"))?;
        let codec = Encodec::build(config.audio_encoder.clone(), &vs.pp("audio_encoder"))?;
        let d = config.decoder.clone();
        let h = d.hidden_size;
        let enc_to_dec = if config.text_encoder.d_model != h { Some(vs.pp("enc_to_dec_proj").dense_linear(h, config.text_encoder.d_model, true)?) } else { None };
        let melody = if config.is_melody() {
            let bins = config.num_chroma.unwrap_or(12);
            let proj = if bins != h { Some(vs.pp("audio_enc_to_dec_proj").dense_linear(h, bins, true)?) } else { None };
            Some((proj, bins, config.chroma_length.unwrap_or(235)))
        } else {
            None
        };
        let dec = vs.pp("decoder.model.decoder");
        let embed = (0..d.num_codebooks).map(|k| dec.matrix(&format!("embed_tokens.{k}.weight"), [d.vocab_size + 1, h])).collect::<Result<Vec<_>>>()?;
        let cross = melody.is_none();
        let layers = (0..d.num_hidden_layers).map(|i| DecoderLayer::load_with(&dec.pp(format!("layers.{i}")), h, d.num_attention_heads, d.ffn_dim, false, cross)).collect::<Result<Vec<_>>>()?;
        let final_ln = LayerNorm::load(&dec.pp("layer_norm"), h)?;
        let heads = (0..d.num_codebooks).map(|k| vs.matrix(&format!("decoder.lm_heads.{k}.weight"), [d.vocab_size, h])).collect::<Result<Vec<_>>>()?;
        let positions = sinusoids(d.max_position_embeddings, h);
        Ok(Self { config, text, enc_to_dec, melody, embed, positions, layers, final_ln, heads, codec })
    }

    fn init(name: &str, shape: &[i32]) -> Init {
        match name.strip_prefix("audio_encoder.") {
            Some(rest) => Encodec::init(rest, shape),
            None => transformer_init(name, shape),
        }
    }
}
