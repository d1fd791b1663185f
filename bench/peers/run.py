#!/usr/bin/env python3
"""kiln against ONNX Runtime, OpenVINO and tract on the same ONNX files (see README.md here).

    python3 bench/peers/run.py                  # everything: build, models, runs, report, profiles
    python3 bench/peers/run.py --rounds 1 --iters 2 --only gemm_512 selu_mlp   # a quick check
    python3 bench/peers/run.py --suite real     # the real-model suite (tools/real_models exports)

Steps: make the pinned venv (bench/peers/.venv) and re-run inside it; build `peers-runner` (release);
write the zoo's ONNX twins (tools/zoo/generate.py --all-onnx, into bench/peers/work/zoo) and the
micro-models; write every model's inputs once (.npy, the same files for the three systems); then for
each round, model and thread count, run kiln, ONNX Runtime and tract one process each, in an order
that rotates every round; compare outputs; write bench/peers/results/{peers.json,peers.csv,
ratios.svg} and the marked section of docs/benchmarks.md; profile kiln (perf) where it is slower.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
VENV = os.path.join(HERE, ".venv")
WORK = os.path.join(HERE, "work")
RESULTS = os.path.join(HERE, "results")
DOC = os.path.join(REPO, "docs", "benchmarks.md")
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
ALL_SYSTEMS = ("kiln", "ort", "openvino", "tract")
# The systems of this run (--systems), kiln first; PEERS are the others.
SYSTEMS = ALL_SYSTEMS
PEERS = ALL_SYSTEMS[1:]
LABEL = {"kiln": "kiln", "ort": "ONNX Runtime", "openvino": "OpenVINO", "tract": "tract"}
SHORT = {"kiln": "kiln", "ort": "ORT", "openvino": "OV", "tract": "tract"}
RUNNER_SCRIPT = {"ort": "ort_runner.py", "openvino": "ov_runner.py"}
# Each suite has its own results files and its own marked section of docs/benchmarks.md.
SUITES = ("zoo", "real", "all")

# Outputs agree when max|x - ref| / max(1, |ref|) <= TOL. Ten times the zoo's golden tolerance
# (tools/zoo: 1e-4, f64 numpy vs f32 engines on small models): here the three engines sum in f32 in
# different orders over long reductions (GEMM K up to 3072, softmax rows of 2^20, convolutions with
# K = 576), and the *_bench models are deeper. A real bug (wrong op, wrong axis) is off by O(1).
TOL = 1e-3

MICRO = ("gemm_512", "conv3x3_bn_relu", "softmax_256x4096", "softmax_8x1m", "layernorm_4096x768")


def ensure_venv():
    """Re-executes this script in bench/peers/.venv, created from requirements.txt if missing."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        print(f"creating {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "target"))


def runner_path():
    return os.path.join(target_dir(), "release", "peers-runner")


def build_runner():
    print("building peers-runner (release)", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=HERE, check=True)


# ---------------------------------------------------------------------------------------------
# Models


