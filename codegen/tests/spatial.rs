//! The spatial host kernels (pooling, ConvTranspose, interpolating Resize) against the reference
//! interpreter at shapes large enough that the executor splits them across 2 threads, and at 1
//! thread. Small shapes and every attribute are covered by tests/spatial_ort.rs (against ONNX
//! Runtime) and the differential tester.
//!
//! Tolerances: MaxPool is exact; the sums (AveragePool, LpPool, ConvTranspose's GEMM, Resize's
//! weighted taps) accumulate in f32 here and in f64 in the interpreter: 1e-5 relative plus 1e-5
//! absolute for results near zero.

mod common;

use common::*;
use kiln_ir::{CoordTransform, InterpMode, Op, PoolWindow};

const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
const SUMS: Tol = Tol { abs: 1e-5, rel: 1e-5 };

fn window(k: usize, s: usize, p: usize, ceil_mode: bool) -> PoolWindow {
    PoolWindow { kernel_shape: vec![k, k], strides: vec![s, s], pads: vec![p; 4], dilations: vec![1, 1], ceil_mode }
}

#[test]
fn pools_split_over_planes() {
    let mut rng = XRng(7);
    let x = rng.tensor(&[2, 24, 37, 35], -3.0, 3.0);
    let ops = [
        (Op::MaxPool(window(3, 2, 1, false)), EXACT),
        (Op::MaxPool(window(2, 2, 0, true)), EXACT),
        (Op::AveragePool { window: window(3, 1, 1, false), count_include_pad: false }, SUMS),
        (Op::AveragePool { window: window(3, 2, 1, true), count_include_pad: true }, SUMS),
        (Op::LpPool { window: window(2, 2, 1, false), p: 3 }, SUMS),
    ];
    for (op, tol) in ops {
        for threads in [1, 2] {
            let mut spec = Spec::new();
            spec.input("x", x.clone()).node("pool", op.clone(), &["x"], &["y"]).output("y");
            check_with(&spec, tol, &options(threads));
        }
    }
}

/// Found by the differential tester: a row with no full window (every window reaches into the
/// padding) made the tap loop start before the input (a usize underflow, a panic in debug).
#[test]
fn pools_without_a_full_window() {
    let mut rng = XRng(5);
    for shape in [[1, 3, 2, 2], [2, 2, 1, 3]] {
        let x = rng.tensor(&shape, -3.0, 3.0);
        for op in [
            Op::MaxPool(window(3, 1, 1, false)),
            Op::AveragePool { window: window(3, 2, 1, true), count_include_pad: true },
        ] {
            let mut spec = Spec::new();
            spec.input("x", x.clone()).node("pool", op, &["x"], &["y"]).output("y");
            check_with(&spec, SUMS, &options(1));
        }
    }
}

/// Found by the differential tester (seed 86014486): a 3-D pool over a depth-1 input whose
/// depth pad puts the one depth tap outside the input took the 2-D window kernel, which ignored
/// the depth axis: AveragePool gave sum/9 of the plane where every window is padding (0).
#[test]
fn pools_whose_depth_tap_is_padding() {
    let mut rng = XRng(11);
    let x = rng.tensor(&[1, 2, 1, 3, 4], 0.5, 3.0);
    for (pads, strides) in
        [([1, 0, 0, 0, 1, 0], [3, 2, 2]), ([0, 0, 0, 1, 0, 0], [1, 1, 1]), ([2, 1, 0, 0, 0, 1], [1, 2, 1])]
    {
        let window = |k: [usize; 3]| PoolWindow {
            kernel_shape: k.to_vec(),
            strides: strides.to_vec(),
            pads: pads.to_vec(),
            dilations: vec![2, 1, 1],
            ceil_mode: false,
        };
        for op in [
            Op::AveragePool { window: window([1, 3, 3]), count_include_pad: true },
            Op::AveragePool { window: window([1, 2, 3]), count_include_pad: false },
            Op::MaxPool(window([1, 2, 2])),
            Op::LpPool { window: window([1, 2, 2]), p: 2 },
        ] {
            for threads in [1, 2] {
                let mut spec = Spec::new();
                spec.input("x", x.clone()).node("pool", op.clone(), &["x"], &["y"]).output("y");
                check_with(&spec, SUMS, &options(threads));
            }
        }
    }
}

#[test]
fn conv_transpose_splits_over_channels() {
    let mut rng = XRng(11);
    let x = rng.tensor(&[2, 8, 13, 11], -1.0, 1.0);
    let w = rng.tensor(&[8, 6, 4, 3], -1.0, 1.0);
    let b = rng.tensor(&[12], -1.0, 1.0);
    let op =
        Op::ConvTranspose { strides: [2, 3], dilations: [1, 2], pads: [1, 0, 2, 1], output_padding: [1, 0], group: 2 };
    for threads in [1, 2] {
        let mut spec = Spec::new();
        spec.input("x", x.clone()).weight("w", w.clone()).weight("b", b.clone());
        spec.node("ct", op.clone(), &["x", "w", "b"], &["y"]).output("y");
        check_with(&spec, SUMS, &options(threads));
    }
}

