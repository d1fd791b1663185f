//! Direct sliding-window kernels over NCHW planes: depthwise convolution ([`DepthwiseSpec`]) and
//! the fast path of 2-D max/average pooling (used by `crate::spatial::PoolSpec`).
//!
//! Both copy each input plane into a per-chunk scratch in a *phase-split padded* layout, then run
//! a loop vectorised along the output row with no bounds or padding tests inside:
//! - the scratch row of padded input row `r` holds `stride_w` phases of `len` floats; phase `p`
//!   column `q` is padded column `q·stride_w + p`. Output `ox` with tap `kx` reads padded column
//!   `ox·stride_w + kx·dil_w`, i.e. phase `(kx·dil_w) mod stride_w` at `ox + ⌊kx·dil_w / stride_w⌋`:
//!   contiguous in `ox` for any stride, so strided windows load whole vectors too.
//! - positions that are padding (or past the input) hold the pad value (0 for sums, −∞ for max);
//!   the scratch is filled with it once per chunk and each plane overwrites only the positions
//!   that hold input, so the pad is never re-written. Rows are padded to whole vectors of 8, so
//!   the last partial vector of a row reads pad values, never past the scratch.
//!
//! Kernels are picked by [`crate::Isa`]: AVX2+FMA intrinsics in `#[target_feature]` functions,
//! else portable Rust over arrays of 8 (which the compiler vectorises for SSE2).

use crate::Isa;

/// Output floats per vector (one AVX2 register).
const V: usize = 8;

/// Geometry of a 2-D window over one plane: input [h, w], output [oh, ow] (both ≥ 1), kernel,
/// stride, dilation and the top/left padding (bottom/right padding is implied by the output size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
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

impl Window {
    /// Padded rows the outputs read.
    fn rows(&self) -> usize {
        (self.oh - 1) * self.stride[0] + (self.kh - 1) * self.dil[0] + 1
    }

    /// Floats per phase of a scratch row: whole vectors of outputs plus the largest tap offset.
    fn phase_len(&self) -> usize {
        self.ow.div_ceil(V) * V + (self.kw - 1) * self.dil[1] / self.stride[1]
    }

    fn row_len(&self) -> usize {
        self.stride[1] * self.phase_len()
    }

    /// Floats of scratch one chunk needs.
    pub fn scratch_len(&self) -> usize {
        self.rows() * self.row_len()
    }

    /// Offset of tap (ky, kx) from the start of output row 0's scratch, for each tap in
    /// row-major kernel order.
    fn tap_offsets(&self) -> Vec<usize> {
        let (l, rl) = (self.phase_len(), self.row_len());
        let mut offs = Vec::with_capacity(self.kh * self.kw);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let c = kx * self.dil[1];
                offs.push(ky * self.dil[0] * rl + (c % self.stride[1]) * l + c / self.stride[1]);
            }
        }
        offs
    }

    /// A scratch for one chunk, every position holding `pad`.
    pub fn scratch(&self, pad: f32) -> Vec<f32> {
        vec![pad; self.scratch_len()]
    }

    /// Copies plane `x` ([h, w]) into the input positions of `s` (made by [`Window::scratch`]).
    /// With `check_nan`, stops at the first row that holds a NaN and returns false (the copy is
    /// then incomplete); returns true otherwise.
    fn fill(&self, isa: Isa, x: &[f32], s: &mut [f32], check_nan: bool) -> bool {
        let (l, rl, sw) = (self.phase_len(), self.row_len(), self.stride[1]);
        let [pt, pl] = self.pad;
        for r in pt..self.rows().min(pt + self.h) {
            let src = &x[(r - pt) * self.w..][..self.w];
            let dst = &mut s[r * rl..][..rl];
            let nan = if sw == 1 {
                // Columns at or past `l` are never read.
                let n = self.w.min(l.saturating_sub(pl));
                copy_row(isa, &src[..n], &mut dst[pl..pl + n], check_nan)
            } else {
                split_phases_nan(isa, src, dst, pl, sw, l)
            };
            if check_nan && nan {
                return false;
            }
        }
        true
    }
}

/// Whether `x` holds a NaN.
pub(crate) fn has_nan(isa: Isa, x: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2Fma {
        // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported).
        return unsafe { avx2::has_nan(x) };
    }
    let _ = isa;
    // A fold, not `any`, so that it vectorises.
    x.iter().fold(false, |a, v| a | v.is_nan())
}

/// `dst = src`; with `check`, returns whether `src` holds a NaN (checked as it is copied), else
/// false.
fn copy_row(isa: Isa, src: &[f32], dst: &mut [f32], check: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    if check && isa >= Isa::Avx2Fma {
        // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported).
        return unsafe { avx2::copy_check(src, dst) };
    }
    dst.copy_from_slice(src);
    check && has_nan(isa, src)
}

/// Writes input row `src` into the `sw` phases of `l` floats of a scratch row `dst`: padded column
/// `c = ix + pl` goes to phase `c mod sw`, column `⌊c / sw⌋` (when that is below `l`); other
/// positions are left as they are. One strided pass per phase: no division per element.
pub(crate) fn split_phases(isa: Isa, src: &[f32], dst: &mut [f32], pl: usize, sw: usize, l: usize) {
    split_phases_nan(isa, src, dst, pl, sw, l);
}

/// [`split_phases`], returning whether a value it copied is NaN (or, on the portable path,
/// whether `src` holds one).
fn split_phases_nan(isa: Isa, src: &[f32], dst: &mut [f32], pl: usize, sw: usize, l: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if sw == 2 && isa >= Isa::Avx2Fma && dst.len() >= 2 * l {
        // Even input columns go to phase pl mod 2 from column ⌊pl/2⌋, odd ones to the other
        // phase from column ⌈pl/2⌉.
        let (p0, p1) = dst[..2 * l].split_at_mut(l);
        let (ev, od) = if pl.is_multiple_of(2) {
            (p0.get_mut(pl / 2..), p1.get_mut(pl / 2..))
        } else {
            (p1.get_mut(pl / 2..), p0.get_mut(pl.div_ceil(2)..))
        };
        // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported).
        return unsafe { avx2::deinterleave(src, ev.unwrap_or_default(), od.unwrap_or_default()) };
    }
    let nan = has_nan(isa, src);
    for (ph, out) in dst.chunks_exact_mut(l).take(sw).enumerate() {
        // The first phase column whose padded column q·sw + ph is at or past the left padding.
        let q0 = pl.saturating_sub(ph).div_ceil(sw);
        let ix0 = q0 * sw + ph - pl;
        if q0 >= l || ix0 >= src.len() {
            continue;
        }
        for (d, &v) in out[q0..].iter_mut().zip(src[ix0..].iter().step_by(sw)) {
            *d = v;
        }
    }
    nan
}

/// What a window computes from its taps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Σ weight·x + bias (depthwise convolution).
    Dot,
    /// max x (pad −∞; no NaN in the plane).
    Max,
    /// Σ x (pad 0).
    Sum,
}

/// What one output reduces: the tap offsets ([`Window::tap_offsets`]), the kh·kw weights of
/// `Dot` (empty otherwise), the starting value (the bias for `Dot`, 0 or −∞ otherwise) and an
/// optional per-output multiplier applied before the store (AveragePool's 1/count: one table of
/// oh·ow floats plus `V` readable floats past the end, so that a row's last vector stays inside).
#[derive(Clone, Copy)]
struct Taps<'a> {
    red: Reduce,
    offs: &'a [usize],
    wts: &'a [f32],
    init: f32,
    scale: Option<&'a [f32]>,
}

/// One plane: `y[oy·ow + ox]` = the reduction over the taps of the scratch `s` (filled from the
/// plane).
fn plane(win: &Window, isa: Isa, t: Taps, s: &[f32], y: &mut [f32]) {
    let step = win.stride[0] * win.row_len();
    debug_assert!(s.len() >= (win.oh - 1) * step + t.offs.iter().max().copied().unwrap_or(0) + win.ow.div_ceil(V) * V);
    debug_assert!(y.len() == win.oh * win.ow && (t.red != Reduce::Dot || t.wts.len() == t.offs.len()));
    debug_assert!(t.scale.is_none_or(|sc| sc.len() >= win.oh * win.ow + V));
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2Fma {
        // Two output rows at a time: twice the independent accumulators, so the FMA latency
        // chain of a long window (49 taps of 7×7) no longer limits the rate. When the row
        // stride equals the row dilation, kernel row ky of the second output row is kernel row
        // ky + 1 of the first: each scratch row is then loaded once for both.
        let reuse = (win.stride[0] == win.dil[0] && win.kh >= 2).then_some(win.kw);
        let mut pairs = y.chunks_exact_mut(2 * win.ow);
        for (i, pair) in pairs.by_ref().enumerate() {
            let (y0, y1) = pair.split_at_mut(win.ow);
            let sc = t.scale.map(|sc| &sc[2 * i * win.ow..]);
            // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported), so AVX2
            // and FMA are present; rows 2i and 2i + 1 are output rows, whose reads stay inside
            // `s` (debug-asserted above), and so are their scale rows (V floats past the table).
            unsafe { avx2::rows(t, &s[2 * i * step..], step, reuse, sc, y0, Some(y1)) };
        }
        let last = pairs.into_remainder();
        if !last.is_empty() {
            let sc = t.scale.map(|sc| &sc[(win.oh - 1) * win.ow..]);
            // SAFETY: as above, for the last output row.
            unsafe { avx2::rows(t, &s[(win.oh - 1) * step..], step, None, sc, last, None) };
        }
        return;
    }
    let _ = isa;
    for (oy, yrow) in y.chunks_exact_mut(win.ow).enumerate() {
        generic_row(t, &s[oy * step..], t.scale.map(|sc| &sc[oy * win.ow..][..win.ow]), yrow);
    }
}

/// Portable row: blocks of 8 outputs accumulated in an array (vectorised by the compiler).
fn generic_row(taps: Taps, s: &[f32], scale: Option<&[f32]>, y: &mut [f32]) {
    let Taps { red, offs, wts, init, .. } = taps;
    for (b, yb) in y.chunks_mut(V).enumerate() {
        let ox0 = b * V;
        let mut acc = [init; V];
        for (t, &o) in offs.iter().enumerate() {
            let x: &[f32; V] = s[o + ox0..][..V].try_into().expect("a window row holds whole vectors");
            match red {
                Reduce::Dot => {
                    let w = wts[t];
                    acc.iter_mut().zip(x).for_each(|(a, &v)| *a += w * v);
                }
                Reduce::Max => acc.iter_mut().zip(x).for_each(|(a, &v)| *a = if v > *a { v } else { *a }),
                Reduce::Sum => acc.iter_mut().zip(x).for_each(|(a, &v)| *a += v),
            }
        }
        if let Some(sc) = scale {
            acc.iter_mut().zip(&sc[ox0..]).for_each(|(a, &m)| *a *= m);
        }
        yb.copy_from_slice(&acc[..yb.len()]);
    }
}

/// The direct depthwise kernels (`dw_plane` and its parts) and the activation of a kernel's
/// accumulators (`dw_act_all`), compiled once per set of target features: in `avx2` for AVX2 + FMA, and again in `avx512` with
/// AVX-512F/VL enabled for CPUs that have them — the same 256-bit code, which LLVM then gives 32
/// vector registers instead of 16 (no accumulators or constants spilled to the stack).
/// `dw_block`'s rows of a band, each a `dw_row` instance for its index J (a const generic): the
/// names are `dw_block`'s (passed in, as a macro defined outside it cannot name its locals).
#[cfg(target_arch = "x86_64")]
macro_rules! dw_rows {
    ($nr:ident, $rows:ident, $c0:ident, $wts:ident, $masks:ident, $acc:ident;
     $K:ident, $S:ident, $R:ident, $B:ident, $EDGE:ident; $($j:literal)*) => {$(
        if $j < $nr {
            // SAFETY: the caller's contract; row j of the band.
            unsafe {
                dw_row::<$K, $S, $R, $B, $EDGE, $j>($rows[$j].wrapping_offset($c0), $wts, &$masks, &mut $acc)
            };
        }
    )*};
}

