//! A whole pre-norm decoder layer ([`super::decoder::DecoderLayer`]) for one new position as a
//! single CUDA kernel, through MLX's custom-kernel API (`mx.fast.cuda_kernel`):
//! [`super::decoder::DecodeOptions::fused_layer`].
//!
//! Why: a decode step of MusicGen medium is about 1,100 small kernels, and MLX's CUDA backend
//! spends 8-9 us of host time encoding each (H200, 2026-11-30), several times the GPU's own
//! work. Here a layer is one launch: its blocks (one per multiprocessor, 512 threads) run the
//! layer's stages one after another, separated by grid barriers:
//!
//! 1. layer norm, then the stacked query/key/value product; the new key and value are written
//!    straight into the preallocated cache at the step's position;
//! 2. self-attention of the query over the cache's positions `0..=pos`, each (batch row, head)
//!    split over as many blocks as the grid spares (flash-decoding: each writes its run's
//!    weighted sum, largest score and sum of weights; every block combines them while it
//!    stages the output projection's input);
//! 3. the output projection, added to the residual stream;
//! 4. with cross-attention: layer norm, the query product, attention over the cached encoder
//!    keys and values (under an additive mask when one is given), the output projection;
//! 5. layer norm, `fc1` with exact GELU, `fc2`, added to the residual stream.
//!
//! Each product hands its weight rows to warps across the whole grid; a warp reads its row
//! once with 16-byte loads and multiplies it into every batch row, which every block keeps in
//! shared memory. Every block computes the layer norms itself (a few thousand values), so no
//! barrier is spent on them.
//!
//! The cache is written in place: the kernel is handed the cache's buffers as inputs and
//! stores the new position into them. That is outside MLX's model of arrays, so the caller
//! keeps two promises (see [`super::kv_cache::KvCache::in_place_buffers`]): the buffers are
//! contiguous arrays of their own (not views, not broadcasts), and nothing reads them through
//! MLX before the kernel that wrote them has been evaluated. Successive launches are ordered by
//! an input edge: each takes the previous launch's output as an input it never reads, so MLX,
//! and the CUDA graph whose edges follow the buffers each kernel reads and writes, run them one
//! after another even where no data links them (teacher forcing).
//!
//! The grid barrier needs every block resident at once, as [`super::lstm_cuda`]'s does: at
//! most one block per multiprocessor is launched. The barrier's counter returns to zero after
//! every use, so one zeroed buffer ([`Barrier`]) serves every launch of a decode. Should a
//! block never arrive, the wait gives up after about two seconds, the barrier is marked broken
//! for good, and this launch and every later one on it write NaN instead of hanging. That is
//! also what two decodes launched at once on different streams of one GPU could come to, each
//! holding multiprocessors the other's blocks wait for: run decodes on one stream.
use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use mlx_rs::{Array, Dtype, Stream};

use crate::error::{Error, Result};
use crate::nn::decoder::DecoderLayer;
use crate::nn::linear::{Linear, Weight};
use crate::nn::lstm_cuda::cstrings;

/// Threads per block (the kernel's helpers assume it: `FL_THREADS`). H200, MusicGen medium's
/// 48 layers, 200 steps: 128 threads 8.8 ms a step, 256 6.9 ms, 512 5.8 ms.
const THREADS: i32 = 512;
/// Batch rows one launch takes (each is a register accumulator per warp).
pub const MAX_BATCH: i32 = 8;
/// Shared memory one block may ask for at most; a GPU that allows less (the driver's opt-in
/// limit: 227 KiB on an H100/H200, 99 KiB on an RTX 30 or 40) sets the lower bound.
const SMEM_LIMIT: i32 = 200 * 1024;
/// What every CUDA GPU allows a block, when the driver cannot be asked.
const SMEM_ALWAYS: i32 = 48 * 1024;

const HEADER: &str = r#"
#define FL_THREADS 512
#define FL_WARPS 16
#define FL_SPIN_LIMIT 4000000000LL

__device__ __forceinline__ float fl_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float fl_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) of one value per thread over the block; every thread gets the same result.
template <bool MAX>
__device__ float fl_block_reduce(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = MAX ? fl_warp_max(v) : fl_warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int w = 1; w < FL_WARPS; ++w) r = MAX ? fmaxf(r, red[w]) : r + red[w];
  return r;
}