#[test]
fn interpolating_resize_splits_over_rows() {
    let mut rng = XRng(13);
    let x = rng.tensor(&[2, 8, 29, 31], -3.0, 3.0);
    let modes = [InterpMode::Linear, InterpMode::Cubic { a: -0.75, exclude_outside: true }];
    for mode in modes {
        for ctm in [CoordTransform::HalfPixel, CoordTransform::AlignCorners, CoordTransform::TfCropAndResize] {
            let op = Op::ResizeInterp {
                mode,
                scales: None,
                sizes: Some(vec![2, 8, 45, 62]),
                coordinate_transformation_mode: ctm,
                roi: Some(vec![0.0, 0.0, -0.1, 0.2, 1.0, 1.0, 1.1, 0.9]),
                extrapolation_value: -2.0,
            };
            for threads in [1, 2] {
                let mut spec = Spec::new();
                spec.input("x", x.clone()).node("r", op.clone(), &["x"], &["y"]).output("y");
                check_with(&spec, SUMS, &options(threads));
            }
        }
    }
}

fn isa_options(threads: usize, isa: kiln_codegen::Isa) -> kiln_codegen::CodegenOptions {
    kiln_codegen::CodegenOptions { isa, ..options(threads) }
}

const ISAS: [kiln_codegen::Isa; 2] = [kiln_codegen::Isa::Generic, kiln_codegen::Isa::Avx2Fma];

