//! The AVX-512 micro-kernel: an `R×16W` tile (R ≤ [`MR512`], W ≤ [`W512`] zmm columns) in `R·W`
//! zmm accumulators; per k step W loads of B, R broadcasts of A and R·W FMAs. The B operand is the
//! same 16-column packed panels as the AVX2 kernel's: the W column vectors of one k step are read
//! from W adjacent panels (`Tile::b_next` floats apart), so the compile-time layout of a packed
//! weight B does not depend on the ISA. Edge tiles load and store C through lane masks. Selected
//! at run time (`Kernel::for_isa`), never by the build's target-cpu.
//!
//! Each C element is computed as the AVX2 kernel computes it (one FMA per k in ascending order,
//! then `alpha·acc` and `fma(beta, C, ·)`), so the two kernels give the same bits.

use super::conv::StorePost;
use super::{NR, Tile};
use std::arch::x86_64::*;

/// Rows of the AVX-512 register tile: the A panel height the packed GEMM packs for it. The kernel
/// reads A panels of any height `Tile::mr` ≥ its rows (a conv's weights may be packed 8 high).
pub const MR512: usize = 12;
/// 16-float column vectors of the AVX-512 register tile (B panels per call).
pub const W512: usize = 2;

macro_rules! by_rows {
    ($t:expr, $w:literal, $ind:literal, $post:literal, $args:tt) => {
        match $t.rows {
            1 => kernel::<1, $w, $ind, $post> $args,
            2 => kernel::<2, $w, $ind, $post> $args,
            3 => kernel::<3, $w, $ind, $post> $args,
            4 => kernel::<4, $w, $ind, $post> $args,
            5 => kernel::<5, $w, $ind, $post> $args,
            6 => kernel::<6, $w, $ind, $post> $args,
            7 => kernel::<7, $w, $ind, $post> $args,
            8 => kernel::<8, $w, $ind, $post> $args,
            9 => kernel::<9, $w, $ind, $post> $args,
            10 => kernel::<10, $w, $ind, $post> $args,
            11 => kernel::<11, $w, $ind, $post> $args,
            _ => kernel::<12, $w, $ind, $post> $args,
        }
    };
}

/// # Safety
/// The CPU has AVX-512 F; `t.rows ≤ min(MR512, t.mr)`; `a` holds `kc·t.mr` floats; B row p is
/// `NR` floats at `b + p·NR` and, when `t.cols > NR`, `NR` more at `b + t.b_next + p·NR`; `c` the
/// tile's rows and columns.
pub(super) unsafe fn dispatch(t: &Tile, a: *const f32, b: *const f32, c: *mut f32) {
    // SAFETY: per this function's contract.
    unsafe {
        if t.cols > NR {
            by_rows!(t, 2, false, 0, (t, a, b, std::ptr::null(), c, &StorePost::NONE))
        } else {
            by_rows!(t, 1, false, 0, (t, a, b, std::ptr::null(), c, &StorePost::NONE))
        }
    }
}

/// As [`dispatch`], with B row p read at `b + offs[p]` (and `b + t.b_next + offs[p]`) instead of
/// a packed panel.
///
/// # Safety
/// As [`dispatch`]; `offs` holds `kc` offsets, each with the tile's B floats readable there.
pub(super) unsafe fn dispatch_indirect(t: &Tile, a: *const f32, b: *const f32, offs: *const usize, c: *mut f32) {
    // SAFETY: per this function's contract.
    unsafe {
        if t.cols > NR {
            by_rows!(t, 2, true, 0, (t, a, b, offs, c, &StorePost::NONE))
        } else {
            by_rows!(t, 1, true, 0, (t, a, b, offs, c, &StorePost::NONE))
        }
    }
}

/// As [`dispatch`] (`offs` null) or [`dispatch_indirect`], with `post` applied to each value as
/// it is stored (a conv's residual Add and Relu, in registers).
///
/// # Safety
/// As those; a non-null `post.res` holds the tile's rows and columns at C's stride.
pub(super) unsafe fn dispatch_post(
    t: &Tile,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    c: *mut f32,
    post: &StorePost,
) {
    // SAFETY: per this function's contract.
    unsafe {
        match (offs.is_null(), t.cols > NR, post.clip) {
            (true, true, false) => by_rows!(t, 2, false, 1, (t, a, b, offs, c, post)),
            (true, false, false) => by_rows!(t, 1, false, 1, (t, a, b, offs, c, post)),
            (false, true, false) => by_rows!(t, 2, true, 1, (t, a, b, offs, c, post)),
            (false, false, false) => by_rows!(t, 1, true, 1, (t, a, b, offs, c, post)),
            (true, true, true) => by_rows!(t, 2, false, 2, (t, a, b, offs, c, post)),
            (true, false, true) => by_rows!(t, 1, false, 2, (t, a, b, offs, c, post)),
            (false, true, true) => by_rows!(t, 2, true, 2, (t, a, b, offs, c, post)),
            (false, false, true) => by_rows!(t, 1, true, 2, (t, a, b, offs, c, post)),
        }
    }
}

