//! Plan steps that run as Rust code in the executor rather than as generated kernels:
//! data movement (one table-driven strided copy covers Transpose, Slice, Expand, Split, Concat,
//! Pad in all modes and nearest Resize), Gather (indices known only at run time), i64 casts,
//! and the `gemm` crate's GEMM (AVX2/FMA dispatched at run time; see design notes) with im2col
//! for Conv — products of two activations wider than one 16-column panel run kiln's own
//! micro-kernels instead (`crate::gemm::Product::run_strided`, called from the executor).
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
        // How a row whose outer coordinates are not padding is copied: one memcpy when both sides
        // are contiguous runs (Slice, Concat, Split, most Transposes' inner axis), a branch-free
        // gather when no inner element is padding, else element by element.
        let inner_has_pad = inner_tab.contains(&PAD);
        let contiguous =
            !inner_has_pad && inner_stride == 1 && inner_tab.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
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
            if !padded && contiguous {
                let s0 = (base + inner_tab[0]) as usize;
                // SAFETY: source elements s0 .. s0 + inner are the row's (base + t for each t, the
                // last ≤ src_extent() − 1), destination dbase .. dbase + inner (unit stride, the
                // last < dst_extent()); the buffers do not overlap (the contract).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.add(s0 * self.elem),
                        dst.add(dbase * self.elem),
                        inner * self.elem,
                    )
                };
            } else if !padded && !inner_has_pad {
                // SAFETY: every base + t ≤ src_extent() − 1 and dbase + i·stride < dst_extent().
                unsafe {
                    if self.elem == 8 {
                        gather_row::<u64>(src, base, inner_tab, dst, dbase, inner_stride)
                    } else {
                        gather_row::<u32>(src, base, inner_tab, dst, dbase, inner_stride)
                    }
                }
            } else {
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

/// `dst[dbase + i·stride] = src[base + tab[i]]` for every i, elements of type `T`.
///
/// # Safety
/// Every `base + tab[i]` is in bounds of `src` and every `dbase + i·stride` of `dst`, as `T`s.
#[inline]
unsafe fn gather_row<T: Copy>(src: *const u8, base: i64, tab: &[i64], dst: *mut u8, dbase: usize, stride: usize) {
    let (src, dst) = (src as *const T, dst as *mut T);
    for (i, &t) in tab.iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { *dst.add(dbase + i * stride) = *src.add((base + t) as usize) };
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
    /// This product's A and C on kiln's micro-kernels (B given per call: packed, or strided).
    pub fn product(&self) -> crate::gemm::Product {
        crate::gemm::Product {
            m: self.m,
            a_rs: self.a_rs,
            a_cs: self.a_cs,
            c_rs: self.d_rs,
            alpha: self.alpha,
            beta: self.beta,
            accumulate: self.accumulate,
        }
    }

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

/// Element kinds an [`IndexStep`] reads and writes, as stored in the arena (bool is f32 0/1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
}

impl Elem {
    pub fn bytes(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::I64 => 8,
        }
    }
}

/// Steps whose positions come from an index tensor at run time, or that scan or sort along an
/// axis: GatherElements, GatherND, ScatterND, ScatterElements, ArgMax/ArgMin, CumSum, TopK.
/// Plain Rust loops over `[outer, n, inner]` views; an index outside its axis is an error
/// (nothing is read or written out of bounds). Arguments: the outputs (one, or two for TopK),
/// then the inputs in IR order.
#[derive(Debug, Clone)]
pub enum IndexStep {
    /// GatherElements (`scatter: None`) or ScatterElements along `axis`: index element p names
    /// data position p with its axis coordinate replaced. `idx_shape` fits inside `data_shape`
    /// off the axis (checked by the IR).
    Elements { data_shape: Vec<usize>, idx_shape: Vec<usize>, axis: usize, elem: Elem, scatter: Option<Scatter> },
    /// GatherND (`scatter: None`) or ScatterND: `tuples` index tuples of `last` entries, each naming
    /// a slice of `slice_len` elements; tuple t belongs to batch t / `per_batch`, whose data starts
    /// at batch·`batch_stride`. `dims`/`strides` are the data axes the tuple entries index.
    Nd {
        data_len: usize,
        tuples: usize,
        last: usize,
        per_batch: usize,
        batch_stride: usize,
        dims: Vec<usize>,
        strides: Vec<usize>,
        slice_len: usize,
        elem: Elem,
        scatter: Option<Scatter>,
    },
    /// ArgMax (`max`)/ArgMin over the middle axis of `[outer, n, inner]`; i64 output `[outer, inner]`.
    Arg { outer: usize, n: usize, inner: usize, max: bool, last: bool, elem: Elem },
    /// CumSum over the middle axis of `[outer, n, inner]` (f32 sums in f64, as the reference).
    CumSum { outer: usize, n: usize, inner: usize, exclusive: bool, reverse: bool, elem: Elem },
    /// TopK over the middle axis: values `[outer, k, inner]` and i64 indices of the same shape.
    TopK { outer: usize, n: usize, inner: usize, k: usize, largest: bool, elem: Elem },
}

