//! The host quantized product inside a real decoder (its own test binary: the host kernels'
//! size threshold is process-wide): a quantized Whisper's logits with the host kernels forced on
//! against MLX's own `quantized_matmul`, and the compiled fixed-shape step traced while they are
//! on (the trace must hold MLX's ops, since a host kernel cannot evaluate the trace's
//! placeholders).
use mlx_rs::Array;
use models::checkpoint::Checkpointed;
use models::nn::attention::AttentionKernel;
use models::nn::host;
use models::nn::quant::Precision;
use models::weights;
use models::whisper::{audio::LogMel, DecodeOptions, Whisper};

mod common;
use common::fixture;

#[test]
fn quantized_whisper_decodes_the_same_with_the_host_product() {
    let dir = fixture("whisper-s1");
    let inputs = weights::read_safetensors(&dir.join("inputs.safetensors")).unwrap();
    let mel = LogMel::new(80).unwrap().compute(&inputs["audio"]).unwrap();
    let ids = inputs["decoder_input_ids"].as_dtype(mlx_rs::Dtype::Int32).unwrap();
    for p in ["int8", "int4/g32"] {
        let p: Precision = p.parse().unwrap();
        let model = Whisper::load_dir_as(&dir, Some(p)).unwrap();
        let run = |min: usize| -> (Array, Vec<Vec<i32>>) {
            host::set_min_elements(min);
            let enc = model.encode(&mel, AttentionKernel::Fused).unwrap();
            let mut st = model.new_state(&DecodeOptions::optimized());
            let logits = model.decode_step(&ids, &enc, &mut st).unwrap();
            logits.eval().unwrap();
            let start = [model.config.decoder_start_token_id];
            let tokens = model.greedy(&enc, &start, 12, None, &DecodeOptions { fixed_step: true, ..DecodeOptions::optimized() }).unwrap();
            (logits, tokens)
        };
        let (mlx_logits, mlx_tokens) = run(usize::MAX);
        let (host_logits, host_tokens) = run(0);
        host::set_min_elements(host::MIN_ELEMENTS);
        let range = mlx_logits.abs().unwrap().max(None).unwrap().item_cast::<f32>();
        let diff = host_logits.subtract(&mlx_logits).unwrap().abs().unwrap().max(None).unwrap().item_cast::<f32>();
        assert!(range > 0.1 && range.is_finite(), "{p}: logits range {range}");
        // The two products differ only in the order of float32 additions.
        assert!(diff <= 1e-5 * range, "{p}: host product logits {diff} from MLX's (range {range})");
        assert_eq!(host_tokens[0].len(), 12, "{p}");
        assert_eq!(host_tokens, mlx_tokens, "{p}: greedy tokens with the compiled step");
    }
}
