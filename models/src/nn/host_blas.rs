//! The process's BLAS (`cblas_sgemm`, found at run time) for the CPU host kernels, and the
//! BLAS' thread count (OpenBLAS', and MKL's where MKL is loaded) held at one while a kernel
//! spreads its own tasks over the cores.
use std::ffi::{c_int, CString};
use std::sync::OnceLock;

use mlx_rs::Array;

use crate::error::{Error, Result};

/// Arrays as row-major float32 (views and other dtypes copied), evaluated together: a host
/// kernel's operands, read through [`f32_data`].
pub(crate) fn host_operands<const N: usize>(arrays: [&Array; N]) -> Result<[Array; N]> {
    let v = arrays.iter().map(|x| Ok(x.as_dtype(mlx_rs::Dtype::Float32)?.contiguous()?)).collect::<Result<Vec<Array>>>()?;
    mlx_rs::transforms::eval(v.iter())?;
    v.try_into().map_err(|v: Vec<Array>| Error::Mlx(format!("host operands: {} arrays for {N}", v.len())))
}

/// The data of an evaluated row-major float32 array; `what` names the kernel in errors.
pub(crate) fn f32_data<'a>(a: &'a Array, what: &str) -> Result<&'a [f32]> {
    a.try_as_slice::<f32>().map_err(|e| Error::Mlx(format!("{what} input: {e}")))
}

pub(crate) const ROW_MAJOR: c_int = 101;
pub(crate) const NO_TRANS: c_int = 111;
pub(crate) const TRANS: c_int = 112;

pub(crate) type Sgemm = unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *const f32, c_int, f32, *mut f32, c_int);
type GetThreads = unsafe extern "C" fn() -> c_int;
type SetThreads = unsafe extern "C" fn(c_int);

pub(crate) struct Blas {
    pub(crate) sgemm: Sgemm,
    /// The thread controls of the BLAS libraries in the process (OpenBLAS', MKL's): one
    /// thread per call while a kernel spreads its own tasks over the cores.
    threads: Vec<(GetThreads, SetThreads)>,
}

fn symbol(name: &str) -> Option<*mut std::ffi::c_void> {
    let c = CString::new(name).ok()?;
    // SAFETY: dlsym with RTLD_DEFAULT only looks a name up among the loaded objects.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!p.is_null()).then_some(p)
}

pub(crate) fn blas() -> Option<&'static Blas> {
    static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
    BLAS.get_or_init(|| {
        let sgemm = symbol("cblas_sgemm")?;
        // MKL, when it is loaded (LD_PRELOAD of its libmkl_rt) ahead of the OpenBLAS the
        // binaries link, takes the products, and OpenBLAS stays loaded: hold both. MKL's C
        // names (mkl_service.h's macros); its lower-case exports take the count by pointer.
        let controls = [("openblas_get_num_threads", "openblas_set_num_threads"), ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads")];
        let threads = controls.iter().filter_map(|&(g, s)| symbol(g).zip(symbol(s)));
        // SAFETY: the symbols are CBLAS', OpenBLAS' and MKL's documented C functions, with
        // these signatures.
        unsafe {
            Some(Blas {
                sgemm: std::mem::transmute::<*mut std::ffi::c_void, Sgemm>(sgemm),
                threads: threads.map(|(g, s)| (std::mem::transmute::<*mut std::ffi::c_void, GetThreads>(g), std::mem::transmute::<*mut std::ffi::c_void, SetThreads>(s))).collect(),
            })
        }
    })
    .as_ref()
}

/// Holds the BLAS at one thread until dropped, where `workers` of our own threads will call it
/// at once. MLX's work must be finished (the kernel's inputs evaluated): its products would
/// otherwise run single-threaded too.
pub(crate) struct SingleThreaded(Vec<(c_int, SetThreads)>);

pub(crate) fn single_threaded(workers: usize) -> SingleThreaded {
    match blas() {
        // SAFETY: the BLAS libraries' thread-count functions, restored on drop.
        Some(b) if workers > 1 => SingleThreaded(
            b.threads
                .iter()
                .map(|&(get, set)| unsafe {
                    let n = get();
                    set(1);
                    (n, set)
                })
                .collect(),
        ),
        _ => SingleThreaded(Vec::new()),
    }
}

impl Drop for SingleThreaded {
    fn drop(&mut self) {
        for &(n, set) in &self.0 {
            // SAFETY: as above.
            unsafe { set(n) };
        }
    }
}

/// Run `task(t, scratch)` for every task `t < tasks`, taken in turn by `workers` scoped
/// threads, each with its own zeroed scratch buffer of `scratch` floats; OpenBLAS is held at
/// one thread meanwhile (see [`single_threaded`]).
pub(crate) fn spread_tasks(workers: usize, tasks: usize, scratch: usize, task: impl Fn(usize, &mut [f32]) + Sync) {
    let _one = single_threaded(workers);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                let mut buf = vec![0f32; scratch];
                loop {
                    let t = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if t >= tasks {
                        break;
                    }
                    task(t, &mut buf);
                }
            });
        }
    });
}

