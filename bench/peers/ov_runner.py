#!/usr/bin/env python3
"""Runs one ONNX file in OpenVINO (CPU plugin) and prints one JSON line, the same fields as
`peers-runner run` and ort_runner.py: compile_ms (read_model + compile_model from the file),
iter_ms (timed runs after the warm-up), output names, rss_start_kb / rss_peak_kb.

OpenVINO is held to what the other systems do: f32 arithmetic (INFERENCE_PRECISION_HINT=f32; on
CPUs with AVX-512 BF16 or AMX its default would be bf16), one stream, N inference threads, the
latency hint, one infer request reused.

    ov_runner.py --threads N --iters K --warmup W --model F.onnx --inputs DIR [--out DIR]
"""

import json
import os
import sys
import time

from ort_runner import parse_args, read_inputs, status_kb


def main():
    args = parse_args()

    import numpy as np
    import openvino as ov

    rss_start_kb = status_kb("VmRSS:")
    inputs = read_inputs(args.inputs)
    start = time.perf_counter()
    core = ov.Core()
    model = core.read_model(args.model)
    config = {
        "INFERENCE_NUM_THREADS": args.threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    compile_ms = (time.perf_counter() - start) * 1e3
    feed = {}
    for port in compiled.inputs:
        name = next((n for n in port.get_names() if n in inputs), None)
        if name is None:
            raise RuntimeError(f"no input file for graph input {sorted(port.get_names())}")
        feed[port] = inputs[name]
    for _ in range(args.warmup):
        request.infer(feed)
    iter_ms = []
    for _ in range(args.iters):
        t = time.perf_counter()
        request.infer(feed)
        iter_ms.append((time.perf_counter() - t) * 1e3)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for i in range(len(compiled.outputs)):
            np.save(os.path.join(args.out, f"{i}.npy"), np.array(request.get_output_tensor(i).data))
    print(
        json.dumps(
            {
                "system": "openvino",
                "threads": args.threads,
                "compile_ms": compile_ms,
                "iter_ms": iter_ms,
                "outputs": [o.get_any_name() for o in compiled.outputs],
                "rss_start_kb": rss_start_kb,
                "rss_peak_kb": status_kb("VmHWM:"),
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the driver reads the line: a failure is reported, never hidden
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
