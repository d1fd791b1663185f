#!/usr/bin/env python3
"""CPU time per run of kiln binaries and ONNX Runtime on one ONNX file, which waiting for a core on
a shared machine does not inflate (the method of docs/benchmarks.md, "Session 7: convolution"):
`perf stat -e task-clock` of a process doing 220 runs minus one doing 20, divided by 200; rounds
alternate the systems. kiln: `KILN bench MODEL --iters N --threads T --json` (seeded random
inputs); ORT: an in-process session (intra-op threads T, sequential), inputs uniform in [-1, 1),
dynamic dimensions 1. Prints one line per model, each system's per-round ms.

    python tools/bench/cpu_per_run.py MODEL.onnx KILN [KILN ...] [--rounds 2] [--threads 1]

(A KILN may be a wrapper script that adds `--isa avx2+fma`.) Needs perf and the venv python
(numpy, onnxruntime) for the ORT runs."""
import subprocess, sys, os, json
PY = os.environ.get("ORT_PYTHON", sys.executable)
ORT = r'''
import sys, numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[3]); so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
feed = {i.name: np.random.default_rng(2).uniform(-1, 1, [d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32) for i in s.get_inputs()}
for _ in range(int(sys.argv[2])): s.run(None, feed)
'''
def task_clock(cmd):
    r = subprocess.run(["perf", "stat", "-x", ",", "-e", "task-clock"] + cmd, capture_output=True, text=True)
    for line in r.stderr.splitlines():
        if "task-clock" in line:
            return float(line.split(",")[0])  # msec
    raise RuntimeError(r.stderr[-2000:])
def per_run(cmd_for, n0, n1):
    return (task_clock(cmd_for(n1)) - task_clock(cmd_for(n0))) / (n1 - n0)
args = sys.argv[1:]
rounds = 2
if "--rounds" in args:
    i = args.index("--rounds"); rounds = int(args[i + 1]); del args[i:i + 2]
threads = 1
if "--threads" in args:
    i = args.index("--threads"); threads = int(args[i + 1]); del args[i:i + 2]
model, kilns = args[0], args[1:]
n0, n1 = 20, 220
res = {k: [] for k in kilns + ["ort"]}
for _ in range(rounds):
    for k in kilns:
        res[k].append(per_run(lambda n: [k, "bench", model, "--iters", str(n), "--threads", str(threads), "--json"], n0, n1))
    res["ort"].append(per_run(lambda n: [PY, "-c", ORT, model, str(n + 10), str(threads)], n0, n1))
print(os.path.basename(model), " | ".join(f"{os.path.basename(k)}: " + " / ".join(f"{v:.3f}" for v in vs) for k, vs in res.items()))