__device__ __forceinline__ unsigned long long fl_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Grid barrier: bar[0] counts arrivals (the last to arrive resets it and advances bar[1], the
// generation the others wait on); bar[2] is raised for good when a wait times out. Returns
// true when this block gave up waiting. With a trace, the last block to arrive writes the time
// to *last.
__device__ bool fl_grid_sync(unsigned int* bar, int* flag, unsigned long long* last = nullptr) {
  __syncthreads();
  if (threadIdx.x == 0) {
    int stalled = 0;
    volatile unsigned int* gen = bar + 1;
    const unsigned int g = *gen;
    __threadfence();
    if (atomicAdd(bar, 1u) == gridDim.x - 1) {
      if (last != nullptr) *last = fl_now();
      atomicExch(bar, 0u);
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      const long long start = clock64();
      while (*gen == g) {
        if (clock64() - start > FL_SPIN_LIMIT) {
          stalled = 1;
          atomicExch(bar + 2, 1u);
          break;
        }
      }
    }
    __threadfence();
    *flag = stalled;
  }
  __syncthreads();
  return *flag != 0;
}

// xs[b * D + k]: the layer norm (eps 1e-5) of row b of src, for every batch row.
template <int NB, int D>
__device__ void fl_layer_norm(const float* src, const float* w, const float* bias, float* xs, float* red) {
  __syncthreads();
  for (int b = 0; b < NB; ++b) {
    float s = 0.0f;
    for (int k = threadIdx.x; k < D; k += FL_THREADS) {
      const float v = __ldcg(src + b * D + k);
      xs[b * D + k] = v;
      s += v;
    }
    const float mean = fl_block_reduce<false>(s, red) / D;
    float s2 = 0.0f;
    for (int k = threadIdx.x; k < D; k += FL_THREADS) {
      const float d = xs[b * D + k] - mean;
      s2 += d * d;
    }
    const float inv = rsqrtf(fl_block_reduce<false>(s2, red) / D + 1e-5f);
    for (int k = threadIdx.x; k < D; k += FL_THREADS) {
      xs[b * D + k] = (xs[b * D + k] - mean) * inv * w[k] + bias[k];
    }
  }
  __syncthreads();
}

// xs[0..N) = src[0..N).
template <int N>
__device__ void fl_stage(const float* src, float* xs) {
  __syncthreads();
  for (int i = threadIdx.x; i < N; i += FL_THREADS) xs[i] = __ldcg(src + i);
  __syncthreads();
}

__host__ __device__ constexpr int fl_chunk(int v) {
  for (int c = 16; c > 1; --c) {
    if (v % c == 0) return c;
  }
  return 1;
}

// Rows of W ([N, K], row-major) dealt out warp by warp over the grid: epi(r, b, xs[b] . W[r])
// for every batch row b. Lanes read the row 4 floats at a time, 32 lanes side by side.
template <int NB, int K, typename Epi>
__device__ void fl_gemv(const float* __restrict__ W, int N, const float* xs, Epi epi) {
  static_assert(K % 4 == 0, "rows must be a multiple of 4 floats");
  constexpr int K4 = K / 4;
  constexpr bool EXACT = K4 % 32 == 0;
  constexpr int V = (K4 + 31) / 32;
  constexpr int C = fl_chunk(V);
  const int lane = threadIdx.x & 31;
  const int nw = gridDim.x * FL_WARPS;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int r = blockIdx.x * FL_WARPS + (threadIdx.x >> 5); r < N; r += nw) {
    const float4* wr = reinterpret_cast<const float4*>(W + (size_t)r * K);
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; ++b) acc[b] = 0.0f;
#pragma unroll 1
    for (int c0 = 0; c0 < V; c0 += C) {
      float4 w[C];
#pragma unroll
      for (int i = 0; i < C; ++i) {
        const int idx = (c0 + i) * 32 + lane;
        w[i] = (EXACT || idx < K4) ? __ldg(wr + idx) : zero;
      }
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const float4* xb = reinterpret_cast<const float4*>(xs + b * K);
#pragma unroll
        for (int i = 0; i < C; ++i) {
          const int idx = (c0 + i) * 32 + lane;
          const float4 x = (EXACT || idx < K4) ? xb[idx] : zero;
          acc[b] = fmaf(w[i].x, x.x, acc[b]);
          acc[b] = fmaf(w[i].y, x.y, acc[b]);
          acc[b] = fmaf(w[i].z, x.z, acc[b]);
          acc[b] = fmaf(w[i].w, x.w, acc[b]);
        }
      }
    }
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      const float v = fl_warp_sum(acc[b]);
      if (lane == b) epi(r, b, v);
    }
  }
}

// How many blocks share one (batch row, head) of an attention over L keys: as many as the grid
// has to spare, each with at least about 32 keys. Producer and consumer agree by calling it
// with the same L.
template <int NB, int NH>
__device__ __forceinline__ int fl_splits(int L) {
  int s = gridDim.x / (NB * NH);
  s = s < 1 ? 1 : s;
  const int most = (L + 31) / 32;
  return s < most ? s : most;
}

// Softmax attention of the queries q ([NB, NH * HD]) over L keys of Kc/Vc, laid out
// [NB, NH, stride, HD], under an optional additive mask ([NB, L]), split over blocks: work item
// (pair = b * NH + h, split) takes a run of keys and writes its weighted sum of values, its
// largest score and its sum of weights to part[item * (HD + 2)...] ([o, m, l]); fl_combine
// puts the splits together (flash-decoding).
template <int NB, int NH, int HD>
__device__ void fl_attention(const float* q, const float* Kc, const float* Vc, int stride, int L, const float* mask, float* part, float* sm, float* red) {
  constexpr int DPL = (HD + 31) / 32;
  float* qs = sm;
  float* wsum = sm + HD;
  float* sc = wsum + FL_WARPS * HD;
  const int splits = fl_splits<NB, NH>(L);
  const int per = (L + splits - 1) / splits;
  const float scale = rsqrtf((float)HD);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int it = blockIdx.x; it < NB * NH * splits; it += gridDim.x) {
    const int pr = it / splits, sp = it % splits;
    const int b = pr / NH, h = pr % NH;
    const int k0 = sp * per;
    const int k1 = min(L, k0 + per);
    __syncthreads();
    if (threadIdx.x < HD) qs[threadIdx.x] = __ldcg(q + (size_t)b * NH * HD + h * HD + threadIdx.x) * scale;
    __syncthreads();
    const float* kb = Kc + (size_t)pr * stride * HD;
    const float* vb = Vc + (size_t)pr * stride * HD;
    float m = __int_as_float(0xff800000);  // -infinity
    for (int k = k0 + threadIdx.x; k < k1; k += FL_THREADS) {
      const float4* kr = reinterpret_cast<const float4*>(kb + (size_t)k * HD);
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < HD / 4; ++i) {
        const float4 kv = __ldcg(kr + i);
        s = fmaf(qs[4 * i], kv.x, s);
        s = fmaf(qs[4 * i + 1], kv.y, s);
        s = fmaf(qs[4 * i + 2], kv.z, s);
        s = fmaf(qs[4 * i + 3], kv.w, s);
      }
      if (mask != nullptr) s += mask[(size_t)b * L + k];
      sc[k - k0] = s;
      m = fmaxf(m, s);
    }
    m = fl_block_reduce<true>(m, red);
    float l = 0.0f;
    for (int k = k0 + threadIdx.x; k < k1; k += FL_THREADS) {
      const float e = expf(sc[k - k0] - m);
      sc[k - k0] = e;
      l += e;
    }
    l = fl_block_reduce<false>(l, red);
    float acc[DPL];
