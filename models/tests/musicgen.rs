//! MusicGen against HF `MusicgenForConditionalGeneration` on the committed fixtures
//! (`fixtures/make_fixtures.py --model musicgen`): T5 states, teacher-forced logits, and greedy
//! generation with classifier-free guidance (codes exact, audio through our EnCodec), in both
//! variants and at every combination of the decode switches.
use models::nn::attention::AttentionKernel;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;
use models::checkpoint::Checkpointed;
use models::musicgen::{Conditioning, DecodeOptions, MusicGen, Sampler};
use models::nn::kv_cache::KvCacheKind;
use models::weights;
use models::Variant;

mod common;
use common::fixture;

fn max_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>()
}

/// Within the manifest's float tolerance (atol 1e-4, rtol 1e-3).
fn assert_close(name: &str, got: &Array, want: &Array) {
    let tol = want.abs().unwrap().multiply(mlx_rs::array!(1e-3f32)).unwrap().add(mlx_rs::array!(1e-4f32)).unwrap();
    let over = got.subtract(want).unwrap().abs().unwrap().subtract(&tol).unwrap().max(None).unwrap().item_cast::<f32>();
    assert!(over <= 0.0, "{name}: max |diff| {} beyond tolerance", max_diff(got, want));
}

/// Guidance's null half (zero states, masked whole) and an unpadded prompt need no
/// cross-attention mask: the unmasked decode gives the masked one's logits; a padded prompt
/// keeps the mask.
#[test]
fn an_idle_cross_attention_mask_is_skipped_with_the_same_logits() {
    let dir = fixture("musicgen-s0");
    let model = MusicGen::load_dir(&dir).unwrap();
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let ids = inputs["input_ids"].as_dtype(mlx_rs::Dtype::Int32).unwrap().index((0..1, ..));
    let ones = mlx_rs::ops::ones::<i32>(ids.shape()).unwrap();
    let mut cond = model.condition(&ids, &ones, true).unwrap();
    assert!(!cond.cross_mask, "an unpadded prompt with guidance needs no mask");
    let k = model.config.decoder.num_codebooks;
    let codes = mlx_rs::ops::zeros::<i32>(&[2, k, 3]).unwrap();
    for v in [Variant::Naive, Variant::Optimized] {
        let opts = DecodeOptions::for_variant(v);
        let run = |c: &Conditioning| model.decode_step(&codes, c, &mut model.new_state(&opts, 3)).unwrap();
        let unmasked = run(&cond);
        cond.cross_mask = true;
        let masked = run(&cond);
        cond.cross_mask = false;
        assert!(max_diff(&unmasked, &masked) < 1e-5, "{v:?}: {}", max_diff(&unmasked, &masked));
    }
    let mut padded = ones.as_slice::<i32>().to_vec();
    *padded.last_mut().unwrap() = 0;
    let padded = Array::from_slice(&padded, ids.shape());
    assert!(model.condition(&ids, &padded, true).unwrap().cross_mask, "a padded prompt keeps its mask");
}

