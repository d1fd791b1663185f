//! Plan steps that run as Rust code in the executor rather than as generated kernels:
//! data movement (one table-driven strided copy covers Transpose, Slice, Expand, Split, Concat,
//! Pad in all modes and nearest Resize), Gather (indices known only at run time), i64 casts,
//! and the GEMM core (the `gemm` crate, AVX2/FMA dispatched at run time; see design notes) with
//! im2col for Conv.
//!
//! All functions take raw pointers resolved by the executor; each documents what it reads and
//! writes. The plan builder guarantees the sizes (checked again by `debug_assert!`s here).

/// A table-driven copy: for each index `i` of `shape` (row-major), the source element is
/// `Σⱼ src_tab[j][iⱼ]` (element offsets) unless some entry is `PAD`, in which case `pad` is written;
/// the destination is `dst_off + Σⱼ iⱼ·dst_strides[j]`.
#[derive(Debug, Clone)]
pub struct AxisCopy {
    pub shape: Vec<usize>,
    pub src_tab: Vec<Vec<i64>>,
    pub dst_strides: Vec<usize>,
    pub dst_off: usize,
    /// Element size in bytes: 4 (f32) or 8 (i64).
    pub elem: usize,
    /// The value written for padding, in arena terms: f32 as is, bool as 0.0/1.0; i64 data
    /// gets it truncated toward zero.
    pub pad: f32,
}

pub const PAD: i64 = i64::MIN;

impl AxisCopy {
    /// Number of source elements the copy may touch: one past the largest offset.
    pub fn src_extent(&self) -> usize {
        self.src_tab.iter().map(|t| t.iter().copied().filter(|&v| v != PAD).max().unwrap_or(0)).sum::<i64>() as usize
            + 1
    }

