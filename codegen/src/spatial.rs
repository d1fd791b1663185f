//! Host steps for the spatial ops that are neither elementwise nor a single GEMM: pooling,
//! ConvTranspose (GEMM + col2im) and interpolating Resize. Each is a [`HostKernel`]: the plan holds
//! it behind one `StepKind::Host` variant, and the executor splits its work units (independent,
//! writing disjoint parts of the output) across the worker pool.
//!
//! These are tight Rust loops over tables built at compile time from the IR's own geometry
//! (`kiln_ir::ops::pool_axes`, `resize_interp_axes`, `conv_transpose_shape`), so the JIT and the
//! interpreter agree on what is read; the arithmetic is written independently of the reference.

use crate::host::GemmCall;
use kiln_ir::Op;
use kiln_ir::ops::{InterpAxis, PoolAxis};

/// Host kernels without a measured rate (pooling's scratch path, resize, …): ns per element of
/// their `work()`, an estimate of one AVX2 EPYC core.
pub const HOST_NS_PER_ELEM: f64 = 0.5;

/// A plan step run as Rust code over `units()` independent work units.
pub trait HostKernel: std::fmt::Debug + Send + Sync {
    /// What the step is, for `--emit` schedules and profiles.
    fn describe(&self) -> String;
    /// Number of independent work units.
    fn units(&self) -> usize;
    /// Work in elements touched, to decide whether splitting across threads pays.
    fn work(&self) -> usize;
    /// Estimated one-core time of all units in ns, which decides how many chunks the executor
    /// splits the step into (`crate::exec`): by default [`HostKernel::work`] at
    /// [`HOST_NS_PER_ELEM`]; a kernel whose rate was measured says so.
    fn cost_ns(&self) -> f64 {
        self.work() as f64 * HOST_NS_PER_ELEM
    }
    /// Runs units `[lo, hi)` with kernels for `isa` (at most what the CPU supports).
    ///
    /// # Safety
    /// `args` are the step's argument pointers, laid out and sized as the kernel's documentation
    /// says (the plan builder guarantees it); units ranges run concurrently only when disjoint.
    unsafe fn run(&self, args: &[*mut u8], lo: usize, hi: usize, isa: crate::Isa);
}

// ---------------------------------------------------------------------------------------------
// Pooling

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PoolKind {
    Max,
    Average { count_include_pad: bool },
    Lp(u32),
}

/// One spatial axis of a pooled plane, padded to three axes (D, H, W) with unit axes in front.
/// Per output index: the first input position read, how many taps are inside the input, and
/// how many count toward AveragePool's divisor with count_include_pad.
#[derive(Debug, Clone)]
struct AxisTable {
    input: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    first: Vec<usize>,
    valid: Vec<usize>,
    counted: Vec<usize>,
    /// Outputs [full.0, full.1) have every tap inside the input.
    full: (usize, usize),
}

impl AxisTable {
    fn unit() -> AxisTable {
        AxisTable {
            input: 1,
            out: 1,
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad_begin: 0,
            first: vec![0],
            valid: vec![1],
            counted: vec![1],
            full: (0, 1),
        }
    }

    fn new(a: &PoolAxis) -> AxisTable {
        let mut t = AxisTable {
            input: a.input,
            out: a.out,
            kernel: a.kernel,
            stride: a.stride,
            dilation: a.dilation,
            pad_begin: a.pad_begin,
            first: Vec::with_capacity(a.out),
            valid: Vec::with_capacity(a.out),
            counted: Vec::with_capacity(a.out),
            full: (0, 0),
        };
        for o in 0..a.out {
            let taps: Vec<i64> = (0..a.kernel).map(|j| a.position(o, j)).collect();
            let inside: Vec<i64> = taps.iter().copied().filter(|&p| p >= 0 && p < a.input as i64).collect();
            t.first.push(inside.first().map_or(0, |&p| p as usize));
            t.valid.push(inside.len());
            t.counted.push(taps.iter().filter(|&&p| p < (a.input + a.pad_end) as i64).count());
        }
        // Full windows form one range (window starts increase with o).
        let full: Vec<usize> = (0..a.out).filter(|&o| t.valid[o] == a.kernel).collect();
        if let (Some(&lo), Some(&hi)) = (full.first(), full.last()) {
            t.full = (lo, hi + 1);
        }
        t
    }
}

