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
