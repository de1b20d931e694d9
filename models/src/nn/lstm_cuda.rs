//! One LSTM layer's whole recurrence as a single CUDA kernel, through MLX's custom-kernel API
//! (`mx.fast.cuda_kernel`): [`super::lstm::Recurrence::Fused`].
//!
//! The input projection of every step is one matmul before the kernel; the kernel runs the T
//! steps of `gates = xg[t] + h @ W_hh^T` and the cell update without returning to the host.
//! Each block owns `U` hidden units (their four gate rows) and keeps its slice of `W_hh^T` in
//! registers for the whole sequence; its threads split the dot products over `KSL` slices of the
//! hidden vector and add the parts in shared memory. After each step every block publishes its
//! units' `h` and raises its flag, then waits for every block's flag (a grid barrier) before
//! reading the full `h` back.
//!
//! A grid barrier needs every block resident at once: the kernel is launched only when its
//! blocks number at most the GPU's multiprocessors (one block of 256 threads always fits one),
//! which [`plan`] checks with the driver's count. Should a block still never arrive (a GPU
//! shared under MPS with a thread limit), the wait gives up after about two seconds and the
//! steps not computed come out NaN instead of the process hanging. Metal gives no such forward-progress
//! guarantee across threadgroups, so Apple GPUs keep the compiled wavefront.
use std::ffi::{c_char, CString};

use mlx_rs::{Array, Dtype, Stream};

use crate::error::{Error, Result};

/// Threads per block; every launch uses this many.
const THREADS: i32 = 256;
/// Batch rows one launch takes (shared memory holds `h` of each).
const MAX_BATCH: i32 = 8;
/// Shared memory one block may use without opting in to more (CUDA's static limit).
const SMEM_LIMIT: i32 = 48 * 1024;

const SOURCE: &str = r#"
  constexpr int ROWS = 4 * U;
  // About two seconds of waiting at one barrier (a step takes microseconds).
  constexpr long long SPIN_LIMIT = 4000000000LL;
  constexpr int HP = KSL * KS;
  extern __shared__ float smem[];
  float* hs = smem;
  float* part = smem + NB * HP;
  const int tid = threadIdx.x;
  const int rr = tid % ROWS, ks = tid / ROWS;
  const int u = rr % U, g = rr / U;
  const int j = blockIdx.x * U + u;
  const int k0 = ks * KS;
  const int T = xg_shape[0];
  float w[KS];
#pragma unroll
  for (int i = 0; i < KS; ++i) {
    const int k = k0 + i;
    w[i] = (PROBE != 3 && j < H && k < H) ? w_hh_t[(size_t)k * 4 * H + g * H + j] : 0.0f;
  }
  const int ob = tid / U, ou = tid % U, oj = blockIdx.x * U + ou;
  const bool owner = tid < NB * U && oj < H;
  float c = owner ? c0[ob * H + oj] : 0.0f;
  float h = owner ? h0[ob * H + oj] : 0.0f;
  bool stalled = false;
  int t = 0;
  for (; t < T; ++t) {
    for (int idx = tid; idx < NB * HP; idx += blockDim.x) {
      const int bb = idx / HP, k = idx % HP;
      float v = 0.0f;
      if (k < H) {
        v = (t == 0) ? h0[bb * H + k] : __ldcg(&y[((size_t)(t - 1) * NB + bb) * H + k]);
      }
      hs[idx] = v;
    }
    __syncthreads();
    if (PROBE != 2) {
#pragma unroll
      for (int bb = 0; bb < NB; ++bb) {
        const float* hb = hs + bb * HP + k0;
        float acc = 0.0f;
#pragma unroll
        for (int i = 0; i < KS; ++i) {
          const int k = k0 + i;
          const float wi = (PROBE == 3) ? ((j < H && k < H) ? __ldg(&w_hh_t[(size_t)k * 4 * H + g * H + j]) : 0.0f) : w[i];
          acc = fmaf(wi, hb[i], acc);
        }
        part[(ks * NB + bb) * ROWS + rr] = acc;
      }
    }
    __syncthreads();
    if (owner) {
      float gate[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        float s = xg[((size_t)t * NB + ob) * 4 * H + q * H + oj];
        for (int p = 0; p < KSL; ++p) {
          s += part[(p * NB + ob) * ROWS + q * U + ou];
        }
        gate[q] = s;
      }
      const float ig = 1.0f / (1.0f + expf(-gate[0]));
      const float fg = 1.0f / (1.0f + expf(-gate[1]));
      const float gg = tanhf(gate[2]);
      const float og = 1.0f / (1.0f + expf(-gate[3]));
      c = fg * c + ig * gg;
      h = og * tanhf(c);
      __stcg(&y[((size_t)t * NB + ob) * H + oj], h);
      __threadfence();
    }
    __syncthreads();
    // Grid barrier: each block raises its own flag to t + 1; thread i waits for block i's
    // (no read-modify-write on a shared counter, so no contention between the pollers).
    if (t + 1 < T && PROBE != 1) {
      if (tid == 0) {
        *(volatile int*)(sync + blockIdx.x) = t + 1;
      }
      for (int b = tid; b < gridDim.x; b += blockDim.x) {
        const long long start = clock64();
        while (*(volatile int*)(sync + b) < t + 1) {
          if (clock64() - start > SPIN_LIMIT) {
            stalled = true;
            break;
          }
        }
      }
      __threadfence();
      stalled = __syncthreads_or(stalled);
      if (stalled) {
        break;
      }
    }
  }
  if (stalled && owner) {
    // A block never arrived (the GPU could not hold them all at once): end rather than hang,
    // and leave NaN where the steps not computed would be, so the result cannot pass for one.
    const float not_a_number = __int_as_float(0x7fffffff);
    for (int s = t + 1; s < T; ++s) {
      y[((size_t)s * NB + ob) * H + oj] = not_a_number;
    }
    h = not_a_number;
    c = not_a_number;
  }
  if (owner) {
    h_out[ob * H + oj] = h;
    c_out[ob * H + oj] = c;
  }
