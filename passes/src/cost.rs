//! The cost model: estimated run time of one e-node as a kernel,
//! `max(flops / peak, bytes / bandwidth) + overhead`. Elementwise ops are priced as the scheduler
//! runs them, fused into their producer's epilogue: flops, plus reading every operand that is not
//! the fused producer's output, plus a small overhead. The JIT's fused group reads each of its
//! leaves from memory (`codegen/src/lower/elementwise.rs`): a value made by a member of the group
//! stays in registers, and so does a GEMM/conv result the group runs as the epilogue of; anything
//! else (a view, a reduction, a norm kernel, an input, a weight) is a leaf. So one operand is
//! free — the first, unless its producer cannot fuse while another's can (an elementwise op, a
//! MatMul/Gemm/Conv epilogue), see `operand_reads` — and every other operand costs its bytes
//! (the Div of a written-out x / √(mean(x²) + ε) reads x again after the fused Add and Sqrt); views are
//! free; anything computable at compile time costs (almost) nothing; `affine` and `center` cannot be
//! emitted and cost infinity. Norms and softmax count one read of the input per pass of a plain
//! kernel (LayerNorm: mean, variance, normalise; RMSNorm: mean square, normalise).

use crate::analysis::KGraph;
use crate::lang::{KOp, Kiln};
use kiln_ir::{Op, TensorType, UnaryOp};

/// Machine parameters; the defaults are rough figures for one core of the reference machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Sustained flop/s of a kernel.
    pub peak_flops: f64,
    /// Sustained bytes/s between cache and memory.
    pub bandwidth: f64,
    /// Seconds of fixed cost per kernel launch in the plan.
    pub kernel_overhead: f64,
    /// Seconds of fixed cost per fusable elementwise op.
    pub fused_overhead: f64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel { peak_flops: 50e9, bandwidth: 10e9, kernel_overhead: 2e-6, fused_overhead: 0.05e-6 }
    }
}

/// What compile-time work costs: tiny but positive, so that extraction prefers fewer new weights
/// when everything else is equal and never chooses a cycle.
pub const COMPILE_TIME: f64 = 1e-12;

impl CostModel {
    /// The cost of one e-node, or infinity when it cannot be emitted.
    pub fn node_cost(&self, eg: &KGraph, class: egg::Id, node: &Kiln) -> f64 {
        let class_is_constant = eg[class].data.constant;
        let (op, args) = match node {
            Kiln::Leaf(_) => return 0.0,
            Kiln::Node(op, args) => (op, args),
        };
        let arg_types: Option<Vec<&TensorType>> = args.iter().map(|&a| eg[a].data.ty()).collect();
        // A node is only emitted (or evaluated) when its own inference gives its class's types: a
        // rule that built an ill-typed term must not reach the graph or the constant folder.
        let class_types = &eg[class].data.types;
        match op {
            KOp::Meta(_) | KOp::Wild(_) => f64::INFINITY,
            KOp::Get(_) => COMPILE_TIME,
            KOp::Fold(_) => {
                let tys: Vec<Option<&TensorType>> = args.iter().map(|&a| eg[a].data.ty()).collect();
                let ok = class_is_constant && &crate::analysis::term_types(op, &tys) == class_types;
                if ok { COMPILE_TIME } else { f64::INFINITY }
            }
            KOp::Ir(ir) => {
                let Some(inputs) = arg_types else { return f64::INFINITY };
                let Ok(outputs) = ir.op.infer(&inputs) else { return f64::INFINITY };
                if &outputs != class_types {
                    return f64::INFINITY;
                }
                if class_is_constant {
                    return COMPILE_TIME;
                }
                // Which operands a fused elementwise op reads from memory (see the module comment).
                let reads = if is_fused_op(&ir.op) {
                    let fusable: Vec<bool> = args
                        .iter()
                        .map(|&a| !eg[a].data.constant && eg[a].nodes.iter().any(|n| n.ir_op().is_some_and(fuses_into)))
                        .collect();
                    operand_reads(&inputs, &fusable)
                } else {
                    vec![true; inputs.len()]
                };
                self.ir_cost(&ir.op, &inputs, &outputs, &reads)
            }
        }
    }

