//! Generators for the spatial ops: nearest Resize (the generator's own), the pools (MaxPool,
//! AveragePool, LpPool over 1 to 3 spatial axes, with strides, pads, dilations, ceil_mode and
//! count_include_pad), ConvTranspose (groups, strides, dilations, pads, output_padding, bias) and
//! interpolating Resize (linear, cubic, every coordinate transformation, roi and extrapolation).
//! A child module of `generator`, so it uses the generator's operand picking and emission.

use super::{Gen, Source, Val};
use kiln_ir::{CoordTransform, InterpMode, Op, PoolWindow};

impl<C: Source> Gen<'_, C> {
    /// One spatial op, chosen among nearest Resize and this file's ops.
    pub(super) fn spatial(&mut self) -> Option<Val> {
        match self.c.below(10) {
            0..=2 => self.resize(),
            3..=5 => self.pool(),
            6..=7 => self.resize_interp(),
            _ => self.conv_transpose(),
        }
    }

    /// An f32 operand of rank 3 to 5 (N, C, 1–3 spatial axes) from the pool or new.
    fn spatial_operand(&mut self) -> Val {
        if self.c.chance(70)
            && let Some(v) = self.pick_f32(|t| (3..=5).contains(&t.rank()) && t.num_elements() <= 60_000)
        {
            return v;
        }
        let spatial = self.c.range(1, 3);
        let mut shape = vec![self.c.range(1, 2), self.c.pick(&[1, 2, 3, 4])];
        for a in 0..spatial {
            // A unit leading axis, as 2-D data pooled by a 3-D op is shaped, often enough to
            // reach the kernels' special cases for it.
            let unit = a + 1 < spatial && self.c.chance(30);
            shape.push(if unit {
                1
            } else if self.big {
                self.c.pick(&[40, 67])
            } else {
                self.c.range(1, 9)
            });
        }
        let t = self.f32_tensor(&shape);
        self.add_input(t)
    }

    fn pool(&mut self) -> Option<Val> {
        let x = self.spatial_operand();
        let sp = x.ty.rank() - 2;
        let mut window = PoolWindow {
            kernel_shape: Vec::with_capacity(sp),
            strides: Vec::with_capacity(sp),
            pads: vec![0; 2 * sp],
            dilations: Vec::with_capacity(sp),
            ceil_mode: self.c.chance(30),
        };
        for a in 0..sp {
            let d = x.ty.shape[2 + a];
            let k = self.c.range(1, 3);
            window.kernel_shape.push(k);
            window.strides.push(self.c.range(1, 3));
            window.dilations.push(if self.c.chance(20) { 2 } else { 1 });
            if self.c.chance(50) {
                // Pads below the kernel, as exporters write them.
                window.pads[a] = self.c.below(k);
                window.pads[sp + a] = self.c.below(k);
            } else if self.c.chance(if d == 1 { 50 } else { 20 }) {
                // Pads as large as the kernel or larger (legal ONNX): windows wholly in the
                // padding, also on a leading axis of extent 1 (seed 86014486).
                window.pads[a] = self.c.below(3);
                window.pads[sp + a] = self.c.below(3);
            }
            // Shrink the window to the padded input so that most picks are valid.
            let padded = d + window.pads[a] + window.pads[sp + a];
            while window.dilations[a] * (window.kernel_shape[a] - 1) + 1 > padded && window.kernel_shape[a] > 1 {
                window.kernel_shape[a] -= 1;
            }
        }
        let (op, exact) = match self.c.below(3) {
            0 => (Op::MaxPool(window), x.exact),
            1 => (Op::AveragePool { window, count_include_pad: self.c.chance(50) }, false),
            _ => (Op::LpPool { window, p: self.c.pick(&[1, 2, 3]) }, false),
        };
        let y = self.emit1(op, &[&x], exact)?;
        self.maybe_epilogue(y)
    }

    fn conv_transpose(&mut self) -> Option<Val> {
        let x = self.nchw();
        let c = x.ty.shape[1];
        let divisors: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
        let group = if self.c.chance(40) { self.c.pick(&divisors) } else { 1 };
        let mg = self.c.range(1, 3);
        let (kh, kw) = (self.c.range(1, 3), self.c.range(1, 3));
        let strides = [self.c.range(1, 3), self.c.range(1, 3)];
        let dilations = if self.c.chance(20) { [2, 1] } else { [1, 1] };
        let output_padding = [self.c.below(strides[0].max(dilations[0])), self.c.below(strides[1].max(dilations[1]))];
        let pads = if self.c.chance(50) {
            [self.c.below(kh), self.c.below(kw), self.c.below(kh), self.c.below(kw)]
        } else {
            [0; 4]
        };
        let w = self.new_operand(vec![c, mg, kh, kw]);
        let op = Op::ConvTranspose { strides, dilations, pads, output_padding, group };
        let y = if self.c.chance(50) {
            let b = self.new_operand(vec![mg * group]);
            self.emit1(op, &[&x, &w, &b], false)?
        } else {
            self.emit1(op, &[&x, &w], false)?
        };
        self.maybe_epilogue(y)
    }

    fn resize_interp(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(1, 4);
        let r = x.ty.rank();
        let ctm = self.c.pick(&[
            CoordTransform::HalfPixel,
            CoordTransform::Asymmetric,
            CoordTransform::AlignCorners,
            CoordTransform::PytorchHalfPixel,
            CoordTransform::HalfPixelSymmetric,
            CoordTransform::TfCropAndResize,
        ]);
        let mode = if self.c.chance(50) {
            InterpMode::Linear
        } else {
            InterpMode::Cubic { a: self.c.pick(&[-0.75, -0.5]), exclude_outside: self.c.chance(30) }
        };
        // The last two axes are resized (as exporters do); the others keep their size.
        let resized = |a: usize| a + 2 >= r;
        let (scales, sizes) = if self.c.chance(50) {
            let scales: Vec<f32> = (0..r)
                .map(|a| match (resized(a), x.ty.shape[a]) {
                    (true, 1) => self.c.pick(&[1.0, 2.0, 1.5, 3.0]),
                    (true, _) => self.c.pick(&[1.0, 2.0, 0.5, 1.5, 3.0, 0.75]),
                    _ => 1.0,
                })
                .collect();
            (Some(scales), None)
        } else {
            let sizes: Vec<usize> =
                (0..r).map(|a| if resized(a) { self.c.range(1, 11) } else { x.ty.shape[a] }).collect();
            (None, Some(sizes))
        };
        let roi = (ctm == CoordTransform::TfCropAndResize).then(|| {
            let starts: Vec<f32> =
                (0..r).map(|a| if resized(a) { self.c.pick(&[0.0, 0.2, -0.1]) } else { 0.0 }).collect();
            let ends: Vec<f32> = (0..r).map(|a| if resized(a) { self.c.pick(&[1.0, 0.7, 1.2]) } else { 1.0 }).collect();
            [starts, ends].concat()
        });
        let extrapolation_value = self.c.pick(&[0.0, -1.5]);
        let op =
            Op::ResizeInterp { mode, scales, sizes, coordinate_transformation_mode: ctm, roi, extrapolation_value };
        self.emit1(op, &[&x], false)
    }
}