"#;

/// How one layer is split over blocks, or why it cannot be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Hidden units per block.
    pub units: i32,
    /// Slices the hidden vector is split into for each gate row's dot product.
    pub slices: i32,
    /// Elements of `h` per slice (registers of `W_hh^T` per thread; past about 200 the compiler
    /// spills them to local memory, which is slower but still right).
    pub per_slice: i32,
    pub blocks: i32,
    pub shared_bytes: i32,
}

/// Split a layer of `hidden` units over at most `max_blocks` resident blocks for `batch` rows;
/// `None` when it does not fit (then the caller runs the compiled wavefront).
pub fn plan(hidden: i32, batch: i32, max_blocks: i32) -> Option<Plan> {
    if hidden < 1 || !(1..=MAX_BATCH).contains(&batch) || max_blocks < 1 {
        return None;
    }
    // Fewest units per block (most parallel dot products) whose blocks all fit at once; one
    // thread per (row, unit) keeps each cell's state.
    [8, 16, 32, 64].into_iter().find_map(|units: i32| {
        let slices = THREADS / (4 * units);
        let per_slice = (hidden + slices - 1) / slices;
        let blocks = (hidden + units - 1) / units;
        let shared_bytes = 4 * batch * (slices * per_slice + slices * 4 * units);
        (blocks <= max_blocks && shared_bytes <= SMEM_LIMIT && per_slice <= 1024 && batch * units <= THREADS).then_some(Plan { units, slices, per_slice, blocks, shared_bytes })
    })
}

/// Whether this process can launch the fused kernel at all (MLX's CUDA backend is loaded and the
/// default device is its GPU).
pub fn available() -> bool {
    crate::runtime::on_gpu() && crate::runtime::cuda_sm_count().is_some()
}

/// Whether a layer of `hidden` units over `batch` rows can run fused here.
pub fn fits(hidden: i32, batch: i32) -> bool {
    available() && crate::runtime::cuda_sm_count().is_some_and(|sms| plan(hidden, batch, sms).is_some())
}

/// Run one layer over `xg = x @ W_ih^T + b` (`[T, B, 4H]`) from `(h0, c0)` (`[B, H]` each) with
/// `w_hh_t` (`[H, 4H]`); returns `(y [T, B, H], h_T, c_T)`, or `None` when the layer does not
/// fit one launch on this GPU (or there is no CUDA GPU).
pub fn layer(xg: &Array, w_hh_t: &Array, h0: &Array, c0: &Array) -> Result<Option<(Array, Array, Array)>> {
    layer_probe(xg, w_hh_t, h0, c0, Probe::Full)
}

/// What a launch of [`layer_probe`] leaves out, to see where the kernel's time goes
/// (`--example lstm_recurrence`). Only [`Probe::Full`] computes the LSTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Full = 0,
    /// No grid barrier between steps (blocks read whatever `h` is there: wrong results).
    NoBarrier = 1,
    /// No `h @ W_hh^T` products (wrong results).
    NoProduct = 2,
    /// `W_hh^T` read from memory every step instead of kept in registers (right results).
    WeightsFromMemory = 3,
}

