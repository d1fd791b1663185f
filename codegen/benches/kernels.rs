//! Kernel benchmarks: this core's measured fp32 peak; GEMM 512³ (kiln's MatMul plan step at 1 and 2
//! threads, the `gemm` crate directly, the Cranelift 4×8 micro-kernel, `matrixmultiply`); softmax
//! two-pass, classic three-pass and stored three-pass on rows of 4 Ki, 1 Mi and 8 Mi floats;
//! LayerNorm vs RMSNorm on [4096, 768]; memcpy baselines of the same sizes; a GELU chain.
//!
//! Run: `cargo bench -p kiln-codegen --bench kernels` (`-- --test` runs each once). The numbers
//! and what they mean are in docs/benchmarks.md ("The JIT").

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_codegen::host::GemmCall;
use kiln_codegen::jit::{HostFeatures, Jit};
use kiln_codegen::{CodegenOptions, Executable, Isa, SoftmaxAlgo, compile};
use kiln_ir::{GraphBuilder, Op, Tensor, TensorType, UnaryOp, Weights};
use std::hint::black_box;
use std::time::Duration;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| data_at(i, seed)).collect()
}

/// ≈ N(0, 1): the four 16-bit quarters of splitmix64(i), each uniform in [−0.5, 0.5), summed
/// and scaled by √3 to unit variance (tools/bench/rows_ort.py computes the same values).
fn bell_at(i: u64) -> f32 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let sum: f32 = (0..4).map(|q| ((z >> (16 * q)) & 0xffff) as f32 / 65536.0 - 0.5).sum();
    sum * 3f32.sqrt()
}

/// Element `i` of `data(_, seed)`: uniform in [−0.5, 0.5).
fn data_at(i: usize, seed: u32) -> f32 {
    ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0 - 0.5
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

/// Total time of all plan steps over `iters` runs: the kernels' own time, without `run`'s input
/// checks and output copies (which `run` pays in full: a fresh output Vec per run).
fn steps_time(exe: &Executable, x: &Tensor, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let (out, times) = exe.run_profiled(&[black_box(x)]).unwrap();
        total += times.iter().sum::<Duration>();
        black_box(out);
    }
    total
}

fn one_op_graph(name: &str, op: Op, shape: &[usize], weights: &[(&str, Tensor)]) -> (kiln_ir::Graph, Weights) {
    let mut gb = GraphBuilder::new(name);
    gb.input("x", "x", TensorType::f32(shape.to_vec()));
    let mut w = Weights::new();
    let mut inputs = vec!["x".to_string()];
    for (wname, t) in weights {
        gb.weight(*wname, *wname, t.ty().clone());
        w.insert(wname.to_string(), t.clone());
        inputs.push(wname.to_string());
    }
    gb.node("n", name, Ok(op), inputs, vec!["y".into()]);
    gb.output("o", "y");
    (gb.finish().unwrap(), w)
}

fn softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("softmax");
    for len in [4096usize, 1 << 20, 1 << 23] {
        let x = Tensor::from_f32([1, len], data(len, 3).iter().map(|v| v * 20.0).collect()).unwrap();
        let (graph, weights) = one_op_graph("sm", Op::Softmax { axis: -1 }, &[1, len], &[]);
        g.throughput(Throughput::Bytes((8 * len) as u64)); // one read and one write of each float
        let algos = [
            (SoftmaxAlgo::TwoPass, "two_pass"),
            (SoftmaxAlgo::ThreePass, "three_pass"),
            (SoftmaxAlgo::ThreePassStored, "three_pass_stored"),
            (SoftmaxAlgo::Simd, "simd"),
        ];
        for (algo, label) in algos {
            let exe =
                compile(&graph, &weights, &CodegenOptions { threads: 1, softmax: algo, ..Default::default() }).unwrap();
            g.bench_function(format!("{label}_{len}"), |bench| bench.iter_custom(|iters| steps_time(&exe, &x, iters)));
        }
        memcpy_baseline(&mut g, 4 * len);
    }
    g.finish();
}

