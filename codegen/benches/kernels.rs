//! Kernel benchmarks: GEMM 512³ (kiln's GEMM path = the `gemm` crate through `host::GemmCall`,
//! the Cranelift 4×8 micro-kernel, `matrixmultiply`), softmax two-pass vs three-pass on one row
//! of 4096 and of 1 048 576, and a fused elementwise chain. Single-threaded unless named.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-shared cargo bench -p kiln-codegen --bench kernels`
//! (`-- --test` runs each once, for CI).
//!
//! Measured 2026-11-27 on the shared 2-core EPYC (load average ≈ 6.7, so absolute numbers are
//! inflated; ratios are what count), medians:
//! - gemm512: `gemm` crate 4.99 ms (54 GFLOP/s), Cranelift 4×8 kernel 12.9 ms (21 GFLOP/s),
//!   matrixmultiply (threading feature) 4.14 ms. The plan therefore calls the `gemm` crate;
//!   kiln's generated code does the fusion around it (epilogues).
//! - softmax one row: 4096 — two-pass 36.7 µs, three-pass 44.0 µs; 1 048 576 — two-pass
//!   7.90 ms, three-pass 12.9 ms (run() overhead included: input check, output copy).
//! - Gelu(erf) on 1M elements: 4.3–8.7 ms depending on machine load (1 and 2 threads alike, so
//!   the second core was busy).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_codegen::host::GemmCall;
use kiln_codegen::jit::{HostFeatures, Jit};
use kiln_codegen::{CodegenOptions, SoftmaxAlgo, compile};
use kiln_ir::{GraphBuilder, Op, Tensor, TensorType, UnaryOp, Weights};
use std::hint::black_box;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0 - 0.5)
        .collect()
}

fn gemm(c: &mut Criterion) {
    let n = 512;
    let a = data(n * n, 1);
    let b = data(n * n, 2);
    let mut out = vec![0f32; n * n];
    let mut g = c.benchmark_group("gemm512");
    g.throughput(Throughput::Elements((2 * n * n * n) as u64)); // flops
    g.sample_size(20);
    let call = GemmCall {
        m: n,
        n,
        k: n,
        a_rs: n as isize,
        a_cs: 1,
        b_rs: n as isize,
        b_cs: 1,
        d_rs: n as isize,
        alpha: 1.0,
        beta: 0.0,
        accumulate: false,
    };
    g.bench_function("kiln_gemm_crate_1t", |bench| {
        // SAFETY: all three buffers are n×n.
        bench.iter(|| unsafe { call.run(a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) })
    });
    let mut jit = Jit::new(HostFeatures::detect()).unwrap();
    kiln_codegen::kernels::gemm::define(&mut jit, "gemm", n, n, n).unwrap();
    let (f, _mem) = jit.finish().unwrap();
    let func = f[0].func;
    g.bench_function("cranelift_4x8_1t", |bench| {
        bench.iter(|| {
            let args = [out.as_mut_ptr() as *mut u8, a.as_ptr() as *mut u8, b.as_ptr() as *mut u8];
            // SAFETY: the kernel was generated for n×n buffers.
            unsafe { func(args.as_ptr(), 0, (n / 4) as i64) }
        })
    });
    g.bench_function("matrixmultiply", |bench| {
        bench.iter(|| {
            // SAFETY: row-major n×n buffers.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    n,
                    n,
                    1.0,
                    a.as_ptr(),
                    n as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        })
    });
    g.finish();
    black_box(&out);
}

fn softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("softmax");
    for len in [4096usize, 1 << 20] {
        let x = Tensor::from_f32([1, len], data(len, 3).iter().map(|v| v * 20.0).collect()).unwrap();
        let mut gb = GraphBuilder::new("sm");
        gb.input("x", "x", TensorType::f32([1, len]));
        gb.node("n", "sm", Ok(Op::Softmax { axis: -1 }), vec!["x".into()], vec!["y".into()]);
        gb.output("o", "y");
        let graph = gb.finish().unwrap();
        g.throughput(Throughput::Elements(len as u64));
        for (algo, label) in [(SoftmaxAlgo::TwoPass, "two_pass"), (SoftmaxAlgo::ThreePass, "three_pass")] {
            let exe = compile(&graph, &Weights::new(), &CodegenOptions { threads: 1, softmax: algo }).unwrap();
            g.bench_function(format!("{label}_{len}"), |bench| bench.iter(|| exe.run(&[black_box(&x)]).unwrap()));
        }
    }
    g.finish();
}

fn fused(c: &mut Criterion) {
    let len = 1 << 20;
    let x = Tensor::from_f32([len], data(len, 4)).unwrap();
    let mut gb = GraphBuilder::new("gelu");
    gb.input("x", "x", TensorType::f32([len]));
    gb.node("n", "gelu", Ok(Op::Unary(UnaryOp::Gelu { tanh: false })), vec!["x".into()], vec!["y".into()]);
    gb.output("o", "y");
    let graph = gb.finish().unwrap();
    let mut g = c.benchmark_group("elementwise");
    g.throughput(Throughput::Elements(len as u64));
    for threads in [1, 2] {
        let exe = compile(&graph, &Weights::new(), &CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass }).unwrap();
        g.bench_function(format!("gelu_erf_1M_{threads}t"), |bench| bench.iter(|| exe.run(&[black_box(&x)]).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, gemm, softmax, fused);
criterion_main!(benches);