def write_micro_models(out):
    """The micro-models, opset 18, weights inline; inputs N(0, 1), seed fixed per model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(out, exist_ok=True)
    made = {}

    def save(name, nodes, inputs, outputs, inits, feeds):
        graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="kiln-peers")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(out, f"{name}.onnx")
        onnx.save(model, path)
        made[name] = (path, feeds)

    def vi(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    rng = np.random.default_rng(512)
    w = (rng.standard_normal((512, 512)) / np.sqrt(512)).astype(np.float32)
    save(
        "gemm_512",
        [helper.make_node("MatMul", ["a", "w"], ["y"])],
        [vi("a", [512, 512])],
        [vi("y", [512, 512])],
        [("w", w)],
        {"a": rng.standard_normal((512, 512)).astype(np.float32)},
    )

    rng = np.random.default_rng(56)
    cw = (rng.standard_normal((64, 64, 3, 3)) / np.sqrt(64 * 9)).astype(np.float32)
    cb = (0.1 * rng.standard_normal(64)).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(64)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(64)).astype(np.float32)
    mean = (0.1 * rng.standard_normal(64)).astype(np.float32)
    var = (1 + 0.1 * np.abs(rng.standard_normal(64))).astype(np.float32)
    save(
        "conv3x3_bn_relu",
        [
            helper.make_node("Conv", ["x", "cw", "cb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], epsilon=1e-5),
            helper.make_node("Relu", ["n"], ["y"]),
        ],
        [vi("x", [1, 64, 56, 56])],
        [vi("y", [1, 64, 56, 56])],
        [("cw", cw), ("cb", cb), ("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)],
        {"x": rng.standard_normal((1, 64, 56, 56)).astype(np.float32)},
    )

    for name, shape, seed in (("softmax_256x4096", [256, 4096], 4096), ("softmax_8x1m", [8, 1 << 20], 20)):
        rng = np.random.default_rng(seed)
        save(
            name,
            [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
            [vi("x", shape)],
            [vi("y", shape)],
            [],
            {"x": rng.standard_normal(shape).astype(np.float32)},
        )

    rng = np.random.default_rng(768)
    save(
        "layernorm_4096x768",
        [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1, epsilon=1e-5)],
        [vi("x", [4096, 768])],
        [vi("y", [4096, 768])],
        [
            ("scale", (1 + 0.1 * rng.standard_normal(768)).astype(np.float32)),
            ("bias", (0.1 * rng.standard_normal(768)).astype(np.float32)),
        ],
        {"x": rng.standard_normal((4096, 768)).astype(np.float32)},
    )
    return made


def prepare_real_models(only, real_dir):
    """The real-model suite's cases (tools/real_models: `.ci/real-models` writes them to
    target/real-models): [(case, onnx path, inputs dir, None)]; outputs are checked system against
    system (each case's ort_*.npy is ONNX Runtime's own output)."""
    if not os.path.isdir(real_dir):
        raise SystemExit(f"{real_dir} does not exist: run .ci/real-models (or give --real-dir)")
    models = []
    for case in sorted(os.listdir(real_dir)):
        meta_path = os.path.join(real_dir, case, "meta.json")
        if not os.path.exists(meta_path) or (only and case not in only and case.split(".")[0] not in only):
            continue
        with open(meta_path) as f:
            meta = json.load(f)
        inputs = os.path.join(WORK, "inputs", case)
        shutil.rmtree(inputs, ignore_errors=True)
        os.makedirs(inputs)
        for name, f in meta["inputs"].items():
            if "/" in name or name.startswith("."):
                raise SystemExit(f"{case}: input name {name!r} cannot be a file name")
            shutil.copy(os.path.join(real_dir, case, f), os.path.join(inputs, f"{name}.npy"))
        models.append((case, os.path.join(real_dir, case, "model.onnx"), inputs, None))
    return models


def prepare_models(only):
    """[(name, onnx path, inputs dir, golden dir or None)] in report order."""
    import numpy as np

    zoo_out = os.path.join(WORK, "zoo")
    print("writing the zoo's ONNX twins (tools/zoo/generate.py --all-onnx)", flush=True)
    subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "zoo", "generate.py"), "--all-onnx", "--no-ort", "--out", zoo_out],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # The committed twins must be these very files (the generator is deterministic). Files the
    # generator does not write (dynamic_batch.onnx, the batch-size test's model) are not twins.
    committed = os.path.join(REPO, "models", "onnx")
    for f in sorted(os.listdir(committed)):
        if f.endswith(".onnx") and os.path.exists(os.path.join(zoo_out, "onnx", f)):
            with open(os.path.join(committed, f), "rb") as a, open(os.path.join(zoo_out, "onnx", f), "rb") as b:
                if a.read() != b.read():
                    raise SystemExit(f"models/onnx/{f} differs from the regenerated twin: run tools/zoo/generate.py")
    names = sorted(f[: -len(".onnx")] for f in os.listdir(os.path.join(zoo_out, "onnx")))
    bench = [n for n in names if n.endswith("_bench")]
    small = [n for n in names if not n.endswith("_bench")]
    models = []
    for name in bench + small:
        if only and name not in only:
            continue
        path = os.path.join(zoo_out, "onnx", f"{name}.onnx")
        inputs = os.path.join(zoo_out, name, "inputs")
        golden = os.path.join(zoo_out, name, "golden")
        if not os.path.isdir(inputs):
            # *_bench models ship no inputs: kiln's default inputs (seeded N(0, 1), i64 zeros), on
            # which their statistics were calibrated, written once and read by all three systems.
            inputs = os.path.join(WORK, "inputs", name)
            shutil.rmtree(inputs, ignore_errors=True)
            r = subprocess.run([runner_path(), "inputs", "--model", path, "--out", inputs], capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"{name}: cannot write default inputs: {r.stdout}{r.stderr}")
        models.append((name, path, inputs, golden if os.path.isdir(golden) else None))
    micro = write_micro_models(os.path.join(WORK, "micro"))
    for name in MICRO:
        if only and name not in only:
            continue
        path, feeds = micro[name]
        inputs = os.path.join(WORK, "inputs", name)
        shutil.rmtree(inputs, ignore_errors=True)
        os.makedirs(inputs)
        for k, v in feeds.items():
            np.save(os.path.join(inputs, f"{k}.npy"), v)
        models.append((name, path, inputs, None))
    return models


# ---------------------------------------------------------------------------------------------
# Running


def run_one(system, model_path, inputs, threads, iters, warmup, out):
    """One process; returns its JSON line plus the driver's wall time."""
    if system in RUNNER_SCRIPT:
        cmd = [sys.executable, os.path.join(HERE, RUNNER_SCRIPT[system])]
    else:
        cmd = [runner_path(), "run", "--system", system]
    cmd += ["--threads", str(threads), "--iters", str(iters), "--warmup", str(warmup)]
    cmd += ["--model", model_path, "--inputs", inputs]
    if out:
        shutil.rmtree(out, ignore_errors=True)
        cmd += ["--out", out]
    env = dict(os.environ)
    # Keep every library to the thread count under test (OpenMP / BLAS pools of numpy, rayon).
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), RAYON_NUM_THREADS=str(threads))
    start = time.perf_counter()
    # Peak memory is the runner's own VmHWM (read at exit): the kernel resets it at exec, whereas
    # wait4's ru_maxrss would also count the pages of this driver's fork before the exec.
    proc = subprocess.run(cmd, capture_output=True, env=env)
    wall = time.perf_counter() - start
    line = None
    for text in reversed(proc.stdout.decode(errors="replace").splitlines()):
        if text.startswith("{"):
            line = json.loads(text)
            break
    if line is None:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        line = {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    line["wall_s"] = wall
    return line


def short_error(msg, n=110):
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[: n - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Checking outputs


def scaled_error(x, ref):
    import numpy as np

    if x.shape != ref.shape:
        return float("inf")
    x = x.astype(np.float64)
    ref = ref.astype(np.float64)
    if x.size == 0:
        return 0.0
    err = np.abs(x - ref) / np.maximum(1.0, np.abs(ref))
    err = np.where(np.isnan(x) & np.isnan(ref), 0.0, err)
    return float(np.nan_to_num(err, nan=np.inf).max())


def load_outputs(d):
    import numpy as np

    if not d or not os.path.isdir(d):
        return None
    files = sorted((f for f in os.listdir(d) if f.endswith(".npy")), key=lambda f: int(f[:-4]))
    return [np.load(os.path.join(d, f)) for f in files]


def check(outs, golden_dir, names):
    """{system: (ok, error, against)} for one model and thread count.

    With a golden (the zoo's float64 numpy reference): a system is right when every output is
    within TOL of it. Without (bench and micro models): when it agrees with at least one other
    system; a lone system is 'unverified' and its speed is not reported as a ratio.
    """
    import numpy as np

    verdict = {}
    if golden_dir:
        ref = [np.load(os.path.join(golden_dir, f"{n}.npy")) for n in names]
        for s, o in outs.items():
            if o is None:
                continue
            if len(o) != len(ref):
                verdict[s] = (False, float("inf"), "golden")
                continue
            e = max(scaled_error(a, b) for a, b in zip(o, ref))
            verdict[s] = (e <= TOL, e, "golden")
        return verdict
    ran = [s for s in SYSTEMS if outs.get(s) is not None]
    for s in ran:
        best, against = float("inf"), None
        for p in ran:
            if p == s or len(outs[p]) != len(outs[s]):
                continue
            e = max(scaled_error(a, b) for a, b in zip(outs[s], outs[p]))
            if e < best:
                best, against = e, p
        verdict[s] = (best <= TOL, best, against) if against else (None, None, None)
    return verdict


# ---------------------------------------------------------------------------------------------
# Report


def median(xs):
    return statistics.median(xs) if xs else None


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except OSError:
        pass

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO).stdout.strip()
        except OSError:
            return "?"

    import numpy
    import onnxruntime
    import openvino

    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            fl = next((line for line in f if line.startswith("flags")), "")
            flags = " ".join(x.upper() for x in ("avx2", "fma", "avx512f") if f" {x}" in fl)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cores": os.cpu_count(),
        "mem_mib": mem,
        "kernel": platform.release(),
        "commit": out(["git", "rev-parse", "--short", "HEAD"]),
        "dirty": bool(out(["git", "status", "--porcelain", "--untracked-files=no"])),
        "rustc": out(["rustc", "--version"]),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.__version__.split("-")[0],
        "numpy": numpy.__version__,
        "tract": "tract-onnx 0.23.9",
        "load_start": os.getloadavg(),
    }


