//! The process's BLAS (`cblas_sgemm`, found at run time) for the CPU host kernels, and
//! OpenBLAS' thread count held at one while a kernel spreads its own tasks over the cores.
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
    /// OpenBLAS' thread control, where the BLAS is OpenBLAS: one thread per call while this
    /// kernel spreads its own tasks over the cores.
    threads: Option<(GetThreads, SetThreads)>,
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
        let threads = symbol("openblas_get_num_threads").zip(symbol("openblas_set_num_threads"));
        // SAFETY: the symbols are CBLAS' and OpenBLAS' documented C functions, with these
        // signatures.
        unsafe {
            Some(Blas {
                sgemm: std::mem::transmute::<*mut std::ffi::c_void, Sgemm>(sgemm),
                threads: threads.map(|(g, s)| (std::mem::transmute::<*mut std::ffi::c_void, GetThreads>(g), std::mem::transmute::<*mut std::ffi::c_void, SetThreads>(s))),
            })
        }
    })
    .as_ref()
}

/// Holds OpenBLAS at one thread until dropped, where the BLAS is OpenBLAS and `workers` of our
/// own threads will call it at once. MLX's work must be finished (the kernel's inputs
/// evaluated): its products would otherwise run single-threaded too.
pub(crate) struct SingleThreaded(Option<(c_int, SetThreads)>);

pub(crate) fn single_threaded(workers: usize) -> SingleThreaded {
    match blas().and_then(|b| b.threads) {
        // SAFETY: OpenBLAS' thread-count functions, restored on drop.
        Some((get, set)) if workers > 1 => unsafe {
            let n = get();
            set(1);
            SingleThreaded(Some((n, set)))
        },
        _ => SingleThreaded(None),
    }
}

impl Drop for SingleThreaded {
    fn drop(&mut self) {
        if let Some((n, set)) = self.0 {
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
