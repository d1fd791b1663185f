//! Graph optimisation for kiln: equality saturation with egg over `kiln_ir::Graph` (normalization
//! folding, Pre-LN → Pre-RMSNorm, softmax recognition, scalar folding, algebra), extraction by a cost
//! model that counts shared subterms once, and constant folding of the weight arithmetic that the
//! rewrites leave behind.
//!
//! Pipeline ([`optimize()`]): graph → e-graph ([`convert::lift`]) → staged saturation ([`rules`]:
//! recognise, then fold) under explicit limits → DAG-aware extraction ([`extract`], costs from
//! [`cost`]) → new graph and new weights ([`convert::lower`], [`fold`]).

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod crms;
pub mod explain;
pub mod extract;
pub mod fold;
pub mod lang;
pub mod optimize;
pub mod rules;

pub use analysis::{Data, KilnAnalysis, LeafInfo};
pub use cost::CostModel;
pub use explain::Explanation;
pub use lang::{F32Bits, FoldOp, IrOp, KOp, Kiln, MetaOp};
pub use optimize::{OptimizeConfig, OptimizeReport, optimize};
