#!/usr/bin/env python3
"""Runs one ONNX file in ONNX Runtime (CPU, ORT_ENABLE_ALL) and prints one JSON line, the same
fields as `peers-runner run` (see src/main.rs): compile_ms (creating the InferenceSession from the
file), iter_ms (timed runs after the warm-up), output names, rss_start_kb / rss_peak_kb.

    ort_runner.py --threads N --iters K --warmup W --model F.onnx --inputs DIR [--out DIR]
"""

import argparse
import json
import os
import sys
import time


def status_kb(field):
    """VmRSS / VmHWM of this process in kB (Linux), 0 when unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def parse_args():
    """The runner's command line (shared with ov_runner.py)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--out")
    return ap.parse_args()


def read_inputs(folder):
    """{input name: array} from the folder's NAME.npy files."""
    import numpy as np

    return {f[: -len(".npy")]: np.load(os.path.join(folder, f)) for f in sorted(os.listdir(folder)) if f.endswith(".npy")}


def main():
    args = parse_args()

    import numpy as np
    import onnxruntime as ort

    # After the imports: the interpreter, numpy and onnxruntime's own libraries are the baseline
    # that every ORT process pays before it reads a model.
    rss_start_kb = status_kb("VmRSS:")
    inputs = read_inputs(args.inputs)
    start = time.perf_counter()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    compile_ms = (time.perf_counter() - start) * 1e3
    missing = [i.name for i in sess.get_inputs() if i.name not in inputs]
    if missing:
        raise RuntimeError(f"no input file for graph input(s) {missing}")
    feed = {i.name: inputs[i.name] for i in sess.get_inputs()}
    out = None
    for _ in range(args.warmup):
        out = sess.run(None, feed)
    iter_ms = []
    for _ in range(args.iters):
        t = time.perf_counter()
        out = sess.run(None, feed)
        iter_ms.append((time.perf_counter() - t) * 1e3)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        for i, v in enumerate(out):
            np.save(os.path.join(args.out, f"{i}.npy"), np.asarray(v))
    print(
        json.dumps(
            {
                "system": "ort",
                "threads": args.threads,
                "compile_ms": compile_ms,
                "iter_ms": iter_ms,
                "outputs": [o.name for o in sess.get_outputs()],
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