    /// Estimated run time of a whole graph: the sum of its op nodes' costs, every value a run-time
    /// one, each tensor priced at its padded width (for graph passes that compare two graphs
    /// whose widths differ, such as [`crate::crms`]). The kernels work in whole vectors and
    /// panels, so a row of n floats costs as much as one of n rounded up to the 8-lane vector (a
    /// GEMM's N to its 16-column panels), and when n is not a whole number of vectors every row
    /// after the first also starts misaligned and ends in a masked tail, priced as one vector
    /// more. Narrowing a width from 256 to 255 then saves nothing and costs a little, as measured
    /// on prelm_transformer_bench: its GEMMs with K or N = 255 took the same time as with 256
    /// (per-step medians), its 255-wide CRMSNorm steps 18 µs against 13 µs for the 256-wide
    /// RMSNorms (docs/benchmarks.md, "Session 7: CRMSNorm").
    pub fn graph_cost(&self, graph: &kiln_ir::Graph) -> f64 {
        let pad = |t: &TensorType, to: usize| {
            let mut t = t.clone();
            if let Some(last) = t.shape.last_mut() {
                *last = last.div_ceil(to) * to + if *last % 8 == 0 { 0 } else { 8 };
            }
            t
        };
        let mut total = 0.0;
        for id in graph.op_nodes() {
            let node = graph.node(id);
            let Some(op) = node.op() else { continue };
            let gemm = matches!(op, Op::MatMul | Op::Gemm { .. });
            let values = graph.node_inputs(id);
            let inputs: Vec<TensorType> = values.iter().map(|&v| pad(graph.value_type(v), 8)).collect();
            let outputs: Vec<TensorType> = node.outputs.iter().map(|o| pad(&o.ty, if gemm { 16 } else { 8 })).collect();
            let inputs: Vec<&TensorType> = inputs.iter().collect();
            let reads = if is_fused_op(op) {
                let fusable: Vec<bool> =
                    values.iter().map(|v| graph.node(v.node).op().is_some_and(fuses_into)).collect();
                operand_reads(&inputs, &fusable)
            } else {
                vec![true; inputs.len()]
            };
            total += self.ir_cost(op, &inputs, &outputs, &reads);
        }
        total
    }

    /// An elementwise op fused into its producer's epilogue: its flops, plus reading the operands
    /// other than the fused one (a bias, a residual), plus a small overhead.
    fn fused(&self, flops: f64, other_bytes: f64) -> f64 {
        flops / self.peak_flops + other_bytes / self.bandwidth + self.fused_overhead
    }

    /// `reads[k]`: whether a fused elementwise op reads operand `k` from memory ([`operand_reads`];
    /// ignored by the other ops, which read every operand).
    fn ir_cost(&self, op: &Op, inputs: &[&TensorType], outputs: &[TensorType], reads: &[bool]) -> f64 {
        let bytes = |t: &TensorType| (t.num_elements() * t.dtype.size_bytes()) as f64;
        let read_bytes: f64 = inputs.iter().zip(reads).filter(|(_, r)| **r).map(|(t, _)| bytes(t)).sum();
        let in_bytes: f64 = inputs.iter().map(|t| bytes(t)).sum();
        let out_bytes: f64 = outputs.iter().map(bytes).sum();
        let out_elems: f64 = outputs.iter().map(|t| t.num_elements() as f64).sum();
        let first_in = inputs.first().map_or(0.0, |t| t.num_elements() as f64);
        let first_bytes = inputs.first().map_or(0.0, |t| bytes(t));
        let kernel = |flops: f64, bytes: f64, overhead: f64| -> f64 {
            (flops / self.peak_flops).max(bytes / self.bandwidth) + overhead
        };
        match op {
            Op::Identity | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
                COMPILE_TIME * 10.0
            }
            Op::Unary(u) => {
                let per = match u {
                    UnaryOp::Exp | UnaryOp::Log | UnaryOp::Tanh | UnaryOp::Erf | UnaryOp::Sigmoid | UnaryOp::Silu => {
                        10.0
                    }
                    UnaryOp::Gelu { .. } | UnaryOp::Selu { .. } => 12.0,
                    _ => 1.0,
                };
                self.fused(per * out_elems, read_bytes)
            }
            // powf per element: measured ~30x a multiplication (issue 14).
            Op::Binary(kiln_ir::BinaryOp::Pow) => self.fused(20.0 * out_elems, read_bytes),
            Op::Binary(_) | Op::Where | Op::Cast { .. } => self.fused(out_elems, read_bytes),
            Op::MatMul => {
                let k = inputs.first().and_then(|t| t.shape.last().copied()).unwrap_or(1) as f64;
                kernel(2.0 * out_elems * k, in_bytes + out_bytes, self.kernel_overhead)
            }
            Op::Gemm { trans_a, .. } => {
                let a = inputs.first().map(|t| t.shape.clone()).unwrap_or_default();
                let k = if *trans_a { a.first() } else { a.last() }.copied().unwrap_or(1) as f64;
                kernel(2.0 * out_elems * k, in_bytes + out_bytes, self.kernel_overhead)
            }
            Op::Conv { .. } => {
                let w = inputs.get(1).map(|t| t.shape.clone()).unwrap_or_default();
                let per_out: f64 = w.iter().skip(1).map(|&d| d as f64).product();
                kernel(2.0 * out_elems * per_out, in_bytes + out_bytes, self.kernel_overhead)
            }
            Op::LayerNormalization { .. } | Op::GroupNormalization { .. } | Op::InstanceNormalization { .. } => {
                kernel(8.0 * first_in, 3.0 * first_bytes + (in_bytes - first_bytes) + out_bytes, self.kernel_overhead)
            }
            Op::RmsNormalization { .. } | Op::PowerNorm { .. } | Op::UnifiedNorm { .. } => {
                kernel(5.0 * first_in, 2.0 * first_bytes + (in_bytes - first_bytes) + out_bytes, self.kernel_overhead)
            }
            // One reading pass (Σx and Σx² together) and one writing pass, as RMSNorm, but no γ.
            Op::CrmsNormalization { .. } => kernel(5.0 * first_in, 2.0 * first_bytes + out_bytes, self.kernel_overhead),
            Op::BatchNormalization { .. } => self.fused(2.0 * first_in, read_bytes),
            Op::Softmax { .. } | Op::LogSoftmax { .. } => {
                kernel(12.0 * first_in, 3.0 * first_bytes + out_bytes, self.kernel_overhead)
            }
            Op::Reduce { .. } => kernel(first_in, in_bytes + out_bytes, self.kernel_overhead),
            _ => kernel(out_elems, in_bytes + out_bytes, self.kernel_overhead),
        }
    }
}

