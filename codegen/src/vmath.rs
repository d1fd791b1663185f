//! Lane-generic Cranelift emitters for f32 arithmetic and the transcendental functions kiln's
//! kernels need, so the same code produces the f32x4 main loop and the scalar tail.
//!
//! No libcalls: exp, log, tanh, sigmoid and erf are polynomial/rational approximations built from
//! adds, multiplies (FMA when the host has it) and exponent-bit tricks. Maximum relative errors,
//! measured (with and without FMA) by the dense sweeps in `math_tests.rs` against f64 references:
//! - `exp`: Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, degree-7 Taylor polynomial, 2ⁿ applied
//!   as two exponent-field factors so subnormal results and overflow to +inf come out right.
//!   Bound 1.5e-7 (measured 9.2e-8) for normal results; subnormal results within 2 subnormal ulp.
//! - `log`: x = m·2ᵉ, m ∈ [√½, √2), log m = 2·atanh(s), s = (m−1)/(m+1), odd series to s¹¹.
//!   Bound 2e-7 (measured 1.4e-7). Subnormal inputs are rescaled by 2²³ first; log(0) = −inf, log(x<0) = NaN.
//! - `tanh`: |x| < 0.5 odd Taylor series to x¹⁵; otherwise 1 − 2/(e^{2|x|} + 1), sign restored.
//!   Bound 2e-7 (measured 1.6e-7).
//! - `sigmoid`: e = exp(−|x|); 1/(1+e) for x ≥ 0, e/(1+e) below (no cancellation, no overflow).
//!   Bound 2.5e-7 (measured 1.8e-7) for normal results.
//! - `erf`: x·P(x²)/Q(x²) on x clamped to ±3.92, a rational fit of kiln's own
//!   (tools/vmath/fit_erf.py). Bound 4e-7 (fit: 3.6e-7 in f32).
//! - `gelu_erf`: ½x·(1 + erf(x/√2)) down to x = −2.5, the erfc form ½x·e^{−x²/2}·t·P(t) below
//!   (tools/vmath/fit_erfc.py), so the negative tail is relative-accurate. Bound 2e-5.
//!
//! NaN propagates through every function; ±inf give the limits.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Emits f32 arithmetic on either one lane (`F32`) or four (`F32X4`).
pub struct Lanes<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub ty: Type,
    pub fma: bool,
}

impl<'a, 'b> Lanes<'a, 'b> {
    pub fn new(b: &'a mut FunctionBuilder<'b>, vector: bool, fma: bool) -> Self {
        Lanes { b, ty: if vector { types::F32X4 } else { types::F32 }, fma }
    }

    pub fn is_vector(&self) -> bool {
        self.ty.is_vector()
    }

    fn int_ty(&self) -> Type {
        if self.is_vector() { types::I32X4 } else { types::I32 }
    }

    /// A constant in every lane.
    pub fn c(&mut self, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if self.is_vector() { self.b.ins().splat(self.ty, s) } else { s }
    }

    fn ci(&mut self, v: i32) -> Value {
        let s = self.b.ins().iconst(types::I32, v as i64);
        if self.is_vector() { self.b.ins().splat(types::I32X4, s) } else { s }
    }

    /// Broadcasts a scalar f32 value to the lane type.
    pub fn splat(&mut self, s: Value) -> Value {
        if self.is_vector() { self.b.ins().splat(self.ty, s) } else { s }
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fadd(a, b)
    }
    pub fn sub(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fsub(a, b)
    }
    pub fn mul(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmul(a, b)
    }
    pub fn div(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fdiv(a, b)
    }
    pub fn min(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmin(a, b)
    }
    pub fn max(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().fmax(a, b)
    }
    pub fn neg(&mut self, a: Value) -> Value {
        self.b.ins().fneg(a)
    }
    pub fn abs(&mut self, a: Value) -> Value {
        self.b.ins().fabs(a)
    }
    pub fn sqrt(&mut self, a: Value) -> Value {
        self.b.ins().sqrt(a)
    }

    /// a·b + c, fused when the host has FMA.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// Clamps to [lo, hi] with two compare-and-blend steps (x86 min/max with IEEE NaN semantics
    /// costs about eight instructions per vector); NaN stays NaN.
    pub fn clamp_keep_nan(&mut self, x: Value, lo: f32, hi: f32) -> Value {
        let h = self.c(hi);
        let above = self.cmp(FloatCC::GreaterThan, x, h);
        let x = self.sel(above, h, x);
        let l = self.c(lo);
        let below = self.cmp(FloatCC::LessThan, x, l);
        self.sel(below, l, x)
    }

    /// max(a, b) for operands that are never NaN (one compare and a blend).
    pub fn max_no_nan(&mut self, a: Value, b: Value) -> Value {
        let lt = self.cmp(FloatCC::LessThan, a, b);
        self.sel(lt, b, a)
    }

    /// Converts integer-valued floats known to lie well inside i32 range. On x86-64 vectors this
    /// is one cvttps2dq instead of the saturating sequence.
    fn int_in_range(&mut self, x: Value) -> Value {
        let ity = self.int_ty();
        if cfg!(target_arch = "x86_64") && self.is_vector() {
            self.b.ins().x86_cvtt2dq(ity, x)
        } else {
            self.b.ins().fcvt_to_sint_sat(ity, x)
        }
    }

    /// A lane mask (true lanes all ones).
    pub fn cmp(&mut self, cc: FloatCC, a: Value, b: Value) -> Value {
        self.b.ins().fcmp(cc, a, b)
    }

