//! Graph optimisation for kiln: equality saturation with egg over `kiln_ir::Graph` (normalization
//! folding, Pre-LN → Pre-RMSNorm, softmax and attention recognition, algebra), extraction by a cost
//! model, constant folding of weight arithmetic, and scheduling into fused kernels with a static
//! memory plan. Nothing lives here yet: the optimizer arrives with its own issue.
