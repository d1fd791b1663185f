//! Native code generation for kiln: one Cranelift function per fused kernel, an execution plan over
//! a static arena, and a multi-core executor. Nothing lives here yet: the JIT arrives with its own
//! issue; until then `kiln` runs graphs on the reference interpreter in `kiln_ir::eval`.