    /// Per lane: `mask ? a : b`.
    pub fn sel(&mut self, mask: Value, a: Value, b: Value) -> Value {
        if self.is_vector() {
            let m = self.b.ins().bitcast(self.ty, lane_flags(), mask);
            self.b.ins().bitselect(m, a, b)
        } else {
            self.b.ins().select(mask, a, b)
        }
    }

    /// 1.0 where the mask is set, 0.0 elsewhere.
    pub fn mask_to_f32(&mut self, mask: Value) -> Value {
        let one = self.c(1.0);
        let zero = self.c(0.0);
        self.sel(mask, one, zero)
    }

    fn as_bits(&mut self, x: Value) -> Value {
        let ty = self.int_ty();
        self.b.ins().bitcast(ty, lane_flags(), x)
    }

    fn bits_as_f32(&mut self, x: Value) -> Value {
        self.b.ins().bitcast(self.ty, lane_flags(), x)
    }

    /// `mag` (≥ 0 or NaN) with the sign of `sign`, by bits (x86 has no f32x4 fcopysign lowering).
    fn copysign_pos(&mut self, mag: Value, sign: Value) -> Value {
        let m = self.as_bits(mag);
        let s = self.as_bits(sign);
        let ity = self.int_ty();
        let k = self.b.ins().iconst(types::I32, 0x8000_0000u32 as i32 as i64);
        let k = if self.is_vector() { self.b.ins().splat(ity, k) } else { k };
        let sb = self.b.ins().band(s, k);
        let r = self.b.ins().bor(m, sb);
        self.bits_as_f32(r)
    }

    /// Horner's scheme, coefficients from the highest degree down.
    pub fn poly(&mut self, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.c(coeffs[0]);
        for &k in &coeffs[1..] {
            let kc = self.c(k);
            acc = self.mul_add(acc, x, kc);
        }
        acc
    }

    /// 2ⁿ for an integer-valued float n in [−126, 127], by building the exponent field.
    fn pow2i(&mut self, n_int: Value) -> Value {
        let bias = self.ci(127);
        let e = self.b.ins().iadd(n_int, bias);
        let bits = self.b.ins().ishl_imm_s(e, 23);
        self.bits_as_f32(bits)
    }

    /// The reduced form of eˣ: (p, n) with eˣ = p·2ⁿ, p ∈ [√½, √2], n an integer-valued float.
    /// `x` must be finite-clamped by the caller when n is used as an exponent.
    pub fn exp_parts(&mut self, x: Value) -> (Value, Value) {
        let log2e = self.c(std::f32::consts::LOG2_E);
        let t = self.mul(x, log2e);
        let n = self.b.ins().nearest(t);
        // Cody–Waite: ln2 = hi + lo with hi exact in 15 bits, so n·hi is exact for |n| < 512.
        let ln2_hi = self.c(-LN2_HI);
        let ln2_lo = self.c(-LN2_LO);
        let r = self.mul_add(n, ln2_hi, x);
        let r = self.mul_add(n, ln2_lo, r);
        // Taylor to r⁷: truncation ≤ 0.347⁸/8! ≈ 5e-9.
        let p = self.poly(r, &[1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0]);
        (p, n)
    }

    /// 2ᵈ for an integer-valued float d ≤ 0, flushed to 0 below 2⁻¹²⁶.
    pub fn pow2_nonpos(&mut self, d: Value) -> Value {
        let di = self.int_in_range(d);
        let s = self.pow2i(di);
        let lim = self.c(-126.0);
        let under = self.cmp(FloatCC::LessThan, d, lim);
        let zero = self.c(0.0);
        self.sel(under, zero, s)
    }

    /// eˣ − 1, relative-accurate near 0 where e^x − 1 cancels (Elu of −1e-39 was 0, not
    /// −3e-40, and a following ×∞ made it NaN: soak seed 121007484): x·P(x) for |x| < 0.5, P the
    /// Taylor series of (eˣ − 1)/x to x⁸ (remainder under 1e-9 relative), e^x − 1 elsewhere (the
    /// cancellation at most 2.6× the exponential's error). NaN stays NaN, −∞ gives −1, −0 gives −0.
    pub fn expm1(&mut self, x: Value) -> Value {
        let e = self.exp(x);
        let one = self.c(1.0);
        let far = self.sub(e, one);
        let p = self.poly(
            x,
            &[
                1.0 / 362_880.0,
                1.0 / 40_320.0,
                1.0 / 5_040.0,
                1.0 / 720.0,
                1.0 / 120.0,
                1.0 / 24.0,
                1.0 / 6.0,
                0.5,
                1.0,
            ],
        );
        let near = self.mul(x, p);
        let a = self.abs(x);
        let half = self.c(0.5);
        let small = self.cmp(FloatCC::LessThan, a, half);
        self.sel(small, near, far)
    }

    pub fn exp(&mut self, x: Value) -> Value {
        // Outside [−104, 88.8] the result is 0 or +inf anyway; clamping keeps n in range.
        // fmin/fmax propagate NaN.
        let x = self.clamp_keep_nan(x, -104.0, 88.8);
        let (p, n) = self.exp_parts(x);
        // 2ⁿ as 2^⌊n/2⌋·2^(n−⌊n/2⌋): each factor stays a normal float for n ∈ [−150, 128].
        let ni = self.int_in_range(n);
        let n1 = self.b.ins().sshr_imm_s(ni, 1);
        let n2 = self.b.ins().isub(ni, n1);
        let s1 = self.pow2i(n1);
        let s2 = self.pow2i(n2);
        let p = self.mul(p, s1);
        self.mul(p, s2)
    }

