"""The zoo's model list: (name, constructor). Order is the generation order."""

from functools import partial

from . import norms

ALL = [
    ("selu_mlp", norms.selu_mlp),
    ("prelm_transformer", norms.prelm_transformer),
    ("prelm_transformer_bench", partial(norms.prelm_transformer, bench=True)),
    ("un_transformer", norms.un_transformer),
    ("powernorm_transformer", norms.powernorm_transformer),
    ("lns_transformer", norms.lns_transformer),
    ("evonorm_convnet", norms.evonorm_convnet),
    ("regionnorm_block", norms.regionnorm_block),
]
