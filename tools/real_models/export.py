#!/usr/bin/env python3
"""Export the real-model suite to ONNX and record ONNX Runtime's outputs.

Every model is built from its library's own code (torchvision, timm, transformers, diffusers) with
random weights from a fixed seed: nothing is downloaded. Configurations are small where the
architecture stays the same (fewer layers, narrower widths), shapes are static and the batch is 1.
Each model is exported with both torch exporters — the TorchScript one (`dynamo=False`, "ts") and
the dynamo one ("dynamo") — and the ONNX package's nine light CNNs (opset 9) are copied as they
ship ("shipped").

For each (model, exporter) the output directory gets `<model>.<exporter>/` holding model.onnx, one
seeded input per graph input (in_<k>.npy), ONNX Runtime's outputs (ort_<k>.npy) and meta.json (the
file names of each input and output, op counts by type, opset, export time). An export that fails is
recorded in `<out>/export_status.json` with the first line of its error, and the suite goes on.

Usage: python export.py OUT_DIR [--only NAME,NAME...] [--exporters ts,dynamo,shipped]

The full-size models of issue 13 (FLAGSHIP: resnet50_224, mobilenet_v2_224, vit_base_224,
bert_base, gpt2_small) are exported only when named with --only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import shutil
import sys
import time
import traceback
import warnings

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort

SEED = 0

# ---------------------------------------------------------------------------------------------
# Inputs. Every input is made from a seed derived from the model's name, so one model's inputs
# do not change when another model is added.


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng([SEED, sum(name.encode()) * 7919 + len(name)])


def image(name: str, h: int, w: int, c: int = 3):
    return {"pixel_values": rng_for(name).standard_normal((1, c, h, w)).astype(np.float32)}


def tokens(name: str, vocab: int, n: int, mask: bool, pad: int = 0):
    """Token ids (int64) and, if `mask`, an attention mask whose last `pad` positions are padding."""
    ids = rng_for(name).integers(0, vocab, size=(1, n), dtype=np.int64)
    out = {"input_ids": ids}
    if mask:
        m = np.ones((1, n), dtype=np.int64)
        if pad:
            m[:, n - pad :] = 0
        out["attention_mask"] = m
    return out


# ---------------------------------------------------------------------------------------------
# The models. Each builder returns (torch module in eval mode, {input name: numpy array}); the
# module's forward takes the inputs positionally in that order and returns a tensor or a tuple.


def tv(arch: str, size: int, **kw):
    def build():
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None, **kw)
        return model, image(arch, size, size)

    return build


def timm_model(arch: str, size: int, **kw):
    def build():
        import timm

        model = timm.create_model(arch, pretrained=False, **kw)
        return model, image(arch, size, size)

    return build


def _wrap(module, fn):
    """A module whose forward returns plain tensors (transformers/diffusers return output objects)."""
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *args):
            return fn(self.inner, *args)

    return Wrapper()


def bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64)
    m = BertModel(cfg)
    return _wrap(m, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask).last_hidden_state), tokens(
        "bert", 1000, 16, True, pad=3)


def distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                           max_position_embeddings=64)
    m = DistilBertModel(cfg)
    return _wrap(m, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask).last_hidden_state), tokens(
        "distilbert", 1000, 16, True, pad=3)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                     bos_token_id=0, eos_token_id=0)
    m = GPT2LMHeadModel(cfg)
    # The attention mask is given for the same reason as llama's (see there).
    return _wrap(m, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask, use_cache=False).logits), tokens(
        "gpt2", 1000, 16, True)


def t5_encoder():
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=1000, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                   feed_forward_proj="gated-gelu")
    m = T5EncoderModel(cfg)
    return _wrap(m, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask).last_hidden_state), tokens(
        "t5_encoder", 1000, 16, True, pad=3)


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    # RMSNorm, rotary embeddings, SwiGLU and grouped-query attention (4 query heads, 2 kv heads).
    cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      use_cache=False)
    m = LlamaForCausalLM(cfg)
    # With the attention mask given (as a user exporting for generation would), transformers does
    # not look for packed sequences (aten::diff, which the TorchScript exporter cannot write).
    return _wrap(m, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask, use_cache=False).logits), tokens(
        "llama", 1000, 16, True)


def whisper_encoder():
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    # The encoder needs exactly 2 * max_source_positions mel frames; 100 positions keep it small.
    cfg = WhisperConfig(vocab_size=1000, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                        decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, num_mel_bins=80, max_source_positions=100)
    m = WhisperEncoder(cfg)
    x = rng_for("whisper").standard_normal((1, 80, 200)).astype(np.float32)
    return _wrap(m, lambda m, x: m(input_features=x).last_hidden_state), {"input_features": x}


def wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    # The base model's feature encoder (7 strided Conv1d, GroupNorm on the first) with narrow
    # channels, and its grouped positional convolution (kernel 128, 16 groups).
    cfg = Wav2Vec2Config(vocab_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=128,
                         num_conv_pos_embedding_groups=16, feat_extract_norm="group",
                         do_stable_layer_norm=False)
    m = Wav2Vec2Model(cfg)
    x = rng_for("wav2vec2").standard_normal((1, 4000)).astype(np.float32)
    return _wrap(m, lambda m, x: m(input_values=x).last_hidden_state), {"input_values": x}


def unet():
    import torch
    from diffusers import UNet2DModel

    m = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                    block_out_channels=(32, 64), norm_num_groups=8,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                    up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    x = rng_for("unet").standard_normal((1, 3, 32, 32)).astype(np.float32)
    t = np.array([10], dtype=np.int64)
    return _wrap(m, lambda m, x, t: m(x, t).sample), {"sample": x, "timestep": t}


def vae_decoder():
    from diffusers import AutoencoderKL

    m = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                      block_out_channels=(32, 64), norm_num_groups=8,
                      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                      sample_size=32)
    z = rng_for("vae_decoder").standard_normal((1, 4, 16, 16)).astype(np.float32)
    return _wrap(m, lambda m, z: m.decode(z).sample), {"latent": z}


def liven(module, feeds: dict[str, np.ndarray]):
    """Make random-initialised weights exercise every op with values of order one.

    Library initialisations are made for training, not for checking a compiler: heads and layer
    scales start at zero (timm's MLP-Mixer outputs exactly 0), BatchNorm is the identity, and deep
    CNNs then shrink activations to 1e-14 (torchvision's EfficientNet), where any answer is within
    1e-3·max(1, |ref|). So: every floating-point parameter whose values are all equal (zeros, ones,
    a constant) gets seeded noise of 0.1·max(|value|, 1), and every BatchNorm's running statistics
    are set, in one eval-mode pass over the model's own input, to the mean and variance of what
    reaches it (over all but the channel axis), as a calibration on real data would.
    """
    import torch

    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point() and p.numel() > 0 and bool((p == p.flatten()[0]).all()):
                scale = 0.1 * max(float(p.flatten()[0].abs()), 1.0)
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return

    def calibrate(bn, args):
        x = args[0].detach().to(torch.float64)
        dims = [d for d in range(x.dim()) if d != 1]
        if x.numel() // x.shape[1] > 1:
            mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        else:
            # One value per channel (a BatchNorm1d head at batch 1): centre nothing, scale to
            # the channels' common magnitude.
            mean = torch.zeros(x.shape[1], dtype=torch.float64)
            var = (x * x).mean().expand(x.shape[1])
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))

    hooks = [bn.register_forward_pre_hook(calibrate) for bn in norms if bn.track_running_stats]
    try:
        with torch.no_grad():
            module(*(torch.from_numpy(v) for v in feeds.values()))
    finally:
        for h in hooks:
            h.remove()


MODELS = {
    # torchvision image CNNs, at 96×96 (every stride still gives at least 3×3 at the end).
    "resnet18": tv("resnet18", 96),
    "mobilenet_v2": tv("mobilenet_v2", 96),
    "mobilenet_v3_small": tv("mobilenet_v3_small", 96),
    "efficientnet_b0": tv("efficientnet_b0", 96),
    "regnet_y_400mf": tv("regnet_y_400mf", 96),
    "densenet121": tv("densenet121", 96),
    "shufflenet_v2": tv("shufflenet_v2_x0_5", 96),
    "squeezenet1_1": tv("squeezenet1_1", 96),
    # timm normalization-heavy vision models
    "convnext_atto": timm_model("convnext_atto", 96),
    "poolformer_s12": timm_model("poolformer_s12", 96),
    "levit_128s": timm_model("levit_128s", 224),
    "nf_resnet26": timm_model("nf_resnet26", 96),
    "regnetz_b16_evos": timm_model("regnetz_b16_evos", 96),
    "swin_tiny": timm_model("swin_tiny_patch4_window7_224", 224, embed_dim=32, depths=(1, 1, 2, 1),
                            num_heads=(1, 2, 4, 8)),
    "vit_tiny": timm_model("vit_tiny_patch16_224", 96, img_size=96),
    "mixer_s16": timm_model("mixer_s16_224", 96, img_size=96),
    # transformers, from configs
    "bert": bert,
    "distilbert": distilbert,
    "gpt2": gpt2,
    "t5_encoder": t5_encoder,
    "llama": llama,
    "whisper_encoder": whisper_encoder,
    "wav2vec2": wav2vec2,
    # diffusers
    "unet": unet,
    "vae_decoder": vae_decoder,
}

def bert_base():
    from transformers import BertConfig, BertModel

    m = BertModel(BertConfig())  # bert-base-uncased's shape: 12 layers, 768 wide, 30522 tokens
    return _wrap(m, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask).last_hidden_state), tokens(
        "bert_base", 30522, 128, True, pad=16)


def gpt2_small():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(use_cache=False))  # gpt2 (124M): 12 layers, 768 wide, 50257 tokens
    return _wrap(m, lambda m, ids, mask: m(input_ids=ids, attention_mask=mask, use_cache=False).logits), tokens(
        "gpt2_small", 50257, 64, True)


# Issue 13's full-size models (the "done when" list), exported only when named with --only: they
# are 100-500 MB each and take minutes to export, so CI's suite keeps the small configurations.
FLAGSHIP = {
    "resnet50_224": tv("resnet50", 224),
    "mobilenet_v2_224": tv("mobilenet_v2", 224),
    "vit_base_224": timm_model("vit_base_patch16_224", 224),
    "bert_base": bert_base,
    "gpt2_small": gpt2_small,
}

LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
         "squeezenet", "vgg19", "zfnet512"]


def file_name_for(tensor_name: str) -> str:
    """kiln's --output-dir file name for a tensor (src/main.rs `file_name_for`)."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in tensor_name)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()

    def walk(graph):
        for node in graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            counts[key] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return dict(sorted(counts.items()))


def save_case(case_dir: str, model_path: str, feeds: dict[str, np.ndarray], export_s: float, exporter: str):
    """Run ONNX Runtime on model.onnx with `feeds`, save inputs, outputs and meta.json."""
    model = onnx.load(model_path)
    graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    # The exporters may drop an input the traced graph does not use, or rename inputs: feed in the
    # graph's order, matching names first and then position.
    given = list(feeds.items())
    inputs = {}
    for k, name in enumerate(graph_inputs):
        value = feeds.get(name)
        if value is None:
            value = given[k][1]
        inputs[name] = value
    outputs = sess.run(None, inputs)
    meta = {"exporter": exporter, "inputs": {}, "outputs": {}, "export_s": round(export_s, 2),
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "ops": op_counts(model), "nodes": sum(op_counts(model).values())}
    for k, (name, value) in enumerate(inputs.items()):
        f = f"in_{k}.npy"
        np.save(os.path.join(case_dir, f), value)
        meta["inputs"][name] = f
    for k, (out, value) in enumerate(zip(sess.get_outputs(), outputs)):
        f = f"ort_{k}.npy"
        np.save(os.path.join(case_dir, f), np.asarray(value))
        meta["outputs"][out.name] = {"ref": f, "kiln": file_name_for(out.name) + ".npy",
                                     "absmax": float(np.max(np.abs(value))) if np.size(value) else 0.0,
                                     "std": float(np.std(value)) if np.size(value) else 0.0}
    with open(os.path.join(case_dir, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__


def export_one(name: str, build, exporter: str, out: str) -> str | None:
    """Export one model with one exporter; None on success, else the error's first line."""
    import torch

    case_dir = os.path.join(out, f"{name}.{exporter}")
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    path = os.path.join(case_dir, "model.onnx")
    try:
        torch.manual_seed(SEED)
        module, feeds = build()
        module.eval()
        liven(module, feeds)
        args = tuple(torch.from_numpy(v) for v in feeds.values())
        start = time.time()
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            with torch.no_grad():
                if exporter == "ts":
                    torch.onnx.export(module, args, path, dynamo=False, input_names=list(feeds),
                                      do_constant_folding=True)
                else:
                    prog = torch.onnx.export(module, args, dynamo=True, input_names=list(feeds),
                                             external_data=False)
                    prog.save(path, external_data=False)
        export_s = time.time() - start
        save_case(case_dir, path, feeds, export_s, exporter)
    except Exception as exc:  # noqa: BLE001 — an export failure is a result to record
        with open(os.path.join(case_dir, "export_error.txt"), "w") as fh:
            fh.write(traceback.format_exc())
        return first_line(exc)
    return None


def copy_light(name: str, out: str) -> str | None:
    """A light CNN as the ONNX package ships it, with the runner's input (arange / n, as
    onnx.backend.test.runner does for these models) and its shipped expected output."""
    src = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    case_dir = os.path.join(out, f"light_{name}.shipped")
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    path = os.path.join(case_dir, "model.onnx")
    try:
        shutil.copy(os.path.join(src, f"light_{name}.onnx"), path)
        model = onnx.load(path)
        inits = {t.name for t in model.graph.initializer}
        feeds = {}
        for x in model.graph.input:
            if x.name in inits:
                continue
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in x.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            feeds[x.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
        save_case(case_dir, path, feeds, 0.0, "shipped")
        # The shipped expected output, kept beside ORT's: check.py compares kiln with ORT, and ORT
        # with the shipped one, so a wrong reference cannot hide.
        shipped = onnx.numpy_helper.to_array(onnx.load_tensor(os.path.join(src, f"light_{name}_output_0.pb")))
        np.save(os.path.join(case_dir, "shipped_0.npy"), shipped)
    except Exception as exc:  # noqa: BLE001
        with open(os.path.join(case_dir, "export_error.txt"), "w") as fh:
            fh.write(traceback.format_exc())
        return first_line(exc)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--exporters", default="ts,dynamo,shipped")
    args = ap.parse_args()
    only = {n for n in args.only.split(",") if n}
    exporters = [e for e in args.exporters.split(",") if e]
    os.makedirs(args.out, exist_ok=True)
    status_path = os.path.join(args.out, "export_status.json")
    status = {}
    if os.path.exists(status_path):
        with open(status_path) as fh:
            status = json.load(fh)

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for name, build in [*MODELS.items(), *FLAGSHIP.items()]:
        if (only and name not in only) or (name in FLAGSHIP and name not in only):
            continue
        for exporter in [e for e in exporters if e in ("ts", "dynamo")]:
            start = time.time()
            err = export_one(name, build, exporter, args.out)
            key = f"{name}.{exporter}"
            status[key] = "ok" if err is None else f"export-error: {err}"
            print(f"{key:32} {time.time() - start:6.1f}s  {status[key]}", flush=True)
            with open(status_path, "w") as fh:
                json.dump(status, fh, indent=1, sort_keys=True)
    if "shipped" in exporters:
        for name in LIGHT:
            if only and f"light_{name}" not in only:
                continue
            err = copy_light(name, args.out)
            key = f"light_{name}.shipped"
            status[key] = "ok" if err is None else f"export-error: {err}"
            print(f"{key:32} {status[key]}", flush=True)
    with open(status_path, "w") as fh:
        json.dump(status, fh, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