    /// Sum of the four lanes of a vector (scalar: itself), combined pairwise.
    pub fn hsum(&mut self, v: Value) -> Value {
        self.hfold(v, &|l, a, b| l.add(a, b))
    }

    /// Folds the lanes of a vector with `f` as ((l0 f l1) f (l2 f l3)).
    pub fn hfold(&mut self, v: Value, f: &dyn Fn(&mut Lanes, Value, Value) -> Value) -> Value {
        if !self.is_vector() {
            return v;
        }
        let l: Vec<Value> = (0..4u8).map(|i| self.b.ins().extractlane(v, i)).collect();
        let mut s = Lanes { b: &mut *self.b, ty: types::F32, fma: self.fma };
        let a = f(&mut s, l[0], l[1]);
        let c = f(&mut s, l[2], l[3]);
        f(&mut s, a, c)
    }

    pub fn log(&mut self, x: Value) -> Value {
        // Rescale subnormals so the exponent field is meaningful.
        let min_normal = self.c(f32::MIN_POSITIVE);
        let tiny = self.cmp(FloatCC::LessThan, x, min_normal);
        let scale = self.c(8_388_608.0); // 2^23
        let xs = self.mul(x, scale);
        let xn = self.sel(tiny, xs, x);
        let e_adj_t = self.c(-23.0);
        let zero = self.c(0.0);
        let e_adj = self.sel(tiny, e_adj_t, zero);

        let bits = self.as_bits(xn);
        let eb = self.b.ins().ushr_imm_s(bits, 23);
        let bias = self.ci(127);
        let e_int = self.b.ins().isub(eb, bias);
        let ity = self.int_ty();
        let mant_mask = self.b.ins().iconst(types::I32, 0x007f_ffff);
        let mant_mask = if self.is_vector() { self.b.ins().splat(ity, mant_mask) } else { mant_mask };
        let mbits = self.b.ins().band(bits, mant_mask);
        let one_bits = self.ci(0x3f80_0000);
        let mbits = self.b.ins().bor(mbits, one_bits);
        let m = self.bits_as_f32(mbits); // [1, 2)
        let e = self.b.ins().fcvt_from_sint(self.ty, e_int);
        let e = self.add(e, e_adj);
        // Bring m into [√½, √2) so that log m is small and symmetric around 0.
        let sqrt2 = self.c(std::f32::consts::SQRT_2);
        let big = self.cmp(FloatCC::GreaterThanOrEqual, m, sqrt2);
        let half = self.c(0.5);
        let m_half = self.mul(m, half);
        let m = self.sel(big, m_half, m);
        let one = self.c(1.0);
        let e1 = self.add(e, one);
        let e = self.sel(big, e1, e);
        let f = self.sub(m, one); // exact (Sterbenz)
        let two = self.c(2.0);
        let den = self.add(f, two);
        let s = self.div(f, den);
        let z = self.mul(s, s);
        // 2·atanh(s) = 2s + s·z·(2/3 + 2z/5 + …), |s| ≤ 0.1716, z ≤ 0.0295.
        let q = self.poly(z, &[2.0 / 13.0, 2.0 / 11.0, 2.0 / 9.0, 2.0 / 7.0, 2.0 / 5.0, 2.0 / 3.0]);
        let sz = self.mul(s, z);
        let two_s = self.add(s, s);
        let l = self.mul_add(sz, q, two_s);
        let ln2_hi = self.c(LN2_HI);
        let ln2_lo = self.c(LN2_LO);
        let lo = self.mul_add(e, ln2_lo, l);
        let res = self.mul_add(e, ln2_hi, lo);
        // Special cases: +inf → +inf, 0 → −inf, x < 0 or NaN → NaN.
        let inf = self.c(f32::INFINITY);
        let is_inf = self.cmp(FloatCC::Equal, x, inf);
        let res = self.sel(is_inf, inf, res);
        let is_zero = self.cmp(FloatCC::Equal, x, zero);
        let ninf = self.c(f32::NEG_INFINITY);
        let res = self.sel(is_zero, ninf, res);
        let bad = self.cmp(FloatCC::UnorderedOrLessThan, x, zero);
        let nan = self.c(f32::NAN);
        self.sel(bad, nan, res)
    }

