//! Scalar i64 kernels: Binary ops and Where on i64 operands (one op per kernel, broadcast leaves),
//! and ReduceSum/ReduceMax over i64. i64 tensors in kiln graphs are shape and index arithmetic,
//! small, so these are plain scalar loops (no SIMD), one element per iteration.
//!
//! Semantics are the interpreter's ([`kiln_ir::BinaryOp::apply_i64`], `ir/src/ops/reduce.rs`):
//! Add/Sub/Mul wrap; Div truncates toward zero, `i64::MIN / −1` wraps; Pow is square-and-multiply,
//! wrapping; a comparison writes bool (f32 0/1 in the arena). The evaluation errors — division by
//! zero, a negative Pow exponent, a ReduceSum whose running sum overflows in the reference's
//! element order — set the kernel's error cell (its last argument, one i64), which the executor
//! zeroes before the step and turns into an error after it. Cranelift's `sdiv` traps on a zero
//! divisor and on `MIN / −1`, so both are steered around it.

use super::elementwise::{Layout, layout, row_offset};
use super::loops::{RowLoop, counted, load_arg_ptr, report_flag};
use crate::jit::Jit;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{BinaryOp, ReduceKind};

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The op of an i64 elementwise kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOp {
    /// Leaves `[a, b]`, both i64.
    Binary(BinaryOp),
    /// Leaves `[cond (f32 0/1), x, y]`, x and y i64.
    Where,
}

impl IntOp {
    /// The evaluation error this op can raise (what the error cell means), if any.
    pub fn error(self) -> Option<&'static str> {
        match self {
            IntOp::Binary(BinaryOp::Div) => Some("integer division by zero"),
            IntOp::Binary(BinaryOp::Pow) => Some("integer Pow with a negative exponent"),
            IntOp::Binary(BinaryOp::Mod { .. }) => Some("integer Mod by zero"),
            _ => None,
        }
    }

    fn out_bytes(self) -> usize {
        match self {
            IntOp::Binary(b) if b.is_comparison() => 4,
            _ => 8,
        }
    }

    fn leaf_bytes(self, leaf: usize) -> usize {
        if self == IntOp::Where && leaf == 0 { 4 } else { 8 }
    }
}

/// Defines an i64 elementwise kernel. Arguments: `[out, leaf0, leaf1(, leaf2)(, error cell)]`,
/// the error cell present iff `op.error()` is. Rows are those of [`layout`].
pub fn elementwise(
    jit: &mut Jit,
    name: &str,
    op: IntOp,
    out_shape: &[usize],
    leaf_shapes: &[Vec<usize>],
) -> Result<Layout, String> {
    let want = if op == IntOp::Where { 3 } else { 2 };
    if leaf_shapes.len() != want {
        return Err(format!("{op:?} takes {want} operands, got {}", leaf_shapes.len()));
    }
    let lay = layout(out_shape, leaf_shapes);
    let l2 = lay.clone();
    jit.define(name, move |b, [args, start, end], _| {
        let nl = l2.strides.len();
        let out = load_arg_ptr(b, args, 0);
        let leaves: Vec<Value> = (0..nl).map(|i| load_arg_ptr(b, args, 1 + i)).collect();
        let flag = op.error().map(|_| load_arg_ptr(b, args, 1 + nl));
        let bad = b.declare_var(types::I8);
        let zero8 = b.ins().iconst(types::I8, 0);
        b.def_var(bad, zero8);
        let inner = l2.inner();
        let outer_dims = &l2.dims[..l2.dims.len() - 1];
        let rl = RowLoop::begin(b, start, end);
        let out_off = b.ins().imul_imm_s(rl.row, (inner * op.out_bytes()) as i64);
        let out_row = b.ins().iadd(out, out_off);
        let rows: Vec<Value> = (0..nl)
            .map(|i| {
                let off = row_offset(b, rl.row, outer_dims, &l2.strides[i], op.leaf_bytes(i));
                b.ins().iadd(leaves[i], off)
            })
            .collect();
        let zero = b.ins().iconst(types::I64, 0);
        let to = b.ins().iconst(types::I64, inner as i64);
        counted(b, zero, to, 1, &mut |b, i| {
            let vals: Vec<Value> = (0..nl)
                .map(|k| {
                    let eb = op.leaf_bytes(k);
                    let step = l2.strides[k][l2.strides[k].len() - 1] * eb;
                    let o = b.ins().imul_imm_s(i, step as i64);
                    let addr = b.ins().iadd(rows[k], o);
                    b.ins().load(if eb == 4 { types::F32 } else { types::I64 }, flags(), addr, 0)
                })
                .collect();
            let (v, err) = emit(b, op, &vals);
            if let Some(e) = err {
                let old = b.use_var(bad);
                let now = b.ins().bor(old, e);
                b.def_var(bad, now);
            }
            let o = b.ins().imul_imm_s(i, op.out_bytes() as i64);
            let addr = b.ins().iadd(out_row, o);
            b.ins().store(flags(), v, addr, 0);
        });
        rl.close(b);
        match flag {
            Some(f) => {
                let v = b.use_var(bad);
                report_flag(b, v, f);
            }
            None => {
                b.ins().return_(&[]);
            }
        }
    })?;
    Ok(lay)
}