#pragma unroll
    for (int j = 0; j < DPL; ++j) acc[j] = 0.0f;
#pragma unroll 4
    for (int k = k0 + warp; k < k1; k += FL_WARPS) {
      const float w = sc[k - k0];
      const float* vr = vb + (size_t)k * HD;
#pragma unroll
      for (int j = 0; j < DPL; ++j) {
        const int d = lane + 32 * j;
        if (d < HD) acc[j] = fmaf(w, __ldcg(vr + d), acc[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
      const int d = lane + 32 * j;
      if (d < HD) wsum[warp * HD + d] = acc[j];
    }
    __syncthreads();
    float* o = part + (size_t)it * (HD + 2);
    if (threadIdx.x < HD) {
      float t = 0.0f;
      for (int w = 0; w < FL_WARPS; ++w) t += wsum[w * HD + threadIdx.x];
      o[threadIdx.x] = t;
    }
    if (threadIdx.x == 0) {
      o[HD] = m;
      o[HD + 1] = l;
    }
  }
}

// xs[b * NH * HD + h * HD + d]: the attention output, from the splits fl_attention wrote for L
// keys (each weighted by exp(its max - the overall max)).
template <int NB, int NH, int HD>
__device__ void fl_combine(const float* part, int L, float* xs) {
  const int splits = fl_splits<NB, NH>(L);
  __syncthreads();
  for (int i = threadIdx.x; i < NB * NH * HD; i += FL_THREADS) {
    const int pr = i / HD, d = i % HD;
    const float* ps = part + (size_t)pr * splits * (HD + 2);
    float mx = __int_as_float(0xff800000);
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, __ldcg(ps + s * (HD + 2) + HD));
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float* e = ps + s * (HD + 2);
      const float w = expf(__ldcg(e + HD) - mx);
      num = fmaf(w, __ldcg(e + d), num);
      den = fmaf(w, __ldcg(e + HD + 1), den);
    }
    xs[i] = num / den;
  }
  __syncthreads();
}
"#;