/// Depthwise convolution (one input channel per group) runs as the direct window kernel, with
/// the portable and the AVX2 rows, at 1 and 2 threads: widths 1 to 17 (tails of every length),
/// channels not a multiple of 8, strides, dilations, asymmetric pads, channel multipliers, with
/// and without bias. Tolerance: kh·kw products summed in f32 (FMA or not) against f64.
#[test]
fn depthwise_conv_direct_kernel() {
    let mut rng = XRng(17);
    // (n, c, mult, h, w, k, stride, dilation, pads)
    let cases = [
        (2, 3, 1, 5, 1, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0]),
        (1, 5, 1, 3, 3, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
        (2, 12, 1, 9, 7, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
        (1, 7, 1, 17, 17, [7, 7], [1, 1], [1, 1], [3, 3, 3, 3]),
        (2, 4, 2, 11, 17, [3, 5], [1, 2], [2, 1], [2, 0, 1, 3]),
        (1, 9, 1, 20, 37, [3, 3], [2, 2], [1, 1], [0, 1, 1, 0]),
        (1, 1, 3, 6, 13, [2, 2], [3, 1], [1, 3], [0, 0, 1, 1]),
    ];
    for (n, c, mult, h, w, k, stride, dil, pads) in cases {
        let m = c * mult;
        let x = rng.tensor(&[n, c, h, w], -1.0, 1.0);
        let wt = rng.tensor(&[m, 1, k[0], k[1]], -1.0, 1.0);
        let b = rng.tensor(&[m], -1.0, 1.0);
        let tol = Tol { abs: 1e-5 * (k[0] * k[1]) as f32, rel: 1e-5 };
        for bias in [true, false] {
            let mut spec = Spec::new();
            spec.input("x", x.clone()).weight("w", wt.clone()).weight("b", b.clone());
            let ins: &[&str] = if bias { &["x", "w", "b"] } else { &["x", "w"] };
            spec.node("dw", Op::Conv { strides: stride, dilations: dil, pads, group: c }, ins, &["y"]).output("y");
            for threads in [1, 2] {
                for isa in ISAS {
                    let exe = check_with(&spec, tol, &isa_options(threads, isa));
                    assert!(exe.schedule_text().contains("depthwise conv"), "{}", exe.schedule_text());
                }
            }
        }
    }
}

/// The vectorised pool path (1-D/2-D max and average) at both ISAs and thread counts, odd widths
/// and a plane with NaN (which max must propagate: it takes the NaN-aware path).
#[test]
fn pools_vectorised_path() {
    let mut rng = XRng(19);
    let win = |k: [usize; 2], s: [usize; 2], d: [usize; 2], p: [usize; 4], ceil_mode| PoolWindow {
        kernel_shape: k.to_vec(),
        strides: s.to_vec(),
        pads: p.to_vec(),
        dilations: d.to_vec(),
        ceil_mode,
    };
    let ops = [
        (Op::MaxPool(win([3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false)), EXACT),
        (Op::MaxPool(win([2, 2], [2, 2], [1, 1], [0, 0, 0, 0], true)), EXACT),
        (Op::MaxPool(win([3, 3], [1, 1], [2, 1], [1, 0, 2, 1], false)), EXACT),
        (Op::AveragePool { window: win([3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false), count_include_pad: false }, SUMS),
        (Op::AveragePool { window: win([3, 2], [2, 3], [1, 1], [1, 0, 1, 1], true), count_include_pad: true }, SUMS),
    ];
    for shape in [[2, 3, 5, 1], [1, 5, 3, 3], [2, 3, 7, 7], [1, 9, 17, 17], [1, 2, 12, 40]] {
        let mut x = rng.tensor(&shape, -3.0, 3.0);
        if let kiln_ir::TensorData::F32(v) = x.data() {
            let mut v = v.clone();
            v[shape[2] * shape[3] + 1] = f32::NAN;
            x = kiln_ir::Tensor::new(shape.to_vec(), kiln_ir::TensorData::F32(v)).unwrap();
        }
        for (op, tol) in &ops {
            let (Op::MaxPool(wi) | Op::AveragePool { window: wi, .. }) = op else { unreachable!() };
            let fits =
                (0..2).all(|a| shape[2 + a] + wi.pads[a] + wi.pads[2 + a] > wi.dilations[a] * (wi.kernel_shape[a] - 1));
            if !fits {
                continue;
            }
            let mut spec = Spec::new();
            spec.input("x", x.clone()).node("pool", op.clone(), &["x"], &["y"]).output("y");
            for threads in [1, 2] {
                for isa in ISAS {
                    check_with(&spec, *tol, &isa_options(threads, isa));
                }
            }
        }
    }
}

/// A depthwise conv followed by an elementwise group (ReLU and a residual add; SiLU as
/// efficientnet's, x·σ(x), whose σ the generated epilogue calls a host kernel for) runs the group
/// as the conv's epilogue, plane by plane or (narrow planes: 13 channels, a block of 8 and one
/// of 5, split between two threads) block by block: one step, same numbers.
#[test]
fn depthwise_conv_fused_epilogue() {
    let mut rng = XRng(23);
    for (n, c, h, w) in [(2, 13, 19, 23), (2, 13, 5, 5)] {
        for silu in [false, true] {
            let x = rng.tensor(&[n, c, h, w], -1.0, 1.0);
            let r = rng.tensor(&[n, c, h, w], -1.0, 1.0);
            let mut spec = Spec::new();
            spec.input("x", x).input("r", r).weight("w", rng.tensor(&[c, 1, 5, 5], -1.0, 1.0));
            spec.weight("b", rng.tensor(&[c], -1.0, 1.0));
            let op = Op::Conv { strides: [1, 1], dilations: [1, 1], pads: [2, 2, 2, 2], group: c };
            spec.node("dw", op, &["x", "w", "b"], &["y"]);
            if silu {
                spec.node("sig", Op::Unary(kiln_ir::UnaryOp::Sigmoid), &["y"], &["s"]).node(
                    "mul",
                    Op::Binary(kiln_ir::BinaryOp::Mul),
                    &["y", "s"],
                    &["z"],
                );
            } else {
                spec.node("relu", Op::Unary(kiln_ir::UnaryOp::Relu), &["y"], &["a"]).node(
                    "add",
                    Op::Binary(kiln_ir::BinaryOp::Add),
                    &["a", "r"],
                    &["z"],
                );
            }
            spec.output("z");
            for threads in [1, 2] {
                for isa in ISAS {
                    let exe = check_with(&spec, Tol { abs: 25e-5, rel: 1e-5 }, &isa_options(threads, isa));
                    let schedule = exe.schedule_text();
                    assert!(schedule.contains("depthwise conv") && schedule.contains("+ epilogue"), "{schedule}");
                    assert_eq!(schedule.contains("channel blocks"), w == 5, "{schedule}");
                    assert_eq!(steps(&exe), 1, "{schedule}");
                }
            }
        }
    }
}

/// The 2×2/2 pools without padding and the 3×3/2 and 3×3/1 ones with padding 1 (direct kernels,
/// no scratch) and AveragePool's divisor table
/// (multiplied in as the window sums are stored), at both ISAs and thread counts: planes of width
/// 1, odd sizes (floor mode drops the last row/column, whose NaN must then not show), rows of
/// whole vectors plus tails, NaN in a vector block and in a tail of MaxPool (the plane then takes
/// the NaN-aware path), ceil_mode (partial windows: not the direct kernel), and pads as large as
/// the kernel, so that some windows are wholly padding (count 0 gives 0, or count the pads).
#[test]
fn pools_direct_2x2_and_divisor_table() {
    let mut rng = XRng(23);
    let win = |k: usize, s: usize, p: usize, ceil_mode| PoolWindow {
        kernel_shape: vec![k, k],
        strides: vec![s, s],
        pads: vec![p; 4],
        dilations: vec![1, 1],
        ceil_mode,
    };
    let avg = |w, count_include_pad| Op::AveragePool { window: w, count_include_pad };
    let ops = [
        (Op::MaxPool(win(2, 2, 0, false)), EXACT),
        (Op::MaxPool(win(2, 2, 0, true)), EXACT),
        (avg(win(2, 2, 0, false), false), SUMS),
        (avg(win(2, 2, 0, false), true), SUMS),
        (avg(win(2, 2, 0, true), false), SUMS),
        (avg(win(2, 2, 2, false), false), SUMS),
        (avg(win(2, 1, 2, false), true), SUMS),
        (avg(win(3, 2, 1, true), true), SUMS),
        (avg(win(3, 1, 3, false), false), SUMS),
        // 3×3/2 with padding 1 (ResNet's stem pool): a direct kernel where 2·oh ≤ h + 1 and
        // 2·ow ≤ w (here 16×40, 6×66, 9×48, 7×18, 2×2), whole vectors, and a last overlapping one.
        (Op::MaxPool(win(3, 2, 1, false)), EXACT),
        (avg(win(3, 2, 1, false), true), SUMS),
        (avg(win(3, 2, 1, false), false), SUMS),
        // 3×3/1 with padding 1: a direct kernel (oh ≤ h, ow ≤ w), rows of 1 to 66 outputs.
        (Op::MaxPool(win(3, 1, 1, false)), EXACT),
        (avg(win(3, 1, 1, false), true), SUMS),
        (avg(win(3, 1, 1, false), false), SUMS),
    ];
    let shapes = [
        [1, 2, 3, 1],
        [1, 3, 2, 2],
        [2, 3, 5, 9],
        [1, 2, 4, 17],
        [1, 4, 16, 40],
        [1, 2, 6, 66],
        [1, 3, 9, 48],
        [1, 3, 7, 18],
    ];
    for shape in shapes {
        let plane = shape[2] * shape[3];
        let mut x = rng.tensor(&shape, -3.0, 3.0);
        if let kiln_ir::TensorData::F32(v) = x.data() {
            let mut v = v.clone();
            // Plane 1: NaN in the first window; plane 2 (if any): NaN at the last element.
            v[plane + 1.min(plane - 1)] = f32::NAN;
            if shape[1] > 2 {
                v[3 * plane - 1] = f32::NAN;
            }
            x = kiln_ir::Tensor::new(shape.to_vec(), kiln_ir::TensorData::F32(v)).unwrap();
        }
        for (op, tol) in &ops {
            let (Op::MaxPool(wi) | Op::AveragePool { window: wi, .. }) = op else { unreachable!() };
            if (0..2).any(|a| shape[2 + a] + 2 * wi.pads[a] < wi.kernel_shape[a]) {
                continue;
            }
            let mut spec = Spec::new();
            spec.input("x", x.clone()).node("pool", op.clone(), &["x"], &["y"]).output("y");
            for threads in [1, 2] {
                for isa in ISAS {
                    check_with(&spec, *tol, &isa_options(threads, isa));
                }
            }
        }
    }
}

/// The direct depthwise kernels (3×3 at stride 1 and 2, no dilation; AVX2, no scratch copy), the
/// 5×5 and 7×7 windows beside them (the scratch path) and the fused Relu/Clip, against the interpreter with every ISA the CPU has (the portable
/// path included) at 1 and 2 threads: planes of 1×1, narrower than a vector, of whole 32-output
/// blocks and their tails (rows of 40, 66, 112, 113), symmetric, zero and asymmetric pads (pads
/// as large as the kernel: whole padding rows and columns), a channel multiplier, with and without
/// bias, and a NaN in the input (Clip and Relu keep it, as the interpreter does). The schedule
/// says which shapes take the direct kernel and that the clamp is fused (one step). Tolerance: K·K
/// products summed in f32 (FMA) against f64, 1e-5 per tap absolute plus 1e-5 relative.
#[test]
fn depthwise_direct_kernels_and_fused_clamp() {
    let mut isas = vec![kiln_codegen::Isa::Generic, kiln_codegen::Isa::Avx2Fma];
    if kiln_codegen::Isa::supported(kiln_codegen::Isa::Avx512) == kiln_codegen::Isa::Avx512 {
        isas.push(kiln_codegen::Isa::Avx512);
    }
    let mut rng = XRng(29);
    // (n, c, mult, h, w)
    let shapes = [
        (1, 3, 1, 1, 1),
        (2, 3, 1, 3, 3),
        (1, 5, 1, 7, 7),
        (1, 3, 2, 8, 9),
        (1, 3, 1, 13, 17),
        (1, 2, 1, 6, 40),
        (1, 3, 1, 9, 66),
        (1, 2, 1, 5, 112),
        (2, 2, 1, 7, 113),
        // 3×3/1 rows of 14 and 13 (these shapes' 3×3/1 case has no padding): the direct kernel
        // at Avx512, channel blocks at Avx2Fma.
        (1, 3, 1, 5, 16),
        (1, 2, 1, 4, 15),
    ];
    let clamps = [
        None,
        Some(Op::Unary(kiln_ir::UnaryOp::Relu)),
        Some(Op::Unary(kiln_ir::UnaryOp::Clip { min: Some(-0.5), max: Some(0.75) })),
        Some(Op::Unary(kiln_ir::UnaryOp::Clip { min: None, max: Some(0.25) })),
    ];
    let mut case = 0usize;
    for (n, c, mult, h, w) in shapes {
        let mut x = rng.tensor(&[n, c, h, w], -1.0, 1.0);
        if let kiln_ir::TensorData::F32(v) = x.data() {
            let mut v = v.clone();
            v[(h * w) / 2] = f32::NAN;
            x = kiln_ir::Tensor::new(vec![n, c, h, w], kiln_ir::TensorData::F32(v)).unwrap();
        }
        for k in [3, 5, 7] {
            for s in [1, 2] {
                case += 1;
                let p = k / 2;
                let pads = match case % 3 {
                    0 => [p, p, p, p],
                    1 => [0, 0, 0, 0],
                    _ => [k - 1, 1, 0, k],
                };
                if h + pads[0] + pads[2] < k || w + pads[1] + pads[3] < k {
                    continue;
                }
                let m = c * mult;
                let wt = rng.tensor(&[m, 1, k, k], -1.0, 1.0);
                let b = rng.tensor(&[m], -1.0, 1.0);
                let bias = case.is_multiple_of(2);
                let clamp = &clamps[case % clamps.len()];
                let mut spec = Spec::new();
                spec.input("x", x.clone()).weight("w", wt).weight("b", b);
                let ins: &[&str] = if bias { &["x", "w", "b"] } else { &["x", "w"] };
                let conv = Op::Conv { strides: [s, s], dilations: [1, 1], pads, group: c };
                spec.node("dw", conv, ins, &["y"]);
                match clamp {
                    Some(op) => spec.node("act", op.clone(), &["y"], &["z"]).output("z"),
                    None => spec.output("y"),
                };
                let tol = Tol { abs: 1e-5 * (k * k) as f32, rel: 1e-5 };
                for threads in [1, 2] {
                    for &isa in &isas {
                        let exe = check_with(&spec, tol, &isa_options(threads, isa));
                        let schedule = exe.schedule_text();
                        assert!(schedule.contains(&format!("depthwise conv {k}×{k}/{s}")), "{schedule}");
                        // Narrow planes run in channel blocks (one channel per group) instead.
                        let ow = (w + pads[1] + pads[3] - k) / s + 1;
                        let most = match (k, s) {
                            (3, 2) => 7,
                            (3, 1) if isa == kiln_codegen::Isa::Avx512 => 12,
                            _ => 14,
                        };
                        let blocks = mult == 1 && ow <= most;
                        assert_eq!(schedule.contains(", direct)"), k == 3 && !blocks, "{schedule}");
                        assert_eq!(schedule.contains(", channel blocks)"), blocks, "{schedule}");
                        assert_eq!(schedule.contains("+ clamp act"), clamp.is_some(), "{schedule}");
                        assert_eq!(steps(&exe), 1, "{schedule}");
                    }
                }
            }
        }
    }
}

/// A SiLU (kiln's Silu, which the rewrite passes make of ONNX's Mul(y, Sigmoid(y))) or HardSwish
/// after a depthwise conv is applied by the conv's kernels as they store (AVX2 and up; the
/// portable path, and the unrewritten Mul(y, Sigmoid(y)), keep the generated epilogue): the direct 3×3 kernel, the channel blocks (narrow planes) and the
/// scratch path (5×5 on wide planes, a channel multiplier), at strides 1 and 2, planes of 1 to 3
/// outputs, odd widths, asymmetric pads; a NaN, a +∞ and a −∞ in the input (the conv gives ±∞
/// or NaN around them: SiLU and HardSwish keep NaN and +∞ and give NaN for −∞, as the
/// interpreter's x·f(x) does). Every ISA the CPU has, 1 and 2 threads. The schedule says the
/// activation is in-store and that conv and activation are one step. Tolerance: the conv's K·K
/// products of values ≤ 4 summed in f32 against f64 (4e-5 per tap absolute plus 1e-5 relative;
/// both activations' slopes are ≤ 1.1, and their own f32 error a few ulps).
#[test]
fn depthwise_activation_in_store() {
    let mut isas = vec![kiln_codegen::Isa::Generic, kiln_codegen::Isa::Avx2Fma];
    if kiln_codegen::Isa::supported(kiln_codegen::Isa::Avx512) == kiln_codegen::Isa::Avx512 {
        isas.push(kiln_codegen::Isa::Avx512);
    }
    let mut rng = XRng(31);
    // (n, c, mult, h, w)
    let shapes = [
        (1, 3, 1, 1, 1),
        (2, 3, 1, 2, 3),
        (1, 5, 1, 7, 7),
        (1, 3, 2, 8, 9),
        (1, 3, 1, 13, 17),
        (1, 9, 1, 6, 40),
        (1, 3, 1, 9, 66),
        (2, 2, 1, 7, 113),
    ];
    let mut case = 0usize;
    for (n, c, mult, h, w) in shapes {
        let mut x = rng.tensor(&[n, c, h, w], -4.0, 4.0);
        if let kiln_ir::TensorData::F32(v) = x.data() {
            let mut v = v.clone();
            let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
            for (j, &sp) in specials.iter().enumerate().take(c) {
                v[j * h * w + (h * w) / 2] = sp;
            }
            x = kiln_ir::Tensor::new(vec![n, c, h, w], kiln_ir::TensorData::F32(v)).unwrap();
        }
        for k in [3, 5] {
            for s in [1, 2] {
                case += 1;
                let p = k / 2;
                let pads = match case % 3 {
                    0 => [p, p, p, p],
                    1 => [0, 0, 0, 0],
                    _ => [k - 1, 1, 0, k],
                };
                if h + pads[0] + pads[2] < k || w + pads[1] + pads[3] < k {
                    continue;
                }
                let m = c * mult;
                let mut spec = Spec::new();
                spec.input("x", x.clone()).weight("w", rng.tensor(&[m, 1, k, k], -1.0, 1.0));
                spec.weight("b", rng.tensor(&[m], -1.0, 1.0));
                let ins: &[&str] = if case.is_multiple_of(2) { &["x", "w", "b"] } else { &["x", "w"] };
                let conv = Op::Conv { strides: [s, s], dilations: [1, 1], pads, group: c };
                spec.node("dw", conv, ins, &["y"]);
                let act = match case % 3 {
                    0 => {
                        spec.node("sig", Op::Unary(kiln_ir::UnaryOp::Sigmoid), &["y"], &["s"]);
                        spec.node("act", Op::Binary(kiln_ir::BinaryOp::Mul), &["y", "s"], &["z"]);
                        "SiLU"
                    }
                    1 => {
                        spec.node("act", Op::Unary(kiln_ir::UnaryOp::Silu), &["y"], &["z"]);
                        "SiLU"
                    }
                    _ => {
                        spec.node("act", Op::Unary(kiln_ir::UnaryOp::HardSwish), &["y"], &["z"]);
                        "HardSwish"
                    }
                };
                spec.output("z");
                let tol = Tol { abs: 4e-5 * (k * k) as f32, rel: 1e-5 };
                for threads in [1, 2] {
                    for &isa in &isas {
                        let exe = check_with(&spec, tol, &isa_options(threads, isa));
                        let schedule = exe.schedule_text();
                        assert!(schedule.contains(&format!("depthwise conv {k}×{k}/{s}")), "{schedule}");
                        // Mul(y, Sigmoid(y)) is kiln's Silu once the rewrite passes have run
                        // (an imported model); unrewritten it keeps the generated epilogue.
                        let in_store = isa != kiln_codegen::Isa::Generic && !case.is_multiple_of(3);
                        assert_eq!(schedule.contains(&format!("{act} in-store")), in_store, "{schedule}");
                        assert!(schedule.contains("+ epilogue "), "{schedule}");
                        assert_eq!(steps(&exe), 1, "{schedule}");
                    }
                }
            }
        }
    }
}

/// Channel concats whose inputs' producers write straight into the concat's buffer (no copy
/// steps): a 1×1 and a 3×3 conv, a sigmoid, a max pool and a depthwise conv, produced in the
/// reverse of their order in the output (a producer that wrote past its block would spoil one
/// already written), read again after the concat; a concat run over in place by a Relu after its
/// inputs are dead (aliased), and one whose input is read after that Relu (must keep its copy).
/// Every ISA the CPU has, 1 and 2 threads. Tolerance: sums of ≤ 63 products of values ≤ 1.
#[test]
fn concat_inputs_written_in_place() {
    let mut rng = XRng(29);
    let (c, h, w) = (7, 13, 13);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[1, c, h, w], -1.0, 1.0))
        .weight("w1", rng.tensor(&[3, c, 1, 1], -0.5, 0.5))
        .weight("w3", rng.tensor(&[5, c, 3, 3], -0.2, 0.2))
        .weight("b3", rng.tensor(&[5], -0.5, 0.5))
        .weight("wd", rng.tensor(&[c, 1, 3, 3], -0.5, 0.5))
        .weight("wh", rng.tensor(&[4, 3 + c + c + 5 + c, 1, 1], -0.2, 0.2))
        .weight("wh2", rng.tensor(&[2, 3 + c, 1, 1], -0.5, 0.5));
    let conv = |p: usize, group: usize| Op::Conv { strides: [1, 1], dilations: [1, 1], pads: [p; 4], group };
    spec.node("dw", conv(1, c), &["x", "wd"], &["d"])
        .node("c3", conv(1, 1), &["x", "w3", "b3"], &["c3"])
        .node("relu3", Op::Unary(kiln_ir::UnaryOp::Relu), &["c3"], &["r3"])
        .node("mp", Op::MaxPool(window(3, 1, 1, false)), &["x"], &["m"])
        .node("sg", Op::Unary(kiln_ir::UnaryOp::Sigmoid), &["x"], &["s"])
        .node("c1", conv(0, 1), &["x", "w1"], &["p"])
        .node("cat", Op::Concat { axis: 1 }, &["p", "s", "m", "r3", "d"], &["cat"])
        .node("head", conv(0, 1), &["cat", "wh"], &["y"])
        .node("late", Op::Binary(kiln_ir::BinaryOp::Add), &["m", "s"], &["z"])
        // Dead after the concat: the Relu may run in place over cat2 with both aliased.
        .node("c1b", conv(0, 1), &["x", "w1"], &["q"])
        .node("neg", Op::Unary(kiln_ir::UnaryOp::Neg), &["x"], &["n"])
        .node("cat2", Op::Concat { axis: 1 }, &["q", "n"], &["cat2"])
        .node("relu2", Op::Unary(kiln_ir::UnaryOp::Relu), &["cat2"], &["rc2"])
        .node("head2", conv(0, 1), &["rc2", "wh2"], &["v"])
        // Read after the Relu over cat3: `t` must keep its own buffer (and its copy).
        .node("c1c", conv(0, 1), &["x", "w1"], &["t"])
        .node("cos", Op::Unary(kiln_ir::UnaryOp::Cos), &["x"], &["o"])
        .node("cat3", Op::Concat { axis: 1 }, &["t", "o"], &["cat3"])
        .node("relu3b", Op::Unary(kiln_ir::UnaryOp::Relu), &["cat3"], &["rc3"])
        .node("head3", conv(0, 1), &["rc3", "wh2"], &["u"])
        .node("after", Op::Unary(kiln_ir::UnaryOp::Neg), &["t"], &["tn"])
        .node("sum", Op::Binary(kiln_ir::BinaryOp::Add), &["tn", "p"], &["k"])
        .output("y")
        .output("z")
        .output("v")
        .output("u")
        .output("k");
    for threads in [1, 2] {
        for isa in isas() {
            let exe = check_with(&spec, SUMS, &isa_options(threads, isa));
            let text = exe.schedule_text();
            for gone in ["cat (input", "cat2 (input", "cat3 (input 1)"] {
                assert!(!text.contains(gone), "{gone} still copied:\n{text}");
            }
            assert!(text.contains("cat3 (input 0)"), "{text}");
        }
    }
}

/// A DenseNet block: each layer reads the concat of all features so far (BatchNorm-like affine +
/// Relu over it, which runs in place, then a conv), and the block ends in the concat of every
/// feature. Each feature is written once into the last concat and the earlier concats are views
/// of its first blocks: no copy steps. Beside it, `wide` = concat(a, b, d) run over in place by a
/// Relu, and `head` = concat(a, b) — its first blocks — read after that Relu: not a view (it
/// keeps its copies; made a view anyway, it would read the Relu's output). Every ISA, 1 and 2
/// threads.
#[test]
fn dense_block_concats_are_views() {
    let mut rng = XRng(31);
    let (g, h, w) = (3, 9, 11);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[1, 4, h, w], -1.0, 1.0)).weight("w0", rng.tensor(&[g, 4, 3, 3], -0.3, 0.3));
    let conv = |p: usize| Op::Conv { strides: [1, 1], dilations: [1, 1], pads: [p; 4], group: 1 };
    let relu = Op::Unary(kiln_ir::UnaryOp::Relu);
    spec.node("c0", conv(1), &["x", "w0"], &["f0"]);
    let mut feats = vec!["f0".to_string()];
    for l in 1..=3 {
        let n = |p: &str| format!("{p}{l}");
        let ch = g * l;
        let refs: Vec<&str> = feats.iter().map(|s| s.as_str()).collect();
        spec.node(&n("cat"), Op::Concat { axis: 1 }, &refs, &[&n("cat")])
            .weight(&n("s"), rng.tensor(&[1, ch, 1, 1], 0.5, 1.5))
            .weight(&n("b"), rng.tensor(&[1, ch, 1, 1], -0.5, 0.5))
            .weight(&n("w"), rng.tensor(&[g, ch, 3, 3], -0.3, 0.3))
            .node(&n("mul"), Op::Binary(kiln_ir::BinaryOp::Mul), &[&n("cat"), &n("s")], &[&n("m")])
            .node(&n("add"), Op::Binary(kiln_ir::BinaryOp::Add), &[&n("m"), &n("b")], &[&n("a")])
            .node(&n("relu"), relu.clone(), &[&n("a")], &[&n("r")])
            .node(&n("conv"), conv(1), &[&n("r"), &n("w")], &[&n("f")]);
        feats.push(n("f"));
    }
    let refs: Vec<&str> = feats.iter().map(|s| s.as_str()).collect();
    spec.node("last", Op::Concat { axis: 1 }, &refs, &["last"])
        .node("relu", relu.clone(), &["last"], &["rl"])
        .weight("wt", rng.tensor(&[5, 4 * g, 1, 1], -0.3, 0.3))
        .node("trans", conv(0), &["rl", "wt"], &["y"])
        .weight("wa", rng.tensor(&[2, 4, 1, 1], -0.5, 0.5))
        .node("pa", conv(0), &["x", "wa"], &["pa"])
        .node("pb", Op::Unary(kiln_ir::UnaryOp::Sigmoid), &["x"], &["pb"])
        .node("pd", Op::Unary(kiln_ir::UnaryOp::Neg), &["x"], &["pd"])
        .node("wide", Op::Concat { axis: 1 }, &["pa", "pb", "pd"], &["wide"])
        .node("head", Op::Concat { axis: 1 }, &["pa", "pb"], &["head"])
        .node("wrelu", relu, &["wide"], &["wr"])
        .weight("ww", rng.tensor(&[2, 10, 1, 1], -0.5, 0.5))
        .node("wconv", conv(0), &["wr", "ww"], &["v"])
        .node("late", Op::Unary(kiln_ir::UnaryOp::Cos), &["head"], &["hc"])
        .weight("wl", rng.tensor(&[3, 6, 1, 1], -0.5, 0.5))
        .node("lconv", conv(0), &["hc", "wl"], &["z"])
        .output("y")
        .output("v")
        .output("z");
    for threads in [1, 2] {
        for isa in isas() {
            let exe = check_with(&spec, SUMS, &isa_options(threads, isa));
            let text = exe.schedule_text();
            for gone in ["cat1 (input", "cat2 (input", "cat3 (input", "last (input", "wide (input"] {
                assert!(!text.contains(gone), "{gone} still copied:\n{text}");
            }
            assert!(text.contains("head (input 0)") && text.contains("head (input 1)"), "{text}");
        }
    }
}