/// One element: the result and, for the ops that can fail, an I8 error bit.
fn emit(b: &mut FunctionBuilder, op: IntOp, v: &[Value]) -> (Value, Option<Value>) {
    let bin = match op {
        IntOp::Where => {
            let z = b.ins().f32const(0.0);
            let c = b.ins().fcmp(FloatCC::NotEqual, v[0], z);
            return (b.ins().select(c, v[1], v[2]), None);
        }
        IntOp::Binary(bin) => bin,
    };
    let (x, y) = (v[0], v[1]);
    let to_f32 = |b: &mut FunctionBuilder, c: Value| {
        let (one, zero) = (b.ins().f32const(1.0), b.ins().f32const(0.0));
        b.ins().select(c, one, zero)
    };
    match bin {
        BinaryOp::Add => (b.ins().iadd(x, y), None),
        BinaryOp::Sub => (b.ins().isub(x, y), None),
        BinaryOp::Mul => (b.ins().imul(x, y), None),
        BinaryOp::Max => (b.ins().smax(x, y), None),
        BinaryOp::Min => (b.ins().smin(x, y), None),
        BinaryOp::Equal => {
            let c = b.ins().icmp(IntCC::Equal, x, y);
            (to_f32(b, c), None)
        }
        BinaryOp::Less | BinaryOp::Greater | BinaryOp::GreaterOrEqual | BinaryOp::LessOrEqual => {
            let cc = match bin {
                BinaryOp::Less => IntCC::SignedLessThan,
                BinaryOp::Greater => IntCC::SignedGreaterThan,
                BinaryOp::GreaterOrEqual => IntCC::SignedGreaterThanOrEqual,
                _ => IntCC::SignedLessThanOrEqual,
            };
            let c = b.ins().icmp(cc, x, y);
            (to_f32(b, c), None)
        }
        BinaryOp::Mod { fmod } => {
            // y = 0 is an error and y = −1 gives 0 (srem traps on both in x86's idiv).
            let is0 = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
            let is_m1 = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
            let special = b.ins().bor(is0, is_m1);
            let one = b.ins().iconst(types::I64, 1);
            let safe = b.ins().select(special, one, y);
            let r = b.ins().srem(x, safe);
            let r = if fmod {
                r
            } else {
                // Floor-mod: a non-zero remainder takes the divisor's sign (r + y, which cannot
                // overflow as r and y then have opposite signs).
                let zero = b.ins().iconst(types::I64, 0);
                let r_nz = b.ins().icmp(IntCC::NotEqual, r, zero);
                let r_neg = b.ins().icmp(IntCC::SignedLessThan, r, zero);
                let y_neg = b.ins().icmp(IntCC::SignedLessThan, y, zero);
                let differ = b.ins().bxor(r_neg, y_neg);
                let fix = b.ins().band(r_nz, differ);
                let ry = b.ins().iadd(r, y);
                b.ins().select(fix, ry, r)
            };
            (r, Some(is0))
        }
        // Bool-only (And/Or/Xor) and f32-only (PRelu) ops never reach the i64 path (the IR's
        // checks exclude them and lowering checks the operand types); a value of the right
        // width anyway.
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => (b.ins().f32const(0.0), None),
        BinaryOp::PRelu => (b.ins().iconst(types::I64, 0), None),
        BinaryOp::Div => {
            // y = 0 is an error and y = −1 is negation (wrapping at MIN); neither reaches sdiv.
            let is0 = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
            let is_m1 = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
            let special = b.ins().bor(is0, is_m1);
            let one = b.ins().iconst(types::I64, 1);
            let safe = b.ins().select(special, one, y);
            let q = b.ins().sdiv(x, safe);
            let neg = b.ins().ineg(x);
            (b.ins().select(is_m1, neg, q), Some(is0))
        }
        BinaryOp::Pow => {
            let negative = b.ins().icmp_imm_s(IntCC::SignedLessThan, y, 0);
            let zero = b.ins().iconst(types::I64, 0);
            let e0 = b.ins().select(negative, zero, y);
            // Square-and-multiply over the exponent's bits, wrapping.
            let head = b.create_block();
            let body = b.create_block();
            let exit = b.create_block();
            let acc = b.append_block_param(head, types::I64);
            let base = b.append_block_param(head, types::I64);
            let e = b.append_block_param(head, types::I64);
            let res = b.append_block_param(exit, types::I64);
            let one = b.ins().iconst(types::I64, 1);
            b.ins().jump(head, &[one.into(), x.into(), e0.into()]);
            b.switch_to_block(head);
            b.ins().brif(e, body, &[], exit, &[acc.into()]);
            b.switch_to_block(body);
            let bit = b.ins().band_imm_s(e, 1);
            let m = b.ins().imul(acc, base);
            let acc2 = b.ins().select(bit, m, acc);
            let base2 = b.ins().imul(base, base);
            let e2 = b.ins().ushr_imm_s(e, 1);
            b.ins().jump(head, &[acc2.into(), base2.into(), e2.into()]);
            b.switch_to_block(exit);
            (res, Some(negative))
        }
    }
}