const SOURCE: &str = r#"
  extern __shared__ float smem[];
  __shared__ float red[FL_WARPS];
  __shared__ int flag;
  unsigned int* barrier = reinterpret_cast<unsigned int*>(const_cast<int32_t*>(bar));
  float* kc = const_cast<float*>(k_cache);
  float* vc = const_cast<float*>(v_cache);
  const int p = pos[0];
  const int cap = k_cache_shape[2];
  float* q_s = scratch;
  float* x1 = scratch + NB * D;
  float* x2 = scratch + 2 * NB * D;
  float* mid = scratch + 3 * NB * D;
  float* part = mid + NB * F;
  const float* xr = HAS_CROSS ? x2 : x1;
  // With TRACE, block 0 records this launch's timeline (see `Trace`): tr[0] counts launches,
  // tr[1] gathers the latest block end, tr[2 + i] the last arrival at barrier i, tr[10] the
  // latest block start; records of 32 words follow from tr[32].
  unsigned long long* tr = TRACE ? (unsigned long long*)(trace) : nullptr;
  __shared__ unsigned long long* rec;
  if (threadIdx.x == 0) {
    flag = *(volatile unsigned int*)(barrier + 2);
    if (TRACE) {
      const unsigned long long t0 = fl_now();
      atomicMax(tr + 10, t0);
      if (blockIdx.x == 0) {
        const unsigned long long slot = atomicAdd(tr, 1ull);
        const unsigned long long slots = (unsigned long long)(trace_shape[0] / 2 - 32) / 32;
        if (slot > 0 && slot - 1 < slots) tr[32 + 32 * (slot - 1) + 31] = tr[1];
        tr[1] = 0;
        rec = slot < slots ? tr + 32 + 32 * slot : nullptr;
        if (rec != nullptr) rec[0] = t0;
      }
    }
  }
  __syncthreads();
  int sync_i = 0;
  // A grid barrier; with a trace, block 0 records when it was released.
  auto grid_sync = [&]() {
    const bool broke = fl_grid_sync(barrier, &flag, TRACE ? tr + 2 + sync_i : nullptr);
    if (TRACE && blockIdx.x == 0 && threadIdx.x == 0 && rec != nullptr) rec[10 + sync_i] = fl_now();
    ++sync_i;
    return broke;
  };
  bool done = false;
  if (flag == 0 && p >= 0 && p < cap) do {
    fl_layer_norm<NB, D>(x, ln1_w, ln1_b, smem, red);
    fl_gemv<NB, D>(w_qkv, 3 * D, smem, [&](int r, int b, float v) {
      if (HAS_BIAS) v += b_qkv[r];
      if (r < D) {
        q_s[b * D + r] = v;
        return;
      }
      const int rr = r - (r < 2 * D ? D : 2 * D);
      float* c = r < 2 * D ? kc : vc;
      c[(((size_t)b * NH + rr / HD) * cap + p) * HD + rr % HD] = v;
    });
    if (grid_sync()) break;
    fl_attention<NB, NH, HD>(q_s, kc, vc, cap, p + 1, nullptr, part, smem, red);
    if (grid_sync()) break;
    fl_combine<NB, NH, HD>(part, p + 1, smem);
    fl_gemv<NB, D>(w_o, D, smem, [&](int r, int b, float v) {
      if (HAS_BIAS) v += b_o[r];
      x1[b * D + r] = x[b * D + r] + v;
    });
    if (grid_sync()) break;
    if (HAS_CROSS) {
      const int S = ck_shape[2];
      fl_layer_norm<NB, D>(x1, ln2_w, ln2_b, smem, red);
      fl_gemv<NB, D>(w_cq, D, smem, [&](int r, int b, float v) {
        if (HAS_BIAS) v += b_cq[r];
        q_s[b * D + r] = v;
      });
      if (grid_sync()) break;
      fl_attention<NB, NH, HD>(q_s, ck, cv, S, S, HAS_MASK ? cmask : nullptr, part, smem, red);
      if (grid_sync()) break;
      fl_combine<NB, NH, HD>(part, S, smem);
      fl_gemv<NB, D>(w_co, D, smem, [&](int r, int b, float v) {
        if (HAS_BIAS) v += b_co[r];
        x2[b * D + r] = __ldcg(x1 + b * D + r) + v;
      });
      if (grid_sync()) break;
    }
    fl_layer_norm<NB, D>(xr, ln3_w, ln3_b, smem, red);
    fl_gemv<NB, D>(w_fc1, F, smem, [&](int r, int b, float v) {
      if (HAS_BIAS) v += b_fc1[r];
      mid[b * F + r] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    });
    if (grid_sync()) break;
    fl_stage<NB * F>(mid, smem);
    fl_gemv<NB, F>(w_fc2, D, smem, [&](int r, int b, float v) {
      if (HAS_BIAS) v += b_fc2[r];
      y[b * D + r] = __ldcg(xr + b * D + r) + v;
    });
    if (TRACE && threadIdx.x == 0) {
      if (blockIdx.x == 0 && rec != nullptr) {
        for (int i = 0; i < sync_i; ++i) rec[2 + i] = tr[2 + i];
        rec[1] = tr[10];
      }
      if (blockIdx.x == 0) tr[10] = 0;
      __threadfence();
      atomicMax(tr + 1, fl_now());
    }
    done = true;
  } while (false);
  if (!done) {
    // A broken barrier, or a position outside the cache: NaN, so the result cannot pass for one.
    const float not_a_number = __int_as_float(0x7fffffff);
    for (int i = blockIdx.x * FL_THREADS + threadIdx.x; i < NB * D; i += gridDim.x * FL_THREADS) y[i] = not_a_number;
  }
"#;

const INPUTS: [&str; 28] = [
    "x", "prev", "pos", "ln1_w", "ln1_b", "w_qkv", "b_qkv", "k_cache", "v_cache", "w_o", "b_o", "ln2_w", "ln2_b", "w_cq", "b_cq", "ck", "cv", "cmask", "w_co", "b_co", "ln3_w", "ln3_b", "w_fc1",
    "b_fc1", "w_fc2", "b_fc2", "bar", "trace",
];
const OUTPUTS: [&str; 2] = ["y", "scratch"];
/// Where the per-step inputs sit in [`INPUTS`].
const X: usize = 0;
const PREV: usize = 1;
const POS: usize = 2;
const K_CACHE: usize = 7;
const V_CACHE: usize = 8;
const CK: usize = 15;
const CV: usize = 16;
const CMASK: usize = 17;
const BAR: usize = 26;
const TRACE: usize = 27;

/// The shape of one layer's launch: what the kernel is compiled for, and its shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub d: i32,
    pub ffn: i32,
    pub heads: i32,
    pub head_dim: i32,
    pub batch: i32,
    pub blocks: i32,
    pub shared_bytes: i32,
}

/// How a layer of width `d` (`heads` heads), `ffn` hidden units, over `batch` rows, attending
/// over at most `keys` positions (the cache's capacity, the encoder's length), runs on a GPU
/// of `sms` multiprocessors whose blocks may have `max_shared` bytes of shared memory; `None`
/// when the kernel does not take that shape (then the caller runs the layer op by op).
pub fn plan(d: i32, ffn: i32, heads: i32, batch: i32, keys: i32, sms: i32, max_shared: i32) -> Option<Plan> {
    if d < 1 || ffn < 1 || heads < 1 || sms < 1 || keys < 1 || !(1..=MAX_BATCH).contains(&batch) || d % heads != 0 {
        return None;
    }
    let head_dim = d / heads;
    // Products and attention read 4 floats at a time; attention gives each head dimension a
    // thread in every group of the block's threads.
    if d % 4 != 0 || ffn % 4 != 0 || head_dim % 4 != 0 || head_dim > THREADS {
        return None;
    }
    let vector = batch as i64 * d.max(ffn) as i64;
    // Attention: the query, each warp's weighted sum, the scores of one block's keys.
    let attention = head_dim as i64 * (1 + THREADS as i64 / 32) + keys as i64;
    let shared = 4 * vector.max(attention);
    (shared <= SMEM_LIMIT.min(max_shared) as i64).then_some(Plan { d, ffn, heads, head_dim, batch, blocks: sms, shared_bytes: shared as i32 })
}

