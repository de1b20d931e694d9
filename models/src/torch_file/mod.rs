//! Files written by `torch.save` (PyTorch 1.6 and later): a zip archive holding `data.pkl`, the
//! pickled object, and one record per tensor storage under `data/`. The pickle is read by a
//! small interpreter that executes nothing ([`pickle`]); tensors become float32 arrays.
pub mod pickle;
pub mod zip;

use std::collections::HashMap;

use mlx_rs::Array;

use pickle::Dtype;
pub use pickle::{TensorRef, Value};

/// A `torch.save` file read: its pickled object and the storages its tensors view.
pub struct TorchFile {
    pub root: Value,
    storages: HashMap<String, Vec<u8>>,
}

impl TorchFile {
    /// Read `bytes`, allowing the classes in `classes` (`module.name`) to appear as values.
    pub fn read(bytes: &[u8], classes: &[&str]) -> Result<Self, String> {
        if bytes.starts_with(b"\x80") {
            return Err("a legacy (PyTorch before 1.6) pickle-only file; re-save it with a current torch.save".into());
        }
        let zip = zip::Zip::new(bytes)?;
        // The archive's one folder is named after the file it was saved as ("archive" for a buffer).
        let pkl = zip.names().find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).ok_or("a zip archive without <name>/data.pkl: not a torch.save file")?.to_string();
        let prefix = &pkl[..pkl.len() - "data.pkl".len()];
        if let Some(order) = zip.read(&format!("{prefix}byteorder")) {
            let order = order?;
            if order != b"little" {
                return Err(format!("byte order {:?}: only little-endian archives are read", String::from_utf8_lossy(order)));
            }
        }
        let data = zip.read(&pkl).ok_or("data.pkl vanished")??;
        let root = pickle::load(data, classes, pickle::torch_storage)?;
        let mut storages = HashMap::new();
        let mut missing = None;
        visit_tensors(&root, &mut |t| {
            if storages.contains_key(&t.storage.key) || missing.is_some() {
                return;
            }
            let name = format!("{prefix}data/{}", t.storage.key);
            match zip.read(&name) {
                Some(Ok(b)) => {
                    storages.insert(t.storage.key.clone(), b.to_vec());
                }
                Some(Err(e)) => missing = Some(e),
                None => missing = Some(format!("tensor storage {name} is not in the archive")),
            }
        });
        if let Some(e) = missing {
            return Err(e);
        }
        Ok(Self { root, storages })
    }

    /// The float32 array a tensor reference describes, checked against its storage.
    pub fn tensor(&self, t: &TensorRef) -> Result<Array, String> {
        let s = &t.storage;
        let bytes = self.storages.get(&s.key).ok_or_else(|| format!("storage {} was not read", s.key))?;
        if (bytes.len() as u64) != s.numel.saturating_mul(s.dtype.size() as u64) {
            return Err(format!("storage {} holds {} bytes, not {} elements of {:?}", s.key, bytes.len(), s.numel, s.dtype));
        }
        let shape: Vec<i32> = t.shape.iter().map(|&d| i32::try_from(d).map_err(|_| format!("a tensor dimension of {d}"))).collect::<Result<_, _>>()?;
        let count = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&c| c < (1 << 40)).ok_or("a tensor too large to hold")?;
        if count > 0 {
            let last = t.shape.iter().zip(&t.stride).try_fold(t.offset, |a, (&d, &st)| a.checked_add((d - 1).checked_mul(st)?)).ok_or("tensor strides overflow")?;
            if last >= s.numel {
                return Err(format!("a tensor of size {:?}, stride {:?} at offset {} reads past its storage of {} elements", t.shape, t.stride, t.offset, s.numel));
            }
        }
        let element = |i: u64| -> f32 {
            let b = &bytes[(i as usize) * s.dtype.size()..][..s.dtype.size()];
            match s.dtype {
                Dtype::F16 => f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
                Dtype::Bf16 => f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16),
                Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                Dtype::F64 => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32,
            }
        };
        // Row-major walk over the view (any strides).
        let mut out = Vec::with_capacity(count as usize);
        let mut index = vec![0u64; shape.len()];
        for _ in 0..count {
            out.push(element(t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<u64>()));
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(Array::from_slice(&out, &shape))
    }
}

/// Call `f` on every tensor below `v`.
pub fn visit_tensors(v: &Value, f: &mut impl FnMut(&TensorRef)) {
    match v {
        Value::Tensor(t) => f(t),
        Value::Tuple(items) => items.iter().for_each(|i| visit_tensors(i, f)),
        Value::List(items) => items.borrow().iter().for_each(|i| visit_tensors(i, f)),
        Value::Dict(d) => d.borrow().iter().for_each(|(k, v)| {
            visit_tensors(k, f);
            visit_tensors(v, f)
        }),
        _ => {}
    }
}

/// IEEE half to single precision.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((m << shift) & 0x3ff) << 13)
        }
        (31, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// A plain value as JSON (numbers, strings, lists, string-keyed dicts; a `Fraction` as its
/// float value); `None` for anything else (tensors, classes).
pub fn to_json(v: &Value) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => J::from(*f),
        Value::Str(s) => J::String(s.clone()),
        Value::Fraction(n, d) => J::from(*n as f64 / *d as f64),
        Value::Tuple(_) | Value::List(_) => J::Array(v.items()?.iter().map(to_json).collect::<Option<_>>()?),
        Value::Dict(d) => J::Object(
            d.borrow()
                .iter()
                .map(|(k, v)| match k {
                    Value::Str(k) => Some((k.clone(), to_json(v)?)),
                    _ => None,
                })
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        for (h, f) in [(0x3c00u16, 1.0f32), (0xc000, -2.0), (0x3555, 0.333_251_95), (0x0001, 5.960_464_5e-8), (0x7bff, 65504.0), (0x0000, 0.0)] {
            assert_eq!(f16_to_f32(h), f, "{h:#x}");
        }
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
    }
}
