//! Standalone timing of kiln's packed sgemm (AVX-512, AVX2 and portable kernels) and the fp32
//! FMA peak (256- and 512-bit chains), built with plain rustc (no cargo, no release build of the
//! workspace), 1 thread, 25 runs timed by thread CPU time (median and fastest; % of peak from the
//! fastest runs, the least disturbed on a shared machine):
//!
//!     mkdir -p /tmp/gemm-mb/src/gemm && cp codegen/src/isa.rs /tmp/gemm-mb/src/ \
//!       && cp codegen/src/gemm/{mod,avx2,avx512}.rs /tmp/gemm-mb/src/gemm/ \
//!       && sed -i '/^#\[cfg(test)\]$/{N;/mod tests;/d}; /^pub mod conv;$/d' /tmp/gemm-mb/src/gemm/mod.rs \
//!       && cp tools/bench/gemm_standalone.rs /tmp/gemm-mb/src/main.rs \
//!       && rustc --edition 2024 -C opt-level=3 -o /tmp/gemm-mb/gemm-mb /tmp/gemm-mb/src/main.rs \
//!       && /tmp/gemm-mb/gemm-mb
//!
//! The criterion bench `cargo bench -p kiln-codegen --bench kernels -- packed_gemm` measures the
//! same product in the crate; this exists for a quick number when a release build is too slow.
#![allow(dead_code)]
mod isa;
mod gemm;
mod pool { pub fn chunk(rows: usize, n: usize, i: usize) -> (usize, usize) { (rows * i / n, rows * (i + 1) / n) } }
use isa::Isa;
use std::time::Instant;

#[target_feature(enable = "avx2,fma")]
fn fma_chains(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..rounds {
        for v in acc.iter_mut() { *v = _mm256_fmadd_ps(*v, a, b); }
    }
    let mut out = [0f32; 8];
    let mut sum = _mm256_setzero_ps();
    for v in acc { sum = _mm256_add_ps(sum, v); }
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

#[target_feature(enable = "avx512f")]
fn fma_chains_512(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..rounds {
        for v in acc.iter_mut() { *v = _mm512_fmadd_ps(*v, a, b); }
    }
    let mut sum = _mm512_setzero_ps();
    for v in acc { sum = _mm512_add_ps(sum, v); }
    _mm512_reduce_add_ps(sum)
}

/// This thread's CPU time in seconds (CLOCK_THREAD_CPUTIME_ID): on a shared machine the time the
/// thread was descheduled is not counted, so figures measured beside other jobs stay comparable.
fn cpu_now() -> f64 {
    #[repr(C)]
    struct Timespec { s: i64, ns: i64 }
    unsafe extern "C" { fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32; }
    let mut ts = Timespec { s: 0, ns: 0 };
    // SAFETY: ts is a valid timespec; 3 = CLOCK_THREAD_CPUTIME_ID on Linux.
    unsafe { clock_gettime(3, &mut ts) };
    ts.s as f64 + ts.ns as f64 * 1e-9
}

/// Times `f` `runs` times by thread CPU time; returns (median, min).
fn time(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut t = Vec::new();
    for _ in 0..runs {
        let s = cpu_now();
        f();
        t.push(cpu_now() - s);
    }
    let min = t.iter().cloned().fold(f64::INFINITY, f64::min);
    (median(t), min)
}

fn median(mut v: Vec<f64>) -> f64 { v.sort_by(|a, b| a.partial_cmp(b).unwrap()); v[v.len() / 2] }

fn main() {
    let rounds = 1u64 << 22;
    let flops = (rounds * 12 * 16) as f64;
    // SAFETY: AVX2 and FMA are present on every CPU this tool is run on (an x86-64-v3 or later).
    let (med, min) = time(15, || { std::hint::black_box(unsafe { fma_chains(std::hint::black_box(rounds)) }); });
    let (peak, peak_min) = (flops / med / 1e9, flops / min / 1e9);
    println!("fp32 peak, 12 chains of 256-bit FMA: {peak:.1} GFLOP/s (fastest run {peak_min:.1})");
    let (mut peak512, mut peak512_min) = (0.0, 0.0);
    if std::is_x86_feature_detected!("avx512f") {
        // Half the rounds of twice the lanes: the same flops.
        // SAFETY: AVX-512 F was detected.
        let (med, min) = time(15, || { std::hint::black_box(unsafe { fma_chains_512(std::hint::black_box(rounds / 2)) }); });
        (peak512, peak512_min) = (flops / med / 1e9, flops / min / 1e9);
        println!("fp32 peak, 12 chains of 512-bit FMA: {peak512:.1} GFLOP/s (fastest run {peak512_min:.1})");
    }
    // The core's peak: the faster of the two, by fastest runs (the least disturbed on a shared
    // machine); the products' % of peak are their fastest runs against it.
    let peak = peak_min.max(peak512_min);
    let _ = (peak512,);
    println!("times are thread CPU time, 25 runs; % of peak = fastest run ÷ {peak:.1} GFLOP/s");
    for (m, k, n) in [(512usize, 512usize, 512usize), (128, 768, 3072)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut c = vec![0f32; m * n];
        let prod = gemm::Product { m, a_rs: k as isize, a_cs: 1, c_rs: n as isize, alpha: 1.0, beta: 0.0, accumulate: false };
        for isa in [Isa::Avx512, Isa::Avx2Fma, Isa::Generic] {
            if Isa::supported(isa) != isa {
                continue;
            }
            let pb = gemm::PackedB::pack(&b, k, n, n, 1).unwrap();
            // SAFETY: a, c hold m×k and m×n floats.
            let (med, min) = time(25, || unsafe { prod.run(isa, a.as_ptr(), &pb, c.as_mut_ptr(), 0..m, 0..pb.panels(), &mut |_, _| {}) });
            let (gf, gf_min) = (2.0 * (m * n * k) as f64 / med / 1e9, 2.0 * (m * n * k) as f64 / min / 1e9);
            println!("{m}x{k}x{n} {isa}: median {:.3} ms ({gf:.1} GFLOP/s), fastest {:.3} ms ({gf_min:.1} GFLOP/s, {:.0}% of peak)", med * 1e3, min * 1e3, 100.0 * gf_min / peak);
        }
        std::hint::black_box(&c);
    }
}
