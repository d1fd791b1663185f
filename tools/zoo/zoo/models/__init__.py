"""The zoo's model list: (name, constructor). Order is the generation order."""

from functools import partial

from . import graph_transformer as gt
from . import gdwct, meanvc, norms, stablenormal

ALL = [
    ("graph_transformer", gt.graph_transformer),
    ("graph_transformer_ln", partial(gt.graph_transformer, "ln")),
    ("graph_transformer_edge", partial(gt.graph_transformer, "edge")),
    ("graph_transformer_bench", partial(gt.graph_transformer, bench=True)),
    ("meanvc_dit", meanvc.meanvc_dit),
    ("meanvc_dit_kv", partial(meanvc.meanvc_dit, kv=True)),
    ("meanvc_dit_bench", partial(meanvc.meanvc_dit, bench=True)),
    ("gdwct", gdwct.gdwct),
    ("gdwct_bench", partial(gdwct.gdwct, bench=True)),
    ("stablenormal_yoso", stablenormal.stablenormal_yoso),
    ("stablenormal_yoso_bench", partial(stablenormal.stablenormal_yoso, bench=True)),
    ("selu_mlp", norms.selu_mlp),
    ("prelm_transformer", norms.prelm_transformer),
    ("prelm_transformer_bench", partial(norms.prelm_transformer, bench=True)),
    ("un_transformer", norms.un_transformer),
    ("powernorm_transformer", norms.powernorm_transformer),
    ("lns_transformer", norms.lns_transformer),
    ("evonorm_convnet", norms.evonorm_convnet),
    ("regionnorm_block", norms.regionnorm_block),
]
