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
        // (No round-trip check: `_spec` drops the Nyquist bin and the edge frames, so demucs'
        // own `_ispec(_spec(x))` is not `x` either; the model learns around it.)
    }
    assert!(stft.spec(&mlx_rs::ops::zeros::<f32>(&[2, 0]).unwrap()).is_err());
    assert!(Stft::new(4094).is_err());
}