def fmt_ms(x):
    if x is None:
        return "–"
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def summarise(models, runs, verdicts, threads_list):
    """Rows: one per (model, threads) with per-system medians, verdicts and ratios."""
    rows = []
    for name, *_ in models:
        for t in threads_list:
            row = {"model": name, "threads": t}
            for s in SYSTEMS:
                rs = [r for r in runs if r["model"] == name and r["threads"] == t and r["system"] == s]
                errors = [r["error"] for r in rs if "error" in r]
                ok = [r for r in rs if "error" not in r]
                v = verdicts.get((name, t), {}).get(s)
                cell = {
                    "runs": len(rs),
                    "error": short_error(errors[0]) if errors and not ok else None,
                    "median_ms": median([x for r in ok for x in r["iter_ms"]]),
                    "compile_ms": median([r["compile_ms"] for r in ok]),
                    "rss_peak_mib": median([r["rss_peak_kb"] / 1024 for r in ok]),
                    "rss_start_mib": median([r["rss_start_kb"] / 1024 for r in ok]),
                    "verified": v[0] if v else None,
                    "max_err": v[1] if v else None,
                    "checked_against": v[2] if v else None,
                }
                row[s] = cell
            for p in PEERS:
                k, q = row["kiln"], row[p]
                good = k["verified"] and q["verified"] and k["median_ms"] and q["median_ms"]
                row[f"ratio_{p}"] = k["median_ms"] / q["median_ms"] if good else None
            rows.append(row)
    return rows