type ColumnsBody = unsafe extern "C" fn(*mut std::ffi::c_void, c_int, c_int);
type ColumnsPool = unsafe extern "C" fn(ColumnsBody, *mut std::ffi::c_void, c_int, c_int) -> c_int;

/// mlx-sys's GEMV shim's thread pool (`mlx_shim_parallel_columns`), where the shim is loaded.
fn columns_pool() -> Option<ColumnsPool> {
    static POOL: OnceLock<Option<ColumnsPool>> = OnceLock::new();
    // SAFETY: the shim's exported function, with this signature.
    *POOL.get_or_init(|| symbol("mlx_shim_parallel_columns").map(|p| unsafe { std::mem::transmute::<*mut std::ffi::c_void, ColumnsPool>(p) }))
}

/// Run `f` over `0..n` in runs of `run` columns spread over the cores: on the GEMV shim's
/// pool of waiting threads where the process has it (a decode step's few-row products come
/// hundreds to a step, and starting threads for each cost more than some products), otherwise
/// on scoped threads, one block each. A panic in `f` is carried back to the caller.
pub(crate) fn parallel_columns<F: Fn(std::ops::Range<usize>) + Sync>(n: usize, run: usize, f: F) {
    struct Job<F> {
        f: F,
        panicked: std::sync::atomic::AtomicBool,
    }
    unsafe extern "C" fn body<F: Fn(std::ops::Range<usize>) + Sync>(ctx: *mut std::ffi::c_void, j0: c_int, j1: c_int) {
        // SAFETY: `ctx` is the `Job` below, alive until the pool returns.
        let job = unsafe { &*(ctx as *const Job<F>) };
        let cols = j0.max(0) as usize..j1.max(0) as usize;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.f)(cols))).is_err() {
            job.panicked.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let run = run.max(1);
    if let (Some(pool), Ok(n32), Ok(run32)) = (columns_pool(), c_int::try_from(n), c_int::try_from(run)) {
        let job = Job { f, panicked: false.into() };
        // SAFETY: the pool calls `body` with `job` for disjoint runs of 0..n and returns when
        // all are done.
        if unsafe { pool(body::<F>, &job as *const Job<F> as *mut std::ffi::c_void, n32, run32) } != 0 {
            assert!(!job.panicked.load(std::sync::atomic::Ordering::Relaxed), "a host kernel's column worker panicked");
            return;
        }
        return spread_columns(n, run, job.f);
    }
    spread_columns(n, run, f)
}

/// Run `f` over `0..n` on scoped threads, one block of whole runs of `run` columns each;
/// OpenBLAS is held at one thread meanwhile (see [`single_threaded`]).
pub(crate) fn spread_columns<F: Fn(std::ops::Range<usize>) + Sync>(n: usize, run: usize, f: F) {
    let run = run.max(1);
    let workers = crate::nn::host::threads().min(n.div_ceil(run)).max(1);
    let per = n.div_ceil(workers).div_ceil(run) * run;
    let _one = single_threaded(workers);
    std::thread::scope(|s| {
        for c0 in (0..n).step_by(per.max(1)) {
            let f = &f;
            s.spawn(move || f(c0..(c0 + per).min(n)));
        }
    });
}

/// A pointer to one output buffer shared by scoped worker threads that write disjoint parts.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the pointer is only used to write disjoint blocks of one buffer that outlives the
// scoped threads.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Every column once, on the shim's pool (this test binary loads the shim where OpenBLAS
    /// is found) and on scoped threads, for runs that do and do not divide the count.
    #[test]
    fn parallel_columns_visits_every_column_once() {
        for (n, run) in [(1, 8), (7, 8), (1000, 8), (1001, 64), (50_000, 3)] {
            for pooled in [true, false] {
                let seen: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
                let f = |cols: std::ops::Range<usize>| cols.for_each(|c| _ = seen[c].fetch_add(1, Ordering::Relaxed));
                if pooled {
                    parallel_columns(n, run, f);
                } else {
                    spread_columns(n, run, f);
                }
                let wrong: Vec<usize> = (0..n).filter(|&c| seen[c].load(Ordering::Relaxed) != 1).collect();
                assert!(wrong.is_empty(), "n {n}, run {run}, pooled {pooled}: columns {:?} not visited once", &wrong[..wrong.len().min(8)]);
            }
        }
    }

    #[test]
    #[should_panic(expected = "panicked")]
    fn a_panicking_column_worker_reaches_the_caller() {
        parallel_columns(64, 8, |cols| assert!(!cols.contains(&40), "column 40"));
    }
}