    pub fn tanh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        // Small branch: odd Taylor series; at |x| = 0.5 the first omitted term is ≈ 1e-8 relative.
        let z = self.mul(x, x);
        let q = self.poly(
            z,
            &[
                -929_569.0 / 638_512_875.0,
                21_844.0 / 6_081_075.0,
                -1_382.0 / 155_925.0,
                62.0 / 2_835.0,
                -17.0 / 315.0,
                2.0 / 15.0,
                -1.0 / 3.0,
            ],
        );
        let xz = self.mul(x, z);
        let small = self.mul_add(xz, q, x);
        // Large branch: 1 − 2/(e^{2|x|} + 1), exact limit 1 once e overflows.
        let two_a = self.add(a, a);
        let e = self.exp(two_a);
        let one = self.c(1.0);
        let ep1 = self.add(e, one);
        let two = self.c(2.0);
        let frac = self.div(two, ep1);
        let t = self.sub(one, frac);
        let large = self.copysign_pos(t, x);
        let lim = self.c(0.5);
        let is_small = self.cmp(FloatCC::LessThan, a, lim);
        self.sel(is_small, small, large)
    }

    pub fn sigmoid(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let na = self.neg(a);
        let e = self.exp(na);
        let one = self.c(1.0);
        let d = self.add(one, e);
        let r = self.div(one, d);
        let er = self.mul(e, r);
        let zero = self.c(0.0);
        let pos = self.cmp(FloatCC::GreaterThanOrEqual, x, zero);
        self.sel(pos, r, er)
    }

    pub fn erf(&mut self, x: Value) -> Value {
        // erf x = x·P(x²)/Q(x²) for |x| ≤ 3.92; beyond, erf x rounds to ±1 in f32 and the clamped
        // value gives 1 − 6e-8. P (degree 5) and Q (degree 6) were fitted for kiln by
        // tools/vmath/fit_erf.py (iterated weighted least squares on erf(√z)/√z); evaluated in f32
        // their max relative error is 3.6e-7 (math_tests::erf_sweep bounds it by 4e-7). One
        // division and eleven FMAs, instead of a series, a division and an exponential per branch.
        let xc = self.clamp_keep_nan(x, -3.92, 3.92);
        let z = self.mul(xc, xc);
        let p = self.poly(z, &ERF_P);
        let q = self.poly(z, &ERF_Q);
        let xp = self.mul(xc, p);
        self.div(xp, q)
    }

    /// x·Φ(x), the exact GELU, as ½x·(1 + erf(x/√2)) (the peers' form) where that is accurate,
    /// x ≥ `GELU_TAIL`, and from erfc below, where 1 + erf cancels (17% off at x = −5, 0 below
    /// −5.5): Φ(−a) = erfc(a/√2)/2 = ½·e^{−a²/2}·t·P(t), t = 1/(1 + a/(2√2)), P fitted by
    /// tools/vmath/fit_erfc.py (t·P(t) within 2.9e-7 of erfc·e^{z²} in f32), accurate relative
    /// to itself down to f32's underflow. The tail form costs an exponential more, so it runs only
    /// when some lane of the vector needs it (a branch on any lane below the threshold).
    /// a² = h + l exactly by FMA, and e^{−a²/2} = e^{−h/2}·(1 − l/2): −h/2 is exact, so the large
    /// exponent adds no rounding (without FMA l is 0: up to 5e-6 relative). a is clamped to 16,
    /// where e^{−a²/2} is 0, so x = −∞ gives −∞·0 = NaN, as the interpreter's ½x·erfc(−x/√2).
    pub fn gelu_erf(&mut self, x: Value) -> Value {
        let k = self.c(std::f32::consts::FRAC_1_SQRT_2);
        let xs = self.mul(x, k);
        let e = self.erf(xs);
        let one = self.c(1.0);
        let s = self.add(one, e);
        let half = self.c(0.5);
        let hx = self.mul(half, x);
        let common = self.mul(hx, s);
        let lim = self.c(GELU_TAIL);
        let in_tail = self.cmp(FloatCC::LessThan, x, lim);
        let any = if self.is_vector() { self.b.ins().vany_true(in_tail) } else { in_tail };
        let tail_block = self.b.create_block();
        let join = self.b.create_block();
        self.b.append_block_param(join, self.ty);
        self.b.ins().brif(any, tail_block, &[], join, &[common.into()]);
        self.b.seal_block(tail_block);
        self.b.switch_to_block(tail_block);
        let tail = self.gelu_erf_tail(x);
        let r = self.sel(in_tail, tail, common);
        self.b.ins().jump(join, &[r.into()]);
        self.b.seal_block(join);
        self.b.switch_to_block(join);
        self.b.block_params(join)[0]
    }

    /// x·Φ(x) = ½x·e^{−a²/2}·t·P(t) for x < 0 (see [`Lanes::gelu_erf`]).
    fn gelu_erf_tail(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let a = self.clamp_keep_nan(a, 0.0, 16.0);
        let h = self.mul(a, a);
        let nh = self.neg(h);
        let l = self.mul_add(a, a, nh);
        let m_half = self.c(-0.5);
        let arg = self.mul(h, m_half);
        let e = self.exp(arg);
        let one = self.c(1.0);
        let corr = self.mul_add(l, m_half, one);
        let e = self.mul(e, corr);
        let k = self.c(ERFCX_T_SCALE);
        let d = self.mul_add(a, k, one);
        let t = self.div(one, d);
        let p = self.poly(t, &ERFCX_P);
        let half = self.c(0.5);
        let tp = self.mul(t, p);
        let he = self.mul(half, e);
        let phi = self.mul(he, tp);
        self.mul(x, phi)
    }

    /// xʸ as exp(y·log|x|) with C pow's sign and special-value rules for the common cases:
    /// y = 0 → 1; x < 0 with integer y → sign by parity; x < 0 with non-integer y → NaN.
    /// Relative error grows like |y·log x|·6e-8 on top of exp's bound.
    /// xʸ with C99/IEEE `powf` special cases (Annex F.10.4.4), checked against Rust's `powf` by
    /// a table in math_tests.rs: |x|ʸ = e^{y·ln|x|} with ln 0 = −inf and ln inf = +inf (so ±0 and
    /// ±inf bases give 0 or inf by the sign of y), the sign of x restored for odd integer y (by the
    /// sign bit, so −0 and −inf count as negative), NaN for a negative finite base and a
    /// non-integer y, and 1 for y = ±0 or x = 1 (even with a NaN other operand) and for x = −1 with
    /// y = ±inf.
    pub fn pow(&mut self, x: Value, y: Value) -> Value {
        let a = self.abs(x);
        let zero = self.c(0.0);
        let one = self.c(1.0);
        let inf = self.c(f32::INFINITY);
        let ninf = self.c(f32::NEG_INFINITY);
        let l = self.log(a);
        let a0 = self.cmp(FloatCC::Equal, a, zero);
        let l = self.sel(a0, ninf, l);
        let a_inf = self.cmp(FloatCC::Equal, a, inf);
        let l = self.sel(a_inf, inf, l);
        let yl = self.mul(y, l);
        let r = self.exp(yl);
        // |x| = 1: y·0 is NaN for y = ±inf, and 1ʸ = 1 for every y (NaN included).
        let a1 = self.cmp(FloatCC::Equal, a, one);
        let r = self.sel(a1, one, r);
        // y integer (±inf count as even integers: floor(inf) = inf and inf/2 = inf).
        let fy = self.b.ins().floor(y);
        let is_int = self.cmp(FloatCC::Equal, fy, y);
        let half = self.c(0.5);
        let hy = self.mul(y, half);
        let fhy = self.b.ins().floor(hy);
        let is_odd = self.cmp(FloatCC::NotEqual, fhy, hy);
        let odd_int = self.b.ins().band(is_int, is_odd);
        // Negative by the sign bit: −0 and −inf take the sign rules too.
        let bits = self.as_bits(x);
        let izero = self.ci(0);
        let neg = self.b.ins().icmp(IntCC::SignedLessThan, bits, izero);
        let nr = self.neg(r);
        let signed = self.sel(odd_int, nr, r);
        // A negative finite base with a non-integer exponent has no real power.
        let nan = self.c(f32::NAN);
        let neg_res = self.sel(is_int, signed, nan);
        // ±0 and ±inf bases have a power for every y: only the sign rule applies.
        let zero_or_inf = self.b.ins().bor(a0, a_inf);
        let neg_res = self.sel(zero_or_inf, signed, neg_res);
        let r = self.sel(neg, neg_res, r);
        let y0 = self.cmp(FloatCC::Equal, y, zero);
        self.sel(y0, one, r)
    }

    /// Per-lane mask operations (vector masks are I32X4 all-ones/zeros, scalar ones I8).
    pub fn mask_and(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().band(a, b)
    }
    pub fn mask_or(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bor(a, b)
    }
    pub fn mask_xor(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().bxor(a, b)
    }

    pub fn floor(&mut self, x: Value) -> Value {
        self.b.ins().floor(x)
    }
    pub fn ceil(&mut self, x: Value) -> Value {
        self.b.ins().ceil(x)
    }
    pub fn trunc(&mut self, x: Value) -> Value {
        self.b.ins().trunc(x)
    }
    /// Round half to even (IEEE roundToIntegralTiesToEven).
    pub fn round_even(&mut self, x: Value) -> Value {
        self.b.ins().nearest(x)
    }

    /// ln(1 + u) by Goldberg's correction: with w = fl(1 + u), log(w)·u/(w − 1) cancels the
    /// rounding of 1 + u (relative error within a few ulp of `log`'s); u itself where w = 1;
    /// +inf for u = +inf; NaN for u < −1.
    pub fn log1p(&mut self, u: Value) -> Value {
        let one = self.c(1.0);
        let w = self.add(one, u);
        let lw = self.log(w);
        let wm1 = self.sub(w, one);
        let ratio = self.div(u, wm1);
        let r = self.mul(lw, ratio);
        let exact = self.cmp(FloatCC::Equal, w, one);
        let r = self.sel(exact, u, r);
        let inf = self.c(f32::INFINITY);
        let is_inf = self.cmp(FloatCC::Equal, u, inf);
        self.sel(is_inf, inf, r)
    }

    /// Reduction for sin/cos/tan: x = n·π/2 + r, |r| ≤ π/4 (a little more at rounding
    /// boundaries), with π/2 split in four parts (12, 12, 12 and 24 significant bits, 69 bits in
    /// all), so the first two products are exact without FMA for |n| < 2¹² and every step is exact
    /// or singly rounded with FMA for |x| < 2²⁴ (see math_tests::trig_sweeps for the measured
    /// error). Returns (r, q) with q = n mod 4 ∈ {0, 1, 2, 3} as a float (computed in floats, so
    /// no integer conversion can overflow). ±inf and NaN give r = NaN.
    fn trig_reduce(&mut self, x: Value) -> (Value, Value) {
        let two_over_pi = self.c(std::f32::consts::FRAC_2_PI);
        let t = self.mul(x, two_over_pi);
        let n = self.round_even(t);
        let mut r = x;
        for part in PIO2_PARTS {
            let c = self.c(-part);
            r = self.mul_add(n, c, r);
        }
        // q = n − 4·floor(n/4): every step exact for an integer-valued float.
        let quarter = self.c(0.25);
        let n4 = self.mul(n, quarter);
        let f = self.floor(n4);
        let four = self.c(4.0);
        let f4 = self.mul(f, four);
        let q = self.sub(n, f4);
        // |r| ≤ π/4 (+ rounding) wherever the reduction is accurate; beyond 2²⁴ it is not, and
        // this clamp keeps the polynomials finite there (a value in [−1, 1], not NaN).
        let r = self.clamp_keep_nan(r, -0.786, 0.786);
        (r, q)
    }

    /// sin r and cos r for |r| ≤ π/4 + ε: Cephes' minimax polynomials for sinf/cosf
    /// (≤ 1 ulp on the interval).
    fn sincos_poly(&mut self, r: Value) -> (Value, Value) {
        let z = self.mul(r, r);
        let ps = self.poly(z, &[-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1]);
        let rz = self.mul(r, z);
        let s = self.mul_add(rz, ps, r);
        let pc = self.poly(z, &[2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2]);
        let zz = self.mul(z, z);
        let half = self.c(-0.5);
        let one = self.c(1.0);
        let c0 = self.mul_add(z, half, one);
        let c = self.mul_add(zz, pc, c0);
        (s, c)
    }

    /// sin x (`cos` = false) or cos x (= sin(x + π/2): the quadrant advanced by one).
    pub fn sin_cos(&mut self, x: Value, cos: bool) -> Value {
        let (r, q) = self.trig_reduce(x);
        let (s, c) = self.sincos_poly(r);
        let q = if cos {
            let one = self.c(1.0);
            self.add(q, one)
        } else {
            q
        };
        // Odd quadrant: the other function; quadrants 2 and 3 (and 4 ≡ 0 after the shift
        // for cos, which is q = 4 here): negated.
        let one = self.c(1.0);
        let three = self.c(3.0);
        let odd_a = self.cmp(FloatCC::Equal, q, one);
        let odd_b = self.cmp(FloatCC::Equal, q, three);
        let odd = self.mask_or(odd_a, odd_b);
        let v = self.sel(odd, c, s);
        let two = self.c(2.0);
        let four = self.c(4.0);
        let ge2 = self.cmp(FloatCC::GreaterThanOrEqual, q, two);
        let lt4 = self.cmp(FloatCC::LessThan, q, four);
        let neg = self.mask_and(ge2, lt4);
        let nv = self.neg(v);
        let v = self.sel(neg, nv, v);
        // Beyond the accurate range the reduction is meaningless; keep the result a sine.
        self.clamp_keep_nan(v, -1.0, 1.0)
    }

    /// tan x = sin r/cos r in even quadrants, −cos r/sin r in odd ones.
    pub fn tan(&mut self, x: Value) -> Value {
        let (r, q) = self.trig_reduce(x);
        let (s, c) = self.sincos_poly(r);
        let one = self.c(1.0);
        let three = self.c(3.0);
        let odd_a = self.cmp(FloatCC::Equal, q, one);
        let odd_b = self.cmp(FloatCC::Equal, q, three);
        let odd = self.mask_or(odd_a, odd_b);
        let ns = self.neg(s);
        let num = self.sel(odd, c, s);
        let den = self.sel(odd, ns, c);
        self.div(num, den)
    }

    /// asin on [−½, ½]: t + t·z·P(z), z = t² (Cephes asinf, ≤ 1 ulp there).
    fn asin_core(&mut self, t: Value) -> Value {
        let z = self.mul(t, t);
        let p = self.poly(z, &[4.216_32e-2, 2.418_131e-2, 4.547_002_6e-2, 7.495_300_3e-2, 1.666_675_2e-1]);
        let tz = self.mul(t, z);
        self.mul_add(tz, p, t)
    }

    /// asin x: |x| ≤ ½ directly; above, π/2 − 2·asin(√((1 − |x|)/2)) (no cancellation near 1).
    /// |x| > 1 gives NaN (√ of a negative).
    pub fn asin(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let half = self.c(0.5);
        let big = self.cmp(FloatCC::GreaterThan, a, half);
        let one = self.c(1.0);
        let om = self.sub(one, a);
        let h = self.mul(om, half);
        let sq = self.sqrt(h);
        let t = self.sel(big, sq, a);
        let p = self.asin_core(t);
        let pio2 = self.c(std::f32::consts::FRAC_PI_2);
        let m2 = self.c(-2.0);
        let far = self.mul_add(p, m2, pio2);
        let v = self.sel(big, far, p);
        self.copysign_pos(v, x)
    }

    /// acos x: π/2 − asin x for |x| ≤ ½; 2·asin(√((1 − x)/2)) above ½ and
    /// π − 2·asin(√((1 + x)/2)) below −½ (Cephes acosf).
    pub fn acos(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let half = self.c(0.5);
        let big = self.cmp(FloatCC::GreaterThan, a, half);
        let one = self.c(1.0);
        let om = self.sub(one, a);
        let h = self.mul(om, half);
        let sq = self.sqrt(h);
        let t = self.sel(big, sq, x);
        let p = self.asin_core(t);
        let pio2 = self.c(std::f32::consts::FRAC_PI_2);
        let mid = self.sub(pio2, p);
        let two = self.c(2.0);
        let pos = self.mul(p, two);
        let pi = self.c(std::f32::consts::PI);
        let m2 = self.c(-2.0);
        let negv = self.mul_add(p, m2, pi);
        let zero = self.c(0.0);
        let is_neg = self.cmp(FloatCC::LessThan, x, zero);
        let far = self.sel(is_neg, negv, pos);
        self.sel(big, far, mid)
    }

    /// atan x (Cephes atanf): |x| > tan(3π/8): π/2 − atan(1/|x|); > tan(π/8): π/4 +
    /// atan((|x| − 1)/(|x| + 1)); then t + t·z·P(z). ±inf give ±π/2.
    pub fn atan(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let one = self.c(1.0);
        let t3 = self.c(2.414_213_6);
        let t1 = self.c(0.414_213_57);
        let big = self.cmp(FloatCC::GreaterThan, a, t3);
        let mid = self.cmp(FloatCC::GreaterThan, a, t1);
        let m1 = self.c(-1.0);
        let inv = self.div(m1, a);
        let am1 = self.sub(a, one);
        let ap1 = self.add(a, one);
        let mq = self.div(am1, ap1);
        let t = self.sel(mid, mq, a);
        let t = self.sel(big, inv, t);
        let zero = self.c(0.0);
        let pio4 = self.c(std::f32::consts::FRAC_PI_4);
        let pio2 = self.c(std::f32::consts::FRAC_PI_2);
        let base = self.sel(mid, pio4, zero);
        let base = self.sel(big, pio2, base);
        let z = self.mul(t, t);
        let p = self.poly(z, &[8.053_744_5e-2, -1.387_768_6e-1, 1.997_771_1e-1, -3.333_295e-1]);
        let tz = self.mul(t, z);
        let y = self.mul_add(tz, p, t);
        let v = self.add(base, y);
        self.copysign_pos(v, x)
    }

    /// sinh (`cosh` = false) or cosh of x. With h = e^{|x|/2}: (½h)·h ∓ ½/h², finite up to the
    /// f32 limit (|x| ≈ 89.4) although e^{|x|} alone overflows at 88.7. sinh for |x| < 1 from
    /// its Taylor series to x¹¹ (no cancellation).
    pub fn sinh_cosh(&mut self, x: Value, cosh: bool) -> Value {
        let a = self.abs(x);
        let half = self.c(0.5);
        let ah = self.mul(a, half);
        let h = self.exp(ah);
        let hh = self.mul(h, h);
        let hh2 = self.mul(half, h);
        let big = self.mul(hh2, h);
        let inv = self.div(half, hh);
        if cosh {
            return self.add(big, inv);
        }
        let d = self.sub(big, inv);
        let large = self.copysign_pos(d, x);
        let z = self.mul(x, x);
        let p = self.poly(z, &[1.0 / 39_916_800.0, 1.0 / 362_880.0, 1.0 / 5040.0, 1.0 / 120.0, 1.0 / 6.0]);
        let xz = self.mul(x, z);
        let small = self.mul_add(xz, p, x);
        let one = self.c(1.0);
        let is_small = self.cmp(FloatCC::LessThan, a, one);
        self.sel(is_small, small, large)
    }

    /// asinh x = sign·log1p(|x| + x²/(1 + √(1 + x²))); log|x| + ln 2 once x² would lose the 1.
    pub fn asinh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let one = self.c(1.0);
        let z = self.mul(a, a);
        let zp1 = self.add(z, one);
        let s = self.sqrt(zp1);
        let sp1 = self.add(s, one);
        let q = self.div(z, sp1);
        let u = self.add(a, q);
        let small = self.log1p(u);
        let la = self.log(a);
        let ln2 = self.c(std::f32::consts::LN_2);
        let large = self.add(la, ln2);
        let lim = self.c(4096.0);
        let is_large = self.cmp(FloatCC::GreaterThan, a, lim);
        let v = self.sel(is_large, large, small);
        self.copysign_pos(v, x)
    }

    /// acosh x = log1p(t + √(2t + t²)), t = x − 1 (exact for x ≥ 1 near 1); log x + ln 2 for
    /// large x; NaN below 1.
    pub fn acosh(&mut self, x: Value) -> Value {
        let one = self.c(1.0);
        let t = self.sub(x, one);
        let two = self.c(2.0);
        let tt = self.mul(t, t);
        let w = self.mul_add(t, two, tt);
        let s = self.sqrt(w);
        let u = self.add(t, s);
        let small = self.log1p(u);
        let lx = self.log(x);
        let ln2 = self.c(std::f32::consts::LN_2);
        let large = self.add(lx, ln2);
        let lim = self.c(4096.0);
        let is_large = self.cmp(FloatCC::GreaterThan, x, lim);
        let v = self.sel(is_large, large, small);
        let below = self.cmp(FloatCC::LessThan, x, one);
        let nan = self.c(f32::NAN);
        self.sel(below, nan, v)
    }

    /// atanh x = sign·½·log1p(2|x|/(1 − |x|)); ±1 → ±inf, |x| > 1 → NaN.
    pub fn atanh(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let one = self.c(1.0);
        let two_a = self.add(a, a);
        let om = self.sub(one, a);
        let u = self.div(two_a, om);
        let l = self.log1p(u);
        let half = self.c(0.5);
        let v = self.mul(l, half);
        let above = self.cmp(FloatCC::GreaterThan, a, one);
        let nan = self.c(f32::NAN);
        let v = self.sel(above, nan, v);
        self.copysign_pos(v, x)
    }

    /// ln(1 + eˣ) = max(x, 0) + log1p(e^{−|x|}): no overflow, no cancellation.
    pub fn softplus(&mut self, x: Value) -> Value {
        let a = self.abs(x);
        let na = self.neg(a);
        let e = self.exp(na);
        let l = self.log1p(e);
        let zero = self.c(0.0);
        let m = self.max(x, zero);
        self.add(m, l)
    }

    /// +0 or −0 by the sign bit of `s`.
    pub fn copysign_zero(&mut self, s: Value) -> Value {
        let zero = self.c(0.0);
        self.copysign_pos(zero, s)
    }

    /// C fmod(a, b), exact for every pair of floats when the host has FMA: a reduces modulo
    /// |b|·2^(23j) for j = 12, 11, …, 0 in turn (each a multiple of |b|, so the remainder mod |b|
    /// is kept), and every step's quotient is below 2²⁴ (the remainder before the step is below
    /// the previous, 2²³ times larger, modulus; 2^(23·13) covers the whole exponent range), where
    /// one FMA step is exact (see `Self::fmod_step`). Moduli that overflow to inf leave the
    /// remainder as it is. b = 0, a = ±inf or NaN give NaN; b = ±inf returns a. Without FMA each
    /// step rounds r − q·m once (not exact for large quotients).
    pub fn fmod(&mut self, a: Value, b: Value) -> Value {
        let ab = self.abs(b);
        let scale = self.c(8_388_608.0); // 2^23
        let mut moduli = vec![ab];
        for _ in 0..12 {
            let last = moduli[moduli.len() - 1];
            let next = self.mul(last, scale);
            moduli.push(next);
        }
        let mut r = a;
        for &m in moduli.iter().rev() {
            r = self.fmod_step(r, m);
        }
        r
    }

    /// fmod(a, m) for m ≥ 0 (or NaN) and |a/m| < 2²⁴: r = a − trunc(a/m)·m in one FMA (exact:
    /// the true remainder, or it ± m when the rounded quotient crossed an integer, is a multiple
    /// of ulp(m) below 2·m), then corrected by m toward a's sign. m = inf returns a (finite a).
    fn fmod_step(&mut self, a: Value, m: Value) -> Value {
        let q = self.div(a, m);
        let q = self.trunc(q);
        let nq = self.neg(q);
        let r = self.mul_add(nq, m, a);
        let step = self.copysign_pos(m, a);
        // Wrong sign (r ≠ 0 and sign(r) ≠ sign(a)): the quotient was one too large.
        let zero = self.c(0.0);
        let a_neg = self.cmp(FloatCC::LessThan, a, zero);
        let r_neg = self.cmp(FloatCC::LessThan, r, zero);
        let r_pos = self.cmp(FloatCC::GreaterThan, r, zero);
        let r_nz = self.mask_or(r_neg, r_pos);
        let sign_differs = self.mask_xor(a_neg, r_neg);
        let wrong = self.mask_and(r_nz, sign_differs);
        let r_up = self.add(r, step);
        let r = self.sel(wrong, r_up, r);
        // |r| ≥ m: one too small.
        let ar = self.abs(r);
        let over = self.cmp(FloatCC::GreaterThanOrEqual, ar, m);
        let r_down = self.sub(r, step);
        let r = self.sel(over, r_down, r);
        // fmod(a, inf) = a for finite a (the FMA gave −0·inf = NaN).
        let inf = self.c(f32::INFINITY);
        let m_inf = self.cmp(FloatCC::Equal, m, inf);
        let aa = self.abs(a);
        let a_fin = self.cmp(FloatCC::LessThan, aa, inf);
        let keep = self.mask_and(m_inf, a_fin);
        let r = self.sel(keep, a, r);
        // C's fmod keeps the dividend's sign on a zero result too (fmod(−2.1, −2.1) = −0); the
        // FMA's exact zero is +0.
        let zero = self.c(0.0);
        let is_zero = self.cmp(FloatCC::Equal, r, zero);
        let signed = self.copysign_zero(a);
        self.sel(is_zero, signed, r)
    }
}