/// [`layer`] with parts of the kernel left out ([`Probe`]).
pub fn layer_probe(xg: &Array, w_hh_t: &Array, h0: &Array, c0: &Array, probe: Probe) -> Result<Option<(Array, Array, Array)>> {
    let Some(sms) = crate::runtime::cuda_sm_count().filter(|_| crate::runtime::on_gpu()) else {
        return Ok(None);
    };
    let (s, w) = (xg.shape(), w_hh_t.shape());
    if s.len() != 3 || w.len() != 2 || w[1] != 4 * w[0] || s[2] != w[1] || h0.shape() != [s[1], w[0]] || c0.shape() != [s[1], w[0]] || s[0] < 1 {
        return Err(Error::InvalidArgument(format!("fused LSTM: xg {s:?}, W_hh^T {w:?}, h0 {:?}, c0 {:?} do not fit together", h0.shape(), c0.shape())));
    }
    let (t, b, hidden) = (s[0], s[1], w[0]);
    let Some(p) = plan(hidden, b, sms) else {
        return Ok(None);
    };
    let f32 = |a: &Array| -> Result<Array> { Ok(a.as_dtype(Dtype::Float32)?) };
    let inputs = [f32(xg)?, f32(w_hh_t)?, f32(h0)?, f32(c0)?];
    let outs = launch(&inputs, &p, t, b, hidden, probe)?;
    let mut it = outs.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(y), Some(h), Some(c)) => Ok(Some((y, h, c))),
        _ => Err(Error::Mlx("fused LSTM: the kernel returned fewer outputs than it declares".into())),
    }
}

/// mlx-c handles freed on every path.
struct Handles {
    names: [mlx_sys::mlx_vector_string; 2],
    kernel: mlx_sys::mlx_fast_cuda_kernel,
    config: mlx_sys::mlx_fast_cuda_kernel_config,
    inputs: mlx_sys::mlx_vector_array,
    outputs: mlx_sys::mlx_vector_array,
}

impl Drop for Handles {
    fn drop(&mut self) {
        // SAFETY: each handle was created once below and is freed once here.
        unsafe {
            mlx_sys::mlx_vector_string_free(self.names[0]);
            mlx_sys::mlx_vector_string_free(self.names[1]);
            mlx_sys::mlx_fast_cuda_kernel_free(self.kernel);
            mlx_sys::mlx_fast_cuda_kernel_config_free(self.config);
            mlx_sys::mlx_vector_array_free(self.inputs);
            mlx_sys::mlx_vector_array_free(self.outputs);
        }
    }
}

/// C strings of kernel argument names (for mlx-c's custom-kernel calls).
pub(crate) fn cstrings(names: &[&str]) -> Result<Vec<CString>> {
    names.iter().map(|n| CString::new(*n).map_err(|_| Error::Mlx(format!("kernel name {n:?} holds a NUL")))).collect()
}