#[cfg(target_arch = "x86_64")]
macro_rules! dw_kernels {
    ($features:literal) => {
    /// `y[oy·ow + ox]` = clamp(bias + Σ w[ky·K + kx] · x[S·oy + ky − pt, S·ox + kx − pl]), taps
    /// outside the plane being 0: a K×K window at stride S, no dilation. Four output rows at a
    /// time for K = 3, else two (each input row loaded once for them), 16 outputs of each (eight
    /// accumulators for K = 3);
    /// stride 2 takes each tap pair's even and odd columns from two loads by an in-lane shuffle,
    /// which leaves the outputs in the order 0 1 4 5 2 3 6 7, put right by one permute per vector
    /// before the store. Blocks whose columns are all inside the plane load directly; the others
    /// (the first and last of a row) with masked loads that read columns outside the plane as 0.
    /// Padding rows read `zeros`. The clamp is applied in registers.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `p.x` holds h·w floats, `p.wts` K·K ≤ 49, `p.zeros` ≥ w; `y`
    /// holds oh·ow floats; oh, ow ≥ 1.
    #[target_feature(enable = $features)]
    pub(super) unsafe fn dw_plane<const K: usize, const S: usize>(p: &DwPlane, oh: usize, ow: usize, y: &mut [f32]) {
        debug_assert!(p.x.len() >= p.h * p.w && p.wts.len() >= K * K && p.zeros.len() >= p.w);
        debug_assert!(y.len() >= oh * ow && K * K <= 49);
        // A fixed array, so that the unrolled taps index it without bounds checks.
        let mut wts = [0.0f32; 49];
        wts[..K * K].copy_from_slice(&p.wts[..K * K]);
        let mut oy = 0;
        while oy < oh {
            // SAFETY: the caller's contract; rows oy (and oy + 1) < oh.
            unsafe {
                if K == 3 && oy + 4 <= oh {
                    dw_band::<K, S, 4>(p, &wts, oy, oh, ow, y);
                    oy += 4;
                } else if oy + 2 <= oh {
                    dw_band::<K, S, 2>(p, &wts, oy, oh, ow, y);
                    oy += 2;
                } else {
                    dw_band::<K, S, 1>(p, &wts, oy, oh, ow, y);
                    oy += 1;
                }
            }
        }
    }

    /// Output rows [oy, oy + R) of [`dw_plane`].
    ///
    /// # Safety
    /// As [`dw_plane`], with oy + R ≤ oh.
    #[target_feature(enable = $features)]
    #[inline]
    unsafe fn dw_band<const K: usize, const S: usize, const R: usize>(
        p: &DwPlane,
        wts: &[f32; 49],
        oy: usize,
        oh: usize,
        ow: usize,
        y: &mut [f32],
    ) {
        let nr = S * (R - 1) + K;
        // Row j of the band is input row S·oy + j − pt, or the zero row.
        let mut rows = [p.zeros.as_ptr(); DW_ROWS];
        for (j, r) in rows.iter_mut().enumerate().take(nr) {
            let iy = (S * oy + j).wrapping_sub(p.pad[0]);
            if iy < p.h {
                *r = p.x[iy * p.w..].as_ptr();
            }
        }
        let mut yr = [y.as_mut_ptr(); 4];
        for (r, yp) in yr.iter_mut().enumerate().take(R) {
            *yp = y[(oy + r) * ow..].as_mut_ptr();
        }
        // Rows of one block (ow ≤ 16, mobilenet's 14², 7² planes): floats of the plane after each
        // row's end, all written later (see dw_block), so that a vector past the row's end
        // stores whole. Longer rows store their last vector masked: running their last block
        // first instead (so that the next row's first block overwrote its extra lanes) was
        // slower (3×3 64@56² 0.066 → 0.080 ms).
        let mut room = [0; 4];
        if ow <= 2 * V {
            for (r, room) in room.iter_mut().enumerate().take(R) {
                *room = (oh - 1 - (oy + r)) * ow;
            }
        }
        // Blocks of 16 outputs; a block reading columns [c0, c0 + S·16 + K − 1) inside the plane
        // loads directly.
        let interior = |ox0: usize, b: usize| {
            let c0 = (S * ox0) as isize - p.pad[1] as isize;
            c0 >= 0 && c0 as usize + S * V * b + K - 1 <= p.w
        };
        let mut ox0 = 0;
        // SAFETY (all blocks): the caller's contract; outputs [ox0, ow) of rows oy .. oy + R.
        unsafe {
            if ow <= 2 * V {
                // One block per row, its tail vector stored whole where `room` allows (a
                // separate instance: the test in the wider rows' blocks cost them 5%).
                match (ow.div_ceil(V), interior(0, ow.div_ceil(V))) {
                    (2, false) => dw_block::<K, S, R, 2, true, true>(p, wts, &rows, yr, room, 0, ow),
                    (2, true) => dw_block::<K, S, R, 2, false, true>(p, wts, &rows, yr, room, 0, ow),
                    (_, false) => dw_block::<K, S, R, 1, true, true>(p, wts, &rows, yr, room, 0, ow),
                    (_, true) => dw_block::<K, S, R, 1, false, true>(p, wts, &rows, yr, room, 0, ow),
                }
                return;
            }
            while ox0 < ow {
                // Stride 1: a last block with a partial vector is run as the 16 outputs ending at
                // the row's end instead (the outputs it shares with the previous block computed again, the
                // same way): whole stores, no masked one (3×3 192@28² 0.085 → 0.073 ms; at
                // stride 2, 144@56² → 28², it measured slower, 0.112 → 0.119–0.130).
                if S == 1 && !(ow - ox0).is_multiple_of(V) {
                    ox0 = ox0.min(ow - 2 * V);
                }
                let b = (ow - ox0).div_ceil(V).min(2);
                if b == 2 && interior(ox0, 2) {
                    dw_block::<K, S, R, 2, false, false>(p, wts, &rows, yr, room, ox0, ow);
                } else if b == 2 {
                    dw_block::<K, S, R, 2, true, false>(p, wts, &rows, yr, room, ox0, ow);
                } else {
                    dw_block::<K, S, R, 1, true, false>(p, wts, &rows, yr, room, ox0, ow);
                }
                ox0 += b * V;
            }
        }
    }

    /// Outputs [ox0, min(ox0 + 8·B, ow)) of the R rows `yr` of a band whose input rows start at
    /// `rows`. EDGE: loads masked to the plane's columns [0, w) (columns outside read 0).
    ///
    /// # Safety
    /// As [`dw_plane`]; `yr[r]` writable for ow floats (r < R) and `room[r]` more, which are
    /// stored again after this block (WHOLE: a vector past the row's end is stored whole when its
    /// extra lanes fit there, else masked; only a row's last block may be WHOLE); every row of `rows` readable for w floats; without EDGE,
    /// columns [S·ox0 − pl, + S·8·B + K − 1) inside [0, w).
    #[target_feature(enable = $features)]
    #[inline]
    unsafe fn dw_block<
        const K: usize,
        const S: usize,
        const R: usize,
        const B: usize,
        const EDGE: bool,
        const WHOLE: bool,
    >(
        p: &DwPlane,
        wts: &[f32; 49],
        rows: &[*const f32; DW_ROWS],
        yr: [*mut f32; 4],
        room: [usize; 4],
        ox0: usize,
        ow: usize,
    ) {
        let nr = S * (R - 1) + K;
        let c0 = (S * ox0) as isize - p.pad[1] as isize;
        let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // The loads' column offsets from c0: tap kx of vector i at kx + 8i (stride 1), or the
        // pair from kx (even kx) at kx + 16i and kx + 16i + 8 (stride 2). On an edge block each
        // has its mask of the lanes inside [0, w), computed once for all rows.
        let mut masks = [[_mm256_setzero_si256(); 8]; 7];
        if EDGE {
            let (base, wv) = (_mm256_add_epi32(_mm256_set1_epi32(c0 as i32), iota), _mm256_set1_epi32(p.w as i32));
            for (kx, m) in masks.iter_mut().enumerate().take(K) {
                for (q, m) in m.iter_mut().enumerate().take(S * B) {
                    let idx = _mm256_add_epi32(base, _mm256_set1_epi32((kx + q * V) as i32));
                    *m = _mm256_andnot_si256(
                        _mm256_cmpgt_epi32(_mm256_setzero_si256(), idx),
                        _mm256_cmpgt_epi32(wv, idx),
                    );
                }
            }
        }
        let mut acc = [[_mm256_set1_ps(p.bias); B]; R];
        dw_rows!(nr, rows, c0, wts, masks, acc; K, S, R, B, EDGE; 0 1 2 3 4 5 6 7 8);
        if let Some(act) = p.act {
            // Before the clamp, which is ±∞ (no-op) when there is an activation (with_act).
            // Through a copy: `acc` itself stays in registers when there is no activation.
            let mut t = acc;
            // SAFETY: the caller's contract (this instance's target features).
            unsafe { dw_act_all(act, t.as_flattened_mut()) };
            acc = t;
        }
        let (lo, hi) = (_mm256_set1_ps(p.lo), _mm256_set1_ps(p.hi));
        let n = (ow - ox0).min(B * V);
        for (r, (acc, &yp)) in acc.iter().zip(&yr).enumerate() {
            for (i, &a) in acc.iter().enumerate() {
                // max(lo, a) and min(hi, ·) return their second operand when either is NaN.
                let mut t = _mm256_min_ps(hi, _mm256_max_ps(lo, a));
                if S == 2 {
                    t = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(t)));
                }
                let at = i * V;
                if at + V <= n {
                    // SAFETY: outputs ox0 + at .. + 8 ≤ ow of this row.
                    unsafe { _mm256_storeu_ps(yp.add(ox0 + at), t) };
                } else if WHOLE && at < n && at + V - n <= room[r] {
                    // SAFETY: the lanes past the row's end are inside the plane, on rows whose
                    // stores come after this one (rows of one block: dw_band).
                    unsafe { _mm256_storeu_ps(yp.add(ox0 + at), t) };
                } else if at < n {
                    // A masked store (slow on Zen: the whole-vector store above where it can).
                    let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((n - at) as i32), iota);
                    // SAFETY: the mask writes only outputs ox0 + at .. ox0 + n ≤ ow.
                    unsafe { _mm256_maskstore_ps(yp.add(ox0 + at), keep, t) };
                }
            }
        }
    }

    /// Row J of a band into the accumulators of [`dw_block`]: `x` points at the row's column c0
    /// (its taps' loads at the offsets `masks` documents; EDGE: masked by them).
    ///
    /// # Safety
    /// As [`dw_block`].
    #[target_feature(enable = $features)]
    #[inline]
    unsafe fn dw_row<
        const K: usize,
        const S: usize,
        const R: usize,
        const B: usize,
        const EDGE: bool,
        const J: usize,
    >(
        x: *const f32,
        wts: &[f32; 49],
        masks: &[[__m256i; 8]; 7],
        acc: &mut [[__m256; B]; R],
    ) {
        let load = |kx: usize, q: usize| {
            let d = kx + q * V;
            if EDGE {
                // SAFETY: lanes outside the row's [0, w) are masked and never accessed; the address
                // is formed with wrapping arithmetic.
                unsafe { _mm256_maskload_ps(x.wrapping_add(d), masks[kx][q]) }
            } else {
                // SAFETY: columns c0 + d .. + 8 are inside the row (dw_block's contract).
                unsafe { _mm256_loadu_ps(x.add(d)) }
            }
        };
        if S == 1 {
            for kx in 0..K {
                let mut v = [_mm256_setzero_ps(); B];
                for (i, v) in v.iter_mut().enumerate() {
                    *v = load(kx, i);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    if J >= S * r && J - S * r < K {
                        let w = _mm256_set1_ps(wts[(J - S * r) * K + kx]);
                        for (a, &v) in acc.iter_mut().zip(&v) {
                            *a = _mm256_fmadd_ps(v, w, *a);
                        }
                    }
                }
            }
        } else {
            for kx in (0..K).step_by(2) {
                // Columns c0 + kx + 2·o (even) and + 1 (odd) of outputs o, in the order
                // 0 1 4 5 2 3 6 7.
                let (mut e, mut o) = ([_mm256_setzero_ps(); B], [_mm256_setzero_ps(); B]);
                for i in 0..B {
                    let (u, v) = (load(kx, 2 * i), load(kx, 2 * i + 1));
                    e[i] = _mm256_shuffle_ps::<0b10_00_10_00>(u, v);
                    o[i] = _mm256_shuffle_ps::<0b11_01_11_01>(u, v);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    if J >= S * r && J - S * r < K {
                        let t = (J - S * r) * K + kx;
                        let we = _mm256_set1_ps(wts[t]);
                        for (a, &v) in acc.iter_mut().zip(&e) {
                            *a = _mm256_fmadd_ps(v, we, *a);
                        }
                        if kx + 1 < K {
                            let wo = _mm256_set1_ps(wts[t + 1]);
                            for (a, &v) in acc.iter_mut().zip(&o) {
                                *a = _mm256_fmadd_ps(v, wo, *a);
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`dw_act`] of every vector of `v`, the activation chosen once (a kernel's accumulators:
    /// their chains are independent, and run side by side). Out of line: inlined into every
    /// instance of the kernels (the SiLU of 8, 4 and 1 vectors in each) it made them so large
    /// that the Relu/Clip planes, which never call it, ran 45% slower (3×3 144@56², AVX2).
    ///
    /// # Safety
    /// The CPU has this instance's target features.
    #[target_feature(enable = $features)]
    #[inline(never)]
    pub(super) unsafe fn dw_act_all(act: DwAct, v: &mut [__m256]) {
        match act {
            // Loops, not closures: a closure is compiled without this function's target features.
            DwAct::Silu => {
                let mut eights = v.chunks_exact_mut(8);
                for c in &mut eights {
                    if let Ok(c) = <&mut [__m256; 8]>::try_from(c) {
                        super::avx2::silu_n(c);
                    }
                }
                let mut fours = eights.into_remainder().chunks_exact_mut(4);
                for c in &mut fours {
                    if let Ok(c) = <&mut [__m256; 4]>::try_from(c) {
                        super::avx2::silu_n(c);
                    }
                }
                for a in fours.into_remainder() {
                    *a = super::avx2::silu(*a);
                }
            }
            DwAct::HardSwish => {
                for a in v.iter_mut() {
                    *a = super::avx2::hard_swish(*a);
                }
            }
        }
    }

    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{DwAct, Reduce, Taps, V};
    use std::arch::x86_64::*;

    /// Stores the 8 outputs `t` at `ox` of an output row, times `scale[ox..][..8]` (an average
    /// pool's 1/count table) when given.
    ///
    /// # Safety
    /// `yr[ox..ox + 8]` and, if given, `scale[ox..ox + 8]` are in bounds.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_scaled(yr: &mut [f32], ox: usize, scale: Option<&[f32]>, mut t: __m256) {
        // SAFETY: the caller's contract.
        unsafe {
            if let Some(s) = scale {
                t = _mm256_mul_ps(t, _mm256_loadu_ps(s.as_ptr().add(ox)));
            }
            _mm256_storeu_ps(yr.as_mut_ptr().add(ox), t);
        }
    }

    /// The even and the odd columns of the 16 in `u`, `v`, in order: [u0 u2 v0 v2 | u4 u6 v4 v6]
    /// → 64-bit lanes 0, 2, 1, 3.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn split_even_odd(u: __m256, v: __m256) -> (__m256, __m256) {
        let e = _mm256_shuffle_ps::<0b10_00_10_00>(u, v);
        let o = _mm256_shuffle_ps::<0b11_01_11_01>(u, v);
        (
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e))),
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o))),
        )
    }

    /// One tap into a scalar max (NaN is noted by the callers) or sum.
    #[inline]
    fn combine<const MAX: bool>(t: f32, v: f32) -> f32 {
        if !MAX {
            t + v
        } else if v > t {
            v
        } else {
            t
        }
    }

    /// Whether `x` holds a NaN: 32 floats a step, compared unordered with themselves.
    ///
    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn has_nan(x: &[f32]) -> bool {
        let mut chunks = x.chunks_exact(4 * V);
        let mut m = _mm256_setzero_ps();
        for c in chunks.by_ref() {
            // SAFETY: c holds 32 floats.
            unsafe {
                let p = c.as_ptr();
                let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(V)));
                let (d, e) = (_mm256_loadu_ps(p.add(2 * V)), _mm256_loadu_ps(p.add(3 * V)));
                // unord(a, b) is true where either is NaN.
                m = _mm256_or_ps(m, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
                m = _mm256_or_ps(m, _mm256_cmp_ps::<_CMP_UNORD_Q>(d, e));
            }
        }
        _mm256_movemask_ps(m) != 0 || chunks.remainder().iter().any(|v| v.is_nan())
    }

    /// 2×2 windows at stride 2 with no padding, all inside the plane: `y[oy·ow + ox]` = max or
    /// sum (then times `scale[oy·ow + ox]`) of x rows 2oy, 2oy + 1, columns 2ox, 2ox + 1. The
    /// vertical pair is combined first (contiguous), then the horizontal pairs by a deinterleave.
    /// Returns false, with `y` partly written, if a max window held a NaN (max drops it).
    ///
    /// # Safety
    /// AVX2 is available; `x` holds [h, w] with 2·oh ≤ h and 2·ow ≤ w; `y` holds oh·ow floats;
    /// `scale` (if any) holds oh·ow.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pool2x2s2(
        max: bool,
        x: &[f32],
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            if max { pool2x2s2_of::<true>(x, w, ow, scale, y) } else { pool2x2s2_of::<false>(x, w, ow, scale, y) }
        }
    }

    /// [`pool2x2s2`] with `max` a constant, so that its tests leave the inner loops.
    ///
    /// # Safety
    /// As [`pool2x2s2`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pool2x2s2_of<const MAX: bool>(
        x: &[f32],
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        let max = MAX;
        let mut nan = _mm256_setzero_ps();
        let mut nan_tail = false;
        for (oy, yr) in y.chunks_exact_mut(ow).enumerate() {
            let (r0, r1) = (&x[2 * oy * w..][..2 * ow], &x[(2 * oy + 1) * w..][..2 * ow]);
            let sr = scale.map(|s| &s[oy * ow..][..ow]);
            let mut ox = 0;
            while ox + V <= ow {
                // SAFETY: columns 2ox .. 2ox + 16 ≤ 2·ow of both rows, outputs ox .. ox + 8 ≤ ow.
                unsafe {
                    let (p0, p1) = (r0.as_ptr().add(2 * ox), r1.as_ptr().add(2 * ox));
                    let (a, b) = (_mm256_loadu_ps(p0), _mm256_loadu_ps(p0.add(V)));
                    let (c, d) = (_mm256_loadu_ps(p1), _mm256_loadu_ps(p1.add(V)));
                    let (u, v) = if max {
                        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, c));
                        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(b, d));
                        (_mm256_max_ps(a, c), _mm256_max_ps(b, d))
                    } else {
                        (_mm256_add_ps(a, c), _mm256_add_ps(b, d))
                    };
                    let (e, o) = split_even_odd(u, v);
                    let r = if max { _mm256_max_ps(e, o) } else { _mm256_add_ps(e, o) };
                    store_scaled(yr, ox, sr, r);
                }
                ox += V;
            }
            for ox in ox..ow {
                let t = [r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]];
                yr[ox] = if max {
                    nan_tail |= t.iter().any(|v| v.is_nan());
                    t.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
                } else {
                    ((t[0] + t[2]) + (t[1] + t[3])) * sr.map_or(1.0, |s| s[ox])
                };
            }
        }
        !(nan_tail || _mm256_movemask_ps(nan) != 0)
    }

    /// `dst = src`, returning whether `src` holds a NaN.
    ///
    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn copy_check(src: &[f32], dst: &mut [f32]) -> bool {
        let n = src.len().min(dst.len());
        let mut m = _mm256_setzero_ps();
        let mut i = 0;
        while i + 2 * V <= n {
            // SAFETY: src and dst hold [i, i + 16).
            unsafe {
                let a = _mm256_loadu_ps(src.as_ptr().add(i));
                let b = _mm256_loadu_ps(src.as_ptr().add(i + V));
                m = _mm256_or_ps(m, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), a);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i + V), b);
            }
            i += 2 * V;
        }
        let mut nan = false;
        for (d, &v) in dst[i..n].iter_mut().zip(&src[i..n]) {
            nan |= v.is_nan();
            *d = v;
        }
        nan || _mm256_movemask_ps(m) != 0
    }

    /// 3×3 windows at stride 2, padding 1 at the top and left: `y[oy·ow + ox]` = max or sum (then
    /// times `scale[oy·ow + ox]`) of x rows 2oy − 1 ..= 2oy + 1 and columns 2ox − 1 ..= 2ox + 1
    /// that are inside the plane (a padding tap is max's and the sum's identity, so it is skipped).
    /// Per 8 outputs: the rows' 16 columns from 2ox are combined vertically, deinterleaved into
    /// the even (2ox) and odd (2ox + 1) columns, and the odd ones shifted by one lane (the previous
    /// block's last odd column coming in) give 2ox − 1. Returns false, with `y` partly written,
    /// if a max window held a NaN.
    ///
    /// # Safety
    /// AVX2 is available; `x` holds [h, w] with 2·oh ≤ h + 1 and 2·ow ≤ w where oh = y.len() / ow;
    /// `scale` (if any) holds y.len() + 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pool3x3s2p1(
        max: bool,
        x: &[f32],
        h: usize,
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            if max {
                pool3x3s2p1_of::<true>(x, h, w, ow, scale, y)
            } else {
                pool3x3s2p1_of::<false>(x, h, w, ow, scale, y)
            }
        }
    }

    /// [`pool3x3s2p1`] with `max` a constant, so that its tests leave the inner loops.
    ///
    /// # Safety
    /// As [`pool3x3s2p1`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pool3x3s2p1_of<const MAX: bool>(
        x: &[f32],
        h: usize,
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        let max = MAX;
        let ident = if max { f32::NEG_INFINITY } else { 0.0 };
        let op = |a, b| if max { _mm256_max_ps(a, b) } else { _mm256_add_ps(a, b) };
        let rot = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
        let mut nan = _mm256_setzero_ps();
        let mut nan_tail = false;
        // The 16 columns from p of `n` rows (w apart) combined vertically, noting NaN.
        let vert = |p: *const f32, n: usize, nan: &mut __m256| {
            // SAFETY: the callers pass p at a row and column whose n rows and 16 columns are
            // inside the plane.
            unsafe {
                let (mut u, mut v) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(V)));
                if max {
                    *nan = _mm256_or_ps(*nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(u, v));
                }
                for r in 1..n {
                    let (a, b) = (_mm256_loadu_ps(p.add(r * w)), _mm256_loadu_ps(p.add(r * w + V)));
                    if max {
                        *nan = _mm256_or_ps(*nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
                    }
                    u = op(u, a);
                    v = op(v, b);
                }
                (u, v)
            }
        };
        for (oy, yr) in y.chunks_exact_mut(ow).enumerate() {
            let rows = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h);
            let sr = scale.map(|s| &s[oy * ow..]);
            let row0 = x[rows.start * w..].as_ptr();
            let store = |yr: &mut [f32], ox: usize, t: __m256| {
                // SAFETY: outputs ox .. ox + 8 ≤ ow; scale[oy·ow + ox ..][..8] inside the table.
                unsafe { store_scaled(yr, ox, sr, t) }
            };
            let mut prev = _mm256_set1_ps(ident);
            let mut ox = 0;
            while ox + V <= ow {
                // Rows inside the plane; columns 2ox .. 2ox + 16 ≤ 2·ow ≤ w.
                let (u, v) = vert(row0.wrapping_add(2 * ox), rows.len(), &mut nan);
                let (e, o) = split_even_odd(u, v);
                // Column 2ox − 1 of output ox: the odd column of output ox − 1.
                let left = _mm256_blend_ps::<1>(_mm256_permutevar8x32_ps(o, rot), _mm256_permutevar8x32_ps(prev, rot));
                prev = o;
                store(yr, ox, op(op(left, e), o));
                ox += V;
            }
            if ox < ow && ow > V {
                // The last 8 outputs again (the same values where they overlap), their left
                // columns 2ox − 1 ≥ 1 read directly: the even columns of the 16 from there.
                let ox = ow - V;
                let (u, v) = vert(row0.wrapping_add(2 * ox), rows.len(), &mut nan);
                let (e, o) = split_even_odd(u, v);
                let (ul, vl) = vert(row0.wrapping_add(2 * ox - 1), rows.len(), &mut nan);
                let (left, _) = split_even_odd(ul, vl);
                store(yr, ox, op(op(left, e), o));
                continue;
            }
            for ox in ox..ow {
                let mut t = ident;
                for r in rows.clone() {
                    for c in (2 * ox).saturating_sub(1)..2 * ox + 2 {
                        let v = x[r * w + c];
                        nan_tail |= v.is_nan();
                        t = combine::<MAX>(t, v);
                    }
                }
                yr[ox] = if max { t } else { t * sr.map_or(1.0, |s| s[ox]) };
            }
        }
        !(max && (nan_tail || _mm256_movemask_ps(nan) != 0))
    }

    /// 3×3 windows at stride 2 with no padding (AlexNet's, SqueezeNet's and GoogLeNet's max pools,
    /// ceil mode included): `y[oy·ow + ox]` = max or sum (then times `scale[oy·ow + ox]`) of x
    /// rows 2oy ..= 2oy + 2 and columns 2ox ..= 2ox + 2 that are inside the plane (ceil mode's
    /// last windows run past it). Per 8 outputs whose windows are whole in the columns: the rows'
    /// 16 columns from 2ox and the 16 from 2ox + 1 are combined vertically, then deinterleaved
    /// into columns 2ox, 2ox + 1 and 2ox + 2 (for max, the two are combined first and one
    /// deinterleave does). Returns false, with `y` partly written, if a max window held a NaN.
    ///
    /// # Safety
    /// AVX2 is available; `x` holds [h, w] with 2·(oh − 1) < h and 2·(ow − 1) < w where
    /// oh = y.len() / ow; `scale` (if any) holds y.len() + 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pool3x3s2p0(
        max: bool,
        x: &[f32],
        h: usize,
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            if max {
                pool3x3s2p0_of::<true>(x, h, w, ow, scale, y)
            } else {
                pool3x3s2p0_of::<false>(x, h, w, ow, scale, y)
            }
        }
    }

    /// [`pool3x3s2p0`] with `max` a constant, so that its tests leave the inner loops.
    ///
    /// # Safety
    /// As [`pool3x3s2p0`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pool3x3s2p0_of<const MAX: bool>(
        x: &[f32],
        h: usize,
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        let max = MAX;
        let ident = if max { f32::NEG_INFINITY } else { 0.0 };
        let op = |a, b| if max { _mm256_max_ps(a, b) } else { _mm256_add_ps(a, b) };
        let mut nan = _mm256_setzero_ps();
        let mut nan_tail = false;
        // Outputs whose three columns 2ox ..= 2ox + 2 are all inside the plane.
        let whole = w.div_ceil(2).saturating_sub(1).min(ow);
        for (oy, yr) in y.chunks_exact_mut(ow).enumerate() {
            let rows = 2 * oy..(2 * oy + 3).min(h);
            let sr = scale.map(|s| &s[oy * ow..]);
            let row0 = &x[rows.start * w..];
            // The 16 columns from p of the rows combined vertically, noting NaN.
            let mut vert = |p: *const f32| {
                // SAFETY: the callers pass p at a column whose 16 columns are inside the rows.
                unsafe {
                    let (mut u, mut v) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(V)));
                    if max {
                        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(u, v));
                    }
                    for r in 1..rows.len() {
                        let (a, b) = (_mm256_loadu_ps(p.add(r * w)), _mm256_loadu_ps(p.add(r * w + V)));
                        if max {
                            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
                        }
                        u = op(u, a);
                        v = op(v, b);
                    }
                    (u, v)
                }
            };
            let mut block = |yr: &mut [f32], ox: usize| {
                // Columns 2ox ..= 2ox + 15 and 2ox + 1 ..= 2ox + 16, inside the rows: 2ox + 16 =
                // 2·(ox + 7) + 2 < w as ox + 8 ≤ whole.
                let p = row0.as_ptr().wrapping_add(2 * ox);
                let ((au, av), (bu, bv)) = (vert(p), vert(p.wrapping_add(1)));
                let t = if max {
                    // Lane j of max(a, b) is max(column 2ox + j, column 2ox + j + 1): output ox + i
                    // is the max of its lanes 2i and 2i + 1.
                    let (e, o) = split_even_odd(_mm256_max_ps(au, bu), _mm256_max_ps(av, bv));
                    _mm256_max_ps(e, o)
                } else {
                    // Columns 2ox + 2i, 2ox + 2i + 1 from a, 2ox + 2i + 2 (odd lanes) from b.
                    let ((e, o), (_, r)) = (split_even_odd(au, av), split_even_odd(bu, bv));
                    _mm256_add_ps(_mm256_add_ps(e, o), r)
                };
                // SAFETY: outputs ox .. ox + 8 ≤ whole ≤ ow; scale[oy·ow + ox ..][..8] inside the
                // table.
                unsafe { store_scaled(yr, ox, sr, t) }
            };
            let mut ox = 0;
            while ox + V <= whole {
                block(yr, ox);
                ox += V;
            }
            let tail = if ox < whole && whole >= V {
                // The last 8 whole windows again (the same values where they overlap).
                block(yr, whole - V);
                whole..ow
            } else {
                ox..ow
            };
            for ox in tail {
                // Windows that run past the right edge (ceil mode) clipped to it.
                let mut t = ident;
                for r in rows.clone() {
                    for c in 2 * ox..(2 * ox + 3).min(w) {
                        let v = x[r * w + c];
                        nan_tail |= v.is_nan();
                        t = combine::<MAX>(t, v);
                    }
                }
                yr[ox] = if max { t } else { t * sr.map_or(1.0, |s| s[ox]) };
            }
        }
        !(max && (nan_tail || _mm256_movemask_ps(nan) != 0))
    }

    /// 3×3 windows at stride 1, padding 1 at the top and left: `y[oy·ow + ox]` = max or sum (then
    /// times `scale[oy·ow + ox]`) of x rows oy − 1 ..= oy + 1 and columns ox − 1 ..= ox + 1 inside
    /// the plane (padding taps skipped, as in [`pool3x3s2p1`]). Per 8 outputs the rows' 8 columns
    /// from ox are combined vertically, and that vector rotated by a lane each way, with the
    /// neighbouring columns coming in (the previous block's last lane, and column ox + 8
    /// combined vertically as a scalar), gives the left and right taps. Returns false, with `y`
    /// partly written, if a max window held a NaN.
    ///
    /// # Safety
    /// AVX2 is available; `x` holds [h, w] with oh ≤ h and ow ≤ w where oh = y.len() / ow;
    /// `scale` (if any) holds y.len() + 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn pool3x3s1p1(
        max: bool,
        x: &[f32],
        h: usize,
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            if max {
                pool3x3s1p1_of::<true>(x, h, w, ow, scale, y)
            } else {
                pool3x3s1p1_of::<false>(x, h, w, ow, scale, y)
            }
        }
    }

    /// [`pool3x3s1p1`] with `max` a constant, so that its tests leave the inner loops.
    ///
    /// # Safety
    /// As [`pool3x3s1p1`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pool3x3s1p1_of<const MAX: bool>(
        x: &[f32],
        h: usize,
        w: usize,
        ow: usize,
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        let max = MAX;
        let ident = if max { f32::NEG_INFINITY } else { 0.0 };
        let op = |a, b| if max { _mm256_max_ps(a, b) } else { _mm256_add_ps(a, b) };
        let (rotr, rotl) = (_mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6), _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0));
        let mut nan = _mm256_setzero_ps();
        let mut nan_tail = false;
        for (oy, yr) in y.chunks_exact_mut(ow).enumerate() {
            let rows = oy.saturating_sub(1)..(oy + 2).min(h);
            let sr = scale.map(|s| &s[oy * ow..]);
            let row0 = &x[rows.start * w..];
            // Column c (inside the plane) combined over the rows, in the vector order.
            let mut col = |c: usize| {
                let mut t = row0[c];
                nan_tail |= t.is_nan();
                for r in 1..rows.len() {
                    let v = row0[r * w + c];
                    nan_tail |= v.is_nan();
                    t = combine::<MAX>(t, v);
                }
                t
            };
            let mut vert = |ox: usize| {
                // SAFETY: the rows are inside the plane and columns ox .. ox + 8 ≤ ow ≤ w.
                unsafe {
                    let p = row0.as_ptr().add(ox);
                    let mut u = _mm256_loadu_ps(p);
                    if max {
                        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(u, u));
                    }
                    for r in 1..rows.len() {
                        let a = _mm256_loadu_ps(p.add(r * w));
                        if max {
                            nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a));
                        }
                        u = op(u, a);
                    }
                    u
                }
            };
            let store = |yr: &mut [f32], ox: usize, t: __m256| {
                // SAFETY: outputs ox .. ox + 8 ≤ ow; scale[oy·ow + ox ..][..8] inside the table.
                unsafe { store_scaled(yr, ox, sr, t) }
            };
            let mut prev = _mm256_set1_ps(ident);
            let mut cur = (ow >= V).then(|| vert(0));
            let mut ox = 0;
            while let Some(c) = cur {
                // The next block's vertical combination, when there is one, gives the right
                // column of this block's last output; else that column is combined as a scalar.
                let next = (ox + 2 * V <= ow).then(|| vert(ox + V));
                let right_in = match next {
                    Some(n) => _mm256_permutevar8x32_ps(n, rotl),
                    None => _mm256_set1_ps(if ox + V < w { col(ox + V) } else { ident }),
                };
                let left =
                    _mm256_blend_ps::<1>(_mm256_permutevar8x32_ps(c, rotr), _mm256_permutevar8x32_ps(prev, rotr));
                let right = _mm256_blend_ps::<0x80>(_mm256_permutevar8x32_ps(c, rotl), right_in);
                store(yr, ox, op(op(left, c), right));
                (prev, cur) = (c, next);
                ox += V;
            }
            if ox < ow && ow > V {
                // The last 8 outputs again (the same values where they overlap).
                let ox = ow - V;
                let cur = vert(ox);
                let (lc, next) = (col(ox - 1), if ox + V < w { col(ox + V) } else { ident });
                let left = _mm256_blend_ps::<1>(_mm256_permutevar8x32_ps(cur, rotr), _mm256_set1_ps(lc));
                let right = _mm256_blend_ps::<0x80>(_mm256_permutevar8x32_ps(cur, rotl), _mm256_set1_ps(next));
                store(yr, ox, op(op(left, cur), right));
                continue;
            }
            for ox in ox..ow {
                let l = if ox > 0 { col(ox - 1) } else { ident };
                let r = if ox + 1 < w { col(ox + 1) } else { ident };
                let t = combine::<MAX>(combine::<MAX>(l, col(ox)), r);
                yr[ox] = if max { t } else { t * sr.map_or(1.0, |s| s[ox]) };
            }
        }
        !(max && (nan_tail || _mm256_movemask_ps(nan) != 0))
    }

    /// `ev[i] = src[2i]` and `od[i] = src[2i + 1]` while both exist; returns whether a value
    /// copied is NaN.
    ///
    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn deinterleave(src: &[f32], ev: &mut [f32], od: &mut [f32]) -> bool {
        // Pairs (src[2i], src[2i + 1]) both copied, 8 at a time; a last partial 8 is redone as
        // the 8 pairs ending at `pairs` (rewriting equal values), when there are 8.
        let pairs = (src.len() / 2).min(ev.len()).min(od.len());
        let mut m = _mm256_setzero_ps();
        let mut i = 0;
        while i < pairs && pairs >= V {
            let j = i.min(pairs - V);
            // SAFETY: j + 8 ≤ pairs, so src[2j .. 2j + 16], ev[j .. j + 8] and od[j .. j + 8] are
            // in bounds.
            unsafe {
                let a = _mm256_loadu_ps(src.as_ptr().add(2 * j));
                let b = _mm256_loadu_ps(src.as_ptr().add(2 * j + V));
                m = _mm256_or_ps(m, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, b));
                // [a0 a2 b0 b2 | a4 a6 b4 b6] → 64-bit lanes 0, 2, 1, 3: a0 a2 a4 a6 b0 b2 b4 b6.
                let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(e)));
                let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(o)));
                _mm256_storeu_ps(ev.as_mut_ptr().add(j), e);
                _mm256_storeu_ps(od.as_mut_ptr().add(j), o);
            }
            i = j + V;
        }
        let i = if pairs >= V { pairs } else { 0 };
        let mut nan = false;
        for (d, &v) in ev.iter_mut().skip(i).zip(src.iter().skip(2 * i).step_by(2)) {
            nan |= v.is_nan();
            *d = v;
        }
        for (d, &v) in od.iter_mut().skip(i).zip(src.iter().skip(2 * i + 1).step_by(2)) {
            nan |= v.is_nan();
            *d = v;
        }
        nan || _mm256_movemask_ps(m) != 0
    }

    /// One output row (`y1` None) or two (`y0` reading `s`, `y1` reading `s[step..]`), four
    /// vectors (32 outputs) of each at a time while they last: each tap's weight is broadcast
    /// once per block and the accumulators stay in registers over all taps.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `s[r·step + o + ox0 ..][..8]` is in bounds for every row r
    /// written, tap offset `o` and vector start `ox0 < y0.len()`; `wts.len() ≥ offs.len()` for
    /// `Dot`; `y1` (if any) as long as `y0`; `scale` (the scale of row 0, row 1's following it)
    /// readable at `r·ow + ox0 ..][..8]` likewise.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(
        t: Taps,
        s: &[f32],
        step: usize,
        reuse: Option<usize>,
        scale: Option<&[f32]>,
        y0: &mut [f32],
        mut y1: Option<&mut [f32]>,
    ) {
        let ow = y0.len();
        let sc = scale.map(|sc| {
            debug_assert!(sc.len() >= ow.div_ceil(V) * V + if y1.is_some() { ow } else { 0 });
            [sc.as_ptr(), sc.as_ptr().wrapping_add(ow)]
        });
        let mut ox0 = 0;
        // SAFETY (all blocks): as the function's contract.
        unsafe {
            macro_rules! blk {
                ($b:literal) => {
                    match y1.as_deref_mut() {
                        Some(y1) => block::<$b, 2>(t, s, step, reuse, sc, [y0.as_mut_ptr(), y1.as_mut_ptr()], ow, ox0),
                        None => block::<$b, 1>(t, s, step, None, sc, [y0.as_mut_ptr(), y0.as_mut_ptr()], ow, ox0),
                    }
                };
            }
            while ox0 + 4 * V <= ow {
                blk!(4);
                ox0 += 4 * V;
            }
            match (ow - ox0).div_ceil(V) {
                4 => blk!(4),
                3 => blk!(3),
                2 => blk!(2),
                1 => blk!(1),
                _ => {}
            }
        }
    }

    /// Outputs [ox0, min(ox0 + 8·B, ow)) of R rows (`y[r]`, `ow` floats each, reading
    /// `s[r·step..]`). `reuse` (two rows, `Dot`): the kernel width, when tap (ky + 1, kx) of the
    /// first row is tap (ky, kx) of the second (offset + step). `sc`: row r's outputs are
    /// multiplied by `sc[r][ox ..]` before they are stored.
    ///
    /// # Safety
    /// As [`rows`]; `y[r]` for r < R writable for `ow` floats; `sc[r][ox0 + 8i ..][..8]` readable
    /// for i < B.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const B: usize, const R: usize>(
        t: Taps,
        s: &[f32],
        step: usize,
        reuse: Option<usize>,
        sc: Option<[*const f32; 2]>,
        y: [*mut f32; 2],
        ow: usize,
        ox0: usize,
    ) {
        let Taps { red, offs, wts, init, .. } = t;
        let mut acc = [[_mm256_set1_ps(init); B]; R];
        let base = s.as_ptr().wrapping_add(ox0);
        // SAFETY: every load is s[r·step + o + ox0 + 8i ..][..8] with r < R, i < B, in bounds by
        // the contract.
        unsafe {
            match (red, reuse, &mut acc[..]) {
                (Reduce::Dot, Some(kw), [a0, a1]) if kw > 0 && offs.len() % kw == 0 => {
                    // Scratch row vr (of kh + 1) once: kernel row vr for the first output row,
                    // vr − 1 for the second; each output sums its taps in the same order as
                    // the one-row path.
                    let kh = offs.len() / kw;
                    let fma = |acc: &mut [__m256; B], v: &[__m256; B], w: f32| {
                        let w = _mm256_set1_ps(w);
                        for (a, &x) in acc.iter_mut().zip(v) {
                            *a = _mm256_fmadd_ps(x, w, *a);
                        }
                    };
                    let load = |o: usize| {
                        let p = base.add(o);
                        let mut v = [_mm256_setzero_ps(); B];
                        for (i, x) in v.iter_mut().enumerate() {
                            *x = _mm256_loadu_ps(p.add(i * V));
                        }
                        v
                    };
                    for (&o, &w) in offs[..kw].iter().zip(wts) {
                        fma(a0, &load(o), w);
                    }
                    for vr in 1..kh {
                        let (o_row, w0) = (&offs[vr * kw..][..kw], &wts[vr * kw..][..kw]);
                        for ((&o, &w0), &w1) in o_row.iter().zip(w0).zip(&wts[(vr - 1) * kw..][..kw]) {
                            let v = load(o);
                            fma(a0, &v, w0);
                            fma(a1, &v, w1);
                        }
                    }
                    for (&o, &w) in offs[(kh - 1) * kw..].iter().zip(&wts[(kh - 1) * kw..]) {
                        fma(a1, &load(o + step), w);
                    }
                }
                (Reduce::Dot, ..) => {
                    for (&o, &w) in offs.iter().zip(wts) {
                        let w = _mm256_set1_ps(w);
                        for (r, row) in acc.iter_mut().enumerate() {
                            let p = base.add(r * step + o);
                            for (i, a) in row.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(i * V)), w, *a);
                            }
                        }
                    }
                }
                (Reduce::Max, ..) => {
                    for &o in offs {
                        for (r, row) in acc.iter_mut().enumerate() {
                            let p = base.add(r * step + o);
                            for (i, a) in row.iter_mut().enumerate() {
                                *a = _mm256_max_ps(*a, _mm256_loadu_ps(p.add(i * V)));
                            }
                        }
                    }
                }
                (Reduce::Sum, ..) => {
                    for &o in offs {
                        for (r, row) in acc.iter_mut().enumerate() {
                            let p = base.add(r * step + o);
                            for (i, a) in row.iter_mut().enumerate() {
                                *a = _mm256_add_ps(*a, _mm256_loadu_ps(p.add(i * V)));
                            }
                        }
                    }
                }
            }
        }
        if let Some(sc) = sc {
            for (row, &sp) in acc.iter_mut().zip(&sc) {
                for (i, a) in row.iter_mut().enumerate() {
                    // SAFETY: sc[r][ox0 + 8i ..][..8] is readable (the contract).
                    *a = _mm256_mul_ps(*a, unsafe { _mm256_loadu_ps(sp.add(ox0 + i * V)) });
                }
            }
        }
        let n = (ow - ox0).min(B * V);
        for (row, &yp) in acc.iter().zip(&y) {
            if n == B * V {
                for (i, a) in row.iter().enumerate() {
                    // SAFETY: outputs ox0 + 8i .. + 8 ≤ ox0 + n ≤ ow.
                    unsafe { _mm256_storeu_ps(yp.add(ox0 + i * V), *a) };
                }
            } else {
                // Whole vectors stored, the last partial one masked (a memcpy call per row
                // was 9% of a 28-wide pool).
                for (i, a) in row.iter().enumerate() {
                    let lo = i * V;
                    if lo + V <= n {
                        // SAFETY: outputs ox0 + lo .. + 8 ≤ ox0 + n ≤ ow.
                        unsafe { _mm256_storeu_ps(yp.add(ox0 + lo), *a) };
                    } else if lo < n {
                        let keep = _mm256_cmpgt_epi32(
                            _mm256_set1_epi32((n - lo) as i32),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        );
                        // SAFETY: the mask writes only outputs ox0 + lo .. ox0 + n ≤ ow.
                        unsafe { _mm256_maskstore_ps(yp.add(ox0 + lo), keep, *a) };
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Activations applied by the depthwise kernels as they store

    /// `act` (if any) of eight outputs, in registers.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn dw_act(act: Option<DwAct>, x: __m256) -> __m256 {
        match act {
            None => x,
            Some(DwAct::Silu) => silu(x),
            Some(DwAct::HardSwish) => hard_swish(x),
        }
    }

    /// x·σ(x), σ from e = e^{−|x|} ∈ (0, 1] (no overflow): e/(1 + e) for x < 0, 1 − e/(1 + e)
    /// above. e = 2ⁿ·e^r with n = round(−|x|·log₂e) (a magic-constant add: the sum's low bits
    /// are n + 127, 2ⁿ's exponent field), r = −|x| − n·ln 2 (ln 2 in two parts, r exact to
    /// 2⁻³²), e^r ≈ 1 + r + r²·q(r), q a cubic fitted to minimise the relative error on
    /// |r| ≤ ln 2 / 2 (2·10⁻⁷ with f32 evaluation). Where −|x| < −87 (n would leave the normal
    /// range) e is 0: σ is 0 or 1, x·σ is x above, −0 below (the exact value is below 10⁻³⁶),
    /// NaN for −∞ (−∞·0, as the interpreter's x·σ(x)); NaN stays NaN. About 20 operations and
    /// one division per vector (an exp to r⁷ and a reciprocal with a Newton step measured 25%
    /// slower on Zen 4).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn silu(x: __m256) -> __m256 {
        let mut v = [x];
        silu_n(&mut v);
        v[0]
    }

    /// [`silu`] of N vectors in place, each step for all N before the next: the chains are
    /// independent, and the out-of-order core overlaps them only if they are near in the
    /// instruction stream (one vector after another left the scheduler holding a single chain's
    /// latency: 0.34 against 0.32 ns per float for 4 and 8 at a time, Zen 4).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    // Index loops: each step runs over all N arrays side by side, which is the point.
    #[allow(clippy::needless_range_loop)]
    pub(super) fn silu_n<const N: usize>(x: &mut [__m256; N]) {
        // 1.5·2²³ + 127: adding it rounds to an integer and leaves n + 127 in the low bits.
        const MAGIC: f32 = 12_583_039.0;
        let mut z = [_mm256_setzero_ps(); N];
        let (mut t, mut s, mut r, mut q) = (z, z, z, z);
        for i in 0..N {
            z[i] = _mm256_or_ps(x[i], _mm256_set1_ps(-0.0));
        }
        for i in 0..N {
            t[i] = _mm256_fmadd_ps(z[i], _mm256_set1_ps(std::f32::consts::LOG2_E), _mm256_set1_ps(MAGIC));
        }
        for i in 0..N {
            s[i] = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_castps_si256(t[i])));
        }
        for i in 0..N {
            // n
            t[i] = _mm256_sub_ps(t[i], _mm256_set1_ps(MAGIC));
        }
        // ln 2 = 0.693359375 (0.693_359_4 rounds to it exactly) − 2.12194440e-4.
        for i in 0..N {
            r[i] = _mm256_fmadd_ps(t[i], _mm256_set1_ps(-0.693_359_4), z[i]);
        }
        for i in 0..N {
            r[i] = _mm256_fmadd_ps(t[i], _mm256_set1_ps(2.121_944_4e-4), r[i]);
        }
        for i in 0..N {
            q[i] = _mm256_fmadd_ps(_mm256_set1_ps(0.008_333_715), r[i], _mm256_set1_ps(0.041_898_51));
        }
        for c in [0.166_668_88, 0.499_991_45, 1.0] {
            for i in 0..N {
                q[i] = _mm256_fmadd_ps(q[i], r[i], _mm256_set1_ps(c));
            }
        }
        for i in 0..N {
            // e = s·(1 + r + r²q) = s + (s·r)·(1 + r·q), kept where −|x| ≥ −87 (not NaN, −∞).
            let e = _mm256_fmadd_ps(_mm256_mul_ps(s[i], r[i]), q[i], s[i]);
            t[i] = _mm256_and_ps(e, _mm256_cmp_ps::<_CMP_GE_OQ>(z[i], _mm256_set1_ps(-87.0)));
        }
        for i in 0..N {
            q[i] = _mm256_div_ps(t[i], _mm256_add_ps(_mm256_set1_ps(1.0), t[i]));
        }
        for i in 0..N {
            // x's sign bit picks e/(1 + e) (x < 0 or −0), else 1 − e/(1 + e).
            let sig = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0), q[i]), q[i], x[i]);
            x[i] = _mm256_mul_ps(x[i], sig);
        }
    }

    /// x·clamp(x/6 + ½, 0, 1): NaN stays NaN (max and min return their second operand on NaN),
    /// −∞ gives −∞·0 = NaN, as the interpreter does.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn hard_swish(x: __m256) -> __m256 {
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.0 / 6.0), _mm256_set1_ps(0.5));
        let t = _mm256_min_ps(_mm256_set1_ps(1.0), _mm256_max_ps(_mm256_setzero_ps(), t));
        _mm256_mul_ps(x, t)
    }

    /// [`dw_act`] over a slice in place (the scratch path's planes); the tail through a vector of
    /// 8 so that every element gets the same arithmetic.
    ///
    /// # Safety
    /// AVX2 and FMA are available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dw_act_slice(act: DwAct, y: &mut [f32]) {
        let mut chunks = y.chunks_exact_mut(V);
        for c in &mut chunks {
            // SAFETY: c holds 8 floats.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), dw_act(Some(act), _mm256_loadu_ps(c.as_ptr()))) };
        }
        let tail = chunks.into_remainder();
        let mut t = [0.0f32; V];
        t[..tail.len()].copy_from_slice(tail);
        // SAFETY: t holds 8 floats.
        unsafe { _mm256_storeu_ps(t.as_mut_ptr(), dw_act(Some(act), _mm256_loadu_ps(t.as_ptr()))) };
        let n = tail.len();
        tail.copy_from_slice(&t[..n]);
    }

    // -----------------------------------------------------------------------------------------
    // Direct depthwise convolution

    /// Most input rows a band of output rows reads: S·(R − 1) + K with S ≤ 2 and R ≤ 4 for K = 3,
    /// R ≤ 2 for K ≤ 7.
    pub(super) const DW_ROWS: usize = 2 * 3 + 3;

    /// One plane of a depthwise conv for [`dw_plane`]: the input [h, w], the top/left padding, the
    /// k·k weights, the bias, the clamp [lo, hi] (±∞ for none) and `zeros`, w zeros that stand for
    /// padding rows.
    pub(super) struct DwPlane<'a> {
        pub x: &'a [f32],
        pub h: usize,
        pub w: usize,
        pub pad: [usize; 2],
        pub wts: &'a [f32],
        pub bias: f32,
        pub lo: f32,
        pub hi: f32,
        pub act: Option<DwAct>,
        pub zeros: &'a [f32],
    }

    dw_kernels!("avx2,fma");

    // The channel-block kernels: AVX2 only (an AVX-512VL build of the same code ran 960@7² +
    // ReLU6 in 0.034 ms against 0.022, session 12).
    /// Eight channels of a depthwise conv at once, interleaved (see `DepthwiseSpec::run_blocks`):
    /// `ys[p·8 + j]` = clamp(bias[j] + Σ_t wv[t·8 + j] · xs[base[p] + taps[t] + j]) for every
    /// output position p = oy·ow + ox, base[p] = (oy·s0·cols + ox·s1)·8, taps[t] = (ky·d0·cols +
    /// kx·d1)·8, the taps in row-major order after the bias, one FMA each — each lane as the
    /// per-plane kernels compute it. Positions in runs of at most eight, as even as they split (a
    /// 3×3 plane: 5 + 4), each run's positions independent FMA chains.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `xs` holds the padded block the window reads (every
    /// base[p] + taps[t] + 8 ≤ xs.len()), `wv` taps.len()·8 floats, `ys` base.len()·8.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn dw_blocks(
        base: &[usize],
        taps: &[usize],
        xs: &[f32],
        wv: &[f32],
        bias: &[f32; V],
        clamp: (f32, f32),
        act: Option<DwAct>,
        ys: &mut [f32],
    ) {
        // SAFETY: the caller's contract, passed on. Two instances, so that the one without an
        // activation has no trace of it (its branch slowed the clamp-only runs by 20%).
        unsafe {
            if act.is_some() {
                dw_blocks_impl::<true>(base, taps, xs, wv, bias, clamp, act, ys)
            } else {
                dw_blocks_impl::<false>(base, taps, xs, wv, bias, clamp, act, ys)
            }
        }
    }

    /// [`dw_blocks`]; `act` is applied only by the ACT instance.
    ///
    /// # Safety
    /// As [`dw_blocks`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dw_blocks_impl<const ACT: bool>(
        base: &[usize],
        taps: &[usize],
        xs: &[f32],
        wv: &[f32],
        bias: &[f32; V],
        clamp: (f32, f32),
        act: Option<DwAct>,
        ys: &mut [f32],
    ) {
        let op = base.len();
        debug_assert!(wv.len() >= taps.len() * V && ys.len() >= op * V);
        let runs = op.div_ceil(V);
        let mut p = 0;
        for r in 0..runs {
            // Runs r < op mod runs are one longer.
            let n = op / runs + usize::from(r < op % runs);
            // SAFETY: positions [p, p + n) < oh·ow; the caller's contract for the rest.
            unsafe {
                match n {
                    1 => dw_run::<1, ACT>(&base[p..p + 1], taps, xs, wv, bias, clamp, act, ys, p),
                    2 => dw_run::<2, ACT>(&base[p..p + 2], taps, xs, wv, bias, clamp, act, ys, p),
                    3 => dw_run::<3, ACT>(&base[p..p + 3], taps, xs, wv, bias, clamp, act, ys, p),
                    4 => dw_run::<4, ACT>(&base[p..p + 4], taps, xs, wv, bias, clamp, act, ys, p),
                    5 => dw_run::<5, ACT>(&base[p..p + 5], taps, xs, wv, bias, clamp, act, ys, p),
                    6 => dw_run::<6, ACT>(&base[p..p + 6], taps, xs, wv, bias, clamp, act, ys, p),
                    7 => dw_run::<7, ACT>(&base[p..p + 7], taps, xs, wv, bias, clamp, act, ys, p),
                    _ => dw_run::<8, ACT>(&base[p..p + 8], taps, xs, wv, bias, clamp, act, ys, p),
                }
            }
            p += n;
        }
    }

    /// Positions [p, p + N) of [`dw_blocks`].
    ///
    /// # Safety
    /// As [`dw_blocks`], with p + N ≤ oh·ow.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn dw_run<const N: usize, const ACT: bool>(
        at: &[usize],
        taps: &[usize],
        xs: &[f32],
        wv: &[f32],
        bias: &[f32; V],
        (lo, hi): (f32, f32),
        act: Option<DwAct>,
        ys: &mut [f32],
        p: usize,
    ) {
        let at: &[usize; N] = at.try_into().expect("a run of N positions");
        let (x, w) = (xs.as_ptr(), wv.as_ptr());
        // SAFETY: `bias` is 8 floats.
        let mut acc = [unsafe { _mm256_loadu_ps(bias.as_ptr()) }; N];
        for (t, &off) in taps.iter().enumerate() {
            // SAFETY: tap t's weights are 8 floats at t·8; every position's window lies in `xs`
            // (the caller's contract).
            unsafe {
                let wk = _mm256_loadu_ps(w.add(t * V));
                for (a, &o) in acc.iter_mut().zip(at) {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(o + off)), wk, *a);
                }
            }
        }
        if ACT && let Some(act) = act {
            // Before the clamp, which is ±∞ (no-op) when there is an activation (with_act).
            // Through a copy: `acc` itself stays in registers when there is no activation.
            let mut t = acc;
            // SAFETY: the caller's contract (this instance's target features).
            unsafe { dw_act_all(act, &mut t) };
            acc = t;
        }
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        for (i, &a) in acc.iter().enumerate() {
            // As the interpreter's Clip: below lo → lo, above hi → hi, NaN fails both.
            let a = _mm256_blendv_ps(a, lo, _mm256_cmp_ps::<_CMP_LT_OQ>(a, lo));
            let a = _mm256_blendv_ps(a, hi, _mm256_cmp_ps::<_CMP_GT_OQ>(a, hi));
            // SAFETY: position p + i < oh·ow; ys holds 8 floats per position.
            unsafe { _mm256_storeu_ps(ys.as_mut_ptr().add((p + i) * V), a) };
        }
    }

    // -----------------------------------------------------------------------------------------
    // Depthwise convolution over channel blocks

    /// Rows of an 8×8 block in, its columns out.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let (t0, t1) = (_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]));
        let (t2, t3) = (_mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3]));
        let (t4, t5) = (_mm256_unpacklo_ps(r[4], r[5]), _mm256_unpackhi_ps(r[4], r[5]));
        let (t6, t7) = (_mm256_unpacklo_ps(r[6], r[7]), _mm256_unpackhi_ps(r[6], r[7]));
        // Columns c (low half) and c + 4 (high half) of rows 0–3, then of rows 4–7.
        let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
        let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
        let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
        let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// Interleaves `nb` ≤ 8 rows of `len` floats (row j at `src + j·stride`) by lanes:
    /// `dst[at[k] + j]` = row j's element k, 8 elements at a time by a transpose (lanes past `nb`
    /// get 0 there); the last `len mod 8` elements lane by lane.
    ///
    /// # Safety
    /// AVX2 and FMA are available; rows j < nb hold `len` floats; `at.len() ≥ len`; every
    /// `dst[at[k] .. at[k] + 8]` is writable.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn interleave(
        src: *const f32,
        stride: usize,
        nb: usize,
        len: usize,
        at: &[usize],
        dst: *mut f32,
    ) {
        debug_assert!(nb <= V && at.len() >= len);
        let mut k = 0;
        while k + V <= len {
            let mut r = [_mm256_setzero_ps(); V];
            for (j, r) in r.iter_mut().enumerate().take(nb) {
                // SAFETY: elements k .. k + 8 of row j < nb (the caller's contract).
                *r = unsafe { _mm256_loadu_ps(src.add(j * stride + k)) };
            }
            for (i, c) in transpose8(r).into_iter().enumerate() {
                // SAFETY: dst[at[k + i] ..][..8] is writable (the caller's contract).
                unsafe { _mm256_storeu_ps(dst.add(at[k + i]), c) };
            }
            k += V;
        }
        for (k, &a) in at.iter().enumerate().take(len).skip(k) {
            for j in 0..nb {
                // SAFETY: as above, element by element.
                unsafe { *dst.add(a + j) = *src.add(j * stride + k) };
            }
        }
    }

    /// The inverse of [`interleave`] for `at[k] = 8·k`: row j < nb of `dst` (at `dst + j·stride`,
    /// `len` floats) gets lane j of `src[8·k ..]` for each k.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `src` holds 8·len floats; rows j < nb of `dst` hold `len`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn deinterleave_rows(src: *const f32, len: usize, nb: usize, dst: *mut f32, stride: usize) {
        debug_assert!(nb <= V);
        let mut k = 0;
        while k + V <= len {
            let mut r = [_mm256_setzero_ps(); V];
            for (i, r) in r.iter_mut().enumerate() {
                // SAFETY: positions k .. k + 8 < len of src.
                *r = unsafe { _mm256_loadu_ps(src.add((k + i) * V)) };
            }
            for (j, c) in transpose8(r).into_iter().enumerate().take(nb) {
                // SAFETY: elements k .. k + 8 of row j < nb.
                unsafe { _mm256_storeu_ps(dst.add(j * stride + k), c) };
            }
            k += V;
        }
        for k in k..len {
            for j in 0..nb {
                // SAFETY: as above, element by element.
                unsafe { *dst.add(j * stride + k) = *src.add(k * V + j) };
            }
        }
    }
}