#[test]
fn musicgen_matches_hf_on_both_seeds() {
    for seed in ["musicgen-s0", "musicgen-s1"] {
        let dir = fixture(seed);
        let model = MusicGen::load_dir(&dir).unwrap();
        let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
        let outputs = weights::read_safetensors(&dir.join("outputs.safetensors")).unwrap();
        let ids = inputs["input_ids"].as_dtype(mlx_rs::Dtype::Int32).unwrap();
        let mask = &inputs["attention_mask"];
        assert_close(&format!("{seed} text.states"), &model.text.forward(&ids, Some(mask)).unwrap(), &outputs["text.states"]);
        // Teacher-forced logits: [B*K, T] ids, [B*K, T, V] logits in HF's layout.
        let dec = inputs["decoder_input_ids"].as_dtype(mlx_rs::Dtype::Int32).unwrap();
        let k = model.config.decoder.num_codebooks;
        let t = dec.shape()[1];
        let b = dec.shape()[0] / k;
        for v in [Variant::Naive, Variant::Optimized] {
            let opts = DecodeOptions::for_variant(v);
            let cond = model.condition(&ids, mask, false).unwrap();
            let mut state = model.new_state(&opts, t as usize);
            let logits = model.decode_step(&dec.reshape(&[b, k, t]).unwrap(), &cond, &mut state).unwrap();
            let logits = logits.reshape(&[b * k, t, -1]).unwrap();
            assert_close(&format!("{seed} {v:?} logits"), &logits, &outputs["logits"]);
        }
        let want = outputs["generate.codes"].as_dtype(mlx_rs::Dtype::Int32).unwrap();
        let steps = (want.shape()[2] + k - 1) as usize;
        for kv_cache in [KvCacheKind::Concat, KvCacheKind::Preallocated] {
            for cache_cross in [false, true] {
                for (eval_every, kernel) in [(1, AttentionKernel::Explicit), (8, AttentionKernel::Fused)] {
                    let opts = DecodeOptions { kv_cache, cache_cross, eval_every, kernel, fixed_step: false, fused_layer: false, overlap: false };
                    let codes = model.generate_greedy(&ids, mask, steps, 3.0, &opts).unwrap();
                    assert_eq!(codes.as_slice::<i32>(), want.as_slice::<i32>(), "{seed} {opts:?}: codes differ from HF generate");
                }
            }
        }
        // The compiled fixed-shape step, alone and with the rest; overlapped evaluation (the
        // GPU's default, every step there) with the rest on the CPU too, per interval and per step.
        let overlapped = |eval_every| DecodeOptions { overlap: true, eval_every, ..DecodeOptions::optimized() };
        for opts in [DecodeOptions { fixed_step: true, ..DecodeOptions::naive() }, DecodeOptions { fixed_step: true, ..DecodeOptions::optimized() }, overlapped(8), overlapped(1)] {
            let codes = model.generate_greedy(&ids, mask, steps, 3.0, &opts).unwrap();
            assert_eq!(codes.as_slice::<i32>(), want.as_slice::<i32>(), "{seed} {opts:?}: codes differ from HF generate");
        }
        // Teacher-forced by the reference's codes, each step's choice is still the reference's.
        let forced = model.generate_forced(&ids, mask, steps, 3.0, &DecodeOptions::optimized(), &want).unwrap();
        assert_eq!(forced.as_slice::<i32>(), want.as_slice::<i32>(), "{seed}: teacher-forced codes differ");
        // Guidance matters: without it the codes differ.
        let plain = model.generate_greedy(&ids, mask, steps, 1.0, &DecodeOptions::optimized()).unwrap();
        assert_ne!(plain.as_slice::<i32>(), want.as_slice::<i32>(), "{seed}: guidance changed nothing");
        for v in [Variant::Naive, Variant::Optimized] {
            let audio = model.codec.decode(&want, v).unwrap();
            assert_close(&format!("{seed} {v:?} audio"), &audio, &outputs["generate.audio"]);
        }
    }
}