    pub fn dst_extent(&self) -> usize {
        self.dst_off + self.shape.iter().zip(&self.dst_strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// # Safety
    /// `src` must be valid for reads of `src_extent()` elements and `dst` for writes of
    /// `dst_extent()` elements of `elem` bytes, and the two must not overlap.
    pub unsafe fn run(&self, src: *const u8, dst: *mut u8) {
        let total: usize = self.shape.iter().product();
        if total == 0 {
            return;
        }
        let rank = self.shape.len();
        if rank == 0 {
            // SAFETY: one element each way, per the contract.
            unsafe { self.copy_one(src, 0, dst, self.dst_off) };
            return;
        }
        let inner = self.shape[rank - 1];
        let inner_tab = &self.src_tab[rank - 1];
        let inner_stride = self.dst_strides[rank - 1];
        let mut idx = vec![0usize; rank];
        let outer: usize = total / inner;
        for _ in 0..outer {
            let mut base = 0i64;
            let mut padded = false;
            let mut dbase = self.dst_off;
            for ((tab, &i), &ds) in self.src_tab.iter().zip(&idx).zip(&self.dst_strides).take(rank - 1) {
                let t = tab[i];
                padded |= t == PAD;
                base = base.wrapping_add(t);
                dbase += i * ds;
            }
            for (i, &t) in inner_tab.iter().enumerate() {
                let d = dbase + i * inner_stride;
                if padded || t == PAD {
                    // SAFETY: d < dst_extent().
                    unsafe { self.write_pad(dst, d) };
                } else {
                    // SAFETY: base + t ≤ src_extent() − 1 and d < dst_extent().
                    unsafe { self.copy_one(src, (base + t) as usize, dst, d) };
                }
            }
            for j in (0..rank.saturating_sub(1)).rev() {
                idx[j] += 1;
                if idx[j] < self.shape[j] {
                    break;
                }
                idx[j] = 0;
            }
        }
    }

    /// # Safety
    /// `s` and `d` are in bounds of `src` and `dst` for elements of `self.elem` bytes.
    unsafe fn copy_one(&self, src: *const u8, s: usize, dst: *mut u8, d: usize) {
        // SAFETY: caller guarantees both indices are in bounds.
        unsafe {
            if self.elem == 8 {
                *(dst as *mut u64).add(d) = *(src as *const u64).add(s);
            } else {
                *(dst as *mut u32).add(d) = *(src as *const u32).add(s);
            }
        }
    }

    /// # Safety
    /// `d` is in bounds of `dst`.
    unsafe fn write_pad(&self, dst: *mut u8, d: usize) {
        // SAFETY: caller guarantees d is in bounds.
        unsafe {
            if self.elem == 8 {
                // i64 data: the pad value truncated toward zero, as the reference does.
                *(dst as *mut i64).add(d) = self.pad as i64;
            } else {
                *(dst as *mut f32).add(d) = self.pad;
            }
        }
    }
}

/// Gather along an axis: data `[outer, axis_len, inner]`, indices `n_idx` i64 values,
/// out `[outer, n_idx, inner]`.
#[derive(Debug, Clone)]
pub struct GatherSpec {
    pub outer: usize,
    pub axis_len: usize,
    pub inner: usize,
    pub n_idx: usize,
    pub elem: usize,
}

impl GatherSpec {
    /// Returns the first out-of-range index, if any (nothing is written past the check).
    ///
    /// # Safety
    /// `data` valid for `outer·axis_len·inner` elements, `idx` for `n_idx` i64, `out` for
    /// `outer·n_idx·inner` elements; `out` overlaps neither.
    pub unsafe fn run(&self, data: *const u8, idx: *const i64, out: *mut u8) -> Result<(), i64> {
        // SAFETY: idx is valid for n_idx reads.
        let idx = unsafe { std::slice::from_raw_parts(idx, self.n_idx) };
        let len = self.axis_len as i64;
        let mut resolved = Vec::with_capacity(idx.len());
        for &i in idx {
            let j = if i < 0 { i + len } else { i };
            if j < 0 || j >= len {
                return Err(i);
            }
            resolved.push(j as usize);
        }
        let row = self.inner * self.elem;
        for o in 0..self.outer {
            for (k, &j) in resolved.iter().enumerate() {
                let s = ((o * self.axis_len + j) * self.inner) * self.elem;
                let d = ((o * self.n_idx + k) * self.inner) * self.elem;
                // SAFETY: both ranges lie inside the buffers described above.
                unsafe { std::ptr::copy_nonoverlapping(data.add(s), out.add(d), row) };
            }
        }
        Ok(())
    }
}

/// Element conversions involving i64 (f32 and bool are both f32 inside kiln's arena).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convert {
    F32ToI64,
    I64ToF32,
    I64ToBool,
    BoolToI64,
}

impl Convert {
    /// # Safety
    /// `src` and `dst` valid for `n` elements of their types; no overlap.
    pub unsafe fn run(self, src: *const u8, dst: *mut u8, n: usize) {
        // SAFETY: per the contract.
        unsafe {
            match self {
                Convert::F32ToI64 => {
                    let s = std::slice::from_raw_parts(src as *const f32, n);
                    let d = std::slice::from_raw_parts_mut(dst as *mut i64, n);
                    // Truncation toward zero as ONNX/C casts; out of range saturates, NaN → 0.
                    d.iter_mut().zip(s).for_each(|(d, &s)| *d = s as i64);
                }
                Convert::I64ToF32 | Convert::I64ToBool => {
                    let s = std::slice::from_raw_parts(src as *const i64, n);
                    let d = std::slice::from_raw_parts_mut(dst as *mut f32, n);
                    let to_bool = self == Convert::I64ToBool;
                    d.iter_mut().zip(s).for_each(|(d, &s)| *d = if to_bool { (s != 0) as u8 as f32 } else { s as f32 });
                }
                Convert::BoolToI64 => {
                    let s = std::slice::from_raw_parts(src as *const f32, n);
                    let d = std::slice::from_raw_parts_mut(dst as *mut i64, n);
                    d.iter_mut().zip(s).for_each(|(d, &s)| *d = (s != 0.0) as i64);
                }
            }
        }
    }
}

/// One GEMM: `dst[m×n] = alpha·A[m×k]·B[k×n] (+ beta·dst if accumulate)`, in element strides.
#[derive(Debug, Clone, Copy)]
pub struct GemmCall {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a_rs: isize,
    pub a_cs: isize,
    pub b_rs: isize,
    pub b_cs: isize,
    pub d_rs: isize,
    pub alpha: f32,
    pub beta: f32,
    pub accumulate: bool,
}

impl GemmCall {
    /// # Safety
    /// `a`, `b`, `dst` valid for every element their strides and sizes address; `dst` overlaps
    /// neither input.
    pub unsafe fn run(&self, a: *const f32, b: *const f32, dst: *mut f32) {
        if self.m == 0 || self.n == 0 {
            return;
        }
        // SAFETY: per the contract; gemm reads/writes exactly the strided ranges described.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                dst,
                1,
                self.d_rs,
                self.accumulate,
                a,
                self.a_cs,
                self.a_rs,
                b,
                self.b_cs,
                self.b_rs,
                self.beta,
                self.alpha,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }
}

/// im2col for one image and one group: columns `[p0, p1)` of the `[C·kh·kw, OH·OW]` matrix, written
/// as a dense `[C·kh·kw, p1 − p0]` tile so that the GEMM reads it while it is still in cache.
#[derive(Debug, Clone)]
pub struct Im2Col {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub stride: [usize; 2],
    pub dil: [usize; 2],
    pub pad: [usize; 2],
}

impl Im2Col {
    /// A 1×1 kernel with stride 1 and no padding reads the image as it is: `[C, H·W]` is already
    /// the im2col matrix.
    pub fn is_identity(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.stride == [1, 1]
            && self.pad == [0, 0]
            && self.oh == self.h
            && self.ow == self.w
    }