/// Whether this process can launch the kernel at all (MLX's CUDA backend is loaded and the
/// default device is its GPU).
pub fn available() -> bool {
    crate::nn::lstm_cuda::available()
}

static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// Layer kernels launched by this process so far (evidence that a decode took this path).
pub fn launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

/// The grid barrier's state for one decode: a zeroed `[4]` int32 buffer that every launch
/// updates in place (see the module docs), and zero-length stand-ins for absent inputs.
pub struct Barrier {
    state: Array,
    none: Array,
    /// The output of the last launch on this barrier (see [`Prepared::run`]).
    last: Mutex<Option<Array>>,
}

impl Barrier {
    pub fn new() -> Result<Self> {
        let state = Array::from_slice(&[0i32; 4], &[4]);
        let none = Array::from_slice(&[0.0f32], &[1]);
        mlx_rs::transforms::eval([&state, &none])?;
        Ok(Self { state, none, last: Mutex::new(None) })
    }
}

/// The float32 `[out, in]` matrix of `l`, or `None` for other precisions.
fn dense(l: &Linear) -> Option<&Array> {
    match &l.weight {
        Weight::Dense(w) if w.dtype() == Dtype::Float32 => Some(w),
        _ => None,
    }
}

/// The layer's arrays in the kernel's order, the cache and cross parts left as placeholders,
/// and whether the projections carry biases; `None` when the layer's weights are not all
/// float32 with stacked query/key/value, or only some carry biases.
fn layer_arrays<'a>(layer: &'a DecoderLayer, none: &'a Array) -> Option<(Vec<&'a Array>, bool)> {
    let qkv = layer.attn.qkv.as_ref()?;
    let mut linears: Vec<&Linear> = vec![qkv, &layer.attn.out];
    if let Some((c, _)) = &layer.cross {
        linears.extend([&c.query, &c.out]);
    }
    linears.extend([&layer.fc1, &layer.fc2]);
    let biased = qkv.bias.is_some();
    if linears.iter().any(|l| dense(l).is_none() || l.bias.is_some() != biased) {
        return None;
    }
    let w = |l: &'a Linear| dense(l).unwrap_or(none);
    let b = |l: &'a Linear| l.bias.as_ref().unwrap_or(none);
    let (cq, bcq, co, bco, ln2w, ln2b) = match &layer.cross {
        Some((c, ln)) => (w(&c.query), b(&c.query), w(&c.out), b(&c.out), &ln.weight, &ln.bias),
        None => (none, none, none, none, none, none),
    };
    Some((
        vec![
            none, // x
            none, // prev
            none, // pos
            &layer.attn_ln.weight,
            &layer.attn_ln.bias,
            w(qkv),
            b(qkv),
            none, // k_cache
            none, // v_cache
            w(&layer.attn.out),
            b(&layer.attn.out),
            ln2w,
            ln2b,
            cq,
            bcq,
            none, // ck
            none, // cv
            none, // cmask
            co,
            bco,
            &layer.ff_ln.weight,
            &layer.ff_ln.bias,
            w(&layer.fc1),
            b(&layer.fc1),
            w(&layer.fc2),
            b(&layer.fc2),
            none, // bar
            none, // trace
        ],
        biased,
    ))
}

/// What one step of one layer reads besides its weights.
pub struct StepInputs<'a> {
    /// The new position's hidden state `[B, 1, D]`, float32.
    pub x: &'a Array,
    /// The position `[1]`, int32: where the new key and value go, and the last key attended.
    pub pos: &'a Array,
    /// The self-attention cache's buffers `[B, H, capacity, D/H]`, float32, written in place.
    pub cache: (&'a Array, &'a Array),
    /// The cached cross-attention keys and values `[B, H, S, D/H]` (for a layer with
    /// cross-attention), and the additive mask over the encoder positions (`[B, 1, 1, S]`).
    pub cross: Option<(&'a Array, &'a Array, Option<&'a Array>)>,
}

/// One layer's launch, checked and ready: its arrays in the kernel's order (the input hidden
/// state left to [`Prepared::run`]), its plan and its compile-time switches.
pub struct Prepared {
    inputs: Vec<Array>,
    plan: Plan,
    /// Biases, cross-attention, a cross-attention mask, a trace.
    flags: [bool; 4],
}

impl Prepared {
    /// Launch the layer on the new position's hidden state `x` (`[B, 1, D]`, the shape
    /// [`prepare`] was given); returns the layer's output, same shape. The cache's buffers
    /// hold the new position once the output is evaluated.
    pub fn run(&mut self, x: &Array, barrier: &Barrier) -> Result<Array> {
        if x.shape() != [self.plan.batch, 1, self.plan.d] || x.dtype() != Dtype::Float32 {
            return Err(Error::InvalidArgument(format!("decoder layer kernel: input {:?} {:?}, prepared for [{}, 1, {}] float32", x.shape(), x.dtype(), self.plan.batch, self.plan.d)));
        }
        self.inputs[X] = x.clone();
        // The previous launch on this barrier as an input: MLX (and the CUDA graph it builds,
        // whose edges follow the buffers each kernel reads and writes) then orders the launches
        // of a decode one after another even where no data links them (teacher forcing, whose
        // next input is known in advance), so no two ever share the barrier or race on a cache.
        let mut last = barrier.last.lock().map_err(|_| Error::Mlx("decoder layer kernel: the barrier's lock is poisoned".into()))?;
        self.inputs[PREV] = last.clone().unwrap_or_else(|| barrier.none.clone());
        let out = launch(&self.inputs, &self.plan, self.flags)?;
        *last = Some(out.clone());
        LAUNCHES.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }
}