/// [`dw_kernels`] with AVX-512F/VL enabled, for `Isa::Avx512`: 1 thread, Zen 4, single-op models,
/// 3×3 depthwise planes 10–20% faster than the AVX2 build of the same code (measured in session 12).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::avx2::{DW_ROWS, DwPlane};
    use super::{DwAct, V};
    use std::arch::x86_64::*;

    dw_kernels!("avx2,fma,avx512f,avx512vl");
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution

/// An activation a depthwise conv applies to its outputs in registers as it stores them
/// (EfficientNet's SiLU, MobileNet v3's HardSwish), in place of a generated epilogue pass over
/// every plane. Computed in f32 (the interpreter: f64, rounded once): SiLU within a few ulps
/// (`avx2::silu`), −0 below −87 (the interpreter gives a subnormal or −0; NaN for −∞, kept);
/// HardSwish x·clamp(x/6 + ½, 0, 1) with 1/6 rounded to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DwAct {
    Silu,
    HardSwish,
}

impl DwAct {
    /// The activation of a unary op, if the depthwise kernels apply it.
    pub fn of(u: kiln_ir::UnaryOp) -> Option<DwAct> {
        match u {
            kiln_ir::UnaryOp::Silu => Some(DwAct::Silu),
            kiln_ir::UnaryOp::HardSwish => Some(DwAct::HardSwish),
            _ => None,
        }
    }