/// A copy of `bytes` between two warm buffers: the bandwidth a one-read-one-write kernel of the
/// same size can at best reach.
fn memcpy_baseline(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, bytes: usize) {
    let src = data(bytes / 4, 9);
    let mut dst = vec![0f32; bytes / 4];
    g.throughput(Throughput::Bytes(2 * bytes as u64));
    g.bench_function(format!("memcpy_{}", bytes / 4), |bench| {
        bench.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
}

/// LayerNorm vs RMSNormalization on [4096, 768] (12 MiB: out of this machine's caches), 1 thread.
fn norms(c: &mut Criterion) {
    let (rows, d) = (4096usize, 768usize);
    let x = Tensor::from_f32([rows, d], data(rows * d, 5)).unwrap();
    let gamma = Tensor::from_f32([d], data(d, 6).iter().map(|v| 1.0 + v).collect()).unwrap();
    let beta = Tensor::from_f32([d], data(d, 7)).unwrap();
    let mut g = c.benchmark_group("norm_4096x768");
    g.throughput(Throughput::Bytes((8 * rows * d) as u64));
    let cases = [
        ("layernorm", Op::LayerNormalization { axis: -1, epsilon: 1e-5 }, vec![("g", gamma.clone()), ("b", beta)]),
        ("rmsnorm", Op::RmsNormalization { axis: -1, epsilon: 1e-5 }, vec![("g", gamma)]),
    ];
    for (label, op, w) in cases {
        let (graph, weights) = one_op_graph(label, op, &[rows, d], &w);
        let exe = compile(
            &graph,
            &weights,
            &CodegenOptions { threads: 1, softmax: SoftmaxAlgo::TwoPass, ..Default::default() },
        )
        .unwrap();
        g.bench_function(label, |bench| bench.iter_custom(|iters| steps_time(&exe, &x, iters)));
    }
    memcpy_baseline(&mut g, 4 * rows * d);
    g.finish();
}

/// This core's fp32 peak, measured: 12 independent chains of 256-bit FMAs (enough to cover the FMA
/// latency on both FMA pipes), 2·8 flops each; and of 512-bit FMAs when the CPU has AVX-512.
fn fp32_peak(c: &mut Criterion) {
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        return;
    }
    const ROUNDS: u64 = 1 << 16;
    let mut g = c.benchmark_group("fp32_peak");
    g.throughput(Throughput::Elements(ROUNDS * 12 * 16)); // flops
    // SAFETY: AVX2 and FMA were detected above.
    g.bench_function("avx2_fma_12_chains", |bench| bench.iter(|| unsafe { fma_chains(black_box(ROUNDS)) }));
    if std::is_x86_feature_detected!("avx512f") {
        // Half the rounds of twice the lanes: the same flops per iteration as the AVX2 chains.
        // SAFETY: AVX-512 F was detected just above.
        g.bench_function("avx512_12_chains", |bench| bench.iter(|| unsafe { fma_chains_512(black_box(ROUNDS / 2)) }));
    }
    g.finish();
}

/// As [`fma_chains`], 512 bits wide (Zen 4 runs each as two 256-bit halves: the same peak).
#[target_feature(enable = "avx512f")]
fn fma_chains_512(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 12];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for v in acc {
        sum = _mm512_add_ps(sum, v);
    }
    _mm512_reduce_add_ps(sum)
}

