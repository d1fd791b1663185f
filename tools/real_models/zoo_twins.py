#!/usr/bin/env python3
"""Write the ONNX twin of every zoo seed model as a real-model case (`<model>.zoo/`).

The twins are built by tools/zoo (the same graph description as the kiln JSON models, lowered to
standard opset-18 ONNX; MeanVC's time embedding as Mul/Sin/Cos); the ones above 1 MB are not
committed to models/onnx/, so this writes all of them here, with the zoo's golden inputs, and
records ONNX Runtime's outputs with export.py's `save_case`. check.py then runs them like every
other case: kiln's ONNX frontend, -O0/-O2 × 1/2 threads, |kiln − ort| ≤ 1e-3·max(1, |ort|).

Usage: python zoo_twins.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "zoo"))
sys.path.insert(0, HERE)

from export import save_case  # noqa: E402
from zoo.models import ALL  # noqa: E402


def main() -> int:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    status_path = os.path.join(out, "export_status.json")
    status = {}
    if os.path.exists(status_path):
        with open(status_path) as fh:
            status = json.load(fh)
    for name, make in ALL:
        start = time.time()
        model = make()
        if model.bench:
            continue  # no golden inputs; the *_bench twins are bench/peers' business
        case_dir = os.path.join(out, f"{name}.zoo")
        os.makedirs(case_dir, exist_ok=True)
        path = os.path.join(case_dir, "model.onnx")
        shapes = {k: v.shape for k, v in model.golden().items()}
        with open(path, "wb") as fh:
            fh.write(model.graph.to_onnx(shapes).SerializeToString())
        save_case(case_dir, path, dict(model.inputs), time.time() - start, "zoo")
        status[f"{name}.zoo"] = "ok"
        print(f"{name + '.zoo':32} {time.time() - start:6.1f}s  ok", flush=True)
    with open(status_path, "w") as fh:
        json.dump(status, fh, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