    fn unary(self) -> kiln_ir::UnaryOp {
        match self {
            DwAct::Silu => kiln_ir::UnaryOp::Silu,
            DwAct::HardSwish => kiln_ir::UnaryOp::HardSwish,
        }
    }

    /// Applies the activation to `y` in place: the AVX2 kernel's arithmetic when the CPU has
    /// AVX2 (so that every path of one Isa gives the same numbers), else the interpreter's.
    fn apply(self, isa: Isa, y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2Fma {
            // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported).
            unsafe { avx2::dw_act_slice(self, y) };
            return;
        }
        let _ = isa;
        let u = self.unary();
        for v in y.iter_mut() {
            *v = u.apply(*v);
        }
    }
}

/// Convolution where every group has one input channel (depthwise, with any channel multiplier):
/// output channel `m` of image `b` is a 2-D window over input channel `m / mult`. A unit is one
/// (image, output channel) plane. args: [out [n, m, oh, ow], x [n, c, h, w], w [m, 1, kh, kw]]
/// or [.., bias \[m\]].
#[derive(Debug, Clone)]
pub struct DepthwiseSpec {
    pub n: usize,
    pub c: usize,
    /// Output channels per input channel.
    pub mult: usize,
    pub win: Window,
    pub bias: bool,
    offs: Vec<usize>,
    /// A clamp applied to every output before it is stored, as [lo, hi] (Relu is [0, ∞], ReLU6
    /// [0, 6]; ±∞ where a bound is absent); NaN stays NaN, as the interpreter's Clip keeps it.
    clamp: Option<(f32, f32)>,
    /// An activation applied after the clamp (none when there is a clamp), in registers as the
    /// direct and channel-block kernels store.
    act: Option<DwAct>,
    /// 3×3 windows at stride 1 or 2 without dilation, as (k, stride): a direct
    /// kernel reads the plane (no scratch copy) when the CPU has AVX2 (see `avx2::dw_plane`).
    direct: Option<(usize, usize)>,
    /// Narrow planes (and one channel per group): eight channels at a time when the CPU has AVX2
    /// ([`DepthwiseSpec::run_blocks`]); their rows are too short to fill vectors along a row.
    blocks: Option<BlockPlan>,
}