/// MaxPool / AveragePool / LpPool over `planes` planes of [D, H, W] (1-D and 2-D pools have unit
/// D and H). args: [out, x]. A unit is one plane.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    kind: PoolKind,
    planes: usize,
    axes: [AxisTable; 3],
    /// 1-D and 2-D max and average pools run through the vectorised window kernel
    /// (`crate::window`); the rest, and max-pooled planes that hold a NaN, through `plane`.
    fast: Option<crate::window::PoolWindow>,
    /// The fast path's AveragePool multipliers: 1 / divisor per output of a plane (0 where the
    /// divisor is 0), then `window::SCALE_PAD` zeros; empty otherwise.
    recip: Vec<f32>,
}

impl PoolSpec {
    /// The plan for `op` on an input of `shape`; `None` for spatial ranks above 3.
    pub fn new(op: &Op, shape: &[usize]) -> Result<Option<PoolSpec>, String> {
        let kind = match op {
            Op::MaxPool(_) => PoolKind::Max,
            Op::AveragePool { count_include_pad, .. } => PoolKind::Average { count_include_pad: *count_include_pad },
            Op::LpPool { p, .. } => PoolKind::Lp(*p),
            _ => return Err(format!("{} is not a pool", op.name())),
        };
        let axes = kiln_ir::ops::pool_axes(op, shape)?;
        if axes.len() > 3 {
            return Ok(None);
        }
        let mut tables = [AxisTable::unit(), AxisTable::unit(), AxisTable::unit()];
        for (k, a) in axes.iter().enumerate() {
            tables[3 - axes.len() + k] = AxisTable::new(a);
        }
        let [ad, ah, aw] = &tables;
        let fast = (matches!(kind, PoolKind::Max | PoolKind::Average { .. })
            && ad.input == 1
            && ad.out == 1
            && ad.kernel == 1
            // A depth pad can put the one depth tap outside the input (pads need not be below
            // the kernel in ONNX): then every window is padding, which only `plane` handles.
            && ad.valid[0] == 1
            && ah.input * aw.input * ah.out * aw.out > 0)
            .then(|| {
                crate::window::PoolWindow::new(crate::window::Window {
                    h: ah.input,
                    w: aw.input,
                    kh: ah.kernel,
                    kw: aw.kernel,
                    oh: ah.out,
                    ow: aw.out,
                    stride: [ah.stride, aw.stride],
                    dil: [ah.dilation, aw.dilation],
                    pad: [ah.pad_begin, aw.pad_begin],
                })
            });
        let mut recip = Vec::new();
        if let (Some(_), PoolKind::Average { count_include_pad }) = (&fast, kind) {
            let [_, ah, aw] = &tables;
            for oh in 0..ah.out {
                for ow in 0..aw.out {
                    let n =
                        if count_include_pad { ah.counted[oh] * aw.counted[ow] } else { ah.valid[oh] * aw.valid[ow] };
                    // A sum times 1/n is within an ulp or so of sum / n (the tests' 1e-5 relative).
                    recip.push(if n == 0 { 0.0 } else { 1.0 / n as f32 });
                }
            }
            recip.resize(recip.len() + crate::window::SCALE_PAD, 0.0);
        }
        Ok(Some(PoolSpec { kind, planes: shape[0] * shape[1], axes: tables, fast, recip }))
    }

    fn in_plane(&self) -> usize {
        self.axes.iter().map(|a| a.input).product()
    }

    fn out_plane(&self) -> usize {
        self.axes.iter().map(|a| a.out).product()
    }