/// Check that the kernel takes `layer` with the step's inputs `s` here, and gather its arrays;
/// `None` when it does not (no CUDA GPU, another precision, a shape [`plan`] refuses), so the
/// caller runs the layer op by op.
pub fn prepare(layer: &DecoderLayer, s: &StepInputs<'_>, barrier: &Barrier) -> Result<Option<Prepared>> {
    let Some(sms) = crate::runtime::cuda_sm_count().filter(|_| crate::runtime::on_gpu()) else {
        return Ok(None);
    };
    let Some((refs, biased)) = layer_arrays(layer, &barrier.none) else {
        return Ok(None);
    };
    let xs = s.x.shape();
    let ks = s.cache.0.shape();
    let (d, heads, ffn) = (layer.fc1.in_features(), layer.attn.n_head, layer.fc1.out_features());
    if xs.len() != 3 || xs[1] != 1 || xs[2] != d || s.x.dtype() != Dtype::Float32 || ks.len() != 4 || s.cache.1.shape() != ks || ks[0] != xs[0] || ks[1] != heads || ks[3] * heads != d {
        return Ok(None);
    }
    if s.cache.0.dtype() != Dtype::Float32 || s.cache.1.dtype() != Dtype::Float32 || s.pos.dtype() != Dtype::Int32 || s.pos.size() != 1 {
        return Ok(None);
    }
    let b = xs[0];
    let mut keys = ks[2];
    let mut mask2 = None;
    match (&layer.cross, s.cross) {
        (None, None) => {}
        (Some(_), Some((ck, cv, mask))) => {
            let cs = ck.shape();
            if cs.len() != 4 || cv.shape() != cs || cs[0] != b || cs[1] != heads || cs[3] != ks[3] || ck.dtype() != Dtype::Float32 || cv.dtype() != Dtype::Float32 {
                return Ok(None);
            }
            keys = keys.max(cs[2]);
            if let Some(m) = mask {
                if m.shape() != [b, 1, 1, cs[2]] {
                    return Ok(None);
                }
                mask2 = Some(m.as_dtype(Dtype::Float32)?.reshape(&[b, cs[2]])?);
            }
        }
        _ => return Ok(None),
    }
    let max_shared = crate::runtime::cuda_max_shared_per_block().unwrap_or(SMEM_ALWAYS);
    let Some(plan) = plan(d, ffn, heads, b, keys, sms, max_shared) else {
        return Ok(None);
    };
    let mut inputs: Vec<Array> = refs.into_iter().cloned().collect();
    inputs[X] = s.x.clone();
    inputs[POS] = s.pos.clone();
    inputs[K_CACHE] = s.cache.0.clone();
    inputs[V_CACHE] = s.cache.1.clone();
    if let Some((ck, cv, _)) = s.cross {
        inputs[CK] = ck.clone();
        inputs[CV] = cv.clone();
    }
    let masked = mask2.is_some();
    if let Some(m) = mask2 {
        inputs[CMASK] = m;
    }
    inputs[BAR] = barrier.state.clone();
    let trace = trace_buffer()?.clone();
    let traced = trace.is_some();
    if let Some(t) = trace {
        inputs[TRACE] = t;
    }
    Ok(Some(Prepared { inputs, plan, flags: [biased, layer.cross.is_some(), masked, traced] }))
}

/// A timeline of the launches made while it is on, for finding where a layer's time goes:
/// per launch, block 0's start, each barrier's last arrival and block 0's release from it, and
/// the launch's last block end (nanoseconds of the GPU's global timer). Launches prepared
/// after [`Trace::begin`] write it; [`Trace::end`] reads it back.
static TRACE_BUFFER: Mutex<Option<Array>> = Mutex::new(None);

fn trace_buffer() -> Result<std::sync::MutexGuard<'static, Option<Array>>> {
    TRACE_BUFFER.lock().map_err(|_| Error::Mlx("decoder layer kernel: the trace's lock is poisoned".into()))
}

/// One traced launch (see [`Trace`]); times in nanoseconds on the GPU's global timer, 0 where
/// the launch had no such barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracedLaunch {
    /// Block 0's start.
    pub start: u64,
    /// The last block's start.
    pub last_start: u64,
    /// The last block's arrival at each barrier, in the kernel's order (at most 7).
    pub arrived: [u64; 7],
    /// Block 0's release from each barrier.
    pub released: [u64; 7],
    /// The last block's end (0 for the last launch traced, which no later launch closed).
    pub end: u64,
}

pub struct Trace;

impl Trace {
    /// Record the next `launches` launches (later ones are counted, not recorded).
    pub fn begin(launches: usize) -> Result<()> {
        let words = 2 * 32 * (1 + launches.max(1));
        let words = i32::try_from(words).map_err(|_| Error::InvalidArgument(format!("layer kernel trace: {launches} launches is too many")))?;
        let t = mlx_rs::ops::zeros::<i32>(&[words])?;
        t.eval()?;
        *trace_buffer()? = Some(t);
        Ok(())
    }