/// ln 2 = LN2_HI + LN2_LO; LN2_HI (0x3f317200) has 15 significant bits, so n·LN2_HI is exact for
/// |n| < 512.
pub(crate) const LN2_HI: f32 = 0.693_145_75;
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;

fn lane_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// π/2 in four parts of 12, 12, 12 and 24 significant bits (sum within 2e-21 of π/2), so that
/// n·part is exact for the first parts.
const PIO2_PARTS: [f32; 4] = [1.570_800_8, -4.453_584_6e-6, -8.706_138e-10, 6.223_372e-14];

/// Below this x, GELU takes its erfc form: ½x·(1 + erf(x/√2)) is within 2e-5 relative above it
/// (in f32; 5e-6 above −2, 3.5e-3 at −4), the erfc form within 1e-6 (5e-6 without FMA). −2.5
/// keeps the erfc form off ~95% of vectors of N(0, 1) data (−2: 0.57 → 0.85 ms per 2²⁰ floats).
pub(crate) const GELU_TAIL: f32 = -2.5;
/// t = 1/(1 + a·ERFCX_T_SCALE) = 1/(1 + z/2) for z = a/√2 (see [`Lanes::gelu_erf`]).
pub(crate) const ERFCX_T_SCALE: f32 = 0.5 * std::f32::consts::FRAC_1_SQRT_2;
/// erfc(z)·e^{z²} = t·P(t), P's coefficients highest degree first (tools/vmath/fit_erfc.py).
pub(crate) const ERFCX_P: [f32; 9] =
    [-0.059323397, 0.28581175, -0.48975107, 0.28097442, -0.028620355, 0.20352729, 0.24289231, 0.28240424, 0.28208476];

/// erf's numerator coefficients in x², highest degree first (see [`Lanes::erf`]); the constant
/// term came out of the fit as 2/√π to f32 precision.
pub(crate) const ERF_P: [f32; 6] =
    [6.4430265e-6, 4.017724e-4, 4.1708783e-3, 5.546024e-2, 1.92137e-1, std::f32::consts::FRAC_2_SQRT_PI];
/// erf's denominator coefficients in x², highest degree first.
pub(crate) const ERF_Q: [f32; 7] =
    [2.4070732e-7, 7.007173e-5, 1.3975928e-3, 1.6152838e-2, 1.17019966e-1, 5.036104e-1, 1.0];

#[cfg(test)]
mod tests {
    #[test]
    fn cody_waite_split_is_exact() {
        assert_eq!(super::LN2_HI.to_bits(), 0x3f31_7200);
        let sum = super::LN2_HI as f64 + super::LN2_LO as f64;
        assert!((sum - std::f64::consts::LN_2).abs() < 1e-13);
    }
}
