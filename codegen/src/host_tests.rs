//! GEMM, Conv, Pad and Resize steps run through the executor on hand-built one-step plans and are
//! compared with naive f64 references and with the ONNX specification's worked examples.
//!
//! These ops cannot yet be built into a `Graph` (their shape inference lives on another branch),
//! so the lowering's pure parts (`matmul_parts`, `gemm_parts`, `conv_parts`, `pad_copy`,
//! `resize_copy`) are exercised directly with the same executor code paths a graph would use.

use crate::exec::Executable;
use crate::jit::{HostFeatures, Jit};
use crate::lower::{self, Lowered, Place, Step, StepKind};
use kiln_ir::{CoordTransform, NearestMode, PadMode, Tensor, TensorType};
use proptest::prelude::*;

/// Runs one step whose args are `[out, scratch?, inputs…]`.
fn run_step(
    kind: StepKind,
    inputs: &[Tensor],
    out: TensorType,
    scratch_bytes: Option<usize>,
    threads: usize,
) -> Tensor {
    let mut buffers = vec![out.num_elements() * 4];
    let mut args = vec![Place::Buf(0)];
    if let Some(b) = scratch_bytes {
        buffers.push(b);
        args.push(Place::Buf(1));
    }
    let n_writes = args.len();
    let n_buffers = buffers.len();
    args.extend((0..inputs.len()).map(Place::Input));
    let plan = Lowered {
        steps: vec![Step { label: "t".into(), kind, args, n_writes }],
        buffers,
        weights: vec![],
        input_types: inputs.iter().map(|t| t.ty()).collect(),
        outputs: vec![(Place::Buf(0), out)],
        kernel_labels: vec![],
        model_name: "t".into(),
        aliases: vec![None; n_buffers],
    };
    let placement = crate::placement(&plan);
    let (_, code) = Jit::new(HostFeatures::detect()).unwrap().finish().unwrap();
    let pool = std::sync::Arc::new(crate::pool::Pool::new(threads));
    let exe = Executable::new(plan, vec![], placement, vec![], pool, crate::Isa::detect(), code);
    let refs: Vec<&Tensor> = inputs.iter().collect();
    exe.run(&refs).unwrap().remove(0)
}

struct R(u64);
impl R {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn t(&mut self, s: &[usize]) -> Tensor {
        let n = s.iter().product();
        Tensor::from_f32(s.to_vec(), (0..n).map(|_| self.f()).collect()).unwrap()
    }
}

/// f32 GEMM results against f64 references: k terms of |a·b| ≤ 1 each.
fn assert_close(got: &[f32], want: &[f64], k: usize) {
    assert_eq!(got.len(), want.len());
    let tol = 1e-6 * (k as f64 + 1.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol, "[{i}]: got {g}, want {w}");
    }
}

