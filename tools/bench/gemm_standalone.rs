//! Standalone timing of kiln's packed sgemm and the AVX2 FMA peak, built with plain rustc (no
//! cargo, no release build of the workspace), 1 thread, median of 25 runs:
//!
//!     mkdir -p /tmp/gemm-mb/src/gemm && cp codegen/src/isa.rs /tmp/gemm-mb/src/ \
//!       && cp codegen/src/gemm/{mod,avx2}.rs /tmp/gemm-mb/src/gemm/ \
//!       && sed -i '/^#\[cfg(test)\]$/{N;/mod tests;/d}' /tmp/gemm-mb/src/gemm/mod.rs \
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

fn median(mut v: Vec<f64>) -> f64 { v.sort_by(|a, b| a.partial_cmp(b).unwrap()); v[v.len() / 2] }

fn main() {
    let rounds = 1u64 << 22;
    let mut t = Vec::new();
    for _ in 0..15 {
        let s = Instant::now();
        std::hint::black_box(unsafe { fma_chains(std::hint::black_box(rounds)) });
        t.push(s.elapsed().as_secs_f64());
    }
    let peak = (rounds * 12 * 16) as f64 / median(t) / 1e9;
    println!("fp32 peak (12 chains of 256-bit FMA): {peak:.1} GFLOP/s");
    for (m, k, n) in [(512usize, 512usize, 512usize), (128, 768, 3072)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut c = vec![0f32; m * n];
        let pb = gemm::PackedB::pack(&b, k, n, n, 1).unwrap();
        let prod = gemm::Product { m, a_rs: k as isize, a_cs: 1, c_rs: n as isize, alpha: 1.0, beta: 0.0, accumulate: false };
        for isa in [Isa::Avx2Fma, Isa::Generic] {
            let mut t = Vec::new();
            for _ in 0..25 {
                let s = Instant::now();
                unsafe { prod.run(isa, a.as_ptr(), &pb, c.as_mut_ptr(), 0..m, 0..pb.panels(), &mut |_, _| {}) };
                t.push(s.elapsed().as_secs_f64());
            }
            let med = median(t);
            let gf = 2.0 * (m * n * k) as f64 / med / 1e9;
            println!("{m}x{k}x{n} {isa}: median {:.3} ms, {gf:.1} GFLOP/s, {:.0}% of peak", med * 1e3, 100.0 * gf / peak);
        }
        std::hint::black_box(&c);
    }
}
