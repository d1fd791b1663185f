//! Loop scaffolding shared by the kernel generators: the row loop over `[start, end)`, the inner
//! f32x4-then-scalar loop, and argument loading.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Block, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Loads base pointer `i` from the kernel's argument array.
pub fn load_arg_ptr(b: &mut FunctionBuilder, args: Value, i: usize) -> Value {
    b.ins().load(types::I64, MemFlagsData::new().with_notrap(), args, (i * 8) as i32)
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
