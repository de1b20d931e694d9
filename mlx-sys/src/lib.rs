//! Raw bindings to mlx-c, built against a prebuilt MLX (see `build.rs`). A drop-in replacement
//! for crates.io `mlx-sys` 0.7.0, wired in with `[patch.crates-io]` so `mlx-rs` 0.33.0 uses it.
#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// The MLX version whose headers these bindings were built against (from `mlx/version.h`).
pub const MLX_HEADERS_VERSION: Option<&str> = option_env!("MLX_SYS_MLX_VERSION");

/// mlx-rs 0.33.0 seeds its default RNG with `mach_sys::mach_time::mach_approximate_time()`, a
/// Darwin-only symbol. Off Apple platforms, provide it (wall-clock nanoseconds; only used as a
/// seed) so such binaries link.
#[cfg(not(target_vendor = "apple"))]
#[no_mangle]
pub extern "C" fn mach_approximate_time() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn runtime_version_matches_headers() {
        let mut s = unsafe { mlx_string_new() };
        assert_eq!(unsafe { mlx_version(&mut s) }, 0);
        let runtime = unsafe { CStr::from_ptr(mlx_string_data(s)) }.to_str().unwrap().to_owned();
        unsafe { mlx_string_free(s) };
        if let Some(headers) = MLX_HEADERS_VERSION {
            assert!(runtime.starts_with(headers), "libmlx {runtime} vs headers {headers}");
        }
        assert!(!runtime.is_empty());
    }

    #[test]
    fn add_two_arrays_through_the_c_api() {
        unsafe {
            let a_data = [1.0f32, 2.0, 3.0];
            let b_data = [10.0f32, 20.0, 30.0];
            let shape = [3i32];
            let a = mlx_array_new_data(a_data.as_ptr().cast(), shape.as_ptr(), 1, mlx_dtype__MLX_FLOAT32);
            let b = mlx_array_new_data(b_data.as_ptr().cast(), shape.as_ptr(), 1, mlx_dtype__MLX_FLOAT32);
            let stream = mlx_default_cpu_stream_new();
            let mut c = mlx_array_new();
            assert_eq!(mlx_add(&mut c, a, b, stream), 0);
            assert_eq!(mlx_array_eval(c), 0);
            let out = std::slice::from_raw_parts(mlx_array_data_float32(c), 3);
            assert_eq!(out, &[11.0, 22.0, 33.0]);
            mlx_array_free(a);
            mlx_array_free(b);
            mlx_array_free(c);
            mlx_stream_free(stream);
        }
    }
}