fn launch(inputs: &[Array; 4], p: &Plan, t: i32, b: i32, hidden: i32, probe: Probe) -> Result<Vec<Array>> {
    let input_names = cstrings(&["xg", "w_hh_t", "h0", "c0"])?;
    let output_names = cstrings(&["y", "h_out", "c_out", "sync"])?;
    let in_ptrs: Vec<*const c_char> = input_names.iter().map(|s| s.as_ptr()).collect();
    let out_ptrs: Vec<*const c_char> = output_names.iter().map(|s| s.as_ptr()).collect();
    let (name, source, header) = (
        CString::new("lstm_layer_fused").map_err(|e| Error::Mlx(e.to_string()))?,
        CString::new(SOURCE).map_err(|e| Error::Mlx(e.to_string()))?,
        CString::new("").map_err(|e| Error::Mlx(e.to_string()))?,
    );
    let templates = cstrings(&["H", "U", "KSL", "KS", "NB", "PROBE"])?;
    let values = [hidden, p.units, p.slices, p.per_slice, b, probe as i32];
    let arrays: Vec<mlx_sys::mlx_array> = inputs.iter().map(Array::as_ptr).collect();
    let stream = Stream::thread_local_or_default();
    // SAFETY: every pointer passed lives until the call returns (the CStrings and `arrays` above);
    // the handles are owned by `Handles` and freed once; the output arrays are copied out of the
    // vector with `mlx_vector_array_get`, which hands back new references the Arrays own.
    unsafe {
        let names = [mlx_sys::mlx_vector_string_new_data(in_ptrs.as_ptr().cast_mut(), in_ptrs.len()), mlx_sys::mlx_vector_string_new_data(out_ptrs.as_ptr().cast_mut(), out_ptrs.len())];
        let mut h = Handles {
            kernel: mlx_sys::mlx_fast_cuda_kernel_new(name.as_ptr(), names[0], names[1], source.as_ptr(), header.as_ptr(), true, p.shared_bytes),
            names,
            config: mlx_sys::mlx_fast_cuda_kernel_config_new(),
            inputs: mlx_sys::mlx_vector_array_new_data(arrays.as_ptr(), arrays.len()),
            outputs: mlx_sys::mlx_vector_array_new(),
        };
        let ok = |status: i32, what: &str| if status == 0 { Ok(()) } else { Err(Error::Mlx(format!("fused LSTM: {what} failed"))) };
        let hb = [b, hidden];
        ok(mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(h.config, [t, b, hidden].as_ptr(), 3, mlx_sys::mlx_dtype__MLX_FLOAT32), "output y")?;
        ok(mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(h.config, hb.as_ptr(), 2, mlx_sys::mlx_dtype__MLX_FLOAT32), "output h")?;
        ok(mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(h.config, hb.as_ptr(), 2, mlx_sys::mlx_dtype__MLX_FLOAT32), "output c")?;
        ok(mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(h.config, [p.blocks].as_ptr(), 1, mlx_sys::mlx_dtype__MLX_INT32), "output sync")?;
        // The grid is counted in threads, as in Metal: blocks x THREADS.
        ok(mlx_sys::mlx_fast_cuda_kernel_config_set_grid(h.config, p.blocks * THREADS, 1, 1), "grid")?;
        ok(mlx_sys::mlx_fast_cuda_kernel_config_set_thread_group(h.config, THREADS, 1, 1), "block")?;
        // Zero-filled outputs: every block's barrier flag starts at step 0.
        ok(mlx_sys::mlx_fast_cuda_kernel_config_set_init_value(h.config, 0.0), "init value")?;
        for (n, v) in templates.iter().zip(values) {
            ok(mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_int(h.config, n.as_ptr(), v), "template argument")?;
        }
        ok(mlx_sys::mlx_fast_cuda_kernel_apply(&mut h.outputs, h.kernel, h.inputs, h.config, stream.as_ptr()), "kernel launch")?;
        let n = mlx_sys::mlx_vector_array_size(h.outputs);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut a = mlx_sys::mlx_array_new();
            if mlx_sys::mlx_vector_array_get(&mut a, h.outputs, i) != 0 {
                mlx_sys::mlx_array_free(a);
                return Err(Error::Mlx("fused LSTM: reading an output failed".into()));
            }
            out.push(Array::from_ptr(a));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodec_32k_fits_an_h200_and_small_gpus_get_fewer_wider_blocks() {
        // 2 x 1024 hidden units: 128 blocks of 8 units, 8 slices of 128 on a 132-SM H200.
        let p = plan(1024, 1, 132).unwrap();
        assert_eq!((p.units, p.slices, p.per_slice, p.blocks), (8, 8, 128, 128));
        // 46 multiprocessors: 32 units per block, 32 blocks.
        let p = plan(1024, 1, 46).unwrap();
        assert_eq!((p.units, p.blocks, p.slices * p.per_slice), (32, 32, 1024));
        // Every block's slices cover the hidden vector; shared memory within the static limit.
        for (hidden, batch, sms) in [(6, 2, 1), (512, 8, 132), (256, 4, 4), (100, 3, 2)] {
            let p = plan(hidden, batch, sms).unwrap();
            assert!(p.slices * p.per_slice >= hidden && p.blocks * p.units >= hidden && p.blocks <= sms && p.shared_bytes <= SMEM_LIMIT, "{hidden} x {batch} on {sms}: {p:?}");
            assert_eq!(p.slices * 4 * p.units, THREADS);
        }
        // Too wide for the GPU, too many rows, nothing to do: the caller falls back.
        assert_eq!(plan(1024, 1, 8), None);
        assert_eq!(plan(64, 9, 132), None);
        // 64 units per block over 8 rows would need 512 cell-state threads.
        assert_eq!(plan(256, 8, 4), None);
        assert_eq!(plan(0, 1, 132), None);
    }

    #[test]
    fn without_a_cuda_gpu_the_layer_declines() {
        if available() {
            return;
        }
        let z = mlx_rs::ops::zeros::<f32>(&[1, 4]).unwrap();
        let got = layer(&mlx_rs::ops::zeros::<f32>(&[3, 1, 16]).unwrap(), &mlx_rs::ops::zeros::<f32>(&[4, 16]).unwrap(), &z, &z).unwrap();
        assert!(got.is_none());
    }
}