def cell_text(c):
    if c["error"]:
        return f"error: {c['error'].replace('|', '/')}"
    if c["median_ms"] is None:
        return "–"
    if c["verified"] is False:
        return f"wrong (err {c['max_err']:.1e})"
    if c["verified"] is None:
        return f"{fmt_ms(c['median_ms'])} (unverified)"
    return fmt_ms(c["median_ms"])


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        head = ["model", "threads"]
        for s in SYSTEMS:
            head += [f"{s}_ms", f"{s}_compile_ms", f"{s}_rss_peak_mib", f"{s}_verified", f"{s}_max_err", f"{s}_error"]
        head += [f"kiln_over_{p}" for p in PEERS]
        w.writerow(head)
        for r in rows:
            line = [r["model"], r["threads"]]
            for s in SYSTEMS:
                c = r[s]
                line += [c["median_ms"], c["compile_ms"], c["rss_peak_mib"], c["verified"], c["max_err"], c["error"]]
            line += [r[f"ratio_{p}"] for p in PEERS]
            w.writerow(line)


def write_svg(rows, path):
    """Horizontal bars of kiln/peer on a log axis (1× in the middle): one group per model."""
    import math

    series = [(p, t) for t in sorted({r["threads"] for r in rows}) for p in PEERS]
    colors = {
        ("ort", 1): "#1f77b4",
        ("ort", 2): "#9ecae9",
        ("openvino", 1): "#2ca02c",
        ("openvino", 2): "#98df8a",
        ("tract", 1): "#d62728",
        ("tract", 2): "#f4a6a6",
    }
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["threads"]): r for r in rows}
    bar, gap, left, width, top = 8, 8, 190, 520, 40
    lo, hi = -4.0, 4.0  # log2 range: 1/16× .. 16×
    height = top + len(models) * (len(series) * bar + gap) + 40

    def x_of(ratio):
        v = min(hi, max(lo, math.log2(ratio)))
        return left + (v - lo) / (hi - lo) * width

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">kiln time ÷ peer time (log scale; left of 1× = kiln faster)</text>',
    ]
    for k in range(int(lo), int(hi) + 1):
        x = x_of(2.0**k)
        label = f"{2**k:g}×" if k >= 0 else f"1/{2**-k:g}×"
        stroke = "#000" if k == 0 else "#ddd"
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 30}" stroke="{stroke}"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 16}" text-anchor="middle">{label}</text>')
    y = top
    for m in models:
        out.append(f'<text x="{left - 6}" y="{y + len(series) * bar / 2 + 4:.1f}" text-anchor="end">{m}</text>')
        for p, t in series:
            r = by.get((m, t))
            ratio = r and r[f"ratio_{p}"]
            if ratio:
                x0, x1 = x_of(1.0), x_of(ratio)
                a, b = min(x0, x1), max(x0, x1)
                out.append(
                    f'<rect x="{a:.1f}" y="{y}" width="{max(b - a, 1):.1f}" height="{bar - 1}" '
                    f'fill="{colors.get((p, t), "#888")}"><title>{m}, {LABEL[p]}, {t} thread(s): {ratio:.2f}×</title></rect>'
                )
                # The value beside the bar's outer end.
                tx, anchor = (b + 2, "start") if x1 >= x0 else (a - 2, "end")
                out.append(f'<text x="{tx:.1f}" y="{y + bar - 1}" font-size="7" text-anchor="{anchor}">{ratio:.2f}</text>')
            else:
                out.append(f'<text x="{x_of(1.0) + 3:.1f}" y="{y + bar - 1}" font-size="8" fill="#888">n/a</text>')
            y += bar
        y += gap
    lx = left
    for p, t in series:
        out.append(f'<rect x="{lx}" y="{top - 18}" width="10" height="8" fill="{colors.get((p, t), "#888")}"/>')
        out.append(f'<text x="{lx + 13}" y="{top - 10}">{LABEL[p]}, {t} thr</text>')
        lx += 120
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def geomean(xs):
    import math

    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def markers(suite):
    """The docs section of a suite: the zoo keeps the original markers."""
    if suite == "zoo":
        return BEGIN, END
    return f"<!-- peers-{suite}:begin -->", f"<!-- peers-{suite}:end -->"