    /// # Safety
    /// `x` valid for `c·h·w` f32 reads; `tile` for `c·kh·kw·(p1 − p0)` f32 writes; `p0 ≤ p1 ≤ oh·ow`.
    pub unsafe fn run_tile(&self, x: *const f32, tile: *mut f32, p0: usize, p1: usize) {
        let tw = p1 - p0;
        let (s1, w) = (self.stride[1], self.w as isize);
        for ci in 0..self.c {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    let r = (ci * self.kh + ky) * self.kw + kx;
                    // SAFETY: row r of the tile is tw floats at r·tw.
                    let row = unsafe { std::slice::from_raw_parts_mut(tile.add(r * tw), tw) };
                    // ix = ox·s1 + off; the ox with 0 ≤ ix < w form one range [first, end).
                    let off = (kx * self.dil[1]) as isize - self.pad[1] as isize;
                    let first = if off >= 0 { 0 } else { ((-off) as usize).div_ceil(s1) };
                    let end = if w - off <= 0 { 0 } else { ((w - off) as usize).div_ceil(s1) };
                    let mut p = p0;
                    while p < p1 {
                        let (oy, ox0) = (p / self.ow, p % self.ow);
                        let ox1 = self.ow.min(ox0 + (p1 - p));
                        let out = &mut row[p - p0..p - p0 + (ox1 - ox0)];
                        let iy = (oy * self.stride[0] + ky * self.dil[0]) as isize - self.pad[0] as isize;
                        if iy < 0 || iy >= self.h as isize {
                            out.fill(0.0);
                        } else {
                            let lo = first.clamp(ox0, ox1);
                            let hi = end.clamp(lo, ox1);
                            out[..lo - ox0].fill(0.0);
                            out[hi - ox0..].fill(0.0);
                            if hi > lo {
                                let start = (ci * self.h + iy as usize) * self.w;
                                // SAFETY: (ci, iy) is a row of the c×h×w image; for ox in [lo, hi)
                                // the column ox·s1 + off is in [0, w).
                                let src = unsafe { std::slice::from_raw_parts(x.add(start), self.w) };
                                let dst = &mut out[lo - ox0..hi - ox0];
                                let base = (lo * s1) as isize + off;
                                if s1 == 1 {
                                    dst.copy_from_slice(&src[base as usize..base as usize + (hi - lo)]);
                                } else {
                                    for (i, d) in dst.iter_mut().enumerate() {
                                        *d = src[base as usize + i * s1];
                                    }
                                }
                            }
                        }
                        p += ox1 - ox0;
                    }
                }
            }
        }
    }
}