    /// One plane: for each output row (d, h), the window's input rows are combined elementwise
    /// into `acc` (max, sum or sum of |x|ᵖ over the valid d, h taps: contiguous, vectorisable),
    /// then each output of the row reduces its valid W taps of `acc`.
    fn plane(&self, x: &[f32], y: &mut [f32], acc: &mut [f32]) {
        let [ad, ah, aw] = &self.axes;
        let (h_in, w_in) = (ah.input, aw.input);
        let init = if self.kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 };
        // NaN must win a max; without any in the plane a plain select does.
        let has_nan = self.kind == PoolKind::Max && x.iter().any(|v| v.is_nan());
        for (row_out, y_row) in y.chunks_exact_mut(aw.out).enumerate() {
            let (od, oh) = (row_out / ah.out, row_out % ah.out);
            acc.fill(init);
            for vd in 0..ad.valid[od] {
                let d = ad.first[od] + vd * ad.dilation;
                for vh in 0..ah.valid[oh] {
                    let h = ah.first[oh] + vh * ah.dilation;
                    let row = &x[(d * h_in + h) * w_in..][..w_in];
                    match self.kind {
                        PoolKind::Max if has_nan => acc.iter_mut().zip(row).for_each(|(a, &v)| *a = max_nan(*a, v)),
                        PoolKind::Max => acc.iter_mut().zip(row).for_each(|(a, &v)| *a = max_plain(*a, v)),
                        PoolKind::Average { .. } => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v),
                        PoolKind::Lp(1) => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v.abs()),
                        PoolKind::Lp(2) => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v * v),
                        PoolKind::Lp(p) => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v.abs().powi(p as i32)),
                    }
                }
            }
            let rows_valid = ad.valid[od] * ah.valid[oh];
            let rows_counted = ad.counted[od] * ah.counted[oh];
            let max = self.kind == PoolKind::Max;
            // Full windows: tap by tap over the outputs (a tight loop the compiler vectorises
            // for stride 1); the partial ones at the edges tap by tap per output.
            let (lo, hi) = aw.full;
            y_row[lo..hi].fill(init);
            // No full window (lo = hi): no tap loop, whose first position would be before the input.
            for j in (0..aw.kernel).filter(|_| lo < hi) {
                let start = lo * aw.stride + j * aw.dilation - aw.pad_begin;
                let taps = acc[start..].iter().step_by(aw.stride);
                if max && has_nan {
                    y_row[lo..hi].iter_mut().zip(taps).for_each(|(y, &v)| *y = max_nan(*y, v));
                } else if max {
                    y_row[lo..hi].iter_mut().zip(taps).for_each(|(y, &v)| *y = max_plain(*y, v));
                } else {
                    y_row[lo..hi].iter_mut().zip(taps).for_each(|(y, &v)| *y += v);
                }
            }
            for ow in (0..lo).chain(hi..aw.out) {
                let taps = acc[aw.first[ow].min(w_in)..].iter().step_by(aw.dilation).take(aw.valid[ow]);
                y_row[ow] = if max { taps.fold(f32::NEG_INFINITY, |m, &v| max_nan(m, v)) } else { taps.sum() };
            }
            match self.kind {
                PoolKind::Max | PoolKind::Lp(1) => {}
                PoolKind::Average { count_include_pad } => {
                    for (ow, y) in y_row.iter_mut().enumerate() {
                        let n =
                            if count_include_pad { rows_counted * aw.counted[ow] } else { rows_valid * aw.valid[ow] };
                        *y = if n == 0 { 0.0 } else { *y / n as f32 };
                    }
                }
                PoolKind::Lp(2) => y_row.iter_mut().for_each(|y| *y = y.sqrt()),
                PoolKind::Lp(p) => y_row.iter_mut().for_each(|y| *y = y.powf(1.0 / p as f32)),
            }
        }
    }
}

/// max that propagates NaN (as the reference: numpy's max).
#[inline]
fn max_nan(a: f32, v: f32) -> f32 {
    if v > a || v.is_nan() { v } else { a }
}

/// max as one select (maxps), for planes known to hold no NaN.
#[inline]
fn max_plain(a: f32, v: f32) -> f32 {
    if v > a { v } else { a }
}

impl HostKernel for PoolSpec {
    fn describe(&self) -> String {
        let k = match self.kind {
            PoolKind::Max => "max".to_string(),
            PoolKind::Average { .. } => "average".to_string(),
            PoolKind::Lp(p) => format!("L{p}"),
        };
        format!("{k} pool ({} planes)", self.planes)
    }

