//! RegionNorm (RN-B) as one generated kernel, one row per channel.
//!
//! For channel c the kernel walks the channel's N·H·W elements (image by image, pixel by pixel —
//! the reference's order) three times: (1) foreground count and the two regions' sums, checking
//! that every mask value is 0 or 1; (2) the squared deviations from each region's mean; (3)
//! y = (x − μ_r)/√(σ²_r + ε·NHW/|r|)·(1 + γ_r) + β_fg + β_bg for the element's region r.
//! Statistics accumulate in f64 and the formula is evaluated in f64, as the interpreter does, so
//! the two agree to about one f32 rounding. Scalar code: the per-element region select and the
//! f64 accumulators make this a latency-bound loop either way, and the op is used at low
//! resolution in kiln's models.
//!
//! Arguments: `[out, x (N,C,H,W), mask (N,1,H,W), γ_fg, β_fg, γ_bg, β_bg (each C), error cell]`.
//! A mask value other than 0 or 1 (NaN included) sets the error cell.

use super::loops::{RowLoop, counted, load_arg_ptr, report_flag};
use crate::jit::Jit;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::{FunctionBuilder, Variable};

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Defines the kernel for x of shape `[n, c, h·w = hw]`.
pub fn region_norm(jit: &mut Jit, name: &str, n: usize, c: usize, hw: usize, eps: f32) -> Result<(), String> {
    jit.define(name, move |b, [args, start, end], _| {
        let p: Vec<Value> = (0..7).map(|i| load_arg_ptr(b, args, i)).collect();
        let (out, x, mask) = (p[0], p[1], p[2]);
        let flag = load_arg_ptr(b, args, 7);
        let bad = b.declare_var(types::I8);
        let z8 = b.ins().iconst(types::I8, 0);
        b.def_var(bad, z8);
        let rl = RowLoop::begin(b, start, end);
        let ch = rl.row;
        // Pass 1: |fg|, Σx over fg and over bg, mask check.
        let vars: Vec<Variable> = (0..3).map(|_| b.declare_var(types::F64)).collect();
        let zf = b.ins().f64const(0.0);
        for &v in &vars {
            b.def_var(v, zf);
        }
        for_each(b, n, c, hw, ch, x, mask, &mut |b, xv, fg, m, _| {
            let zero = b.ins().f32const(0.0);
            let is0 = b.ins().fcmp(FloatCC::Equal, m, zero);
            let ok = b.ins().bor(fg, is0);
            let notok = b.ins().bxor_imm_s(ok, 1);
            let old = b.use_var(bad);
            let now = b.ins().bor(old, notok);
            b.def_var(bad, now);
            let z = b.ins().f64const(0.0);
            let o = b.ins().f64const(1.0);
            let cnt = b.ins().select(fg, o, z);
            let sf = b.ins().select(fg, xv, z);
            let sb = b.ins().select(fg, z, xv);
            for (var, add) in vars.iter().zip([cnt, sf, sb]) {
                let a = b.use_var(*var);
                let s = b.ins().fadd(a, add);
                b.def_var(*var, s);
            }
        });
        let cnt_fg = b.use_var(vars[0]);
        let total = b.ins().f64const((n * hw) as f64);
        let cnt_bg = b.ins().fsub(total, cnt_fg);
        let s_fg = b.use_var(vars[1]);
        let s_bg = b.use_var(vars[2]);
        // An empty region gives 0/0 here; its statistics are never used.
        let mean_fg = b.ins().fdiv(s_fg, cnt_fg);
        let mean_bg = b.ins().fdiv(s_bg, cnt_bg);
        // Pass 2: Σ(x − μ_r)² per region.
        let ss: Vec<Variable> = (0..2).map(|_| b.declare_var(types::F64)).collect();
        for &v in &ss {
            b.def_var(v, zf);
        }
        for_each(b, n, c, hw, ch, x, mask, &mut |b, xv, fg, _, _| {
            let mu = b.ins().select(fg, mean_fg, mean_bg);
            let d = b.ins().fsub(xv, mu);
            let sq = b.ins().fmul(d, d);
            let z = b.ins().f64const(0.0);
            let a_fg = b.ins().select(fg, sq, z);
            let a_bg = b.ins().select(fg, z, sq);
            for (var, add) in ss.iter().zip([a_fg, a_bg]) {
                let a = b.use_var(*var);
                let s = b.ins().fadd(a, add);
                b.def_var(*var, s);
            }
        });
        // den_r = √(σ²_r + ε·NHW/|r|), as the reference computes it.
        let eps_total = b.ins().f64const(f64::from(eps) * (n * hw) as f64);
        let den = |b: &mut FunctionBuilder, ss: Value, cnt: Value| {
            let var = b.ins().fdiv(ss, cnt);
            let e = b.ins().fdiv(eps_total, cnt);
            let t = b.ins().fadd(var, e);
            b.ins().sqrt(t)
        };
        let ss_fg = b.use_var(ss[0]);
        let ss_bg = b.use_var(ss[1]);
        let den_fg = den(b, ss_fg, cnt_fg);
        let den_bg = den(b, ss_bg, cnt_bg);
        let param = |b: &mut FunctionBuilder, ptr: Value| {
            let off = b.ins().ishl_imm_s(ch, 2);
            let addr = b.ins().iadd(ptr, off);
            let v = b.ins().load(types::F32, flags(), addr, 0);
            b.ins().fpromote(types::F64, v)
        };
        let (g_fg, b_fg, g_bg, b_bg) = (param(b, p[3]), param(b, p[4]), param(b, p[5]), param(b, p[6]));
        let one = b.ins().f64const(1.0);
        let k_fg = b.ins().fadd(one, g_fg);
        let k_bg = b.ins().fadd(one, g_bg);
        let beta = b.ins().fadd(b_fg, b_bg);
        // Pass 3: the output.
        for_each(b, n, c, hw, ch, x, mask, &mut |b, xv, fg, _, off| {
            let mu = b.ins().select(fg, mean_fg, mean_bg);
            let dn = b.ins().select(fg, den_fg, den_bg);
            let k = b.ins().select(fg, k_fg, k_bg);
            let d = b.ins().fsub(xv, mu);
            let q = b.ins().fdiv(d, dn);
            let s = b.ins().fmul(q, k);
            let y = b.ins().fadd(s, beta);
            let y = b.ins().fdemote(types::F32, y);
            let ya = b.ins().iadd(out, off);
            b.ins().store(flags(), y, ya, 0);
        });
        rl.close(b);
        let v = b.use_var(bad);
        report_flag(b, v, flag);
    })
}