/// Sampling: top-k 1 is greedy whatever the temperature; a seed fixes the draws; other seeds
/// give other music; nonsense settings are refused by name.
#[test]
fn sampling_is_seeded_and_top_k_one_is_greedy() {
    let dir = fixture("musicgen-s0");
    let model = MusicGen::load_dir(&dir).unwrap();
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let ids = inputs["input_ids"].as_dtype(mlx_rs::Dtype::Int32).unwrap();
    let mask = &inputs["attention_mask"];
    let opts = DecodeOptions::optimized();
    let run = |s: Sampler| model.generate(&ids, mask, 20, 3.0, &s, &opts, |_, _| {}).unwrap().as_slice::<i32>().to_vec();
    let greedy = model.generate_greedy(&ids, mask, 20, 3.0, &opts).unwrap().as_slice::<i32>().to_vec();
    assert_eq!(run(Sampler::TopK { top_k: 1, temperature: 0.7, seed: 3 }), greedy);
    let a = run(Sampler::musicgen(1));
    assert_eq!(a, run(Sampler::musicgen(1)), "the same seed must give the same codes");
    assert_ne!(a, run(Sampler::musicgen(2)), "another seed should give other codes");
    assert_ne!(a, greedy);
    assert!(a.iter().all(|&c| (0..2048).contains(&c)), "codes outside the codebook");
    let mut calls = Vec::new();
    model.generate(&ids, mask, 20, 3.0, &Sampler::Greedy, &DecodeOptions { eval_every: 8, ..opts }, |d, t| calls.push((d, t))).unwrap();
    assert_eq!(calls, vec![(8, 20), (16, 20), (20, 20)]);
    // Overlapped evaluation reports each interval once it is done, and draws the same codes.
    let overlapped = DecodeOptions { eval_every: 8, overlap: true, ..opts };
    calls.clear();
    let drawn = model.generate(&ids, mask, 20, 3.0, &Sampler::musicgen(1), &overlapped, |d, t| calls.push((d, t))).unwrap();
    assert_eq!(calls, vec![(8, 20), (16, 20), (20, 20)]);
    assert_eq!(drawn.as_slice::<i32>(), &a[..], "overlapped evaluation changed the seeded draws");
    let e = model.generate(&ids, mask, 20, 3.0, &Sampler::TopK { top_k: 250, temperature: 0.0, seed: 1 }, &opts, |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("temperature"), "{e}");
    let e = model.generate_greedy(&ids, mask, 3, 3.0, &opts).unwrap_err().to_string();
    assert!(e.contains("delay pattern"), "{e}");
}

/// Precision: the decoder at fp16/int8/int4 tracks fp32 (more loss at fewer bits), and a saved
/// quantized model loads back bit-identical and smaller.
#[test]
fn quantized_decoder_saves_loads_and_tracks_fp32() {
    use models::nn::quant::Precision;
    let dir = fixture("musicgen-s1");
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let ids = inputs["input_ids"].as_dtype(mlx_rs::Dtype::Int32).unwrap();
    let mask = &inputs["attention_mask"];
    let dec = inputs["decoder_input_ids"].as_dtype(mlx_rs::Dtype::Int32).unwrap();
    let (k, t) = (4, dec.shape()[1]);
    let codes = dec.reshape(&[dec.shape()[0] / k, k, t]).unwrap();
    let logits = |m: &MusicGen| {
        let cond = m.condition(&ids, mask, false).unwrap();
        let mut st = m.new_state(&DecodeOptions::optimized(), t as usize);
        let l = m.decode_step(&codes, &cond, &mut st).unwrap();
        l.eval().unwrap();
        l
    };
    let reference = logits(&MusicGen::load_dir(&dir).unwrap());
    let range = reference.abs().unwrap().max(None).unwrap().item_cast::<f32>();
    let tmp = tempfile::tempdir().unwrap();
    let mut errs = Vec::new();
    // The fixture's decoder is 32 wide: groups of 32.
    for p in ["fp16", "int8/g32", "int4/g32"] {
        let p: Precision = p.parse().unwrap();
        let m = MusicGen::load_dir_as(&dir, Some(p)).unwrap();
        assert_eq!(m.precision(), p);
        let got = logits(&m);
        errs.push(got.subtract(&reference).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>() / range);
        let out = tmp.path().join(p.to_string().replace('/', "-"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
        MusicGen::convert_checkpoint(&dir, p, &out.join("model.safetensors")).unwrap();
        let back = MusicGen::load_dir(&out).unwrap();
        assert_eq!(back.precision(), p);
        assert_eq!(logits(&back).subtract(&got).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>(), 0.0, "{p}: reloaded model differs");
    }
    assert!(errs[0] < errs[1] && errs[1] < errs[2], "{errs:?}");
    assert!(errs[0] < 5e-3 && errs[1] < 0.05, "{errs:?}");
    let size = |p: &str| std::fs::metadata(tmp.path().join(p).join("model.safetensors")).unwrap().len();
    assert!(size("int4-g32") < size("int8-g32") && size("int8-g32") < size("fp16"));
    // Groups must divide the rows: the default 64 does not fit a 32-wide decoder.
    let e = MusicGen::load_dir_as(&dir, Some("int8".parse().unwrap())).err().unwrap().to_string();
    assert!(e.contains("groups of 64"), "{e}");
}
