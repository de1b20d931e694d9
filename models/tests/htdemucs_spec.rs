//! HTDemucs' STFT and iSTFT against demucs 4.1.0's `_spec` / `_ispec`
//! (`fixtures/htdemucs/make_spec_fixture.py`): lengths of a whole number of hops, not, and
//! shorter than one hop (demucs' zero-extended reflect padding).
use std::path::Path;

use mlx_rs::Array;
use models::htdemucs::spec::Stft;
use models::weights;

fn assert_close(name: &str, got: &Array, want: &Array) {
    assert_eq!(got.shape(), want.shape(), "{name}");
    let tol = want.abs().unwrap().multiply(mlx_rs::array!(1e-3f32)).unwrap().add(mlx_rs::array!(1e-4f32)).unwrap();
    let diff = got.subtract(want).unwrap().abs().unwrap();
    let over = diff.subtract(&tol).unwrap().max(None).unwrap().item_cast::<f32>();
    assert!(over <= 0.0, "{name}: max |diff| {}", diff.max(None).unwrap().item_cast::<f32>());
}

#[test]
fn spec_and_ispec_match_demucs() {
    let t = weights::read_safetensors(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/htdemucs/spec.safetensors")).unwrap();
    let stft = Stft::new(4096).unwrap();
    for n in [8000, 4096, 700] {
        let (re, im) = stft.spec(&t[&format!("x{n}")]).unwrap();
        assert_close(&format!("spec{n}.re"), &re, &t[&format!("spec{n}.re")]);
        assert_close(&format!("spec{n}.im"), &im, &t[&format!("spec{n}.im")]);
        let out = stft.ispec(&t[&format!("ispec{n}.re")], &t[&format!("ispec{n}.im")], n).unwrap();
        assert_close(&format!("ispec{n}.out"), &out, &t[&format!("ispec{n}.out")]);
        // The host inverse of the same spectrogram laid out as HTDemucs' channels-last
        // decoder output, [1, T, F, 2 N] with real and imaginary parts interleaved, scaled by
        // 2 and offset by 0.5 (so the inputs are halved and shifted back first).
        let (re, im) = (&t[&format!("ispec{n}.re")], &t[&format!("ispec{n}.im")]);
        let s = re.shape().to_vec();
        let (f, frames) = (s[s.len() - 2], s[s.len() - 1]);
        let flat = |a: &Array| a.reshape(&[-1, f, frames]).unwrap().transpose_axes(&[2, 1, 0]).unwrap();
        let cl = mlx_rs::ops::stack(&[flat(re), flat(im)], 3).unwrap().reshape(&[1, frames, f, -1]).unwrap();
        let cl = cl.subtract(mlx_rs::array!(0.5f32)).unwrap().divide(mlx_rs::array!(2f32)).unwrap();
        let host = stft.ispec_interleaved(&cl, &mlx_rs::array!([2f32]), &mlx_rs::array!([0.5f32]), n).unwrap();
        assert_close(&format!("ispec{n}.host"), &host.reshape(out.shape()).unwrap(), &t[&format!("ispec{n}.out")]);
        // (No round-trip check: `_spec` drops the Nyquist bin and the edge frames, so demucs'
        // own `_ispec(_spec(x))` is not `x` either; the model learns around it.)
    }
    assert!(stft.spec(&mlx_rs::ops::zeros::<f32>(&[2, 0]).unwrap()).is_err());
    // The host inverse refuses another bin count, an odd channel count, too few scales.
    let one = mlx_rs::array!([1f32]);
    assert!(stft.ispec_interleaved(&mlx_rs::ops::zeros::<f32>(&[1, 4, 2047, 2]).unwrap(), &one, &one, 100).is_err());
    assert!(stft.ispec_interleaved(&mlx_rs::ops::zeros::<f32>(&[1, 4, 2048, 3]).unwrap(), &one, &one, 100).is_err());
    assert!(stft.ispec_interleaved(&mlx_rs::ops::zeros::<f32>(&[2, 4, 2048, 2]).unwrap(), &one, &one, 100).is_err());
    assert!(Stft::new(4094).is_err());
}