/// The ops the cost model prices as fused elementwise ops (`CostModel::fused`).
fn is_fused_op(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::BatchNormalization { .. })
}

/// Whether a value made by `op` can stay in registers for an elementwise consumer: the op joins
/// the consumer's fused group (codegen's `is_fusable`) or the group runs as its GEMM/conv epilogue.
fn fuses_into(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_)
            | Op::Binary(_)
            | Op::Where
            | Op::Cast { .. }
            | Op::BatchNormalization { .. }
            | Op::UnifiedNorm { .. }
            | Op::MatMul
            | Op::Gemm { .. }
            | Op::Conv { .. }
    )
}

/// Which operands of a fused elementwise op are read from memory: all but the one taken to be the
/// fused stream. That is the first operand, as the scheduler chains ops, unless its producer
/// cannot fuse with the op (a view, a reduction, a norm kernel, an input) while another
/// operand's can (`fusable`): then the largest such operand is the stream and the first is a
/// second read, as the Div of a written-out x / √(mean(x²) + ε) reads x again after the fused
/// Add and Sqrt of the statistics. Every other operand is read, a repeated one too (x·x squares
/// a value its other users, such as the division, need in memory anyway).
fn operand_reads(inputs: &[&TensorType], fusable: &[bool]) -> Vec<bool> {
    let free = if fusable.first().copied().unwrap_or(true) || !fusable.contains(&true) {
        0
    } else {
        let mut best = 0;
        for k in 1..inputs.len() {
            if fusable[k] && (!fusable[best] || inputs[k].num_elements() > inputs[best].num_elements()) {
                best = k;
            }
        }
        best
    };
    (0..inputs.len()).map(|k| k != free).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Div of a written-out RMS, x / √(mean(x²) + ε): x comes from a view, the root from the
    /// fused Add/Sqrt. x is the read, whatever the operand order; with both operands from
    /// non-fusing producers (or both fusing) the first is the stream, as before.
    #[test]
    fn a_fused_op_reads_the_operand_that_is_not_its_fused_producers_output() {
        let x = TensorType::f32(vec![16, 4, 16]);
        let root = TensorType::f32(vec![16, 4, 1]);
        assert_eq!(operand_reads(&[&x, &root], &[false, true]), [true, false]);
        assert_eq!(operand_reads(&[&root, &x], &[true, false]), [false, true]);
        assert_eq!(operand_reads(&[&x, &root], &[false, false]), [false, true]);
        assert_eq!(operand_reads(&[&x, &root], &[true, true]), [false, true]);
        // The largest fusing operand is the stream when the first does not fuse.
        assert_eq!(operand_reads(&[&root, &root, &x], &[false, true, true]), [true, true, false]);
        let model = CostModel::default();
        let div = Op::Binary(kiln_ir::BinaryOp::Div);
        let out = [x.clone()];
        let paying = model.ir_cost(&div, &[&x, &root], &out, &[true, false]);
        let free = model.ir_cost(&div, &[&x, &root], &out, &[false, true]);
        // x is 4 KiB against the root's 256 B: the difference is their reads at the bandwidth.
        let expected = (4096.0 - 256.0) / model.bandwidth;
        assert!((paying - free - expected).abs() < 1e-15, "{paying} - {free} vs {expected}");
    }
}
