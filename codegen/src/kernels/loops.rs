//! Loop scaffolding shared by the kernel generators: the row loop over `[start, end)`, the inner
//! f32x4-then-scalar loop, and argument loading.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Loads base pointer `i` from the kernel's argument array.
pub fn load_arg_ptr(b: &mut FunctionBuilder, args: Value, i: usize) -> Value {
    let (addr, imm) = const_offset(b, args, i * 8);
    b.ins().load(types::I64, MemFlagsData::new().with_notrap(), addr, imm)
}

/// How a constant byte offset is applied: `(added, imm)` with `added` summed into the address in
/// 64 bits and `imm` the load/store's immediate. Cranelift's immediate is a signed 32-bit offset;
/// an offset that does not fit (a row longer than 2²⁹ floats: `(k * 4) as i32` wrapped negative
/// and read before the buffer) goes into the 64-bit address instead.
pub fn split_offset(bytes: usize) -> (i64, i32) {
    match i32::try_from(bytes) {
        Ok(imm) => (0, imm),
        // usize → i64 cannot wrap for any offset inside an allocation (≤ isize::MAX bytes).
        Err(_) => (bytes as i64, 0),
    }
}

/// `base` plus a constant byte offset, as (address, immediate) for a load or store; see
/// [`split_offset`]. Every constant offset in generated code goes through here.
pub fn const_offset(b: &mut FunctionBuilder, base: Value, bytes: usize) -> (Value, i32) {
    match split_offset(bytes) {
        (0, imm) => (base, imm),
        (added, imm) => (b.ins().iadd_imm_s(base, added), imm),
    }
}

/// `for row in start..end { … }`; the body is emitted between `begin` and `end`.
pub struct RowLoop {
    pub row: Value,
    head: Block,
    exit: Block,
}

impl RowLoop {
    pub fn begin(b: &mut FunctionBuilder, start: Value, end: Value) -> RowLoop {
        let head = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        let row = b.append_block_param(head, types::I64);
        b.ins().jump(head, &[start.into()]);
        b.switch_to_block(head);
        let c = b.ins().icmp(IntCC::SignedLessThan, row, end);
        b.ins().brif(c, body, &[], exit, &[]);
        b.switch_to_block(body);
        RowLoop { row, head, exit }
    }

    pub fn end(self, b: &mut FunctionBuilder) {
        self.close(b);
        b.ins().return_(&[]);
    }

    /// Closes the loop and leaves the builder in the exit block, for code after the rows (the
    /// caller must end that block, e.g. with [`report_flag`]).
    pub fn close(self, b: &mut FunctionBuilder) {
        let next = b.ins().iadd_imm_s(self.row, 1);
        b.ins().jump(self.head, &[next.into()]);
        b.switch_to_block(self.exit);
    }
}

/// Ends a checked kernel: if `bad` (an integer, non-zero on error) is set, stores 1 into the
/// i64 error cell at `flag`, then returns. Every chunk writes the same value, so concurrent chunks
/// cannot disagree.
pub fn report_flag(b: &mut FunctionBuilder, bad: Value, flag: Value) {
    let set = b.create_block();
    let done = b.create_block();
    b.ins().brif(bad, set, &[], done, &[]);
    b.switch_to_block(set);
    let one = b.ins().iconst(types::I64, 1);
    b.ins().store(MemFlagsData::new().with_notrap(), one, flag, 0);
    b.ins().jump(done, &[]);
    b.switch_to_block(done);
    b.ins().return_(&[]);
}

/// A counted loop `for i in (from..to).step_by(step)` with a constant or dynamic bound; `body`
/// gets the induction variable.
pub fn counted(
    b: &mut FunctionBuilder,
    from: Value,
    to: Value,
    step: i64,
    body: &mut dyn FnMut(&mut FunctionBuilder, Value),
) {
    let head = b.create_block();
    let blk = b.create_block();
    let exit = b.create_block();
    let i = b.append_block_param(head, types::I64);
    b.ins().jump(head, &[from.into()]);
    b.switch_to_block(head);
    // Continue while i + step ≤ to.
    let last = b.ins().iadd_imm_s(i, step);
    let c = b.ins().icmp(IntCC::SignedLessThanOrEqual, last, to);
    b.ins().brif(c, blk, &[], exit, &[]);
    b.switch_to_block(blk);
    body(b, i);
    b.ins().jump(head, &[last.into()]);
    b.switch_to_block(exit);
}

/// The elementwise inner loop over `n` contiguous elements: f32x4 steps, then a scalar tail.
/// `emit(b, vector, index)` emits one step.
pub fn inner_loop(b: &mut FunctionBuilder, n: usize, emit: &dyn Fn(&mut FunctionBuilder, bool, Value)) {
    let zero = b.ins().iconst(types::I64, 0);
    let n4 = (n / 4 * 4) as i64;
    let mut from = zero;
    if n4 > 0 {
        let to = b.ins().iconst(types::I64, n4);
        counted(b, zero, to, 4, &mut |b, i| emit(b, true, i));
        from = to;
    }
    if !n.is_multiple_of(4) {
        let to = b.ins().iconst(types::I64, n as i64);
        counted(b, from, to, 1, &mut |b, i| emit(b, false, i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::{HostFeatures, Jit};

    #[test]
    fn offsets_beyond_i32_go_into_the_64_bit_address() {
        assert_eq!(split_offset(0), (0, 0));
        assert_eq!(split_offset(i32::MAX as usize), (0, i32::MAX));
        // Issue 11: the scalar tail of a row of 2²⁹ + 1 floats read at byte 2³¹, which as an i32
        // immediate is −2³¹.
        assert_eq!(split_offset(1 << 31), (1 << 31, 0));
        assert_eq!(split_offset((1 << 33) + 4), ((1 << 33) + 4, 0));
    }

    /// A load 2³¹ + 4 bytes past a base pointer reads there, not 2 GiB before it: the kernel gets
    /// a base 2³¹ bytes before a small buffer (no 2 GiB allocation needed).
    #[test]
    fn generated_load_at_a_large_constant_offset_reads_the_right_place() {
        let mut jit = Jit::new(HostFeatures::detect()).unwrap();
        jit.define("far", |b, [args, _, _], _| {
            let out = load_arg_ptr(b, args, 0);
            let base = load_arg_ptr(b, args, 1);
            let (addr, imm) = const_offset(b, base, (1 << 31) + 4);
            let v = b.ins().load(types::F32, MemFlagsData::new().with_notrap(), addr, imm);
            b.ins().store(MemFlagsData::new().with_notrap(), v, out, 0);
            b.ins().return_(&[]);
        })
        .unwrap();
        let (f, _mem) = jit.finish().unwrap();
        let data = [1.0f32, 2.0, 3.0];
        let mut out = [0f32];
        let base = (data.as_ptr() as *mut u8).wrapping_sub(1 << 31);
        let args = [out.as_mut_ptr() as *mut u8, base];
        // SAFETY: the kernel reads one f32 at base + 2³¹ + 4 = &data[1] and writes out[0].
        unsafe { (f[0].func)(args.as_ptr(), 0, 1) };
        assert_eq!(out[0], 2.0);
    }
}