/// `$e` with `$i` bound to each constant row index below `$r` (≤ [`MR512`]) in turn: an unrolled
/// loop whose index LLVM sees as a constant in every copy.
macro_rules! each_row {
    ($r:expr, |$i:ident| $e:expr) => {{
        each_row!(@ $r, $i, $e, 0 1 2 3 4 5 6 7 8 9 10 11)
    }};
    (@ $r:expr, $i:ident, $e:expr, $($n:literal)*) => {{
        $({
            let $i: usize = $n;
            if $i < $r {
                $e;
            }
        })*
    }};
}

#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const W: usize, const IND: bool, const POST: u8>(
    t: &Tile,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    c: *mut f32,
    post: &StorePost,
) {
    const { assert!(R <= MR512, "each_row! expands MR512 rows") };
    let mut acc = [[_mm512_setzero_ps(); W]; R];
    let (mut ap, mut bp) = (a, b);
    let next = t.b_next;
    for p in 0..t.kc {
        // SAFETY: p < kc: B's row p (16·W floats, packed or at b + offs[p], the second vector
        // b_next further) and A's column p (t.mr ≥ R floats) are readable.
        unsafe {
            let row = if IND {
                b.add(*offs.add(p))
            } else {
                let row = bp;
                bp = bp.add(NR);
                row
            };
            let mut bv = [_mm512_setzero_ps(); W];
            for (h, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(row.offset(h as isize * next));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(i));
                for (x, &bh) in row.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(av, bh, *x);
                }
            }
            ap = ap.add(t.mr);
        }
    }
    let alpha = _mm512_set1_ps(t.alpha);
    let beta = _mm512_set1_ps(t.beta);
    // The Post's parts, read once. `POST`: 0 none, 1 the residual and Relu, 2 also the Clip; each
    // instance has only its own code (with the Post's code in every instance a 32→16 1×1 on 112²
    // ran ~10% longer, with the Clip's in the residual's a 64→256 1×1 + residual + Relu on 56² ~5%).
    let res = if POST > 0 { post.res } else { std::ptr::null() };
    let (relu, clip) = (POST > 0 && post.relu, POST > 1 && post.clip);
    let (lo, hi) = if POST > 1 {
        (_mm512_set1_ps(post.lo), _mm512_set1_ps(post.hi))
    } else {
        (_mm512_setzero_ps(), _mm512_setzero_ps())
    };
    // Lanes of each column vector that exist in C.
    let mut masks = [0 as __mmask16; W];
    for (h, m) in masks.iter_mut().enumerate() {
        let cols = t.cols.saturating_sub(h * NR).min(NR);
        *m = ((1u32 << cols) - 1) as __mmask16;
    }
    // Row i's store, expanded once per row with a constant i by `each_row!`: `acc` is then never
    // indexed at run time, so LLVM keeps it in registers. (A run-time loop over the rows here kept
    // `acc` in a stack array: a 1.5 KiB memset per call, loads before the k loop, stores after.)
    macro_rules! store_row {
        ($i:expr) => {{
            let i: usize = $i;
            let row = acc[i];
            // SAFETY: row i < rows is inside C (caller).
            let cr = unsafe { c.offset(i as isize * t.c_rs) };
            // SAFETY: a non-null bias holds one float per tile row (Tile::bias).
            let bias = if t.load_c || t.bias.is_null() { None } else { Some(_mm512_set1_ps(unsafe { *t.bias.add(i) })) };
            for (h, (&v, &m)) in row.iter().zip(&masks).enumerate() {
                // SAFETY: the lanes of mask m are columns < cols, inside C (and the residual, when
                // post has one); masked lanes are neither read nor written.
                unsafe {
                    let d = cr.add(h * NR);
                    let v = if t.load_c {
                        _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(m, d), _mm512_mul_ps(alpha, v))
                    } else if let Some(b) = bias {
                        _mm512_add_ps(_mm512_mul_ps(alpha, v), b)
                    } else {
                        _mm512_mul_ps(alpha, v)
                    };
                    // The residual (rounded add), then the interpreter's Relu: v > 0 or NaN keeps
                    // v, else +0 (−0 included), or its Clip.
                    let v = if res.is_null() {
                        v
                    } else {
                        _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res.offset(i as isize * t.c_rs).add(h * NR)))
                    };
                    let v = if relu {
                        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_NLE_UQ>(v, _mm512_setzero_ps()), v)
                    } else {
                        v
                    };
                    // The interpreter's Clip: vmaxps/vminps return their second operand when the
                    // first is not greater/less (NaN, equal: −0 kept), so max(lo, v) is
                    // `v < lo ? lo : v` and min(hi, ·) `· > hi ? hi : ·`.
                    let v = if clip { _mm512_min_ps(hi, _mm512_max_ps(lo, v)) } else { v };
                    _mm512_mask_storeu_ps(d, m, v);
                }
            }
        }};
    }
    each_row!(R, |i| store_row!(i));
}
