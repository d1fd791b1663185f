"""What each zoo entry provides to the driver."""

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass
class Model:
    name: str
    graph: "object"  # zoo.graph.Graph
    # Concrete inputs for the golden (None for *_bench models, which have no goldens).
    inputs: Optional[dict] = None
    # reference(weights: {name: f64 array}, inputs: {name: array}) -> {output name: array}, in plain numpy.
    reference: Optional[Callable] = None
    notes: list = field(default_factory=list)

    @property
    def bench(self):
        return self.inputs is None

    def golden(self):
        w = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in self.graph.params.arrays.items()}
        x = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in self.inputs.items()}
        out = self.reference(w, x)
        assert list(out) == list(self.graph.outputs), (list(out), self.graph.outputs)
        for k, v in out.items():
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{self.name}: golden {k} is not finite")
        return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