fn matmul_ref(a: &Tensor, b: &Tensor) -> (Vec<usize>, Vec<f64>) {
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    let a2 = if sa.len() == 1 { vec![1, sa[0]] } else { sa.clone() };
    let b2 = if sb.len() == 1 { vec![sb[0], 1] } else { sb.clone() };
    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = kiln_ir::ops::broadcast::broadcast_shapes(ba, bb).unwrap();
    let ia = kiln_ir::ops::broadcast::broadcast_indices(ba, &batch);
    let ib = kiln_ir::ops::broadcast::broadcast_indices(bb, &batch);
    let (av, bv) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let mut out = Vec::new();
    for bi in 0..ia.len() {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += av[ia[bi] * m * k + i * k + p] as f64 * bv[ib[bi] * k * n + p * n + j] as f64;
                }
                out.push(s);
            }
        }
    }
    let mut shape = batch;
    if sa.len() > 1 {
        shape.push(m);
    }
    if sb.len() > 1 {
        shape.push(n);
    }
    (shape, out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn matmul_batched_broadcast(ba in prop::collection::vec(1usize..4, 0..3), bb in prop::collection::vec(1usize..4, 0..3),
                                m in 1usize..20, k in 1usize..20, n in 1usize..20, vec_a in any::<bool>(), vec_b in any::<bool>(),
                                seed in 1u64.., threads in 1usize..4) {
        // Broadcast-compatible batch shapes: where both have a dim, one of them is 1 or they agree.
        let mut bb = bb;
        let l = ba.len().min(bb.len());
        for i in 0..l {
            let (x, y) = (ba[ba.len() - 1 - i], bb[bb.len() - 1 - i]);
            if x != y && x != 1 && y != 1 {
                let bl = bb.len();
                bb[bl - 1 - i] = 1;
            }
        }
        let mut r = R(seed);
        let sa: Vec<usize> = if vec_a { vec![k] } else { ba.iter().copied().chain([m, k]).collect() };
        let sb: Vec<usize> = if vec_b { vec![k] } else { bb.iter().copied().chain([k, n]).collect() };
        let (a, b) = (r.t(&sa), r.t(&sb));
        let (shape, want) = matmul_ref(&a, &b);
        let (call, units, elems) = lower::matmul_parts(&sa, &sb, threads).unwrap();
        prop_assert_eq!(elems, want.len());
        let got = run_step(StepKind::MatMul { call, units, c_fill: None, epilogue: None, packed: None }, &[a, b], TensorType::f32(shape), None, threads);
        assert_close(got.as_f32().unwrap(), &want, k);
    }

    #[test]
    fn gemm_transposes_and_bias(m in 1usize..17, k in 1usize..17, n in 1usize..17, ta in any::<bool>(), tb in any::<bool>(),
                                c_kind in 0usize..4, alpha in -2.0f32..2.0, beta in -2.0f32..2.0, seed in 1u64..) {
        let mut r = R(seed);
        let sa = if ta { vec![k, m] } else { vec![m, k] };
        let sb = if tb { vec![n, k] } else { vec![k, n] };
        let sc: Option<Vec<usize>> = match c_kind { 0 => None, 1 => Some(vec![n]), 2 => Some(vec![m, 1]), _ => Some(vec![m, n]) };
        let (a, b) = (r.t(&sa), r.t(&sb));
        let c = sc.as_ref().map(|s| r.t(s));
        let (av, bv) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        let mut want = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    let x = if ta { av[p * m + i] } else { av[i * k + p] };
                    let y = if tb { bv[j * k + p] } else { bv[p * n + j] };
                    s += x as f64 * y as f64;
                }
                let cv = match (&c, &sc) {
                    (Some(c), Some(s)) => {
                        let cv = c.as_f32().unwrap();
                        match s.as_slice() { [_] => cv[j], [_, 1] => cv[i], _ => cv[i * n + j] }
                    }
                    _ => 0.0,
                };
                want[i * n + j] = alpha as f64 * s + beta as f64 * cv as f64;
            }
        }
        let (call, units, c_fill) = lower::gemm_parts(&sa, &sb, sc.as_deref(), alpha, beta, ta, tb, 2).unwrap();
        let mut ins = vec![a, b];
        if c_fill.is_some() {
            ins.push(c.unwrap());
        }
        let got = run_step(StepKind::MatMul { call, units, c_fill, epilogue: None, packed: None }, &ins, TensorType::f32([m, n]), None, 2);
        assert_close(got.as_f32().unwrap(), &want, 2 * k + 2);
    }

    #[test]
    fn conv_im2col(n in 1usize..3, cg in 1usize..4, group in 1usize..3, mg in 1usize..4, h in 1usize..9, w in 1usize..9,
                   kh in 1usize..4, kw in 1usize..4, s in 1usize..3, d in 1usize..3, p in 0usize..3, bias in any::<bool>(),
                   seed in 1u64.., threads in 1usize..3) {
        prop_assume!(h + p + p / 2 > d * (kh - 1) && w + p / 2 + p > d * (kw - 1));
        check_conv(n, cg, group, mg, h, w, kh, kw, s, d, p, bias, seed, threads);
    }

    /// Wide enough (C/g·kh·kw ≥ 540) that im2col runs in several column tiles per thread, the last
    /// one partial; 1×1 kernels take the no-im2col path.
    #[test]
    fn conv_im2col_tiled(cg in 60usize..70, mg in 1usize..5, h in 12usize..24, w in 12usize..24, k in prop::sample::select(vec![1usize, 3]),
                         s in 1usize..3, p in 0usize..2, bias in any::<bool>(), seed in 1u64.., threads in 1usize..3) {
        check_conv(1, cg, 1, mg, h, w, k, k, s, 1, p, bias, seed, threads);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_conv(
    n: usize,
    cg: usize,
    group: usize,
    mg: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    s: usize,
    d: usize,
    p: usize,
    bias: bool,
    seed: u64,
    threads: usize,
) {
    let (c, m) = (cg * group, mg * group);
    let pads = [p, p / 2, p / 2, p];
    let mut r = R(seed);
    let x = r.t(&[n, c, h, w]);
    let wt = r.t(&[m, cg, kh, kw]);
    let bt = r.t(&[m]);
    let (spec, out_shape) =
        lower::conv_parts(&[n, c, h, w], &[m, cg, kh, kw], [s, s], [d, d], pads, group, bias).unwrap();
    let (oh, ow) = (out_shape[2], out_shape[3]);
    let (xv, wv, bv) = (x.as_f32().unwrap(), wt.as_f32().unwrap(), bt.as_f32().unwrap());
    let mut want = vec![0f64; n * m * oh * ow];
    for ni in 0..n {
        for mi in 0..m {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = mi / mg;
                    let mut acc = if bias { bv[mi] as f64 } else { 0.0 };
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * s + ky * d) as isize - pads[0] as isize;
                                let ix = (ox * s + kx * d) as isize - pads[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    let xv = xv[((ni * c + g * cg + ci) * h + iy as usize) * w + ix as usize];
                                    acc += xv as f64 * wv[((mi * cg + ci) * kh + ky) * kw + kx] as f64;
                                }
                            }
                        }
                    }
                    want[((ni * m + mi) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    // The implicit GEMM on packed weights (crate::gemm::conv), through the executor's split.
    let packed =
        crate::gemm::conv::PackedConv::new(n, group, mg, spec.im2col.clone(), bias, crate::Isa::detect(), wv).unwrap();
    let col = cg * kh * kw * oh * ow * 4;
    let mut ins = vec![x, wt];
    if bias {
        ins.push(bt);
    }
    let kind = StepKind::PackedConv { spec: std::sync::Arc::new(packed), epilogue: None };
    let got = run_step(kind, &ins, TensorType::f32(out_shape.clone()), None, threads);
    assert_close(got.as_f32().unwrap(), &want, cg * kh * kw + 1);
    let got = run_step(StepKind::Conv(spec), &ins, TensorType::f32(out_shape), Some(col), threads);
    assert_close(got.as_f32().unwrap(), &want, cg * kh * kw + 1);
}

fn pad(x: &Tensor, mode: PadMode, pads: &[i64], value: f32) -> Tensor {
    let out: Vec<usize> =
        (0..x.shape().len()).map(|j| (x.shape()[j] as i64 + pads[j] + pads[j + x.shape().len()]) as usize).collect();
    let out_ty = TensorType::f32(out);
    let copy = lower::pad_copy(&x.ty(), &out_ty, mode, pads, value).unwrap();
    run_step(StepKind::Copies(vec![copy]), std::slice::from_ref(x), out_ty, None, 1)
}

#[test]
fn pad_modes_match_the_onnx_examples() {
    let x = Tensor::from_f32([3, 2], vec![1.0, 1.2, 2.3, 3.4, 4.5, 5.7]).unwrap();
    let pads = [0, 2, 0, 0];
    let got = pad(&x, PadMode::Constant, &pads, 0.0);
    assert_eq!(got.as_f32().unwrap(), &[0.0, 0.0, 1.0, 1.2, 0.0, 0.0, 2.3, 3.4, 0.0, 0.0, 4.5, 5.7]);
    let got = pad(&x, PadMode::Reflect, &pads, 0.0);
    assert_eq!(got.as_f32().unwrap(), &[1.0, 1.2, 1.0, 1.2, 2.3, 3.4, 2.3, 3.4, 4.5, 5.7, 4.5, 5.7]);
    let got = pad(&x, PadMode::Edge, &pads, 0.0);
    assert_eq!(got.as_f32().unwrap(), &[1.0, 1.0, 1.0, 1.2, 2.3, 2.3, 2.3, 3.4, 4.5, 4.5, 4.5, 5.7]);
    // Both sides, a constant value, and a negative pad that crops.
    let got = pad(&x, PadMode::Constant, &[1, -1, 0, 1], 9.0);
    assert_eq!(got.shape(), &[4, 2]);
    assert_eq!(got.as_f32().unwrap(), &[9.0, 9.0, 1.2, 9.0, 3.4, 9.0, 5.7, 9.0]);
    // Reflect wider than the axis bounces back and forth: [1,2,3] padded by 4 on the left.
    let v = Tensor::from_f32([3], vec![1.0, 2.0, 3.0]).unwrap();
    let got = pad(&v, PadMode::Reflect, &[4, 0], 0.0);
    assert_eq!(got.as_f32().unwrap(), &[1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0]);
}

fn resize(x: &Tensor, out: &[usize], scales: Option<&[f32]>, ctm: CoordTransform, nm: NearestMode) -> Tensor {
    let out_ty = TensorType::f32(out.to_vec());
    let sizes = if scales.is_none() { Some(out.to_vec()) } else { None };
    let op = kiln_ir::Op::Resize {
        scales: scales.map(|s| s.to_vec()),
        sizes,
        coordinate_transformation_mode: ctm,
        nearest_mode: nm,
    };
    let copy = lower::resize_copy(&op, &x.ty(), &out_ty).unwrap();
    run_step(StepKind::Copies(vec![copy]), std::slice::from_ref(x), out_ty, None, 1)
}

#[test]
fn resize_nearest_matches_the_onnx_examples() {
    // resize_upsample_scales_nearest
    let x = Tensor::from_f32([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let got = resize(
        &x,
        &[1, 1, 4, 6],
        Some(&[1.0, 1.0, 2.0, 3.0]),
        CoordTransform::HalfPixel,
        NearestMode::RoundPreferFloor,
    );
    let row = |a: f32, b: f32| [a, a, a, b, b, b];
    let want: Vec<f32> = [row(1.0, 2.0), row(1.0, 2.0), row(3.0, 4.0), row(3.0, 4.0)].concat();
    assert_eq!(got.as_f32().unwrap(), &want[..]);
    // resize_downsample_scales_nearest
    let x = Tensor::from_f32([1, 1, 2, 4], (1..=8).map(|v| v as f32).collect()).unwrap();
    let got = resize(
        &x,
        &[1, 1, 1, 2],
        Some(&[1.0, 1.0, 0.6, 0.6]),
        CoordTransform::HalfPixel,
        NearestMode::RoundPreferFloor,
    );
    assert_eq!(got.as_f32().unwrap(), &[1.0, 3.0]);
    // resize_upsample_sizes_nearest_ceil_half_pixel: sizes [1,1,8,8] from a 4×4 input.
    let x = Tensor::from_f32([1, 1, 4, 4], (1..=16).map(|v| v as f32).collect()).unwrap();
    let got = resize(&x, &[1, 1, 8, 8], None, CoordTransform::HalfPixel, NearestMode::Ceil);
    let first_rows: Vec<f32> = got.as_f32().unwrap()[..16].to_vec();
    assert_eq!(first_rows, vec![1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0, 5.0, 6.0, 6.0, 7.0, 7.0, 8.0, 8.0, 8.0]);
    // Asymmetric + floor (PyTorch's "nearest"), ×2.
    let x = Tensor::from_f32([1, 3], vec![1.0, 2.0, 3.0]).unwrap();
    let got = resize(&x, &[1, 6], Some(&[1.0, 2.0]), CoordTransform::Asymmetric, NearestMode::Floor);
    assert_eq!(got.as_f32().unwrap(), &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
}