/// The channel-block path's offsets, fixed by the window (built once, with the spec): the padded
/// block scratch is `[rows][cols][8]` plus one spare vector.
#[derive(Debug, Clone)]
struct BlockPlan {
    cols: usize,
    /// Per tap (row-major), its float offset in the scratch from a window's first position.
    taps: Vec<usize>,
    /// Per output position, the float offset of its window in the scratch.
    base: Vec<usize>,
    /// Per input element, where it goes in the scratch (the spare vector when no window reads it).
    at_in: Vec<usize>,
    /// Per tap, 8·t: the weights' interleaved layout.
    at_w: Vec<usize>,
}

impl BlockPlan {
    fn new(w: &Window) -> BlockPlan {
        let (rows, cols) = (w.rows(), (w.ow - 1) * w.stride[1] + (w.kw - 1) * w.dil[1] + 1);
        let nt = w.kh * w.kw;
        let taps = (0..nt).map(|t| ((t / w.kw) * w.dil[0] * cols + (t % w.kw) * w.dil[1]) * V).collect();
        let base = (0..w.oh * w.ow).map(|p| ((p / w.ow) * w.stride[0] * cols + (p % w.ow) * w.stride[1]) * V).collect();
        // Input element (r, q) goes to scratch row r + pt, column q + pl, if inside.
        let (spare, [pt, pl]) = (rows * cols * V, w.pad);
        let at_in = (0..w.h * w.w)
            .map(|k| {
                let (r, q) = (k / w.w + pt, k % w.w + pl);
                if r < rows && q < cols { (r * cols + q) * V } else { spare }
            })
            .collect();
        BlockPlan { cols, taps, base, at_in, at_w: (0..nt).map(|t| t * V).collect() }
    }
}