def markdown(rows, info, args, profiles):
    suite = args.get("suite", "zoo")
    begin, end = markers(suite)
    peers = [p for p in PEERS if any(r.get(p) for r in rows)]
    systems = ["kiln"] + peers
    labels = [LABEL[p] for p in peers]
    names = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
    title = {"zoo": "", "real": " on the real-model suite", "all": " (zoo, micro-models and real-model suite)"}[suite]
    lines = [begin, "", f"## kiln against {names}{title}", ""]
    lines.append(
        f"Generated by `python3 bench/peers/run.py{' ' + ' '.join(args['argv']) if args['argv'] else ''}` "
        f"on {info['date']} (took {info['elapsed_s'] / 60:.0f} min); do not edit by hand, rerun it."
    )
    lines.append("")
    lines.append(
        f"Machine: {info['cpu']} ({info['cpu_flags']}), {info['cores']} cores, {info['mem_mib'] / 1024:.0f} GiB, "
        f"Linux {info['kernel']}; load average {info['load_start'][0]:.1f} at the start and "
        f"{info['load_end'][0]:.1f} at the end. kiln {info['commit']}{' (uncommitted changes)' if info['dirty'] else ''}"
        f" (JIT backend, -O2, kernels for {info.get('kiln_isa', '?')}, {info['rustc']}), {info['tract']} (`into_optimized`, "
        f"`multithread-mm` executor), onnxruntime {info['onnxruntime']} (CPU provider, ORT_ENABLE_ALL, "
        f"intra-op threads = N, inter-op 1, sequential), OpenVINO {info.get('openvino', '?')} (CPU plugin, "
        f"f32 precision hint, 1 stream, N inference threads, latency hint), Python {info['python']}, "
        f"numpy {info['numpy']}. Systems in this run: {', '.join(LABEL[s] for s in systems)}."
    )
    lines.append("")
    if info["load_start"][0] > 0.5 or info["load_end"][0] > 0.5:
        lines.append(
            "**The machine was not idle during this run** (see the load averages): other processes shared "
            "the two cores, which inflates times, penalises 2 threads most (a woken worker may wait for a "
            "core) and adds noise between rounds. Rerun on an idle machine before drawing conclusions."
        )
        lines.append("")
    lines.append(
        f"Method: every model is one ONNX file, read by every system, with the same `.npy` inputs. "
        f"Each measurement is a fresh process: load + compile, {args['warmup']} warm-up run(s), then {args['iters']} "
        f"timed runs. {args['rounds']} round(s); within a round every model runs at each thread count in "
        f"each system, one process after the other, the systems' order rotating every round. Times are "
        f"medians over all timed runs of all rounds (ms per inference); ratio = kiln ÷ peer (below 1: kiln "
        f"faster). Outputs of the first round are compared: with a zoo golden (float64 numpy) every "
        f"system must be within {TOL:g}·max(1, |golden|) of it; otherwise a system must agree with another "
        f"within that bound. A wrong or unverified output gets no ratio."
    )
    lines.append("")
    lines.append(
        "Per measurement the driver runs `peers-runner run --system kiln|tract --threads N "
        f"--iters {args['iters']} --warmup {args['warmup']} --model F.onnx --inputs DIR` (release build of "
        f"bench/peers) or `python bench/peers/ort_runner.py|ov_runner.py --threads N --iters {args['iters']} "
        f"--warmup {args['warmup']} --model F.onnx --inputs DIR`; the ONNX files are "
        + (
            "`tools/zoo/generate.py --all-onnx` output (bench/peers/work/zoo/onnx, identical to models/onnx "
            "where committed) and the micro-models written by run.py"
            if suite != "real"
            else ""
        )
        + (" and " if suite == "all" else "")
        + (
            "the real-model suite's exports (tools/real_models, written by `.ci/real-models` to "
            "target/real-models; docs/models.md lists them)"
            if suite != "zoo"
            else ""
        )
        + "."
    )
    lines.append("")
    lines.append("Geometric mean of kiln ÷ peer over the models with a ratio:")
    lines.append("")
    for t in sorted({r["threads"] for r in rows}):
        parts = []
        for p in peers:
            rs = [r[f"ratio_{p}"] for r in rows if r["threads"] == t and r.get(f"ratio_{p}")]
            g = geomean(rs)
            parts.append(f"{LABEL[p]} {fmt_ratio(g)} over {len(rs)} models" if g else f"{LABEL[p]} –")
        lines.append(f"- {t} thread(s): " + "; ".join(parts) + ".")
    lines.append("")
    head = ["model", "thr"] + [f"{SHORT[s]} ms" for s in systems] + [f"kiln/{SHORT[p]}" for p in peers]
    head.append("max err " + " / ".join(SHORT[s] for s in systems))
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        errs = " / ".join("–" if r[s]["max_err"] is None else f"{r[s]['max_err']:.0e}" for s in systems)
        cells = [r["model"], str(r["threads"])] + [cell_text(r[s]) for s in systems]
        cells += [fmt_ratio(r[f"ratio_{p}"]) for p in peers] + [errs]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"![kiln/peer time ratio per model](../bench/peers/results/{result_name(suite, 'ratios.svg')})")
    lines.append("")
    lines.append(
        "Compile time (kiln: ONNX load + optimise + JIT; ONNX Runtime: creating the InferenceSession "
        "from the file; tract: load + `into_optimized` + `into_runnable`) and peak RSS (VmHWM of the "
        "process, so it includes each runtime's own baseline: for ONNX Runtime the Python interpreter "
        "with numpy and onnxruntime imported, shown as 'base'), at 1 thread, medians over rounds:"
    )
    lines.append("")
    head = ["model"] + [f"compile ms {SHORT[s]}" for s in systems]
    head += [f"peak RSS MiB {SHORT[s]}" + (" (base)" if s in RUNNER_SCRIPT else "") for s in systems]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    t1 = min(r["threads"] for r in rows) if rows else 1

    def rss(c, base=False):
        if c["rss_peak_mib"] is None:
            return "–"
        return f"{c['rss_peak_mib']:.0f} ({c['rss_start_mib']:.0f})" if base else f"{c['rss_peak_mib']:.0f}"

    for r in rows:
        if r["threads"] != t1:
            continue
        cells = [r["model"]] + [fmt_ms(r[s]["compile_ms"]) for s in systems]
        cells += [rss(r[s], s in RUNNER_SCRIPT) for s in systems]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("### Where kiln is slower: profiles")
    lines.append("")
    if profiles:
        lines.append(
            "`perf record` (cpu-clock sampling) of one kiln process at 1 thread running the model in a "
            "loop, recording from 1.5× its compile time on (so: the runs); `perf report --sort dso,symbol`, "
            "self time. kiln's "
            "generated kernels live in anonymous JIT memory that perf cannot name: their samples are "
            "summed as **JIT kernels** (every elementwise / row kernel kiln generates, with the fused GEMM "
            "epilogues). Host code appears by name: `gemm_f32::…` is the `gemm` crate (MatMul, Gemm and "
            "the convolutions' GEMM), `Executable::conv::{{closure}}` is the convolution's im2col and bias "
            "fill (inlined there), `AxisCopy` kiln's strided copies (Transpose, Concat, Slice…); `__memmove…` in the "
            "micro-models is the copy of each output out of kiln's arena into the returned tensor. Shares "
            "are grouped into classes first, then the top symbols."
        )
        lines.append("")
        lines.extend(profiles)
        lines.append("")
    else:
        lines.append("No profile taken in this run (kiln was not slower, or `--no-profile`).")
        lines.append("")
    lines.append(end)
    return "\n".join(lines)