/// Walks channel `ch`'s elements in the reference's order;
/// `f(b, x as f64, is_fg (I8), mask value, byte offset of the element in x and out)`.
#[allow(clippy::too_many_arguments)]
fn for_each(
    b: &mut FunctionBuilder,
    n: usize,
    c: usize,
    hw: usize,
    ch: Value,
    x: Value,
    mask: Value,
    f: &mut dyn FnMut(&mut FunctionBuilder, Value, Value, Value, Value),
) {
    let x_ch = b.ins().imul_imm_s(ch, (hw * 4) as i64);
    let zero = b.ins().iconst(types::I64, 0);
    let to_n = b.ins().iconst(types::I64, n as i64);
    let to_p = b.ins().iconst(types::I64, hw as i64);
    counted(b, zero, to_n, 1, &mut |b, img| {
        let xo = b.ins().imul_imm_s(img, (c * hw * 4) as i64);
        let xo = b.ins().iadd(x_ch, xo);
        let mo = b.ins().imul_imm_s(img, (hw * 4) as i64);
        let mr = b.ins().iadd(mask, mo);
        counted(b, zero, to_p, 1, &mut |b, px| {
            let o = b.ins().ishl_imm_s(px, 2);
            let off = b.ins().iadd(xo, o);
            let xa = b.ins().iadd(x, off);
            let ma = b.ins().iadd(mr, o);
            let xv = b.ins().load(types::F32, flags(), xa, 0);
            let xv = b.ins().fpromote(types::F64, xv);
            let m = b.ins().load(types::F32, flags(), ma, 0);
            let one = b.ins().f32const(1.0);
            let fg = b.ins().fcmp(FloatCC::Equal, m, one);
            f(b, xv, fg, m, off);
        });
    });
}