/// Output rows at most this long run in channel blocks (`DepthwiseSpec::blocks`) where the
/// scratch path would run them; `BLOCKS_DIRECT_MAX_OW` and `BLOCKS_DIRECT_S2_MAX_OW` where the
/// direct 3×3 kernel would, at stride 1 and 2. Measured per step (1 thread, Zen 4, `kiln bench
/// --profile`, channel blocks against the kernel they replace): efficientnet_b0 at 96², 5×5 on
/// 3² planes 0.167 → 0.035 ms, on 6² 0.135 → 0.050, on 12² 0.100 → 0.056; 3×3 on 3² 0.113 →
/// 0.025, on 6² 0.052 → 0.029, 12² → 6² at stride 2 0.030 → 0.018; mobilenet_v2_224, 3×3 on 7²
/// 0.048 → 0.030, on 14² 0.067 → 0.057 and 0.045 → 0.038, 14² → 7² 0.040 → 0.027, but 28² → 14²
/// 0.037 → 0.043 and 28² at stride 1 0.073 → 0.079–0.086; convnext_atto's 7×7 on planes wider
/// than 14: 0.038 → 0.046 — those keep their kernels.
const BLOCKS_MAX_OW: usize = 14;
const BLOCKS_DIRECT_MAX_OW: usize = 14;
const BLOCKS_DIRECT_S2_MAX_OW: usize = 7;
/// `BLOCKS_DIRECT_MAX_OW` for `Isa::Avx512`, whose direct kernel (the AVX-512VL instance) is
/// faster: session 12, 1 thread, Zen 4, single-op 3×3 + ReLU6 models, channel blocks against the
/// direct kernel: 960@7² 0.027 against 0.040 ms, 384@10² 0.021 / 0.023, 480@12² 0.031–0.039 /
/// 0.031, 576@14² 0.062–0.065 / 0.044 (with AVX2 14² is even: 0.063 / 0.065). At stride 2 the
/// blocks stay ahead (576@14² → 7²: 0.024 / 0.031; 240@12² → 6² + SiLU 0.010 / 0.020).
const BLOCKS_DIRECT_MAX_OW_AVX512: usize = 12;

impl DepthwiseSpec {
    /// `win` must have non-empty input and output planes. The paths are chosen for AVX2
    /// ([`DepthwiseSpec::new_for`] for another Isa).
    pub fn new(n: usize, c: usize, mult: usize, win: Window, bias: bool) -> DepthwiseSpec {
        DepthwiseSpec::new_for(n, c, mult, win, bias, Isa::Avx2Fma)
    }

    /// As [`DepthwiseSpec::new`], the direct kernel and the channel blocks chosen by where each
    /// measured faster for `isa` (which the spec then runs at; any Isa computes the same).
    pub fn new_for(n: usize, c: usize, mult: usize, win: Window, bias: bool, isa: Isa) -> DepthwiseSpec {
        let offs = win.tap_offsets();
        // The kernel is written for K of 3, 5 and 7, but 5×5 and 7×7 measured slower than the
        // scratch path (7×7 64@56²: 0.43 against 0.27 ms, 1 thread, Zen 4): only 3×3 takes it.
        let direct = (win.kh == win.kw
            && win.kh == 3
            && win.stride[0] == win.stride[1]
            && matches!(win.stride[0], 1 | 2)
            && win.dil == [1, 1])
        .then_some((win.kh, win.stride[0]));
        let most = match direct {
            Some((_, 1)) if isa >= Isa::Avx512 => BLOCKS_DIRECT_MAX_OW_AVX512,
            Some((_, 1)) => BLOCKS_DIRECT_MAX_OW,
            Some(_) => BLOCKS_DIRECT_S2_MAX_OW,
            None => BLOCKS_MAX_OW,
        };
        let blocks = (mult == 1 && win.ow <= most).then(|| BlockPlan::new(&win));
        let direct = direct.filter(|_| blocks.is_none());
        DepthwiseSpec { n, c, mult, win, bias, offs, clamp: None, act: None, direct, blocks }
    }

    /// This conv with `clamp(y, lo, hi)` applied to its outputs (a fused Relu or Clip; pass ±∞
    /// for an absent bound). Refused (None) for a NaN bound or lo > hi, which the interpreter's
    /// Clip orders differently.
    pub fn with_clamp(mut self, lo: f32, hi: f32) -> Option<DepthwiseSpec> {
        if lo.is_nan() || hi.is_nan() || lo > hi || self.act.is_some() {
            return None;
        }
        self.clamp = Some((lo, hi));
        Some(self)
    }

    /// The fused clamp, if any.
    pub fn clamp(&self) -> Option<(f32, f32)> {
        self.clamp
    }

    /// This conv with the activation `u` (SiLU or HardSwish, [`DwAct`]) applied to its outputs
    /// as they are stored. None for another op, or when a clamp or an activation is fused already.
    pub fn with_act(mut self, u: kiln_ir::UnaryOp) -> Option<DepthwiseSpec> {
        if self.clamp.is_some() || self.act.is_some() {
            return None;
        }
        self.act = Some(DwAct::of(u)?);
        Some(self)
    }

    /// The fused activation, if any.
    pub fn act(&self) -> Option<DwAct> {
        self.act
    }

    /// Whether the planes run the direct kernel (no scratch) when the CPU has AVX2.
    pub fn direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether the planes run in channel blocks when the CPU has AVX2.
    pub fn blocks(&self) -> bool {
        self.blocks.is_some()
    }
}

impl crate::spatial::HostKernel for DepthwiseSpec {
    fn describe(&self) -> String {
        let w = &self.win;
        // "direct": the shape has a direct kernel, which runs when the CPU has AVX2.
        let direct = if self.direct.is_some() {
            ", direct"
        } else if self.blocks.is_some() {
            ", channel blocks"
        } else {
            ""
        };
        let act = match self.act {
            Some(DwAct::Silu) => ", SiLU in-store",
            Some(DwAct::HardSwish) => ", HardSwish in-store",
            None => "",
        };
        format!("depthwise conv {}×{}/{} ({} planes{direct}{act})", w.kh, w.kw, w.stride[1], self.units())
    }

    fn units(&self) -> usize {
        self.n * self.c * self.mult
    }

    fn work(&self) -> usize {
        let w = &self.win;
        self.units() * (w.h * w.w + w.oh * w.ow * w.kh * w.kw)
    }

    /// Measured (1 thread, Zen 4, `kiln bench --profile` of mobilenet_v2_224 and single convs):
    /// the direct 3×3 kernel at 0.15 ns per input, 0.27 per output and 6 per output row (block
    /// set-up, edge masks, the masked tail store), which gives mobilenet's depthwise steps within
    /// 15% (32@112²: 190 µs estimated, 168 measured; 576@14²: 96 / 93; 960@7²: 60 / 63; 3×3/2
    /// 96@112²: 294 / 263) but 144@56² (238 / 150); the scratch path at ~1.05 ns per output for 3×3 and ~1.35 for
    /// 7×7 (the copy and the pass per pixel, then 0.0075 ns per tap). Both an order below the
    /// default 0.5 ns per work element.
    fn cost_ns(&self) -> f64 {
        let w = &self.win;
        let (inputs, outputs) = ((self.n * self.c * w.h * w.w) as f64, (self.units() * w.oh * w.ow) as f64);
        // A fused activation (session 12, kiln bench of single-op models with and without it):
        // SiLU ~0.3 ns per output, HardSwish a few FP operations per vector.
        let act = outputs
            * match self.act {
                Some(DwAct::Silu) => 0.3,
                Some(DwAct::HardSwish) => 0.03,
                None => 0.0,
            };
        act + if self.direct.is_some() {
            0.15 * inputs + 0.27 * outputs + 6.0 * (self.units() * w.oh) as f64
        } else if self.blocks.is_some() {
            // Channel blocks (efficientnet_b0's 5×5 steps, measured with the generated SiLU epilogue
            // that session 12 moved into the kernel — a slight overestimate with `act`): ~23 ns per
            // plane (its copies in and out, the epilogue call) and 0.1 ns per tap and output.
            23.0 * self.units() as f64 + 0.1 * (w.kh * w.kw) as f64 * outputs
        } else {
            1.0 * inputs + 0.0075 * (w.kh * w.kw) as f64 * outputs
        }
    }

    /// args: [out, x, w] or [out, x, w, bias], as [`DepthwiseSpec`] documents.
    unsafe fn run(&self, args: &[*mut u8], lo: usize, hi: usize, isa: Isa) {
        // SAFETY: the caller's contract.
        unsafe { self.run_planes(args, lo, hi, isa, |_, _| {}) }
    }
}