/// How a scatter combines an update with the element in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scatter(pub kiln_ir::ScatterReduction);

impl IndexStep {
    pub fn n_writes(&self) -> usize {
        if matches!(self, IndexStep::TopK { .. }) { 2 } else { 1 }
    }

    pub fn label(&self) -> &'static str {
        match self {
            IndexStep::Elements { scatter: None, .. } => "gather elements",
            IndexStep::Elements { .. } => "scatter elements",
            IndexStep::Nd { scatter: None, .. } => "gather nd",
            IndexStep::Nd { .. } => "scatter nd",
            IndexStep::Arg { .. } => "arg reduce",
            IndexStep::CumSum { .. } => "cumsum",
            IndexStep::TopK { .. } => "topk",
        }
    }

    /// Runs the step. An index out of range or an i64 CumSum overflow is an error message.
    ///
    /// # Safety
    /// `ptrs` holds the step's buffers in the order documented on each variant, each valid for
    /// the element counts its shapes give, outputs not overlapping inputs.
    pub unsafe fn run(&self, ptrs: &[*mut u8]) -> Result<(), String> {
        // SAFETY: per the contract, every slice below covers exactly a buffer of the plan.
        unsafe {
            match self {
                IndexStep::Elements { data_shape, idx_shape, axis, elem, scatter } => {
                    let data_len: usize = data_shape.iter().product();
                    let n_idx: usize = idx_shape.iter().product();
                    let idx = std::slice::from_raw_parts(ptrs[2] as *const i64, n_idx);
                    let pos = element_positions(data_shape, idx_shape, *axis, idx)?;
                    match scatter {
                        None => gather(*elem, ptrs[1], ptrs[0], &pos),
                        Some(s) => scatter_into(*elem, s.0, ptrs[1], ptrs[3], ptrs[0], data_len, &pos, 1),
                    }
                }
                IndexStep::Nd {
                    data_len,
                    tuples,
                    last,
                    per_batch,
                    batch_stride,
                    dims,
                    strides,
                    slice_len,
                    elem,
                    scatter,
                } => {
                    let idx = std::slice::from_raw_parts(ptrs[2] as *const i64, tuples * last);
                    let mut starts = Vec::with_capacity(*tuples);
                    for t in 0..*tuples {
                        let mut off = (t / per_batch) * batch_stride;
                        for (k, (&d, &s)) in dims.iter().zip(strides).enumerate() {
                            off += wrap(idx[t * last + k], d)? * s;
                        }
                        starts.push(off);
                    }
                    match scatter {
                        None => {
                            let pos: Vec<usize> = starts.iter().flat_map(|&s| s..s + slice_len).collect();
                            gather(*elem, ptrs[1], ptrs[0], &pos);
                        }
                        Some(s) => scatter_into(*elem, s.0, ptrs[1], ptrs[3], ptrs[0], *data_len, &starts, *slice_len),
                    }
                }
                IndexStep::Arg { outer, n, inner, max, last, elem } => {
                    let len = outer * n * inner;
                    let out = std::slice::from_raw_parts_mut(ptrs[0] as *mut i64, outer * inner);
                    match elem {
                        Elem::F32 => arg(
                            std::slice::from_raw_parts(ptrs[1] as *const f32, len),
                            out,
                            *outer,
                            *n,
                            *inner,
                            *max,
                            *last,
                        ),
                        Elem::I64 => arg(
                            std::slice::from_raw_parts(ptrs[1] as *const i64, len),
                            out,
                            *outer,
                            *n,
                            *inner,
                            *max,
                            *last,
                        ),
                    }
                }
                IndexStep::CumSum { outer, n, inner, exclusive, reverse, elem } => {
                    let len = outer * n * inner;
                    for o in 0..*outer {
                        for i in 0..*inner {
                            let at = |k: usize| (o * n + if *reverse { n - 1 - k } else { k }) * inner + i;
                            match elem {
                                Elem::F32 => {
                                    let x = std::slice::from_raw_parts(ptrs[1] as *const f32, len);
                                    let y = std::slice::from_raw_parts_mut(ptrs[0] as *mut f32, len);
                                    let mut acc = 0f64;
                                    for k in 0..*n {
                                        let p = at(k);
                                        let next = acc + f64::from(x[p]);
                                        y[p] = if *exclusive { acc } else { next } as f32;
                                        acc = next;
                                    }
                                }
                                Elem::I64 => {
                                    let x = std::slice::from_raw_parts(ptrs[1] as *const i64, len);
                                    let y = std::slice::from_raw_parts_mut(ptrs[0] as *mut i64, len);
                                    let mut acc = 0i64;
                                    for k in 0..*n {
                                        let p = at(k);
                                        let next = acc.checked_add(x[p]).ok_or("CumSum overflows i64")?;
                                        y[p] = if *exclusive { acc } else { next };
                                        acc = next;
                                    }
                                }
                            }
                        }
                    }
                }
                IndexStep::TopK { outer, n, inner, k, largest, elem } => {
                    let (len, out_len) = (outer * n * inner, outer * k * inner);
                    let idx = std::slice::from_raw_parts_mut(ptrs[1] as *mut i64, out_len);
                    match elem {
                        Elem::F32 => {
                            let x = std::slice::from_raw_parts(ptrs[2] as *const f32, len);
                            let v = std::slice::from_raw_parts_mut(ptrs[0] as *mut f32, out_len);
                            top_k(x, v, idx, [*outer, *n, *inner, *k], *largest, |a: &f32, b: &f32| nan_high(*a, *b));
                        }
                        Elem::I64 => {
                            let x = std::slice::from_raw_parts(ptrs[2] as *const i64, len);
                            let v = std::slice::from_raw_parts_mut(ptrs[0] as *mut i64, out_len);
                            top_k(x, v, idx, [*outer, *n, *inner, *k], *largest, |a: &i64, b: &i64| a.cmp(b));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// An index resolved against an axis of `size` (negative counts from the end).
fn wrap(i: i64, size: usize) -> Result<usize, String> {
    let j = if i < 0 { i.checked_add(size as i64) } else { Some(i) };
    j.filter(|&j| j >= 0 && (j as usize) < size)
        .map(|j| j as usize)
        .ok_or_else(|| format!("index {i} is out of range for an axis of {size}"))
}

/// For GatherElements/ScatterElements: the data position of each index element.
fn element_positions(
    data_shape: &[usize],
    idx_shape: &[usize],
    axis: usize,
    idx: &[i64],
) -> Result<Vec<usize>, String> {
    let strides = kiln_ir::tensor::strides(data_shape);
    let mut coord = vec![0usize; idx_shape.len()];
    let mut pos = Vec::with_capacity(idx.len());
    for &i in idx {
        let j = wrap(i, data_shape[axis])?;
        let mut p = 0;
        for (d, (&c, &s)) in coord.iter().zip(&strides).enumerate() {
            p += if d == axis { j } else { c } * s;
        }
        pos.push(p);
        for d in (0..coord.len()).rev() {
            coord[d] += 1;
            if coord[d] < idx_shape[d] {
                break;
            }
            coord[d] = 0;
        }
    }
    Ok(pos)
}

/// out[k] = data[pos[k]].
///
/// # Safety
/// `data` valid for every position in `pos`, `out` for `pos.len()` elements; no overlap.
unsafe fn gather(elem: Elem, data: *const u8, out: *mut u8, pos: &[usize]) {
    // SAFETY: per the contract.
    unsafe {
        match elem {
            Elem::F32 => {
                let (d, o) = (data as *const u32, out as *mut u32);
                for (k, &p) in pos.iter().enumerate() {
                    *o.add(k) = *d.add(p);
                }
            }
            Elem::I64 => {
                let (d, o) = (data as *const u64, out as *mut u64);
                for (k, &p) in pos.iter().enumerate() {
                    *o.add(k) = *d.add(p);
                }
            }
        }
    }
}

/// out = data, then for each start s (in order) and j < `run`: out[s + j] ⊕= updates[k·run + j].
///
/// # Safety
/// `data` and `out` valid for `data_len` elements, `updates` for `starts.len()·run`; every
/// `s + run ≤ data_len`; `out` overlaps neither input.
#[allow(clippy::too_many_arguments)]
unsafe fn scatter_into(
    elem: Elem,
    reduction: kiln_ir::ScatterReduction,
    data: *const u8,
    updates: *const u8,
    out: *mut u8,
    data_len: usize,
    starts: &[usize],
    run: usize,
) {
    use kiln_ir::ScatterReduction as R;
    // SAFETY: per the contract.
    unsafe {
        std::ptr::copy_nonoverlapping(data, out, data_len * elem.bytes());
        match elem {
            Elem::F32 => {
                let o = std::slice::from_raw_parts_mut(out as *mut f32, data_len);
                let u = std::slice::from_raw_parts(updates as *const f32, starts.len() * run);
                for (k, &s) in starts.iter().enumerate() {
                    for j in 0..run {
                        let (cur, v) = (o[s + j], u[k * run + j]);
                        o[s + j] = match reduction {
                            R::None => v,
                            R::Add => cur + v,
                            R::Mul => cur * v,
                            _ if cur.is_nan() || v.is_nan() => f32::NAN,
                            R::Max => cur.max(v),
                            R::Min => cur.min(v),
                        };
                    }
                }
            }
            Elem::I64 => {
                let o = std::slice::from_raw_parts_mut(out as *mut i64, data_len);
                let u = std::slice::from_raw_parts(updates as *const i64, starts.len() * run);
                for (k, &s) in starts.iter().enumerate() {
                    for j in 0..run {
                        let (cur, v) = (o[s + j], u[k * run + j]);
                        o[s + j] = match reduction {
                            R::None => v,
                            R::Add => cur.wrapping_add(v),
                            R::Mul => cur.wrapping_mul(v),
                            R::Max => cur.max(v),
                            R::Min => cur.min(v),
                        };
                    }
                }
            }
        }
    }
}

/// Values that compare; for f32 a NaN compares false, so it never wins (as the reference).
trait Cmp: Copy {
    fn gt(self, b: Self) -> bool;
    fn lt(self, b: Self) -> bool;
    fn eq_(self, b: Self) -> bool;
}

impl Cmp for f32 {
    fn gt(self, b: f32) -> bool {
        self > b
    }
    fn lt(self, b: f32) -> bool {
        self < b
    }
    fn eq_(self, b: f32) -> bool {
        self == b
    }
}

impl Cmp for i64 {
    fn gt(self, b: i64) -> bool {
        self > b
    }
    fn lt(self, b: i64) -> bool {
        self < b
    }
    fn eq_(self, b: i64) -> bool {
        self == b
    }
}

fn arg<T: Cmp>(x: &[T], out: &mut [i64], outer: usize, n: usize, inner: usize, max: bool, last: bool) {
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| x[(o * n + k) * inner + i];
            let mut best = 0;
            for k in 1..n {
                let (v, b) = (at(k), at(best));
                let wins = if max { v.gt(b) } else { v.lt(b) };
                if wins || (last && v.eq_(b)) {
                    best = k;
                }
            }
            out[o * inner + i] = best as i64;
        }
    }
}

/// f32 order with NaN above every number (TopK's order, as ONNX Runtime).
fn nan_high(a: f32, b: f32) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// The k extremes of each `[outer, ·, inner]` lane, sorted, ties by lower index (a stable sort).
fn top_k<T: Copy>(
    x: &[T],
    values: &mut [T],
    indices: &mut [i64],
    [outer, n, inner, k]: [usize; 4],
    largest: bool,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) {
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| &x[(o * n + j) * inner + i];
            order.clear();
            order.extend(0..n);
            order.sort_by(|&a, &b| {
                let c = cmp(at(a), at(b));
                if largest { c.reverse() } else { c }
            });
            for (r, &j) in order[..k].iter().enumerate() {
                values[(o * k + r) * inner + i] = *at(j);
                indices[(o * k + r) * inner + i] = j as i64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AxisCopy, PAD};

    /// The copy element by element, as the definition on [`AxisCopy`] says.
    fn reference(c: &AxisCopy, src: &[u64]) -> Vec<u64> {
        let mut dst = vec![u64::MAX; c.dst_extent()];
        let total: usize = c.shape.iter().product();
        for flat in 0..total {
            let (mut rem, mut s, mut d, mut pad) = (flat, 0i64, c.dst_off, false);
            for j in (0..c.shape.len()).rev() {
                let i = rem % c.shape[j];
                rem /= c.shape[j];
                let t = c.src_tab[j][i];
                pad |= t == PAD;
                s = s.wrapping_add(t);
                d += i * c.dst_strides[j];
            }
            dst[d] = if pad { c.pad as i64 as u64 } else { src[s as usize] };
        }
        dst
    }

    /// Every row form — contiguous (memcpy), gathered without padding, with padding in the inner
    /// axis or in an outer one — for 4- and 8-byte elements, against the element-by-element
    /// definition.
    #[test]
    fn row_forms_match_the_definition() {
        // [2, 3, 5] out of a [3, 2, 7] source: outer tables permute, inner tables vary.
        let inner_tabs: [(&str, Vec<i64>, usize); 4] = [
            ("contiguous", vec![1, 2, 3, 4, 5], 1),
            ("contiguous, strided destination", vec![1, 2, 3, 4, 5], 2),
            ("gathered", vec![6, 0, 3, 1, 5], 1),
            ("padded", vec![PAD, 0, 1, 2, PAD], 1),
        ];
        for (what, inner, stride) in inner_tabs {
            for outer_pad in [false, false, true] {
                let mut tab0 = vec![0, 14];
                if outer_pad {
                    tab0[1] = PAD;
                }
                let c = AxisCopy {
                    shape: vec![2, 3, 5],
                    src_tab: vec![tab0, vec![28, 0, 7], inner.clone()],
                    dst_strides: vec![15 * stride, 5 * stride, stride],
                    dst_off: 3,
                    elem: 8,
                    pad: -2.0,
                };
                let src: Vec<u64> = (0..c.src_extent() as u64).map(|v| v * 3 + 1).collect();
                let want = reference(&c, &src);
                let mut got = vec![u64::MAX; c.dst_extent()];
                // SAFETY: src holds src_extent() and got dst_extent() elements of 8 bytes.
                unsafe { c.run(src.as_ptr() as *const u8, got.as_mut_ptr() as *mut u8) };
                assert_eq!(got, want, "{what}, outer pad {outer_pad}, 8-byte elements");
                // The same copy of 4-byte elements (bit patterns; the pad is −2.0f32).
                let c4 = AxisCopy { elem: 4, ..c.clone() };
                let src4: Vec<u32> = src.iter().map(|&v| v as u32).collect();
                let mut got4 = vec![u32::MAX; c4.dst_extent()];
                // SAFETY: as above, 4-byte elements.
                unsafe { c4.run(src4.as_ptr() as *const u8, got4.as_mut_ptr() as *mut u8) };
                let want4: Vec<u32> = want
                    .iter()
                    .map(|&v| if v == (-2.0f32 as i64) as u64 { (-2.0f32).to_bits() } else { v as u32 })
                    .collect();
                assert_eq!(got4, want4, "{what}, outer pad {outer_pad}, 4-byte elements");
            }
        }
    }
}