/// A Caffe-style dense block: each layer concats the previous concat with its new feature, so
/// concats nest and their aliases chain (every feature written once, no copies). In a second
/// block the first feature is read again after the block's last concat is overwritten in place
/// by a Relu: that concat must keep the copy of the chain before it (aliased anyway, the late
/// read would see the Relu's output). Every ISA, 1 and 2 threads.
#[test]
fn nested_concats_chain() {
    let mut rng = XRng(37);
    let (g, h, w) = (2, 7, 10);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[1, 3, h, w], -1.0, 1.0));
    let conv = |p: usize| Op::Conv { strides: [1, 1], dilations: [1, 1], pads: [p; 4], group: 1 };
    for blk in ["a", "b"] {
        let n = |p: &str, l: usize| format!("{blk}{p}{l}");
        spec.weight(&n("w", 0), rng.tensor(&[g, 3, 3, 3], -0.3, 0.3)).node(
            &n("c", 0),
            conv(1),
            &["x", &n("w", 0)],
            &[&n("cat", 0)],
        );
        for l in 1..=3 {
            let ch = g * l;
            spec.weight(&n("w", l), rng.tensor(&[g, ch, 3, 3], -0.3, 0.3))
                .node(&n("relu", l), Op::Unary(kiln_ir::UnaryOp::Relu), &[&n("cat", l - 1)], &[&n("r", l)])
                .node(&n("conv", l), conv(1), &[&n("r", l), &n("w", l)], &[&n("f", l)])
                .node(&n("cat", l), Op::Concat { axis: 1 }, &[&n("cat", l - 1), &n("f", l)], &[&n("cat", l)]);
        }
        spec.node(&n("relu", 9), Op::Unary(kiln_ir::UnaryOp::Relu), &[&n("cat", 3)], &[&n("r", 9)])
            .weight(&n("w", 9), rng.tensor(&[3, 4 * g, 1, 1], -0.3, 0.3))
            .node(&n("out", 9), conv(0), &[&n("r", 9), &n("w", 9)], &[&n("y", 9)])
            .output(&n("y", 9));
    }
    spec.node("late", Op::Unary(kiln_ir::UnaryOp::Neg), &["bcat0"], &["late"]).output("late");
    for threads in [1, 2] {
        for isa in isas() {
            let exe = check_with(&spec, SUMS, &isa_options(threads, isa));
            let text = exe.schedule_text();
            for gone in
                ["acat1 (input", "acat2 (input", "acat3 (input", "bcat1 (input", "bcat2 (input", "bcat3 (input 1)"]
            {
                assert!(!text.contains(gone), "{gone} still copied:\n{text}");
            }
            assert!(text.contains("bcat3 (input 0)"), "{text}");
        }
    }
}