    fn units(&self) -> usize {
        self.planes
    }

    fn work(&self) -> usize {
        let touched = self.planes * (self.in_plane() + self.out_plane());
        // The direct window kernels run at 0.05–0.2 ns per element touched (64 planes of 56²:
        // 2×2/2 in 21 µs, 3×3/1 in 90 µs; 112², 3×3/2 in 80 µs), not the executor's 0.5: a
        // quarter of the elements keeps a 2×2/2 pool of that size on one thread (split in two it
        // ran 5% slower) while the larger ones still split.
        if self.fast.as_ref().is_some_and(|f| f.direct()) { touched / 4 } else { touched }
    }

    /// args: [out [planes, out_plane], x [planes, in_plane]].
    unsafe fn run(&self, args: &[*mut u8], lo: usize, hi: usize, isa: crate::Isa) {
        let (ip, op) = (self.in_plane(), self.out_plane());
        let mut acc = vec![0.0f32; self.axes[2].input];
        let max = self.kind == PoolKind::Max;
        // One scratch per chunk, padded with max's or the sum's identity.
        let mut scratch = self.fast.as_ref().map(|f| f.scratch(if max { f32::NEG_INFINITY } else { 0.0 }));
        for p in lo..hi {
            // SAFETY: x holds planes·ip floats and out planes·op; this unit owns output plane p.
            let (x, y) = unsafe {
                (
                    std::slice::from_raw_parts((args[1] as *const f32).add(p * ip), ip),
                    std::slice::from_raw_parts_mut((args[0] as *mut f32).add(p * op), op),
                )
            };
            let scale = (!self.recip.is_empty()).then_some(&self.recip[..]);
            // maxps drops a NaN operand: the fast path refuses a max plane with one (it checks
            // each row as it reads it), which then takes the NaN-aware path.
            let done = match (&self.fast, scratch.as_mut()) {
                (Some(fast), Some(s)) => fast.plane(isa, max, x, s, scale, y),
                _ => false,
            };
            if !done {
                self.plane(x, y, &mut acc);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ConvTranspose

/// ConvTranspose 2-D as, per image and group, cols = W_gᵀ·X_g ([Mg·kh·kw, H·W], one GEMM) and a
/// col2im scatter-add of cols into the output, then the bias. A unit is one output channel, over
/// every image (its kh·kw rows of cols and its output planes are its own). args: [out, cols
/// scratch [M·kh·kw, H·W], x, w] or [.., bias].
#[derive(Debug, Clone)]
pub struct ConvTransposeSpec {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub group: usize,
    pub stride: [usize; 2],
    pub dil: [usize; 2],
    pub pad: [usize; 2],
    pub bias: bool,
}

impl ConvTransposeSpec {
    pub fn new(op: &Op, shapes: &[&[usize]]) -> Result<ConvTransposeSpec, String> {
        let Op::ConvTranspose { strides, dilations, pads, group, .. } = op else {
            return Err(format!("{} is not ConvTranspose", op.name()));
        };
        let s = kiln_ir::ops::conv_transpose_shape(op, shapes)?;
        Ok(ConvTransposeSpec {
            n: s.n,
            c: s.c,
            h: s.h,
            w: s.w,
            m: s.m,
            kh: s.kh,
            kw: s.kw,
            oh: s.out[2],
            ow: s.out[3],
            group: *group,
            stride: *strides,
            dil: *dilations,
            pad: [pads[0], pads[1]],
            bias: shapes.len() == 3,
        })
    }

    /// Floats of the cols scratch: every output channel's kh·kw rows of H·W.
    pub fn cols_len(&self) -> usize {
        self.m * self.kh * self.kw * self.h * self.w
    }
}

impl HostKernel for ConvTransposeSpec {
    fn describe(&self) -> String {
        format!("conv transpose (gemm + col2im, {} channels)", self.n * self.m)
    }

    fn units(&self) -> usize {
        self.m
    }

    fn work(&self) -> usize {
        [self.m, self.kh, self.kw, self.h, self.w, (self.c / self.group).max(1)]
            .iter()
            .fold(self.n, |w, &d| w.saturating_mul(d))
    }

    unsafe fn run(&self, args: &[*mut u8], lo: usize, hi: usize, _isa: crate::Isa) {
        let (cg, mg) = (self.c / self.group, self.m / self.group);
        let (kk, hw, ohw) = (self.kh * self.kw, self.h * self.w, self.oh * self.ow);
        for (b, oc) in (0..self.n).flat_map(|b| (lo..hi).map(move |oc| (b, oc))) {
            let (g, om) = (oc / mg, oc % mg);
            // SAFETY: x is [N, C, H, W], w [C, Mg, kh, kw], bias [M], out [N, M, OH, OW], cols
            // [M·kk, HW]; units [lo, hi) write only the output planes (·, oc) and the cols rows
            // [oc·kk, (oc + 1)·kk) of their own channels oc.
            unsafe {
                let x = (args[2] as *const f32).add((b * self.c + g * cg) * hw);
                // W_gᵀ rows of output channel om: element (r, ci) at w[(g·cg + ci)·mg·kk + om·kk + r].
                let wt = (args[3] as *const f32).add(g * cg * mg * kk + om * kk);
                let cols = (args[1] as *mut f32).add(oc * kk * hw);
                let call = GemmCall {
                    m: kk,
                    n: hw,
                    k: cg,
                    a_rs: 1,
                    a_cs: (mg * kk) as isize,
                    b_rs: hw as isize,
                    b_cs: 1,
                    d_rs: hw as isize,
                    alpha: 1.0,
                    beta: 0.0,
                    accumulate: false,
                };
                if cg == 0 {
                    std::slice::from_raw_parts_mut(cols, kk * hw).fill(0.0);
                } else {
                    call.run(wt, x, cols);
                }
                let y = std::slice::from_raw_parts_mut((args[0] as *mut f32).add((b * self.m + oc) * ohw), ohw);
                let bias = if self.bias { *(args[4] as *const f32).add(oc) } else { 0.0 };
                y.fill(bias);
                let cols = std::slice::from_raw_parts(cols, kk * hw);
                self.col2im(cols, y);
            }
        }
    }
}

impl ConvTransposeSpec {
    /// y[oy, ox] += cols[(ky, kx), (iy, ix)] where oy = iy·s + ky·d − pad (inside the output).
    fn col2im(&self, cols: &[f32], y: &mut [f32]) {
        let (s0, s1) = (self.stride[0] as i64, self.stride[1] as i64);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let row = &cols[(ky * self.kw + kx) * self.h * self.w..][..self.h * self.w];
                let off_y = (ky * self.dil[0]) as i64 - self.pad[0] as i64;
                let off_x = (kx * self.dil[1]) as i64 - self.pad[1] as i64;
                // ix range with 0 ≤ ix·s1 + off_x < ow.
                let ix_lo = if off_x >= 0 { 0 } else { ((-off_x) as usize).div_ceil(s1 as usize) };
                let ix_hi = if self.ow as i64 - off_x <= 0 {
                    0
                } else {
                    ((self.ow as i64 - off_x) as usize).div_ceil(s1 as usize).min(self.w)
                };
                for iy in 0..self.h {
                    let oy = iy as i64 * s0 + off_y;
                    if oy < 0 || oy >= self.oh as i64 {
                        continue;
                    }
                    let src = &row[iy * self.w..][..self.w];
                    let dst = &mut y[oy as usize * self.ow..][..self.ow];
                    for ix in ix_lo..ix_hi.max(ix_lo) {
                        dst[(ix as i64 * s1 + off_x) as usize] += src[ix];
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Interpolating Resize

/// Resize by interpolation: each output element is Σ w·x over the product of its per-axis taps.
/// Rows are the output's rows (all axes but the last); a unit is one row. args: [out, x].
#[derive(Debug, Clone)]
pub struct ResizeSpec {
    in_len: usize,
    in_strides: Vec<usize>,
    axes: Vec<InterpAxis>,
    /// The last axis, tap-major: `last_index[t][j]` (element offsets) and `last_weight[t][j]`.
    last_index: Vec<Vec<usize>>,
    last_weight: Vec<Vec<f32>>,
    extrapolation_value: f32,
}

impl ResizeSpec {
    pub fn new(op: &Op, shape: &[usize]) -> Result<ResizeSpec, String> {
        let Op::ResizeInterp { extrapolation_value, .. } = op else {
            return Err(format!("{} is not an interpolating Resize", op.name()));
        };
        let axes = kiln_ir::ops::resize_interp_axes(op, shape)?;
        let Some(last) = axes.last() else { return Err("Resize of a scalar".into()) };
        let in_strides = kiln_ir::tensor::strides(shape);
        let inner = in_strides[axes.len() - 1];
        let last_index =
            (0..last.taps).map(|t| (0..last.out).map(|j| last.index[j * last.taps + t] * inner).collect()).collect();
        let last_weight =
            (0..last.taps).map(|t| (0..last.out).map(|j| last.weight[j * last.taps + t]).collect()).collect();
        Ok(ResizeSpec {
            in_len: shape.iter().product(),
            in_strides,
            axes,
            last_index,
            last_weight,
            extrapolation_value: *extrapolation_value,
        })
    }

    fn out_row(&self) -> usize {
        self.axes.last().map_or(1, |a| a.out)
    }
}

impl HostKernel for ResizeSpec {
    fn describe(&self) -> String {
        let taps: Vec<String> = self.axes.iter().map(|a| a.taps.to_string()).collect();
        format!("interpolating resize (taps {})", taps.join("×"))
    }

    fn units(&self) -> usize {
        self.axes.iter().map(|a| a.out).product::<usize>() / self.out_row().max(1)
    }

    fn work(&self) -> usize {
        self.axes.iter().fold(1usize, |w, a| w.saturating_mul(a.out.saturating_mul(a.taps)))
    }

    unsafe fn run(&self, args: &[*mut u8], lo: usize, hi: usize, _isa: crate::Isa) {
        let rank = self.axes.len();
        let last = &self.axes[rank - 1];
        let row_len = last.out;
        // SAFETY: x is the whole input (in_len floats), only read.
        let x = unsafe { std::slice::from_raw_parts(args[1] as *const f32, self.in_len) };
        // (offset, weight) pairs of the outer axes for the current row.
        let mut pairs: Vec<(usize, f32)> = Vec::new();
        let mut next: Vec<(usize, f32)> = Vec::new();
        let mut idx = vec![0usize; rank - 1];
        for row in lo..hi {
            // Row index → outer multi-index (row-major over axes 0..rank−1).
            let mut rem = row;
            for k in (0..rank - 1).rev() {
                idx[k] = rem % self.axes[k].out;
                rem /= self.axes[k].out;
            }
            let mut outside = false;
            pairs.clear();
            pairs.push((0, 1.0));
            for (k, &o) in idx.iter().enumerate() {
                let a = &self.axes[k];
                outside |= a.outside[o];
                next.clear();
                for &(off, w) in &pairs {
                    // Zero weights are kept: 0·∞ is NaN in the reference and ONNX Runtime too.
                    for t in 0..a.taps {
                        let (i, wt) = (a.index[o * a.taps + t], a.weight[o * a.taps + t]);
                        next.push((off + i * self.in_strides[k], w * wt));
                    }
                }
                std::mem::swap(&mut pairs, &mut next);
            }
            // SAFETY: out holds units·row_len floats and this unit owns row `row`.
            let y = unsafe { std::slice::from_raw_parts_mut((args[0] as *mut f32).add(row * row_len), row_len) };
            if outside {
                y.fill(self.extrapolation_value);
                continue;
            }
            y.fill(0.0);
            for &(off, w) in &pairs {
                let src = &x[off..];
                for (index, weight) in self.last_index.iter().zip(&self.last_weight) {
                    for ((yj, &i), &wt) in y.iter_mut().zip(index).zip(weight) {
                        *yj += w * wt * src[i];
                    }
                }
            }
            for (yj, &out) in y.iter_mut().zip(&last.outside) {
                if out {
                    *yj = self.extrapolation_value;
                }
            }
        }
    }
}
