#!/usr/bin/env python3
"""Where a model's time goes, kiln step by step beside ONNX Runtime's per-node profile.

    python tools/bench/profile_vs_ort.py --kiln target/release/kiln MODEL.onnx [--kiln-model M.json]
        [--threads 1] [--iters 30] [--top 40] [--inputs DIR]

kiln: `kiln bench --profile --json` (median per step over --iters runs). ONNX Runtime: its own
profiler (`enable_profiling`, the median per node over --iters runs after 3 warm-ups), all graph
optimisations on, intra-op threads = --threads. Inputs: DIR/in_<i>.npy (a tools/real_models export)
when given, else seeded normal values (i64 inputs: zeros) for both systems, with any dynamic
dimension set to 1.

ORT nodes are matched to kiln steps by name: an ORT node is a fusion or a layout variant of one
ONNX node (its name starts with that node's name, or it is named after an output with `_nchwc`),
and a kiln step names the nodes it computes ("X + epilogue fused[a, b]"). Each kiln step's row has
the ORT time of every ORT node that maps to one of its nodes. Nodes the optimiser of either system
made up (kiln's folded weights, ORT's reorders) stay unmatched and are listed apart, so the totals
of both systems are shown in full. A second pass gives a still unmatched ORT node to the step
naming a node whose name extends its own or is extended by it ("X" and "X.matmul"). Use --kiln-model when kiln reads another file of the same
graph (the zoo's kiln JSON beside bench/peers' ONNX export).
"""

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort


def ort_profile(path, feeds, threads, iters):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for _ in range(3 + iters):
        sess.run(None, feeds)
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[(e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"))].append(e["dur"] / 1000)
    # The first 3 runs are warm-up: keep the last `iters` samples of each node.
    return {k: statistics.median(v[-iters:]) for k, v in per_node.items()}


def inputs_for(model, inputs_dir):
    feeds = {}
    init = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in init]
    rng = np.random.default_rng(0)
    for n, i in enumerate(graph_inputs):
        if inputs_dir and os.path.exists(os.path.join(inputs_dir, f"in_{n}.npy")):
            feeds[i.name] = np.load(os.path.join(inputs_dir, f"in_{n}.npy"))
            continue
        t = i.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim]
        if t.elem_type == onnx.TensorProto.INT64:
            feeds[i.name] = np.zeros(shape, np.int64)
        elif t.elem_type == onnx.TensorProto.BOOL:
            feeds[i.name] = np.ones(shape, bool)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def kiln_profile(binary, model, feeds, threads, iters):
    folder = tempfile.mkdtemp()
    args = []
    for name, value in feeds.items():
        path = os.path.join(folder, f"{len(args)}.npy")
        np.save(path, value)
        args += ["--input", f"{name}={path}"]
    cmd = [binary, "bench", model, *args, "--threads", str(threads), "--iters", str(iters), "--profile", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"kiln bench failed: {out.stderr.strip()[-500:]}")


def step_nodes(label):
    """The node names a kiln step label lists: "X", "X + epilogue Y", "X + epilogue fused[a, b]",
    "X + clamp Y" (a fused tail of a host kernel)."""
    parts = re.split(r" \+ (?:epilogue|clamp) ", label)
    names = [parts[0]]
    for epi in parts[1:]:
        if epi.startswith("fused[") and epi.endswith("]"):
            names += epi[len("fused["):-1].split(", ")
        else:
            names.append(epi)
    return names