def result_name(suite, name):
    """results/NAME for the zoo suite (as before), results/NAME with -SUITE before the extension otherwise."""
    if suite == "zoo":
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}-{suite}{ext}"


def update_doc(section, suite):
    begin, end = markers(suite)
    with open(DOC) as f:
        text = f.read()
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(DOC, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------
# Profiles


def profile_kiln(name, path, inputs, median_ms, compile_ms, seconds):
    """Top self-time symbols of kiln on one model (perf, 1 thread); None when perf is unavailable."""
    perf = shutil.which("perf")
    if not perf:
        return None
    data = os.path.join(WORK, "perf", f"{name}.data")
    os.makedirs(os.path.dirname(data), exist_ok=True)
    # Enough iterations for ~`seconds` of run time, from the measured median.
    iters = max(3, int(seconds * 1e3 / max(median_ms, 1e-3)))
    # Sampling starts after loading and compiling (1.5× the measured compile time), so the profile
    # is of the runs; perf's -D delays the start of recording.
    delay = int(1.5 * compile_ms + 100)
    cmd = [perf, "record", "-F", "999", "-e", "cpu-clock", "-D", str(delay), "-o", data, "--"]
    cmd += [runner_path(), "run", "--system", "kiln"]
    cmd += ["--threads", "1", "--iters", str(iters), "--warmup", "0", "--model", path, "--inputs", inputs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return f"perf record failed: {short_error(r.stderr)}"
    rep = subprocess.run(
        [perf, "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,symbol", "--percent-limit", "0.5"],
        capture_output=True,
        text=True,
    )
    rows = []
    for line in rep.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "%" not in line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        pct, dso, sym = parts[0].rstrip("%"), parts[1], parts[2]
        try:
            pct = float(pct)
        except ValueError:
            continue
        # perf appends empty columns ("-") after the symbol for events without branch data.
        sym = re.sub(r"(\s+-)+\s*$", "", sym.replace("[.] ", "").replace("[k] ", "")).strip()
        if dso.startswith("[JIT]") or dso in ("[unknown]", "//anon", "[anon]") or sym.startswith("0x"):
            sym, dso = "JIT kernels", "(anonymous)"
        rows.append((pct, dso, sym))
    merged = {}
    for pct, dso, sym in rows:
        key = (dso, sym[:90])
        merged[key] = merged.get(key, 0.0) + pct
    top = sorted(merged.items(), key=lambda kv: -kv[1])[:6]
    groups = {}
    for (dso, sym), pct in merged.items():
        g = category(dso, sym)
        groups[g] = groups.get(g, 0.0) + pct
    return top, sorted(groups.items(), key=lambda kv: -kv[1])


def category(dso, sym):
    """Coarse cost classes, so that the profile says what to work on next."""
    if sym == "JIT kernels":
        return "JIT kernels (elementwise, row ops, fused epilogues)"
    if sym.startswith(("gemm_", "gemm::")) or "::gemm" in sym:
        return "GEMM (gemm crate)"
    if "Executable::conv" in sym:
        return "convolution im2col + bias fill"
    if "AxisCopy" in sym or "memmove" in sym or "memcpy" in sym:
        return "copies (AxisCopy, memcpy)"
    if dso == "[kernel.kallsyms]" or any(k in sym for k in ("malloc", "free", "memset", "page")):
        return "allocation and page faults"
    return "other"


# ---------------------------------------------------------------------------------------------


def render(result, no_doc):
    """Writes peers.csv, ratios.svg and (unless no_doc) the docs section from a result."""
    rows = result["rows"]
    suite = result["args"].get("suite", "zoo")
    global SYSTEMS, PEERS
    SYSTEMS = tuple(s for s in ALL_SYSTEMS if any(s in r for r in rows)) or ALL_SYSTEMS
    PEERS = SYSTEMS[1:]
    write_csv(rows, os.path.join(RESULTS, result_name(suite, "peers.csv")))
    write_svg(rows, os.path.join(RESULTS, result_name(suite, "ratios.svg")))
    section = markdown(rows, result["machine"], result["args"], result["profiles"])
    if not no_doc:
        update_doc(section, suite)
    return section


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10, help="timed runs per process")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="*", help="model names (zoo names, " + ", ".join(MICRO) + " or real cases)")
    ap.add_argument("--suite", choices=SUITES, default="zoo", help="zoo + micro-models (default), real, or all")
    ap.add_argument("--real-dir", default=os.path.join(REPO, "target", "real-models"), help="the real-model exports")
    ap.add_argument("--systems", nargs="+", choices=ALL_SYSTEMS[1:], default=list(ALL_SYSTEMS[1:]), help="peers to run")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--profile-seconds", type=float, default=3.0)
    ap.add_argument(
        "--report-only", action="store_true", help="re-render csv, svg and docs from results/peers.json, run nothing"
    )
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    global SYSTEMS, PEERS
    SYSTEMS = ("kiln",) + tuple(s for s in ALL_SYSTEMS[1:] if s in args.systems)
    PEERS = SYSTEMS[1:]
    if args.report_only:
        # Pure Python: no venv, no build, no runs; the numbers are the last run's.
        with open(os.path.join(RESULTS, result_name(args.suite, "peers.json"))) as f:
            print(render(json.load(f), args.no_doc))
        return 0
    ensure_venv()
    t_start = time.time()
    if not args.no_build:
        build_runner()
    only = set(args.only) if args.only else None
    models = []
    if args.suite in ("zoo", "all"):
        models += prepare_models(only)
    if args.suite in ("real", "all"):
        models += prepare_real_models(only, os.path.abspath(args.real_dir))
    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runs = []
    outs = {}
    n = 0
    total = args.rounds * len(models) * len(args.threads) * len(SYSTEMS)
    for rnd in range(args.rounds):
        k = rnd % len(SYSTEMS)
        order = SYSTEMS[k:] + SYSTEMS[:k]
        for name, path, inputs, _golden in models:
            for t in args.threads:
                for s in order:
                    n += 1
                    out = os.path.join(WORK, "outputs", name, f"{s}-{t}") if rnd == 0 else None
                    r = run_one(s, path, inputs, t, args.iters, args.warmup, out)
                    r.update(model=name, system=s, threads=t, round=rnd)
                    runs.append(r)
                    if s == "kiln" and r.get("isa"):
                        info["kiln_isa"] = r["isa"]
                    if rnd == 0:
                        outs[(name, t, s)] = (out, r.get("outputs"))
                    status = f"error: {short_error(r['error'], 70)}" if "error" in r else f"{median(r['iter_ms']):.3f} ms"
                    print(f"[{n}/{total}] round {rnd} {name} {s} t={t}: {status}", flush=True)
    verdicts = {}
    for name, _path, _inputs, golden in models:
        for t in args.threads:
            loaded = {}
            names = None
            for s in SYSTEMS:
                d, onames = outs.get((name, t, s), (None, None))
                ok = not any("error" in r for r in runs if (r["model"], r["threads"], r["system"], r["round"]) == (name, t, s, 0))
                loaded[s] = load_outputs(d) if ok else None
                if s == "ort" and onames:
                    names = onames
            if golden and names is None:
                names = next((o for (m, tt, s), (_, o) in outs.items() if m == name and tt == t and o), None)
            verdicts[(name, t)] = check(loaded, golden if names else None, names)
    rows = summarise(models, runs, verdicts, args.threads)
    info["load_end"] = os.getloadavg()

    profiles = []
    if not args.no_profile:
        for r in rows:
            if r["threads"] != min(args.threads):
                continue
            slower = [p for p in PEERS if r[f"ratio_{p}"] and r[f"ratio_{p}"] > 1.0]
            if not slower:
                continue
            m = next(x for x in models if x[0] == r["model"])
            print(f"profiling kiln on {m[0]}", flush=True)
            top = profile_kiln(m[0], m[1], m[2], r["kiln"]["median_ms"], r["kiln"]["compile_ms"], args.profile_seconds)
            vs = ", ".join(f"{fmt_ratio(r[f'ratio_{p}'])} {LABEL[p]}" for p in slower)
            if top is None:
                profiles.append(f"- **{m[0]}** (kiln {vs}): perf not available.")
            elif isinstance(top, str):
                profiles.append(f"- **{m[0]}** (kiln {vs}): {top}")
            else:
                top, groups = top
                by_class = ", ".join(f"{g} {pct:.0f}%" for g, pct in groups if pct >= 1)
                items = "; ".join(f"`{sym}` {pct:.0f}%" for (dso, sym), pct in top)
                profiles.append(f"- **{m[0]}** (kiln {vs}): {by_class}. Top symbols: {items}.")
    info["elapsed_s"] = time.time() - t_start

    os.makedirs(RESULTS, exist_ok=True)
    # Every run's raw times are kept (rounded to 0.1 µs), so that the report can be re-rendered.
    for r in runs:
        if "iter_ms" in r:
            r["iter_ms"] = [round(x, 4) for x in r["iter_ms"]]
    result = {"machine": info, "args": vars(args), "tolerance": TOL, "rows": rows, "runs": runs, "profiles": profiles}
    with open(os.path.join(RESULTS, result_name(args.suite, "peers.json")), "w") as f:
        json.dump(result, f, separators=(",", ":"))
    section = render(result, args.no_doc)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