impl DepthwiseSpec {
    /// Planes `[lo, hi)`, calling `after(u0, u1)` once planes `[u0, u1)` are written (for a fused
    /// epilogue, while they are in cache); the calls cover `[lo, hi)` in order.
    ///
    /// # Safety
    /// `args` as [`DepthwiseSpec`] documents; concurrent calls only on disjoint plane ranges.
    pub unsafe fn run_planes(
        &self,
        args: &[*mut u8],
        lo: usize,
        hi: usize,
        isa: Isa,
        mut after: impl FnMut(usize, usize),
    ) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(plan), true) = (&self.blocks, isa >= Isa::Avx2Fma) {
            // SAFETY: the caller's contract; AVX2 and FMA are present (the Isa was lowered to what
            // this CPU supports).
            unsafe { self.run_blocks(plan, args, lo, hi, &mut after) };
            return;
        }
        let w = &self.win;
        let (ip, op, taps) = (w.h * w.w, w.oh * w.ow, w.kh * w.kw);
        let m = self.c * self.mult;
        let direct = cfg!(target_arch = "x86_64") && self.direct.is_some() && isa >= Isa::Avx2Fma;
        let mut s = if direct { Vec::new() } else { w.scratch(0.0) };
        // The direct kernel's padding rows.
        let zeros = if direct { vec![0.0f32; w.w] } else { Vec::new() };
        // Input channel of the last plane filled: consecutive output channels of one input
        // channel (mult > 1) reuse its scratch.
        let mut filled = None;
        for u in lo..hi {
            let (b, oc) = (u / m, u % m);
            let ic = b * self.c + oc / self.mult;
            // SAFETY: x holds n·c planes of ip floats, w m·taps floats, bias m floats and out n·m
            // planes of op floats (the plan sized them from the graph's types); this unit owns
            // output plane u.
            let (x, wts, y, bias) = unsafe {
                (
                    std::slice::from_raw_parts((args[1] as *const f32).add(ic * ip), ip),
                    std::slice::from_raw_parts((args[2] as *const f32).add(oc * taps), taps),
                    std::slice::from_raw_parts_mut((args[0] as *mut f32).add(u * op), op),
                    if self.bias { *(args[3] as *const f32).add(oc) } else { 0.0 },
                )
            };
            #[cfg(target_arch = "x86_64")]
            if let (Some((k, stride)), true) = (self.direct, isa >= Isa::Avx2Fma) {
                let (lo, hi) = self.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
                let p =
                    avx2::DwPlane { x, h: w.h, w: w.w, pad: w.pad, wts, bias, lo, hi, act: self.act, zeros: &zeros };
                // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported: Avx512
                // means AVX-512F/BW/DQ/VL are present); x holds [h, w], wts k·k floats, y oh·ow
                // floats and `zeros` w floats (dw_plane's contract).
                unsafe {
                    match (k, stride, isa >= Isa::Avx512) {
                        (3, 1, true) => avx512::dw_plane::<3, 1>(&p, w.oh, w.ow, y),
                        (_, _, true) => avx512::dw_plane::<3, 2>(&p, w.oh, w.ow, y),
                        (3, 1, false) => avx2::dw_plane::<3, 1>(&p, w.oh, w.ow, y),
                        _ => avx2::dw_plane::<3, 2>(&p, w.oh, w.ow, y),
                    }
                }
                after(u, u + 1);
                continue;
            }
            if filled != Some(ic) {
                w.fill(isa, x, &mut s, false);
                filled = Some(ic);
            }
            plane(w, isa, Taps { red: Reduce::Dot, offs: &self.offs, wts, init: bias, scale: None }, &s, y);
            if let Some((lo, hi)) = self.clamp {
                // As the interpreter's Clip: NaN fails both tests and stays.
                for v in y.iter_mut() {
                    if *v < lo {
                        *v = lo;
                    }
                    if *v > hi {
                        *v = hi;
                    }
                }
            }
            if let Some(act) = self.act {
                act.apply(isa, y);
            }
            after(u, u + 1);
        }
    }

    /// Planes `[lo, hi)` eight channels at a time (one channel per group): each block of up to
    /// eight consecutive planes of one image is copied into a zero-padded scratch interleaved by
    /// channel (`[rows][cols][8]`, the padding written once per call), the window runs along the
    /// channels' lanes (`avx2::dw_blocks`), and the result is copied back plane by plane. For
    /// narrow planes (efficientnet's 3² and 6², mobilenet's 7²) the per-plane kernels fill few
    /// lanes of their row vectors and pay a per-plane set-up that the whole window's work does not
    /// cover. Lanes past a short block compute on stale values and are not stored.
    ///
    /// # Safety
    /// As [`DepthwiseSpec::run_planes`]; `self.mult == 1`; the CPU has AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run_blocks(
        &self,
        plan: &BlockPlan,
        args: &[*mut u8],
        lo: usize,
        hi: usize,
        after: &mut impl FnMut(usize, usize),
    ) {
        debug_assert!(self.mult == 1);
        let w = &self.win;
        let (ip, op, nt) = (w.h * w.w, w.oh * w.ow, w.kh * w.kw);
        let BlockPlan { cols, taps, base, at_in, at_w } = plan;
        // [rows][cols][8], then the spare vector (BlockPlan::at_in).
        let mut xs = vec![0.0f32; (w.rows() * cols + 1) * V];
        let mut ys = vec![0.0f32; op * V];
        let mut wv = vec![0.0f32; nt * V];
        let clamp = self.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (x, wts, y) = (args[1] as *const f32, args[2] as *const f32, args[0] as *mut f32);
        let mut u = lo;
        while u < hi {
            let c0 = u % self.c;
            let nb = V.min(hi - u).min(self.c - c0);
            let mut bias = [0.0f32; V];
            if self.bias {
                // SAFETY: bias holds c floats (DepthwiseSpec's args); c0 + nb ≤ c.
                bias[..nb].copy_from_slice(unsafe { std::slice::from_raw_parts((args[3] as *const f32).add(c0), nb) });
            }
            // SAFETY: AVX2 and FMA (the caller's contract). With one channel per group, output
            // plane u + j reads input plane u + j: x holds n·c planes of ip floats and w c·nt, so
            // planes u .. u + nb and weight rows c0 .. c0 + nb exist; every at_in / at_w entry is
            // a vector of xs / wv. xs is [rows][cols][8] (and the spare), so every position's
            // window (base + tap < rows·cols) is inside it; wv holds nt·8, ys op·8; out holds n·c
            // planes of op floats, of which this call owns [lo, hi).
            unsafe {
                avx2::interleave(x.add(u * ip), ip, nb, ip, at_in, xs.as_mut_ptr());
                avx2::interleave(wts.add(c0 * nt), nt, nb, nt, at_w, wv.as_mut_ptr());
                avx2::dw_blocks(base, taps, &xs, &wv, &bias, clamp, self.act, &mut ys);
                avx2::deinterleave_rows(ys.as_ptr(), op, nb, y.add(u * op), op);
            }
            after(u, u + nb);
            u += nb;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling fast path

/// 2-D max or average pooling of one plane through the window kernel: `scratch` comes from
/// [`Window::scratch`] with −∞ (max) or 0 (sum) and is reused across planes of the same kind.
/// 2×2 windows at stride 2 with no padding (VGG's and UNet's max pools, DenseNet's average pool)
/// skip the scratch: a direct kernel reads the plane.
#[derive(Debug, Clone)]
pub(crate) struct PoolWindow {
    pub win: Window,
    offs: Vec<usize>,
    direct2x2: bool,
    /// 3×3 windows at stride 2 with padding 1 at the top and left (ResNet's stem MaxPool), every
    /// window's centre inside the plane: a direct kernel that skips the padding taps.
    direct3x3: bool,
    /// 3×3 windows at stride 1 with padding 1 at the top and left, centres inside the plane
    /// (Inception's and DenseNet's 3×3/1 pools): likewise.
    direct3x3s1: bool,
    /// 3×3 windows at stride 2 with no padding (AlexNet's, SqueezeNet's, GoogLeNet's pools, ceil
    /// mode included), every window starting inside the plane: likewise.
    direct3x3s2p0: bool,
}

impl PoolWindow {
    pub fn new(win: Window) -> PoolWindow {
        let offs = win.tap_offsets();
        let direct2x2 = win.kh == 2
            && win.kw == 2
            && win.stride == [2, 2]
            && win.dil == [1, 1]
            && win.pad == [0, 0]
            && 2 * win.oh <= win.h
            && 2 * win.ow <= win.w;
        let direct3x3 = win.kh == 3
            && win.kw == 3
            && win.stride == [2, 2]
            && win.dil == [1, 1]
            && win.pad == [1, 1]
            && 2 * win.oh <= win.h + 1
            && 2 * win.ow <= win.w;
        let direct3x3s1 = win.kh == 3
            && win.kw == 3
            && win.stride == [1, 1]
            && win.dil == [1, 1]
            && win.pad == [1, 1]
            && win.oh <= win.h
            && win.ow <= win.w;
        let direct3x3s2p0 = win.kh == 3
            && win.kw == 3
            && win.stride == [2, 2]
            && win.dil == [1, 1]
            && win.pad == [0, 0]
            && 2 * (win.oh - 1) < win.h
            && 2 * (win.ow - 1) < win.w;
        PoolWindow { win, offs, direct2x2, direct3x3, direct3x3s1, direct3x3s2p0 }
    }

    /// Whether a plane runs a direct kernel (no scratch) when the CPU has AVX2.
    pub fn direct(&self) -> bool {
        self.direct2x2 || self.direct3x3 || self.direct3x3s1 || self.direct3x3s2p0
    }

    /// A scratch for [`PoolWindow::plane`], every position holding `pad`.
    pub fn scratch(&self, pad: f32) -> Vec<f32> {
        self.win.scratch(pad)
    }

    /// Max (`max` true) or sum of each window of plane `x` into `y`, the sums multiplied by
    /// `scale` (per output, oh·ow floats plus [`SCALE_PAD`] readable past them). Returns false,
    /// with `y` partly written, when a max plane holds a NaN (the kernels' max drops NaN): the
    /// caller then runs its NaN-aware path.
    pub fn plane(
        &self,
        isa: Isa,
        max: bool,
        x: &[f32],
        scratch: &mut [f32],
        scale: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        let scale = scale.filter(|_| !max);
        debug_assert!(scale.is_none_or(|sc| sc.len() >= y.len() + SCALE_PAD));
        #[cfg(target_arch = "x86_64")]
        if self.direct2x2 && isa >= Isa::Avx2Fma {
            // SAFETY: the Isa was lowered to what this CPU supports (Isa::supported); `new`
            // checked that every window is inside the [h, w] plane x.
            return unsafe { avx2::pool2x2s2(max, x, self.win.w, self.win.ow, scale, y) };
        }
        #[cfg(target_arch = "x86_64")]
        if self.direct3x3 && isa >= Isa::Avx2Fma {
            // SAFETY: as above; `new` checked that every window's centre row and column
            // (2·oy, 2·ox) and its last column 2·ox + 1 are inside the plane.
            return unsafe { avx2::pool3x3s2p1(max, x, self.win.h, self.win.w, self.win.ow, scale, y) };
        }
        #[cfg(target_arch = "x86_64")]
        if self.direct3x3s1 && isa >= Isa::Avx2Fma {
            // SAFETY: as above; `new` checked that every window's centre (oy, ox) is inside the
            // plane.
            return unsafe { avx2::pool3x3s1p1(max, x, self.win.h, self.win.w, self.win.ow, scale, y) };
        }
        #[cfg(target_arch = "x86_64")]
        if self.direct3x3s2p0 && isa >= Isa::Avx2Fma {
            // SAFETY: as above; `new` checked that every window's first row 2·oy and column
            // 2·ox are inside the plane.
            return unsafe { avx2::pool3x3s2p0(max, x, self.win.h, self.win.w, self.win.ow, scale, y) };
        }
        if !self.win.fill(isa, x, scratch, max) {
            return false;
        }
        let (red, init) = if max { (Reduce::Max, f32::NEG_INFINITY) } else { (Reduce::Sum, 0.0) };
        plane(&self.win, isa, Taps { red, offs: &self.offs, wts: &[], init, scale }, scratch, y);
        true
    }
}

/// Readable floats a [`PoolWindow::plane`] scale table needs past its oh·ow entries.
pub(crate) const SCALE_PAD: usize = V;

#[cfg(test)]
mod tests {
    use super::*;

    /// The activations the depthwise kernels apply as they store, against the interpreter's
    /// (f64, rounded once), at every Isa the CPU has: a sweep of [−100, 100] in steps of 1/64
    /// (and its neighbours by one ulp), the cut at ±87, and ±0, ±∞, NaN, the largest and
    /// smallest floats. Tolerance: 4·2⁻²³ relative (SiLU: the f32 exponential's 2·10⁻⁷, the
    /// division's, the subtraction's and the product's roundings) plus 1.5·10⁻³⁶ absolute (SiLU
    /// below −87 is −0 here, x·eˣ there: at most 87·e⁻⁸⁷ < 1.5·10⁻³⁶); infinities, NaN and zeros
    /// (with their sign) exactly where the interpreter has them.
    #[test]
    fn activations_match_the_interpreter() {
        let mut x: Vec<f32> = (-6400..=6400).map(|i| i as f32 / 64.0).collect();
        x.extend(x.clone().iter().flat_map(|v| [f32::from_bits(v.to_bits() + 1), v.next_down()]));
        x.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN, 1e-30, -1e-30]);
        x.extend([87.0, -87.0, 87.5, -87.5, 86.9, -86.9, -88.0, -103.0, -150.0]);
        for act in [DwAct::Silu, DwAct::HardSwish] {
            for isa in [Isa::Generic, Isa::supported(Isa::Avx2Fma)] {
                let mut y = x.clone();
                act.apply(isa, &mut y);
                for (&v, &got) in x.iter().zip(&y) {
                    let want = act.unary().apply(v);
                    let ok = if want.is_nan() || got.is_nan() {
                        want.is_nan() && got.is_nan()
                    } else if want.is_infinite() || want == 0.0 {
                        got == want && got.is_sign_negative() == want.is_sign_negative()
                    } else {
                        // HardSwish: 1/6 rounded to f32 and the FMA's rounding put up to 2⁻²³
                        // (relative to x) into clamp(·), which x multiplies.
                        let slope = if act == DwAct::HardSwish { v.abs() * f32::EPSILON } else { 0.0 };
                        (got - want).abs() <= 4.0 * f32::EPSILON * want.abs() + 1.5e-36 + slope
                    };
                    assert!(ok, "{act:?} at {isa:?} of {v:e}: got {got:e}, want {want:e}");
                }
            }
        }
    }

    /// Direct definition of the window reduction, for the kernels to match.
    fn reference(win: &Window, red: Reduce, x: &[f32], wts: &[f32], init: f32) -> Vec<f32> {
        let mut y = vec![init; win.oh * win.ow];
        for oy in 0..win.oh {
            for ox in 0..win.ow {
                let a = &mut y[oy * win.ow + ox];
                for ky in 0..win.kh {
                    for kx in 0..win.kw {
                        let iy = (oy * win.stride[0] + ky * win.dil[0]) as isize - win.pad[0] as isize;
                        let ix = (ox * win.stride[1] + kx * win.dil[1]) as isize - win.pad[1] as isize;
                        if iy < 0 || ix < 0 || iy >= win.h as isize || ix >= win.w as isize {
                            continue;
                        }
                        let v = x[iy as usize * win.w + ix as usize];
                        match red {
                            Reduce::Dot => *a += wts[ky * win.kw + kx] * v,
                            Reduce::Max => *a = a.max(v),
                            Reduce::Sum => *a += v,
                        }
                    }
                }
            }
        }
        y
    }

    /// Deterministic values in [−1, 1) (a linear congruential generator from `seed`).
    fn uniform(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        }
    }

    #[test]
    fn window_kernels_match_the_definition() {
        let mut rnd = uniform(1);
        let isas = [Isa::Generic, Isa::supported(Isa::Avx2Fma)];
        for (h, w) in [(1, 1), (3, 7), (17, 17), (5, 40), (9, 33)] {
            for (k, s, d, p) in [(1, 1, 1, 0), (3, 1, 1, 1), (3, 2, 1, 1), (7, 1, 1, 3), (3, 2, 2, 2), (2, 3, 1, 0)] {
                let span = d * (k - 1) + 1;
                if h + 2 * p < span || w + 2 * p < span {
                    continue;
                }
                let (oh, ow) = ((h + 2 * p - span) / s + 1, (w + 2 * p - span) / s + 1);
                let win = Window { h, w, kh: k, kw: k, oh, ow, stride: [s, s], dil: [d, d], pad: [p, p] };
                let x: Vec<f32> = (0..h * w).map(|_| rnd()).collect();
                let wts: Vec<f32> = (0..k * k).map(|_| rnd()).collect();
                let offs = win.tap_offsets();
                for red in [Reduce::Dot, Reduce::Max, Reduce::Sum] {
                    let (pad, init) =
                        if red == Reduce::Max { (f32::NEG_INFINITY, f32::NEG_INFINITY) } else { (0.0, 0.5) };
                    let want = reference(&win, red, &x, &wts, init);
                    for isa in isas {
                        let mut s = win.scratch(pad);
                        // Twice through one scratch: the second plane must not see the first.
                        for _ in 0..2 {
                            win.fill(isa, &x, &mut s, false);
                            let mut y = vec![f32::NAN; oh * ow];
                            plane(&win, isa, Taps { red, offs: &offs, wts: &wts, init, scale: None }, &s, &mut y);
                            for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                                assert!(
                                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                                    "{red:?} {isa} {win:?} output {i}: {g} vs {e}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The pooling entry: the direct 2×2/2 kernel and the scratch path, with and without the
    /// per-output scale, at row lengths around the vector width (floor-mode planes of odd size
    /// included); a NaN anywhere in a window makes a max plane refuse (false), and a NaN-free one
    /// never does.
    #[test]
    fn pool_windows_match_the_definition() {
        let isas = [Isa::Generic, Isa::supported(Isa::Avx2Fma)];
        let sizes = [(2, 2), (3, 5), (4, 17), (9, 33), (16, 40), (5, 2), (7, 64), (27, 27), (13, 35), (6, 36)];
        for ((h, w), ceil) in sizes.into_iter().flat_map(|hw| [(hw, false), (hw, true)]) {
            for (k, s, p) in [(2, 2, 0), (3, 1, 1), (3, 2, 1), (3, 2, 0)] {
                if h + 2 * p < k || w + 2 * p < k {
                    continue;
                }
                // Ceil mode (p = 0 here or windows starting inside the plane): the last window
                // may run past the bottom/right edge.
                let out = |n: usize| if ceil { (n + 2 * p - k).div_ceil(s) + 1 } else { (n + 2 * p - k) / s + 1 };
                let (oh, ow) = (out(h), out(w));
                let win = Window { h, w, kh: k, kw: k, oh, ow, stride: [s, s], dil: [1, 1], pad: [p, p] };
                let pw = PoolWindow::new(win.clone());
                assert_eq!(pw.direct2x2, k == 2 && 2 * oh <= h && 2 * ow <= w, "{win:?}");
                assert_eq!(pw.direct3x3, k == 3 && s == 2 && p == 1 && 2 * oh <= h + 1 && 2 * ow <= w, "{win:?}");
                assert_eq!(pw.direct3x3s1, k == 3 && s == 1, "{win:?}");
                assert_eq!(pw.direct3x3s2p0, k == 3 && s == 2 && p == 0, "{win:?}");
                let x: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 61) as f32 / 8.0 - 3.0).collect();
                let mut scale: Vec<f32> = (0..oh * ow).map(|i| 1.0 / (1 + i % 9) as f32).collect();
                scale.resize(oh * ow + SCALE_PAD, 0.0);
                for max in [true, false] {
                    let red = if max { Reduce::Max } else { Reduce::Sum };
                    let init = if max { f32::NEG_INFINITY } else { 0.0 };
                    let mut want = reference(&win, red, &x, &[], init);
                    if !max {
                        want.iter_mut().zip(&scale).for_each(|(y, m)| *y *= m);
                    }
                    for isa in isas {
                        let mut sc = pw.scratch(init);
                        let mut y = vec![f32::NAN; oh * ow];
                        assert!(pw.plane(isa, max, &x, &mut sc, Some(&scale), &mut y), "{isa} {win:?}");
                        for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                            // Sums of ≤ 9 values of size ≤ 5 in another order: 1e-5 relative.
                            assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{red:?} {isa} {win:?} {i}: {g} vs {e}");
                        }
                        // A NaN in the last window's last tap (inside the plane).
                        let mut xn = x.clone();
                        let (iy, ix) = ((oh - 1) * s + k - 1 - p, (ow - 1) * s + k - 1 - p);
                        xn[iy.min(h - 1) * w + ix.min(w - 1)] = f32::NAN;
                        let ok = pw.plane(isa, max, &xn, &mut sc, Some(&scale), &mut y);
                        assert_eq!(ok, !max, "{isa} {win:?} max {max}");
                        if !max {
                            assert!(y[oh * ow - 1].is_nan(), "{isa} {win:?}");
                        }
                    }
                }
            }
        }
    }

    /// The direct depthwise kernels against the definition at every plane width from 1 to 70 (all
    /// block widths and tails, edge blocks at both ends), heights 1 to 4 (bands of four, two and
    /// one rows), k 3 (direct) and 5, 7 (the scratch path), stride 1 and 2, pads 0, k/2 and k − 1 (top/left; the
    /// bottom/right ones implied by the output size), with the clamp and a NaN that it must keep.
    /// Every ISA the CPU has against the portable (scratch) path's definition.
    #[test]
    fn direct_depthwise_matches_the_definition() {
        let mut rnd = uniform(3);
        let isas = [Isa::Generic, Isa::supported(Isa::Avx2Fma), Isa::supported(Isa::Avx512)];
        for w in 1..=70 {
            for (k, s) in [(3, 1), (3, 2), (5, 1), (5, 2), (7, 1), (7, 2)] {
                let h = 1 + w % 4;
                let p = [0, k / 2, k - 1][w % 3];
                // Bottom/right padding p too, so that every output row and column has a tap inside.
                if h + 2 * p < k || w + 2 * p < k {
                    continue;
                }
                let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
                let win = Window { h, w, kh: k, kw: k, oh, ow, stride: [s, s], dil: [1, 1], pad: [p, p] };
                let mut x: Vec<f32> = (0..2 * h * w).map(|_| rnd()).collect();
                x[h * w + (h * w) / 2] = f32::NAN;
                let wts: Vec<f32> = (0..2 * k * k).map(|_| rnd()).collect();
                let bias = [0.25f32, -0.5];
                let spec = DepthwiseSpec::new(1, 2, 1, win.clone(), true).with_clamp(-0.5, 0.75).unwrap();
                let most = match (k, s) {
                    (3, 1) => BLOCKS_DIRECT_MAX_OW,
                    (3, _) => BLOCKS_DIRECT_S2_MAX_OW,
                    _ => BLOCKS_MAX_OW,
                };
                let blocks = ow <= most;
                assert_eq!((spec.direct(), spec.blocks()), (k == 3 && !blocks, blocks), "{win:?}");
                let mut want = Vec::new();
                for c in 0..2 {
                    let plane =
                        reference(&win, Reduce::Dot, &x[c * h * w..][..h * w], &wts[c * k * k..][..k * k], bias[c]);
                    want.extend(plane.into_iter().map(|v| if v.is_nan() { v } else { v.clamp(-0.5, 0.75) }));
                }
                for isa in isas {
                    // 16 guard floats past the planes, which must stay untouched.
                    let mut y = vec![f32::NAN; 2 * oh * ow + 16];
                    let args = [
                        y.as_mut_ptr() as *mut u8,
                        x.as_ptr() as *mut u8,
                        wts.as_ptr() as *mut u8,
                        bias.as_ptr() as *mut u8,
                    ];
                    // Plane 1 before plane 0: a store of plane 0 past its end (a whole tail
                    // vector where a masked one was due) would overwrite plane 1's first outputs.
                    // SAFETY: the buffers hold the planes, weights and biases DepthwiseSpec documents.
                    unsafe {
                        spec.run_planes(&args, 1, 2, isa, |_, _| {});
                        spec.run_planes(&args, 0, 1, isa, |_, _| {});
                    }
                    assert!(y[2 * oh * ow..].iter().all(|v| v.is_nan()), "{isa} {win:?}: past the planes");
                    for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                        // k·k ≤ 49 products of values ≤ 1 in another order: 1e-5 per tap.
                        assert!(
                            g.is_nan() == e.is_nan() && (e.is_nan() || (g - e).abs() <= 1e-5 * (k * k) as f32),
                            "{isa} {win:?} output {i}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    /// The channel-block path against the definition: channel counts around the block of 8, plane
    /// ranges that start and end inside a block (run last to first, so that a block writing past
    /// its planes would spoil a finished one), two images, strides, dilation, padding, a NaN input
    /// and the clamp; the epilogue callback must cover each plane once.
    #[test]
    fn channel_blocks_match_the_definition() {
        let mut rnd = uniform(7);
        let isas = [Isa::Generic, Isa::supported(Isa::Avx2Fma), Isa::supported(Isa::Avx512)];
        // (channels, h, w, k, stride, dilation, padding)
        let cases = [
            (11, 3, 3, 5, 1, 1, 2), // efficientnet's 5×5 on 3²
            (8, 4, 4, 3, 1, 1, 1),
            (9, 3, 3, 3, 1, 1, 1),
            (9, 8, 7, 3, 2, 1, 1),
            (17, 14, 14, 5, 2, 1, 2),
            (6, 13, 14, 7, 1, 1, 3),
            (3, 5, 4, 7, 1, 1, 3),
            (10, 6, 5, 3, 2, 2, 2),
            (1, 1, 1, 1, 1, 1, 0),
            (12, 9, 9, 5, 2, 1, 2),
            (5, 3, 6, 3, 1, 1, 0),
        ];
        let mut wins: Vec<(usize, Window)> = cases
            .iter()
            .map(|&(c, h, w, k, s, d, p)| {
                let span = d * (k - 1) + 1;
                let (oh, ow) = ((h + 2 * p - span) / s + 1, (w + 2 * p - span) / s + 1);
                (c, Window { h, w, kh: k, kw: k, oh, ow, stride: [s, s], dil: [d, d], pad: [p, p] })
            })
            .collect();
        // Padding before the input wider than every window read (less padding after it): the
        // output reads padding only.
        wins.push((3, Window { h: 1, w: 1, kh: 1, kw: 1, oh: 1, ow: 1, stride: [3, 3], dil: [1, 1], pad: [2, 2] }));
        for (c, win) in wins {
            let (n, h, w, k, oh, ow) = (2, win.h, win.w, win.kh, win.oh, win.ow);
            let planes = n * c;
            let mut x: Vec<f32> = (0..planes * h * w).map(|_| rnd()).collect();
            x[(c + 1).min(planes - 1) * h * w + h * w / 2] = f32::NAN;
            let wts: Vec<f32> = (0..c * k * k).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..c).map(|_| rnd()).collect();
            let spec = DepthwiseSpec::new(n, c, 1, win.clone(), true).with_clamp(-0.5, 0.75).unwrap();
            assert!(spec.blocks() && !spec.direct(), "{win:?}");
            let mut want = Vec::new();
            for u in 0..planes {
                let ch = u % c;
                let plane =
                    reference(&win, Reduce::Dot, &x[u * h * w..][..h * w], &wts[ch * k * k..][..k * k], bias[ch]);
                want.extend(plane.into_iter().map(|v| if v.is_nan() { v } else { v.clamp(-0.5, 0.75) }));
            }
            let cuts = [0, 3.min(planes), planes.saturating_sub(2).max(3.min(planes)), planes];
            for isa in isas {
                // 16 guard floats past the planes, which must stay untouched.
                let mut y = vec![f32::NAN; planes * oh * ow + 16];
                let args = [
                    y.as_mut_ptr() as *mut u8,
                    x.as_ptr() as *mut u8,
                    wts.as_ptr() as *mut u8,
                    bias.as_ptr() as *mut u8,
                ];
                let mut done = Vec::new();
                for r in cuts.windows(2).rev() {
                    // SAFETY: the buffers hold the planes, weights and biases DepthwiseSpec documents.
                    unsafe { spec.run_planes(&args, r[0], r[1], isa, |a, b| done.extend(a..b)) };
                }
                done.sort_unstable();
                assert_eq!(done, (0..planes).collect::<Vec<_>>(), "{isa} {win:?}: epilogue calls");
                assert!(y[planes * oh * ow..].iter().all(|v| v.is_nan()), "{isa} {win:?}: past the planes");
                for (i, (g, e)) in y.iter().zip(&want).enumerate() {
                    // k·k ≤ 49 products of values ≤ 1 in another order: 1e-5 per tap.
                    assert!(
                        g.is_nan() == e.is_nan() && (e.is_nan() || (g - e).abs() <= 1e-5 * (k * k) as f32),
                        "{isa} {win:?} output {i}: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// Every output-row length from 1 to 70, so that every remainder modulo the AVX2 row's
    /// 32-output blocks is run: a tail of 25–31 outputs (four partial vectors) was skipped, leaving
    /// those outputs unwritten (difftest seeds 470 and 944, a 1×5/2 conv over 64 columns).
    #[test]
    fn every_row_tail_is_computed() {
        let isas = [Isa::Generic, Isa::supported(Isa::Avx2Fma)];
        for ow in 1..=70 {
            for (k, s) in [(1, 1), (5, 2), (3, 1)] {
                let w = (ow - 1) * s + k;
                let win = Window { h: 1, w, kh: 1, kw: k, oh: 1, ow, stride: [1, s], dil: [1, 1], pad: [0, 0] };
                let x: Vec<f32> = (0..w).map(|i| (i % 13) as f32 - 6.0).collect();
                let wts: Vec<f32> = (0..k).map(|i| 1.0 + i as f32).collect();
                let offs = win.tap_offsets();
                let want = reference(&win, Reduce::Dot, &x, &wts, 0.25);
                for isa in isas {
                    let mut scratch = win.scratch(0.0);
                    win.fill(isa, &x, &mut scratch, false);
                    let mut y = vec![f32::NAN; ow];
                    let t = Taps { red: Reduce::Dot, offs: &offs, wts: &wts, init: 0.25, scale: None };
                    plane(&win, isa, t, &scratch, &mut y);
                    assert_eq!(y, want, "{isa} ow {ow} k {k} stride {s}");
                }
            }
        }
    }
}