/// Split and Slice outputs that are contiguous blocks of their input (channels of one image) are
/// views of it: no copy step, the consumers read the input's bytes (`p`, `r`, `s`). Cases that
/// must keep their copies: `q`, which a Relu runs over in place (that would write into `a`, which
/// `s` and `t` still read); `u` and `v`, whose source `b` is written in place into `cat`, which a
/// Relu runs over in place before they are read; a strided Slice. Every ISA, 1 and 2 threads.
/// Tolerance: sums of ≤ 10 products of values ≤ 1.
#[test]
fn split_outputs_are_views_of_their_input() {
    let mut rng = XRng(37);
    let (h, w) = (6, 7);
    let mut spec = Spec::new();
    let conv = Op::Conv { strides: [1, 1], dilations: [1, 1], pads: [0; 4], group: 1 };
    let un = |u: kiln_ir::UnaryOp| Op::Unary(u);
    let slice = |start: i64, end: i64, step: i64| Op::Slice {
        starts: vec![start],
        ends: vec![end],
        axes: Some(vec![1]),
        steps: Some(vec![step]),
    };
    spec.input("x", rng.tensor(&[1, 10, h, w], -1.0, 1.0))
        .weight("wa", rng.tensor(&[9, 10, 1, 1], -0.3, 0.3))
        .weight("wb", rng.tensor(&[4, 10, 1, 1], -0.3, 0.3))
        .weight("wp", rng.tensor(&[3, 2, 1, 1], -0.5, 0.5))
        .weight("wr", rng.tensor(&[2, 4, 1, 1], -0.5, 0.5))
        .weight("wq", rng.tensor(&[2, 3, 1, 1], -0.5, 0.5))
        .weight("wu", rng.tensor(&[3, 2, 1, 1], -0.5, 0.5))
        .weight("wc", rng.tensor(&[2, 8, 1, 1], -0.5, 0.5))
        .node("ca", conv.clone(), &["x", "wa"], &["a"])
        .node("split", Op::Split { axis: 1, split: Some(vec![2, 3, 4]), num_outputs: 3 }, &["a"], &["p", "q", "r"])
        .node("cp", conv.clone(), &["p", "wp"], &["y"])
        .node("relu", un(kiln_ir::UnaryOp::Relu), &["q"], &["rq"])
        .node("crq", conv.clone(), &["rq", "wq"], &["yq"])
        .node("cr", conv.clone(), &["r", "wr"], &["nr"])
        .node("sl", slice(3, 7, 1), &["a"], &["s"])
        .node("strided", slice(0, 9, 2), &["a"], &["t"])
        .node("exp", un(kiln_ir::UnaryOp::Exp), &["s"], &["es"])
        .node("cb", conv.clone(), &["x", "wb"], &["b"])
        .node("cz", conv.clone(), &["x", "wb"], &["z"])
        .node("cat", Op::Concat { axis: 1 }, &["b", "z"], &["cat"])
        .node("split2", Op::Split { axis: 1, split: None, num_outputs: 2 }, &["b"], &["u", "v"])
        .node("relu2", un(kiln_ir::UnaryOp::Relu), &["cat"], &["rc"])
        .node("crc", conv.clone(), &["rc", "wc"], &["n"])
        .node("cu", conv.clone(), &["u", "wu"], &["m"])
        .node("cv", conv.clone(), &["v", "wu"], &["mv"])
        .output("y")
        .output("yq")
        .output("nr")
        .output("es")
        .output("t")
        .output("m")
        .output("mv")
        .output("n");
    for threads in [1, 2] {
        for isa in isas() {
            let exe = check_with(&spec, SUMS, &isa_options(threads, isa));
            let text = exe.schedule_text();
            // split: p and r are views, q keeps its copy (one output left); sl is a view; the
            // strided slice copies; split2 keeps both; `b` and `z` are written into `cat`.
            let line = |name: &str| text.lines().find(|l| l.split_whitespace().last() == Some(name)).unwrap_or("");
            assert!(line("split").contains("copy") && !line("split").contains("outputs"), "{text}");
            assert_eq!(line("sl"), "", "{text}");
            assert!(line("strided").contains("copy"), "{text}");
            assert!(line("split2").contains("copy (2 outputs)"), "{text}");
            assert!(!text.contains("cat (input"), "{text}");
        }
    }
}