    /// Stop recording and read the launches back (call once their outputs are evaluated).
    pub fn end() -> Result<Vec<TracedLaunch>> {
        let Some(t) = trace_buffer()?.take() else {
            return Ok(Vec::new());
        };
        // A fresh array computed from the buffer, after every launch that wrote it.
        let copy = t.add(mlx_rs::array!(0i32))?;
        copy.eval()?;
        let w: Vec<u64> = copy.as_slice::<i32>().chunks_exact(2).map(|p| (p[0] as u32 as u64) | ((p[1] as u32 as u64) << 32)).collect();
        let count = (w[0] as usize).min((w.len() - 32) / 32);
        Ok((0..count)
            .map(|i| {
                let r = &w[32 + 32 * i..64 + 32 * i];
                TracedLaunch {
                    start: r[0],
                    last_start: r[1],
                    arrived: r[2..9].try_into().unwrap_or_default(),
                    released: r[10..17].try_into().unwrap_or_default(),
                    end: r[31],
                }
            })
            .collect())
    }
}

/// An mlx-c kernel handle, built once per shared-memory size and kept for the process (MLX
/// compiles each template instance once and caches it by name).
struct Kernel(mlx_sys::mlx_fast_cuda_kernel);
// SAFETY: the handle is an immutable description of the kernel (names, source, shared memory);
// mlx-c's apply only reads it, and every use is under the cache's mutex.
unsafe impl Send for Kernel {}

static KERNELS: Mutex<Option<HashMap<i32, Kernel>>> = Mutex::new(None);

/// mlx-c handles of one launch, freed on every path.
struct Call {
    config: mlx_sys::mlx_fast_cuda_kernel_config,
    inputs: mlx_sys::mlx_vector_array,
    outputs: mlx_sys::mlx_vector_array,
}

impl Drop for Call {
    fn drop(&mut self) {
        // SAFETY: each handle was created once in `launch` and is freed once here.
        unsafe {
            mlx_sys::mlx_fast_cuda_kernel_config_free(self.config);
            mlx_sys::mlx_vector_array_free(self.inputs);
            mlx_sys::mlx_vector_array_free(self.outputs);
        }
    }
}

