//! Pooling (MaxPool, AveragePool, LpPool over 1 to 3 spatial axes): one host kernel step,
//! parallel over the N·C planes (`crate::spatial::PoolSpec`).

use super::*;

pub(super) fn lower(cx: &mut Ctx, id: NodeId, op: &Op) -> Result<(), Error> {
    let graph = cx.graph;
    let name = graph.node(id).name.clone();
    let ins = graph.node_inputs(id);
    let x = graph.value_type(ins[0]).clone();
    let out_v = Value { node: id, port: 0 };
    let spec = crate::spatial::PoolSpec::new(op, &x.shape)
        .map_err(|e| internal(&name, e))?
        .ok_or_else(|| excluded(op.name(), &name, "more than 3 spatial axes"))?;
    let args = vec![cx.out_buf(out_v), cx.input(ins[0], &name)?];
    cx.steps.push(Step { label: name, kind: StepKind::Host(std::sync::Arc::new(spec)), args, n_writes: 1 });
    Ok(())
}