/// Defines an i64 reduction: output element `o` folds `x[base[o] + red[k]]` for k = 0, 1, … in
/// order — the reference's flat order, so a ReduceSum overflows exactly when the reference's
/// running sum does. Sum starts at 0 and Prod at 1 (overflow sets the error cell), Max at
/// `i64::MIN`, Min at `i64::MAX`.
/// Arguments: `[out, x, base (i64 offsets, one per output), red (i64 offsets), error cell]`;
/// rows are output elements; `red_len` is the number of reduced elements per output.
pub fn reduce(jit: &mut Jit, name: &str, kind: ReduceKind, red_len: usize) -> Result<(), String> {
    let init = match kind {
        ReduceKind::Sum => 0,
        ReduceKind::Max => i64::MIN,
        ReduceKind::Min => i64::MAX,
        ReduceKind::Prod => 1,
        other => return Err(format!("{other:?} has no i64 form")),
    };
    jit.define(name, move |b, [args, start, end], _| {
        let out = load_arg_ptr(b, args, 0);
        let x = load_arg_ptr(b, args, 1);
        let base_tab = load_arg_ptr(b, args, 2);
        let red_tab = load_arg_ptr(b, args, 3);
        let flag = load_arg_ptr(b, args, 4);
        let bad = b.declare_var(types::I8);
        let zero8 = b.ins().iconst(types::I8, 0);
        b.def_var(bad, zero8);
        let rl = RowLoop::begin(b, start, end);
        let ro = b.ins().ishl_imm_s(rl.row, 3);
        let at = b.ins().iadd(base_tab, ro);
        let base = b.ins().load(types::I64, flags(), at, 0);
        let acc = b.declare_var(types::I64);
        let init_v = b.ins().iconst(types::I64, init);
        b.def_var(acc, init_v);
        let zero = b.ins().iconst(types::I64, 0);
        let to = b.ins().iconst(types::I64, red_len as i64);
        counted(b, zero, to, 1, &mut |b, k| {
            let ko = b.ins().ishl_imm_s(k, 3);
            let at = b.ins().iadd(red_tab, ko);
            let off = b.ins().load(types::I64, flags(), at, 0);
            let idx = b.ins().iadd(base, off);
            let byte = b.ins().ishl_imm_s(idx, 3);
            let addr = b.ins().iadd(x, byte);
            let v = b.ins().load(types::I64, flags(), addr, 0);
            let a = b.use_var(acc);
            let next = if kind == ReduceKind::Max {
                b.ins().smax(a, v)
            } else if kind == ReduceKind::Min {
                b.ins().smin(a, v)
            } else {
                let (s, of) =
                    if kind == ReduceKind::Prod { b.ins().smul_overflow(a, v) } else { b.ins().sadd_overflow(a, v) };
                let old = b.use_var(bad);
                let now = b.ins().bor(old, of);
                b.def_var(bad, now);
                s
            };
            b.def_var(acc, next);
        });
        let a = b.use_var(acc);
        let addr = b.ins().iadd(out, ro);
        b.ins().store(flags(), a, addr, 0);
        rl.close(b);
        let v = b.use_var(bad);
        report_flag(b, v, flag);
    })
}