fn launch(inputs: &[Array], p: &Plan, [biased, cross, masked, traced]: [bool; 4]) -> Result<Array> {
    let ok = |status: i32, what: &str| if status == 0 { Ok(()) } else { Err(Error::Mlx(format!("decoder layer kernel: {what} failed"))) };
    let mut guard = KERNELS.lock().map_err(|_| Error::Mlx("decoder layer kernel: the kernel cache is poisoned".into()))?;
    let kernels = guard.get_or_insert_with(HashMap::new);
    if let std::collections::hash_map::Entry::Vacant(slot) = kernels.entry(p.shared_bytes) {
        let (input_names, output_names) = (cstrings(&INPUTS)?, cstrings(&OUTPUTS)?);
        let in_ptrs: Vec<*const c_char> = input_names.iter().map(|s| s.as_ptr()).collect();
        let out_ptrs: Vec<*const c_char> = output_names.iter().map(|s| s.as_ptr()).collect();
        let name = CString::new(format!("decoder_layer_step_{}", p.shared_bytes)).map_err(|e| Error::Mlx(e.to_string()))?;
        let (source, header) = (CString::new(SOURCE).map_err(|e| Error::Mlx(e.to_string()))?, CString::new(HEADER).map_err(|e| Error::Mlx(e.to_string()))?);
        // SAFETY: the name vectors are built from live CStrings and freed right after the
        // kernel (which copies them) is made; the strings outlive the call.
        let kernel = unsafe {
            let names = [mlx_sys::mlx_vector_string_new_data(in_ptrs.as_ptr().cast_mut(), in_ptrs.len()), mlx_sys::mlx_vector_string_new_data(out_ptrs.as_ptr().cast_mut(), out_ptrs.len())];
            let k = mlx_sys::mlx_fast_cuda_kernel_new(name.as_ptr(), names[0], names[1], source.as_ptr(), header.as_ptr(), true, p.shared_bytes);
            mlx_sys::mlx_vector_string_free(names[0]);
            mlx_sys::mlx_vector_string_free(names[1]);
            k
        };
        slot.insert(Kernel(kernel));
    }
    let kernel = kernels.get(&p.shared_bytes).ok_or_else(|| Error::Mlx("decoder layer kernel: missing from its cache".into()))?.0;
    let templates = cstrings(&["D", "F", "NH", "HD", "NB", "HAS_BIAS", "HAS_CROSS", "HAS_MASK", "TRACE"])?;
    let values = [p.d, p.ffn, p.heads, p.head_dim, p.batch, biased as i32, cross as i32, masked as i32, traced as i32];
    let arrays: Vec<mlx_sys::mlx_array> = inputs.iter().map(Array::as_ptr).collect();
    let stream = Stream::thread_local_or_default();
    // SAFETY: every pointer passed lives until the call returns (the CStrings and `arrays`);
    // the call's handles are owned by `Call` and freed once; the outputs are copied out of the
    // vector with `mlx_vector_array_get`, which hands back new references the Arrays own.
    unsafe {
        let mut c = Call {
            config: mlx_sys::mlx_fast_cuda_kernel_config_new(),
            inputs: mlx_sys::mlx_vector_array_new_data(arrays.as_ptr(), arrays.len()),
            outputs: mlx_sys::mlx_vector_array_new(),
        };
        // q, the two residual states, the FFN's hidden row, and the attention splits' partial
        // results (at most one work item per block, or one per (row, head)).
        let scratch = p.batch * (3 * p.d + p.ffn) + p.blocks.max(p.batch * p.heads) * (p.head_dim + 2);
        ok(mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(c.config, [p.batch, 1, p.d].as_ptr(), 3, mlx_sys::mlx_dtype__MLX_FLOAT32), "output y")?;
        ok(mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(c.config, [scratch].as_ptr(), 1, mlx_sys::mlx_dtype__MLX_FLOAT32), "output scratch")?;
        // The grid is counted in threads, as in Metal: blocks x THREADS.
        ok(mlx_sys::mlx_fast_cuda_kernel_config_set_grid(c.config, p.blocks * THREADS, 1, 1), "grid")?;
        ok(mlx_sys::mlx_fast_cuda_kernel_config_set_thread_group(c.config, THREADS, 1, 1), "block")?;
        for (n, v) in templates.iter().zip(values) {
            ok(mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_int(c.config, n.as_ptr(), v), "template argument")?;
        }
        ok(mlx_sys::mlx_fast_cuda_kernel_apply(&mut c.outputs, kernel, c.inputs, c.config, stream.as_ptr()), "kernel launch")?;
        let mut a = mlx_sys::mlx_array_new();
        if mlx_sys::mlx_vector_array_size(c.outputs) < 1 || mlx_sys::mlx_vector_array_get(&mut a, c.outputs, 0) != 0 {
            mlx_sys::mlx_array_free(a);
            return Err(Error::Mlx("decoder layer kernel: reading its output failed".into()));
        }
        Ok(Array::from_ptr(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An H200's opt-in shared memory per block.
    const H200: i32 = 227 * 1024;

    #[test]
    fn plans_for_the_zoo_decoders_and_refusals() {
        // MusicGen medium under guidance: 2 rows of 1536, 24 heads of 64, 6144 hidden units,
        // 500 positions; the FFN row of both batch rows is the largest shared vector.
        let p = plan(1536, 6144, 24, 2, 504, 132, H200).unwrap();
        assert_eq!((p.head_dim, p.blocks, p.shared_bytes), (64, 132, 4 * 2 * 6144));
        // Whisper turbo, beam 5 over 1500 encoder positions.
        let p = plan(1280, 5120, 20, 5, 1500, 132, H200).unwrap();
        assert_eq!(p.shared_bytes, 4 * 5 * 5120);
        // A single row attending over a long history: the scores set the size.
        let p = plan(256, 1024, 4, 1, 20_000, 8, H200).unwrap();
        assert_eq!(p.shared_bytes, 4 * (64 * 17 + 20_000));
        // The fixtures' small decoders (24-wide heads).
        let p = plan(48, 160, 2, 1, 30, 132, H200).unwrap();
        assert_eq!((p.head_dim, p.shared_bytes), (24, 4 * (24 * 17 + 30)));
        // Widths not a multiple of 4, heads that do not divide the width or are too wide,
        // more batch rows than registers, too much shared memory, no GPU: refused.
        assert_eq!(plan(1026, 4096, 2, 1, 10, 132, H200), None);
        assert_eq!(plan(1024, 4098, 8, 1, 10, 132, H200), None);
        assert_eq!(plan(1024, 4096, 7, 1, 10, 132, H200), None);
        assert_eq!(plan(24, 96, 4, 1, 10, 132, H200), None);
        assert_eq!(plan(1024, 4096, 1, 1, 10, 132, H200), None);
        assert_eq!(plan(1024, 4096, 16, 9, 10, 132, H200), None);
        assert_eq!(plan(2048, 8192, 32, 8, 10, 132, H200), None);
        assert_eq!(plan(1024, 4096, 16, 1, 60_000, 132, H200), None);
        assert_eq!(plan(1024, 4096, 16, 1, 10, 0, H200), None);
        // Whisper turbo's 5 beams need 100 KiB: a GPU allowing 99 KiB, or only the 48 KiB every
        // GPU allows, runs them op by op; one row fits either.
        assert_eq!(plan(1280, 5120, 20, 5, 1500, 82, 99 * 1024), None);
        assert_eq!(plan(1280, 5120, 20, 5, 1500, 82, SMEM_ALWAYS), None);
        assert!(plan(1280, 5120, 20, 1, 1500, 82, SMEM_ALWAYS).is_some());
        assert_eq!(plan(1024, 4096, 16, 0, 10, 132, H200), None);
    }

    #[test]
    fn the_kernel_names_every_input_it_reads() {
        // `prev` is only an ordering edge (see `Prepared::run`): the kernel never reads it.
        for name in INPUTS.iter().chain(&OUTPUTS).filter(|n| **n != "prev") {
            assert!(SOURCE.contains(name), "{name} is declared but the kernel never reads it");
        }
        let slots = [(X, "x"), (PREV, "prev"), (POS, "pos"), (K_CACHE, "k_cache"), (V_CACHE, "v_cache"), (CK, "ck"), (CV, "cv"), (CMASK, "cmask"), (BAR, "bar")];
        for (i, name) in slots {
            assert_eq!(INPUTS[i], name);
        }
        // MLX passes an input's shape only when the source names it.
        assert!(SOURCE.contains("k_cache_shape") && SOURCE.contains("ck_shape"));
    }
}