#[target_feature(enable = "avx2,fma")]
fn fma_chains(rounds: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..rounds {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for v in acc {
        sum = _mm256_add_ps(sum, v);
    }
    let mut out = [0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

/// kiln's whole MatMul path for [512,512]·[512,512] at 1 and 2 threads (plan step time).
fn gemm_plan(c: &mut Criterion) {
    let n = 512;
    let x = Tensor::from_f32([n, n], data(n * n, 1)).unwrap();
    let w = Tensor::from_f32([n, n], data(n * n, 2)).unwrap();
    let (graph, weights) = one_op_graph("mm", Op::MatMul, &[n, n], &[("w", w)]);
    let mut g = c.benchmark_group("gemm512");
    g.throughput(Throughput::Elements((2 * n * n * n) as u64));
    g.sample_size(20);
    for threads in [1, 2] {
        let exe =
            compile(&graph, &weights, &CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() })
                .unwrap();
        g.bench_function(format!("kiln_matmul_step_{threads}t"), |bench| {
            bench.iter_custom(|iters| steps_time(&exe, &x, iters))
        });
    }
    g.finish();
}

/// kiln's packed sgemm (B packed once, outside the timed loop) against the `gemm` crate (which
/// packs B on every call) at 512³ and the BERT shape 128×768×3072, 1 thread, plus the whole
/// MatMul plan step for the BERT shape at 1 and 2 threads.
fn packed_gemm(c: &mut Criterion) {
    use kiln_codegen::gemm::{PackedB, Product};
    for (m, k, n) in [(512, 512, 512), (128, 768, 3072)] {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let mut out = vec![0f32; m * n];
        let mut g = c.benchmark_group(format!("packed_gemm_{m}x{k}x{n}"));
        g.throughput(Throughput::Elements((2 * m * n * k) as u64)); // flops
        g.sample_size(20);
        let packed = PackedB::pack(&b, k, n, n, 1).unwrap();
        let prod = Product { m, a_rs: k as isize, a_cs: 1, c_rs: n as isize, alpha: 1.0, beta: 0.0, accumulate: false };
        let isa = kiln_codegen::Isa::detect();
        g.bench_function(format!("kiln_packed_{isa}_1t"), |bench| {
            bench.iter(|| {
                // SAFETY: a is m×k, out m×n, and the ranges are inside them.
                unsafe {
                    prod.run(isa, a.as_ptr(), &packed, out.as_mut_ptr(), 0..m, 0..packed.panels(), &mut |_, _| {})
                }
            })
        });
        let call = GemmCall {
            m,
            n,
            k,
            a_rs: k as isize,
            a_cs: 1,
            b_rs: n as isize,
            b_cs: 1,
            d_rs: n as isize,
            alpha: 1.0,
            beta: 0.0,
            accumulate: false,
        };
        g.bench_function("gemm_crate_1t", |bench| {
            // SAFETY: a is m×k, b k×n, out m×n.
            bench.iter(|| unsafe { call.run(a.as_ptr(), b.as_ptr(), out.as_mut_ptr()) })
        });
        if m == 128 {
            let x = Tensor::from_f32([m, k], a.clone()).unwrap();
            let w = Tensor::from_f32([k, n], b.clone()).unwrap();
            let mut gb = GraphBuilder::new("mm");
            gb.input("x", "x", TensorType::f32([m, k]));
            gb.weight("w", "w", TensorType::f32([k, n]));
            gb.node("n", "mm", Ok(Op::MatMul), vec!["x".into(), "w".into()], vec!["y".into()]);
            gb.output("o", "y");
            let graph = gb.finish().unwrap();
            let mut weights = Weights::new();
            weights.insert("w".to_string(), w);
            for threads in [1, 2] {
                let opts = CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() };
                let exe = compile(&graph, &weights, &opts).unwrap();
                g.bench_function(format!("kiln_matmul_step_{threads}t"), |bench| {
                    bench.iter_custom(|iters| steps_time(&exe, &x, iters))
                });
            }
        }
        g.finish();
        black_box(&out);
    }
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
        let exe = compile(
            &graph,
            &Weights::new(),
            &CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() },
        )
        .unwrap();
        g.bench_function(format!("gelu_erf_1M_{threads}t"), |bench| bench.iter(|| exe.run(&[black_box(&x)]).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, fp32_peak, gemm, gemm_plan, packed_gemm, softmax, norms, fused, rows_s5);
criterion_main!(benches);

/// Issue 13's row and elementwise kernels at the bench/peers shapes, 1 thread: the hand-written
/// kernel at this CPU's ISA ("simd") and forced to portable code ("simd_generic"), the generated
/// Cranelift kernel it replaces ("jit"), and a memcpy of the same bytes. Plan steps only
/// (`steps_time`) for compiled graphs; the generated map and norm kernels are called directly.
fn rows_s5(c: &mut Criterion) {
    let isas = [(Isa::detect(), "simd"), (Isa::Generic, "simd_generic")];
    for (rows, n) in [(256usize, 4096usize), (8, 1 << 20)] {
        let mut g = c.benchmark_group(format!("s5_softmax_{rows}x{n}"));
        g.throughput(Throughput::Bytes((8 * rows * n) as u64));
        let x = Tensor::from_f32([rows, n], data(rows * n, 3).iter().map(|v| v * 20.0).collect()).unwrap();
        let (graph, weights) = one_op_graph("sm", Op::Softmax { axis: -1 }, &[rows, n], &[]);
        for (isa, label) in isas {
            let exe = compile(&graph, &weights, &CodegenOptions { threads: 1, isa, ..Default::default() }).unwrap();
            g.bench_function(label, |bench| bench.iter_custom(|iters| steps_time(&exe, &x, iters)));
        }
        let o = CodegenOptions { threads: 1, softmax: SoftmaxAlgo::ThreePassStored, ..Default::default() };
        let exe = compile(&graph, &weights, &o).unwrap();
        g.bench_function("jit", |bench| bench.iter_custom(|iters| steps_time(&exe, &x, iters)));
        memcpy_baseline(&mut g, 4 * rows * n);
        g.finish();
    }

    let (rows, d) = (4096usize, 768usize);
    let mut g = c.benchmark_group("s5_layernorm_4096x768");
    g.throughput(Throughput::Bytes((8 * rows * d) as u64));
    let x = Tensor::from_f32([rows, d], data(rows * d, 5)).unwrap();
    let gamma = Tensor::from_f32([d], data(d, 6).iter().map(|v| 1.0 + v).collect()).unwrap();
    let beta = Tensor::from_f32([d], data(d, 7)).unwrap();
    let ln = Op::LayerNormalization { axis: -1, epsilon: 1e-5 };
    let (graph, weights) = one_op_graph("ln", ln, &[rows, d], &[("g", gamma.clone()), ("b", beta.clone())]);
    for (isa, label) in isas {
        let exe = compile(&graph, &weights, &CodegenOptions { threads: 1, isa, ..Default::default() }).unwrap();
        g.bench_function(label, |bench| bench.iter_custom(|iters| steps_time(&exe, &x, iters)));
    }
    let mut jit = Jit::new(HostFeatures::detect()).unwrap();
    kiln_codegen::kernels::rows::norm(&mut jit, "ln", d, 1e-5, false, true).unwrap();
    let (funcs, _code) = jit.finish().unwrap();
    let mut out = vec![0f32; rows * d];
    let (xv, gv, bv) =
        (x.as_f32().unwrap().to_vec(), gamma.as_f32().unwrap().to_vec(), beta.as_f32().unwrap().to_vec());
    g.bench_function("jit", |bench| {
        bench.iter(|| {
            let args =
                [out.as_mut_ptr() as *mut u8, xv.as_ptr() as *mut u8, gv.as_ptr() as *mut u8, bv.as_ptr() as *mut u8];
            // SAFETY: the kernel reads rows·d floats of x and d of γ, β, and writes rows·d of out.
            unsafe { (funcs[0].func)(args.as_ptr(), 0, rows as i64) };
            black_box(&mut out);
        })
    });
    memcpy_baseline(&mut g, 4 * rows * d);
    g.finish();

    let len = 1usize << 20;
    let x = Tensor::from_f32([len], data(len, 4).iter().map(|v| v * 8.0).collect()).unwrap();
    for (u, label) in [(UnaryOp::Exp, "exp"), (UnaryOp::Gelu { tanh: false }, "gelu_erf")] {
        let mut g = c.benchmark_group(format!("s5_{label}_1m"));
        g.throughput(Throughput::Bytes((8 * len) as u64));
        let (graph, weights) = one_op_graph(label, Op::Unary(u), &[len], &[]);
        for (isa, label) in isas {
            let exe = compile(&graph, &weights, &CodegenOptions { threads: 1, isa, ..Default::default() }).unwrap();
            g.bench_function(label, |bench| bench.iter_custom(|iters| steps_time(&exe, &x, iters)));
        }
        use kiln_codegen::kernels::elementwise::{self, Expr, Fused};
        let mut jit = Jit::new(HostFeatures::detect()).unwrap();
        let f =
            Fused { nodes: vec![Expr::Leaf(0), Expr::Unary(u, 0)], out_shape: vec![len], leaf_shapes: vec![vec![len]] };
        let lay = elementwise::define(&mut jit, "u", &f).unwrap();
        let (funcs, _code) = jit.finish().unwrap();
        let xv = x.as_f32().unwrap().to_vec();
        let mut out = vec![0f32; len];
        g.bench_function("jit", |bench| {
            bench.iter(|| {
                let args = [out.as_mut_ptr() as *mut u8, xv.as_ptr() as *mut u8];
                // SAFETY: the kernel reads len floats of x and writes len of out.
                unsafe { (funcs[0].func)(args.as_ptr(), 0, lay.rows() as i64) };
                black_box(&mut out);
            })
        });
        memcpy_baseline(&mut g, 4 * len);
        g.finish();
    }
    // GELU's erfc tail runs for a vector only when a lane is below −2: on the uniform [−4, 4)
    // data above every vector has one (its worst case); activations are closer to a bell curve,
    // here ≈ N(0, 1) (`bell_at`, as rows_ort.py's gelu_erf_1m_bell).
    let bell: Vec<f32> = (0..len as u64).map(bell_at).collect();
    let x = Tensor::from_f32([len], bell).unwrap();
    let mut g = c.benchmark_group("s5_gelu_erf_1m_bell");
    g.throughput(Throughput::Bytes((8 * len) as u64));
    let (graph, weights) = one_op_graph("gelu_erf", Op::Unary(UnaryOp::Gelu { tanh: false }), &[len], &[]);
    for (isa, label) in isas {
        let exe = compile(&graph, &weights, &CodegenOptions { threads: 1, isa, ..Default::default() }).unwrap();
        g.bench_function(label, |bench| bench.iter_custom(|iters| steps_time(&exe, &x, iters)));
    }
    g.finish();
}
