//! Safetensors files. The header is validated here before MLX reads the file, so a corrupt or
//! truncated file gets an error that says what is wrong instead of a crash (the strict check of
//! names and shapes against a model is [`crate::checkpoint::Store::finish`]'s).
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use mlx_rs::Array;

use crate::error::{Error, Result};

/// Upper bound on a header's size: 100 MB, as the safetensors format itself limits it.
const MAX_HEADER: u64 = 100_000_000;

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Weights { path: path.display().to_string(), reason: reason.into() }
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" => 1,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F32" | "I32" | "U32" => 4,
        "F64" | "I64" | "U64" => 8,
        _ => return None,
    })
}

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub offsets: (u64, u64),
}

/// Parse and check a safetensors header against the file length: known dtypes, sizes that
/// match shapes, offsets inside the data, no overlaps.
pub fn parse_header(path: &Path, bytes_head: &[u8], file_len: u64) -> Result<BTreeMap<String, TensorInfo>> {
    if file_len < 8 || bytes_head.len() < 8 {
        return Err(bad(path, format!("{file_len} bytes is too short for a safetensors file (truncated?)")));
    }
    let n = u64::from_le_bytes(bytes_head[..8].try_into().map_err(|_| bad(path, "unreadable header length"))?);
    if n > MAX_HEADER || 8 + n > file_len {
        return Err(bad(path, format!("header length {n} does not fit in a file of {file_len} bytes (truncated or not safetensors)")));
    }
    let header_bytes = bytes_head.get(8..8 + n as usize).ok_or_else(|| bad(path, "header cut short"))?;
    let value: serde_json::Value = serde_json::from_slice(header_bytes).map_err(|e| bad(path, format!("header is not valid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| bad(path, "header is not a JSON object"))?;
    let data_len = file_len - 8 - n;
    let mut out = BTreeMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let e = |what: &str| bad(path, format!("tensor '{name}': {what}"));
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| e("no dtype"))?;
        let size = dtype_size(dtype).ok_or_else(|| e(&format!("unsupported dtype {dtype}")))?;
        let shape: Vec<u64> =
            entry.get("shape").and_then(|s| s.as_array()).ok_or_else(|| e("no shape"))?.iter().map(|d| d.as_u64().ok_or_else(|| e("shape holds a non-integer"))).collect::<Result<_>>()?;
        let offs = entry.get("data_offsets").and_then(|o| o.as_array()).ok_or_else(|| e("no data_offsets"))?;
        let (start, end) = match offs.as_slice() {
            [a, b] => (a.as_u64().ok_or_else(|| e("bad data_offsets"))?, b.as_u64().ok_or_else(|| e("bad data_offsets"))?),
            _ => return Err(e("data_offsets must be [start, end]")),
        };
        let elems = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(|| e("shape overflows"))?;
        let want = elems.checked_mul(size).ok_or_else(|| e("size overflows"))?;
        if end < start || end - start != want {
            return Err(e(&format!("data_offsets [{start}, {end}] hold {} bytes, shape {shape:?} of {dtype} needs {want}", end.saturating_sub(start))));
        }
        if end > data_len {
            return Err(e(&format!("data ends at byte {end} but the file has {data_len} data bytes (truncated)")));
        }
        out.insert(name.clone(), TensorInfo { dtype: dtype.to_string(), shape, offsets: (start, end) });
    }
    let mut spans: Vec<(u64, u64, &String)> = out.iter().map(|(k, t)| (t.offsets.0, t.offsets.1, k)).collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(path, format!("tensors '{}' and '{}' overlap", w[0].2, w[1].2)));
        }
    }
    Ok(out)
}

/// Read a safetensors file after validating its header.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Array>> {
    let meta = std::fs::metadata(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let mut f = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot open: {e}")))?;
    let mut len_bytes = [0u8; 8];
    std::io::Read::read_exact(&mut f, &mut len_bytes).map_err(|_| bad(path, format!("{} bytes is too short for a safetensors file", meta.len())))?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER || 8 + n > meta.len() {
        return Err(bad(path, format!("header length {n} does not fit in a file of {} bytes (truncated or not safetensors)", meta.len())));
    }
    let mut head = vec![0u8; 8 + n as usize];
    head[..8].copy_from_slice(&len_bytes);
    std::io::Read::read_exact(&mut f, &mut head[8..]).map_err(|e| bad(path, format!("reading the header: {e}")))?;
    parse_header(path, &head, meta.len())?;
    Array::load_safetensors(path).map_err(|e| bad(path, format!("MLX could not load it: {e}")))
}

/// [`read_safetensors`] plus the header's string metadata (`__metadata__`).
pub fn read_safetensors_with_metadata(path: &Path) -> Result<(HashMap<String, Array>, HashMap<String, String>)> {
    let tensors = read_safetensors(path)?;
    let (_, meta) = Array::load_safetensors_with_metadata(path).map_err(|e| bad(path, format!("MLX could not load it: {e}")))?;
    Ok((tensors, meta))
}

/// Write `tensors` with string `metadata` to `path` as safetensors, atomically (a temporary
/// file in the same folder, then a rename), so a failed write never leaves half a checkpoint.
pub fn save_safetensors(path: &Path, tensors: &[(String, Array)], metadata: &[(&str, &str)]) -> Result<()> {
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "weights".into());
    // A name of this process and call: two runs writing beside each other never collide.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}.safetensors", std::process::id()));
    let result = Array::save_safetensors(tensors.iter().map(|(k, v)| (k.as_str(), v)), &meta, &tmp)
        .map_err(|e| bad(path, format!("cannot write: {e}")))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| bad(path, format!("cannot move the written file into place: {e}"))));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn parse(bytes: &[u8]) -> Result<BTreeMap<String, TensorInfo>> {
        parse_header(Path::new("t.safetensors"), bytes, bytes.len() as u64)
    }

    #[test]
    fn valid_header_parses() {
        let b = file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"x":"y"}}"#, &[0; 8]);
        let h = parse(&b).unwrap();
        assert_eq!(h["a"].shape, vec![2]);
    }

    #[test]
    fn corrupt_headers_are_named() {
        let cases = [
            (file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]), "needs 12"),
            (file(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0; 8]), "truncated"),
            (file(r#"{"a":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]), "unsupported dtype"),
            (file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, &[0; 8]), "overlap"),
            (file("{not json", &[]), "not valid JSON"),
            (b"\xff\xff\xff\xff\x00\x00\x00\x00{}".to_vec(), "does not fit"),
            (b"abc".to_vec(), "too short"),
        ];
        for (bytes, want) in cases {
            let err = parse(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "expected '{want}' in: {err}");
        }
    }

    #[test]
    fn truncated_file_on_disk_is_refused_before_mlx_reads_it() {
        let dir = std::env::temp_dir().join(format!("weights-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w.safetensors");
        let full = file(r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &1.5f32.to_le_bytes().repeat(4));
        std::fs::write(&p, &full).unwrap();
        let ok = read_safetensors(&p).unwrap();
        assert_eq!(ok["a"].as_slice::<f32>(), &[1.5; 4]);
        std::fs::write(&p, &full[..full.len() - 5]).unwrap();
        let err = read_safetensors(&p).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("w.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