def ort_owner(name, nodes_by_len, producer):
    """The ONNX node an ORT profile entry computes (None for nodes ORT made up)."""
    if name.startswith("fused "):
        name = name[len("fused "):]
    for suffix in ("_nchwc",):
        if name.endswith(suffix) and name[: -len(suffix)] in producer:
            return producer[name[: -len(suffix)]]
    if name in producer.values():
        return name
    for n in nodes_by_len:
        if name.startswith(n) and (len(name) == len(n) or name[len(n)] in "/_ "):
            return n
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", help="the ONNX file ORT runs (and kiln, unless --kiln-model)")
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--kiln-model", help="the file kiln runs, when not the ONNX file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--top", type=int, default=40, help="rows of the per-step table (costliest kiln steps)")
    ap.add_argument("--inputs", help="a folder with in_<i>.npy for the graph inputs in order")
    args = ap.parse_args()

    model = onnx.load(args.onnx, load_external_data=False)
    producer = {o: n.name for n in model.graph.node for o in n.output}
    nodes_by_len = sorted({n.name for n in model.graph.node if n.name}, key=len, reverse=True)
    feeds = inputs_for(model, args.inputs)
    kiln = kiln_profile(args.kiln, args.kiln_model or args.onnx, feeds, args.threads, args.iters)
    orts = ort_profile(args.onnx, feeds, args.threads, args.iters)

    ort_by_node = collections.defaultdict(float)
    unmatched_ort = collections.defaultdict(float)
    for (name, op), ms in orts.items():
        owner = ort_owner(name, nodes_by_len, producer)
        if owner is None:
            unmatched_ort[op] += ms
        else:
            ort_by_node[owner] += ms
    claimed = set()
    rows = []
    for step in kiln["profile"]:
        nodes = [n for n in step_nodes(step["node"]) if n in ort_by_node and n not in claimed]
        claimed.update(nodes)
        rows.append((step["median_ms"], sum(ort_by_node[n] for n in nodes) if nodes else None, step["what"], step["node"]))
    # Second pass: names either optimiser derived from another (kiln's "X.matmul" for a folded
    # BatchNorm X, ORT's MatMul "X.matmul" of kiln's fused Add "X") go to the step naming the stem.
    for i, (k, o, what, label) in enumerate(rows):
        stems = step_nodes(label)
        extra = [n for n in ort_by_node if n not in claimed
                 and any(n.startswith(s + ".") or s.startswith(n + ".") for s in stems)]
        if extra:
            claimed.update(extra)
            rows[i] = (k, (o or 0) + sum(ort_by_node[n] for n in extra), what, label)
    left_ort = {n: ms for n, ms in ort_by_node.items() if n not in claimed}

    kiln_total = sum(r[0] for r in rows)
    ort_total = sum(orts.values())
    matched = [(k, o) for k, o, _, _ in rows if o]
    print(f"# {args.onnx}, {args.threads} thread(s), isa {kiln.get('isa')}: kiln median {kiln['median_ms']:.3f} ms "
          f"(sum of steps {kiln_total:.3f}), ORT sum of nodes {ort_total:.3f} ms")
    print(f"matched steps: kiln {sum(k for k, _ in matched):.3f} ms, ORT {sum(o for _, o in matched):.3f} ms")
    print(f"\n{'kiln ms':>8} {'ORT ms':>8} {'ratio':>6}  step")
    for k, o, what, node in sorted(rows, key=lambda r: -r[0])[: args.top]:
        ratio = f"{k / o:6.2f}" if o else "     -"
        print(f"{k:8.4f} {o if o else float('nan'):8.4f} {ratio}  {what[:34]:34s} {node[:100]}")
    by_what = collections.defaultdict(float)
    for k, o, what, _ in rows:
        if not o:
            by_what[what.split(" (")[0]] += k
    print("\nkiln steps with no ORT node, by kind: " + ", ".join(f"{w} {ms:.3f}" for w, ms in sorted(by_what.items(), key=lambda x: -x[1])))
    print("ORT nodes with no kiln step: " + ", ".join(f"{n} {ms:.3f}" for n, ms in sorted(left_ort.items(), key=lambda x: -x[1])[:12]))
    print("ORT nodes of no ONNX node, by op: " + ", ".join(f"{op} {ms:.3f}" for op, ms in sorted(unmatched_ort.items(), key=lambda x: -x[1])))


if __name__ == "__main__":
    main()
