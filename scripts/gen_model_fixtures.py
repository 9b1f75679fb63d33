#!/usr/bin/env python3
"""Ground-truth fixtures of whole tiny models under PyTorch eager static quantization.

Builds two tiny graph models (`resnet_tiny`, `mobilenet_tiny`) with seeded random weights and
non-trivial BatchNorm statistics, exports the float, unfused eval model to ONNX, and for each
quantized engine (`qnnpack`, `x86`) runs PyTorch eager static quantization (fuse_modules,
prepare, calibrate, convert) and records every quantization point of the converted model:

    tests/data/models/<model>/
        model.onnx            float unfused model (TorchScript exporter, opset 17, static shapes;
                              the exporter folds BN into Conv with its own formula)
        model_bn.onnx         the same with training=TrainingMode.PRESERVE: BN nodes kept
        input.npy             float32 [2, C, H, W]: the input the quantized model is run on
        calib.npy             float32 [4, 2, C, H, W]: calibration batches, in order
        float_output.npy      float32: PyTorch's float (unquantized, unfused) output on input.npy
        ort_output.npy        float32: onnxruntime's output of model.onnx on input.npy
        README.md             what is where, export facts (BN folding, fused-weight check)
        <engine>/points.json  quantization points in execution order, qparams, observers, weights
        <engine>/<point>.npy  uint8 int_repr() of the point's output tensor on input.npy
        <engine>/<point>.weight.npy  int8 int_repr() of a conv/linear weight
        <engine>/<point>.bias.npy    float32 bias of a conv/linear (after BN fusion)
        <engine>/output.npy   float32: the converted model's final (dequantized) output

    tests/data/models/observer_placement.json: which module types get an observer from eager
        `prepare`, and their converted output qparams (QuantStub -> Conv2d -> module), per engine.

Point names are PyTorch module names with '.' replaced by '_'; the quantized graph input is
`quant` (the QuantStub). See docs/models.md for the format and the placement rules observed.

The x86 engine's inference is also re-run (same converted model, saved with torch.save) in
subprocesses under ATEN_CPU_CAPABILITY=avx2 / =default and FBGEMM_ENABLE_INSTRUCTIONS=AVX2;
points whose ints change are listed in points.json (`isa_dependent_points`).

Usage: python3 scripts/gen_model_fixtures.py [--out tests/data/models]
Needs torch and onnx (pip install onnx; onnxruntime optional). Single-threaded, deterministic.
"""

import argparse
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.ao.nn.quantized as nnq
from torch.ao.quantization import DeQuantStub, QuantStub
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.nn.quantized.modules.linear import LinearPackedParams

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

ENGINES = ["qnnpack", "x86"]
BATCH, N_CALIB = 2, 4


def f32(x):
    return float(np.float32(x))


# ---------------------------------------------------------------- models
class ConvBN(nn.Sequential):
    """conv-BN(-ReLU) as a Sequential with children 0 (conv), 1 (bn), 2 (relu, optional)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if relu:
            # ReLU, not ReLU6: eager fuse_modules fuses (Conv2d, BatchNorm2d, ReLU) only.
            layers.append(nn.ReLU())
        super().__init__(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = ConvBN(cin, cout, 1, stride, relu=False)
        self.skip_add = FloatFunctional()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.skip_add.add_relu(out, identity)

    def fuse_groups(self, prefix):
        g = [[f"{prefix}conv1", f"{prefix}bn1", f"{prefix}relu1"], [f"{prefix}conv2", f"{prefix}bn2"]]
        if self.downsample is not None:
            g.append([f"{prefix}downsample.0", f"{prefix}downsample.1"])
        return g


class ResNetTiny(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(16, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.fc(self.flatten(self.avgpool(x)))
        return self.dequant(x)

    def fuse_groups(self):
        return ([["conv1", "bn1", "relu"]] + self.layer1.fuse_groups("layer1.")
                + self.layer2.fuse_groups("layer2."))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            ConvBN(cin, hidden, 1),                       # expand 1x1
            ConvBN(hidden, hidden, 3, stride, hidden),    # depthwise 3x3
            ConvBN(hidden, cout, 1, relu=False),          # project 1x1 (linear bottleneck)
        )
        if self.use_res:
            self.skip_add = FloatFunctional()

    def forward(self, x):
        if self.use_res:
            return self.skip_add.add(x, self.conv(x))
        return self.conv(x)

    def fuse_groups(self, prefix):
        return [[f"{prefix}conv.0.0", f"{prefix}conv.0.1", f"{prefix}conv.0.2"],
                [f"{prefix}conv.1.0", f"{prefix}conv.1.1", f"{prefix}conv.1.2"],
                [f"{prefix}conv.2.0", f"{prefix}conv.2.1"]]


class MobileNetTiny(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.quant = QuantStub()
        self.stem = ConvBN(3, 8, 3, 1)
        self.block1 = InvertedResidual(8, 8, 1, 2)
        self.block2 = InvertedResidual(8, 12, 2, 2)
        self.branch_a = ConvBN(12, 8, 1)
        self.branch_b = ConvBN(12, 8, 3)
        self.cat = FloatFunctional()
        self.pool = nn.AvgPool2d(2)
        self.block3 = InvertedResidual(16, 16, 1, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(16, num_classes)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.block2(self.block1(self.stem(x)))
        x = self.cat.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = self.block3(self.pool(x))
        x = self.fc(self.flatten(self.avgpool(x)))
        return self.dequant(x)

    def fuse_groups(self):
        return ([["stem.0", "stem.1", "stem.2"]] + self.block1.fuse_groups("block1.")
                + self.block2.fuse_groups("block2.") + self.block3.fuse_groups("block3.")
                + [["branch_a.0", "branch_a.1", "branch_a.2"], ["branch_b.0", "branch_b.1", "branch_b.2"]])


MODELS = {
    "resnet_tiny": (ResNetTiny, (3, 16, 16), 1001),
    "mobilenet_tiny": (MobileNetTiny, (3, 16, 16), 2002),
}


def build(name):
    cls, _, seed = MODELS[name]
    torch.manual_seed(seed)
    m = cls()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=g) * 1.0 + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.3)
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
            elif isinstance(mod, nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (1.0 / mod.in_features) ** 0.5)
                mod.bias.copy_(torch.randn(mod.out_features, generator=g) * 0.1)
    return m.eval()


def data(name):
    _, chw, seed = MODELS[name]
    g = torch.Generator().manual_seed(seed + 2)
    calib = torch.randn((N_CALIB, BATCH) + chw, generator=g)
    x = torch.randn((BATCH,) + chw, generator=g)
    return x, calib


# ---------------------------------------------------------------- ONNX
def export_onnx(model, x, path, keep_bn=False):
    """TorchScript exporter (dynamo=False), constant folding, opset 17, static shapes. With
    keep_bn, training=TrainingMode.PRESERVE: the eval-mode Conv+BN fold (eval_peephole, run
    only for TrainingMode.EVAL) is skipped and BatchNormalization nodes stay."""
    f = io.BytesIO()
    kw = {"training": torch.onnx.TrainingMode.PRESERVE} if keep_bn else {}
    torch.onnx.export(model, (x,), f, dynamo=False, do_constant_folding=True, opset_version=17,
                      input_names=["input"], output_names=["logits"], **kw)
    with open(path, "wb") as out:
        out.write(f.getvalue())
    import onnx
    return onnx.load_from_string(f.getvalue())


def onnx_index(model):
    """Groups ONNX nodes by scope: node names of the TorchScript exporter are
    `/<scope>/.../<scope>/<Op>[_k]`; returns ({scope path: [nodes]}, producer, readers)."""
    by_scope, producer, readers = {}, {}, {}
    for n in model.graph.node:
        if n.name.startswith("/"):
            by_scope.setdefault(n.name.rsplit("/", 1)[0], []).append(n)
        else:  # e.g. Identity_0 aliasing equal initializers
            assert n.op_type == "Identity", f"unexpected node name {n.name}"
        for o in n.output:
            producer[o] = n
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return by_scope, producer, readers


def scope_of(qualname):
    """The exporter's scope path of a module (observed on torch 2.15): one component per module
    level, the attribute name, except that a numbered child (of a Sequential) is named
    `<parent component>.<index>`: `block1.conv.0.0` -> `/block1/conv/conv.0/conv.0.0`."""
    comps = []
    for part in qualname.split("."):
        comps.append(f"{comps[-1]}.{part}" if part.isdigit() and comps else part)
    return "/" + "/".join(comps)


def onnx_value(idx, group, expect_ops, graph_input, ff=False):
    """The ONNX value holding the output of a point whose original (unfused) modules are
    `group` (in order), as squint sees it after its fusions: the output of the last node of the
    chain (a BN folded by the exporter leaves none). A FloatFunctional's op is not called through
    forward, so its nodes carry the scope of the module that calls it (the owner's parent):
    there the candidates are the chains of `expect_ops`; `ff` returns all of them, the caller
    picks by value."""
    by_scope, producer, readers = idx
    if group == ["quant"]:
        return [(graph_input, [])]
    if ff:
        parent = group[0].rsplit(".", 1)[0] if "." in group[0] else ""
        scope = scope_of(parent) if parent else ""
        cands = []
        for n in by_scope.get(scope, []):
            if n.op_type != expect_ops[0]:
                continue
            chain = [n]
            for op in expect_ops[1:]:
                r = readers.get(chain[-1].output[0], [])
                if len(r) != 1 or r[0].op_type != op:
                    break
                chain.append(r[0])
            if [c.op_type for c in chain] == expect_ops:
                cands.append((chain[-1].output[0], [c.name for c in chain]))
        assert cands, f"no {expect_ops} chain in scope {scope!r} for {group}"
        return cands
    nodes = [n for mod in group for n in by_scope.get(scope_of(mod), [])]
    assert nodes, f"no ONNX node for {group}"
    ops = [n.op_type for n in nodes]
    assert ops == expect_ops, f"{group}: ONNX ops {ops}, expected {expect_ops}"
    # the nodes must form a chain: each reads the previous one's output, which nothing else reads
    for a, b in zip(nodes, nodes[1:]):
        assert a.output[0] in b.input, f"{group}: {b.name} does not read {a.name}"
        assert len(readers.get(a.output[0], [])) == 1, f"{group}: {a.output[0]} read elsewhere"
    return [(nodes[-1].output[0], [n.name for n in nodes])]


def ort_all_values(path, x):
    """Every node output of the ONNX model, computed by onnxruntime (None without it)."""
    try:
        import onnxruntime as rt
    except ImportError:
        return None
    import onnx
    m = onnx.load(path)
    have = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o not in have:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
    sess = rt.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    vals = dict(zip(names, sess.run(None, {"input": x.numpy()})))
    vals["input"] = x.numpy()
    return vals


def float_module_outputs(float_model, x):
    """Float outputs of every leaf module (and of each FloatFunctional, through its
    activation_post_process Identity) of the unfused float model, by module name."""
    outs, hooks = {}, []
    for name, mod in float_model.named_modules():
        if name.endswith(".activation_post_process") or len(list(mod.children())) == 0:
            key = name[: -len(".activation_post_process")] if name.endswith(".activation_post_process") else name
            hooks.append(mod.register_forward_hook(lambda _m, i, o, k=key: outs.__setitem__(k, o.detach().numpy())))
    with torch.no_grad():
        float_model(x)
    for h in hooks:
        h.remove()
    return outs


# ---------------------------------------------------------------- BN folding check
def fused_weight_check(float_model, onnx_model, fuse_groups):
    """Compares the exporter's Conv weights/biases (BN folded by the exporter) with PyTorch's
    fuse_modules result (fuse_conv_bn_weights) in float32."""
    from onnx import numpy_helper
    fused = torch.ao.quantization.fuse_modules(copy.deepcopy(float_model), fuse_groups)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx_model.graph.initializer}
    by_scope, _, _ = onnx_index(onnx_model)
    rep = {"weights": 0, "weights_differ": 0, "w_max_abs_diff": 0.0, "w_max_ulp": 0,
           "biases": 0, "biases_differ": 0, "b_max_abs_diff": 0.0, "b_max_ulp": 0, "per_conv": {}}
    for group in fuse_groups:
        conv = [n for n in by_scope[scope_of(group[0])] if n.op_type == "Conv"][0]
        fm = fused.get_submodule(group[0])
        fm = fm[0] if isinstance(fm, nn.Sequential) else fm
        w_pt = fm.weight.detach().numpy().astype(np.float32)
        b_pt = fm.bias.detach().numpy().astype(np.float32)
        w_ox, b_ox = inits[conv.input[1]], inits[conv.input[2]]
        assert w_ox.shape == w_pt.shape and b_ox.shape == b_pt.shape
        # the exporter's own fold (torch/csrc/jit/passes/onnx/eval_peephole.cpp, fuseConvBatchNorm):
        # s = gamma / sqrt(var + eps); w' = w * s; b' = beta - mean * s (conv without bias)
        conv_m, bn_m = float_model.get_submodule(group[0]), float_model.get_submodule(group[1])
        with torch.no_grad():
            sc = bn_m.weight.div(bn_m.running_var.add(bn_m.eps).sqrt())
            w_ex = conv_m.weight.clone()
            for i in range(w_ex.shape[0]):
                w_ex[i] = w_ex[i].mul(sc[i])
            assert conv_m.bias is None
            b_ex = bn_m.bias.sub(bn_m.running_mean.mul(sc))
        rep["exporter_formula_exact"] = rep.get("exporter_formula_exact", True) and bool(
            np.array_equal(w_ex.numpy(), w_ox) and np.array_equal(b_ex.numpy(), b_ox))
        ulp = lambda a, b: int(np.max(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))))
        dw, db = np.abs(w_ox - w_pt), np.abs(b_ox - b_pt)
        rep.setdefault("_onnx_w", {})[group[0]] = (w_ox, b_ox)
        rep["per_conv"][group[0]] = {"weights_differ": int((w_ox != w_pt).sum()), "of": int(w_pt.size),
                                     "biases_differ": int((b_ox != b_pt).sum()), "of_b": int(b_pt.size)}
        rep["weights"] += w_pt.size
        rep["weights_differ"] += int((w_ox != w_pt).sum())
        rep["w_max_abs_diff"] = max(rep["w_max_abs_diff"], float(dw.max()))
        rep["w_max_ulp"] = max(rep["w_max_ulp"], ulp(w_ox, w_pt))
        rep["biases"] += b_pt.size
        rep["biases_differ"] += int((b_ox != b_pt).sum())
        rep["b_max_abs_diff"] = max(rep["b_max_abs_diff"], float(db.max()))
        rep["b_max_ulp"] = max(rep["b_max_ulp"], ulp(b_ox, b_pt))
    return rep


def bn_params_check(float_model, om_bn):
    """model_bn.onnx holds PyTorch's own conv weights and BN parameters, bit for bit (so that
    fuse_conv_bn_weights on them gives PyTorch eager's fused weights)."""
    from onnx import numpy_helper
    consts = {t.name: numpy_helper.to_array(t) for t in om_bn.graph.initializer}
    for n in om_bn.graph.node:  # Identity aliases of equal initializers
        if n.op_type == "Identity" and n.input[0] in consts:
            consts[n.output[0]] = consts[n.input[0]]
    by_scope, producer, _ = onnx_index(om_bn)
    checked = 0
    for group in float_model.fuse_groups():
        conv = float_model.get_submodule(group[0])
        bn = float_model.get_submodule(group[1])
        [cn] = [n for n in by_scope[scope_of(group[0])] if n.op_type == "Conv"]
        [bnn] = [n for n in by_scope[scope_of(group[1])] if n.op_type == "BatchNormalization"]
        assert np.array_equal(consts[cn.input[1]], conv.weight.detach().numpy())
        for inp, t in zip(bnn.input[1:], (bn.weight, bn.bias, bn.running_mean, bn.running_var)):
            assert np.array_equal(consts[inp], t.detach().numpy()), (group, inp)
        eps = [a.f for a in bnn.attribute if a.name == "epsilon"][0]
        assert np.float32(eps) == np.float32(bn.eps)
        checked += 1
    return {"convs_checked": checked, "exact": True}


# ---------------------------------------------------------------- quantization
def sanitize(name):
    return name.replace(".", "_")


def fbgemm_isa():
    env = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS")
    if env:
        return {"AVX512_E1": "AVX512_VNNI"}.get(env, env)
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return "unknown"
    if "avx512_vnni" in flags:
        return "AVX512_VNNI"
    if all(f in flags for f in ["avx512f", "avx512bw", "avx512dq", "avx512vl"]):
        return "AVX512"
    return "AVX2" if "avx2" in flags else "unknown"


def observer_desc(obs):
    return {"observer": type(obs).__name__, "dtype": str(obs.dtype).replace("torch.", ""),
            "qscheme": str(obs.qscheme).replace("torch.", ""),
            "quant_min": int(obs.quant_min), "quant_max": int(obs.quant_max),
            "reduce_range": bool(obs.reduce_range)}


def quantize_model(float_model, calib, engine, fuse_groups):
    torch.backends.quantized.engine = engine
    m = copy.deepcopy(float_model).eval()
    m.qconfig = torch.ao.quantization.get_default_qconfig(engine)
    torch.ao.quantization.fuse_modules(m, fuse_groups, inplace=True)
    torch.ao.quantization.prepare(m, inplace=True)
    # every module that owns an observer after prepare (rule evidence: nothing else has one)
    observed = {}
    for name, mod in m.named_modules():
        if hasattr(mod, "activation_post_process") and not isinstance(mod.activation_post_process, nn.Identity):
            observed[name] = observer_desc(mod.activation_post_process)
    with torch.no_grad():
        for b in calib:
            m(b)
    for name in observed:
        obs = m.get_submodule(name).activation_post_process
        observed[name]["calib_min"] = f32(obs.min_val)
        observed[name]["calib_max"] = f32(obs.max_val)
    wobs, aobs = m.qconfig.weight(), m.qconfig.activation()
    torch.ao.quantization.convert(m, inplace=True)
    return m, observed, {"activation": observer_desc(aobs), "weight": observer_desc(wobs)}


def trace_points(qmodel, x):
    """Runs the converted model on x; returns (points, final output) where points are the
    quantized outputs of leaf modules in execution order (forward hooks). A QFunctional is seen
    through its `activation_post_process` (nn.Identity) child, which its add/add_relu/cat call
    on their result; fused-away modules (nn.Identity) are skipped."""
    rec, hooks = [], []
    for name, mod in qmodel.named_modules():
        if isinstance(mod, nn.Identity) and name.endswith(".activation_post_process"):
            owner = name[: -len(".activation_post_process")]
            kind = type(qmodel.get_submodule(owner)).__name__
            hooks.append(mod.register_forward_hook(
                lambda _m, i, o, n=owner, k=kind: rec.append((n, k, o, i))))
        elif (all(isinstance(c, LinearPackedParams) for c in mod.children())
              and not isinstance(mod, nn.Identity)):
            # leaf modules; a quantized Linear keeps its packed weight in a child module
            hooks.append(mod.register_forward_hook(
                lambda _m, i, o, n=name, k=type(mod).__name__: rec.append((n, k, o, i))))
    with torch.no_grad():
        y = qmodel(x)
    for h in hooks:
        h.remove()
    return rec, y


# What the converted modules are in ONNX (after squint's fusions), keyed by the PyTorch type.
def expect_onnx_ops(kind, group, qfunc_op=None):
    if kind in ("ConvReLU2d",):
        return ["Conv", "Relu"]
    if kind == "Conv2d":
        return ["Conv"]
    if kind == "Linear":
        return ["Gemm"]
    if kind == "QFunctional":
        return {"add_relu": ["Add", "Relu"], "add": ["Add"], "cat": ["Concat"]}[qfunc_op]
    return {"MaxPool2d": ["MaxPool"], "AvgPool2d": ["AveragePool"],
            "AdaptiveAvgPool2d": ["GlobalAveragePool"], "Flatten": ["Flatten"],
            "ReLU": ["Relu"]}[kind]


def qfunc_op(float_model, owner, x):
    """Which FloatFunctional method the float model calls on `owner` (add / add_relu / cat)."""
    called = []
    ff = float_model.get_submodule(owner)
    for meth in ("add", "add_relu", "cat", "mul", "add_scalar"):
        orig = getattr(ff, meth)
        setattr(ff, meth, (lambda *a, _o=orig, _n=meth, **k: (called.append(_n), _o(*a, **k))[1]))
    with torch.no_grad():
        float_model(x)
    for meth in ("add", "add_relu", "cat", "mul", "add_scalar"):
        delattr(ff, meth)
    assert len(called) == 1, called
    return called[0]


def engine_fixtures(name, float_model, onnx_models, x, calib, engine, out_dir, float_outs):
    """onnx_models: {field suffix: (ModelProto, onnx_index, onnxruntime values, BN kept)}."""
    os.makedirs(out_dir, exist_ok=True)
    fuse_groups = float_model.fuse_groups()
    qm, observed, wobs = quantize_model(float_model, calib, engine, fuse_groups)
    rec, y = trace_points(qm, x)
    group_of = {g[0]: g for g in fuse_groups}
    points = []
    for mod_name, kind, out, inp in rec:
        if kind == "DeQuantize":
            assert not out.is_quantized
            continue
        assert out.is_quantized, f"{mod_name} ({kind}) output is not quantized"
        qin = [t for t in inp if torch.is_tensor(t)] if kind != "QFunctional" else []
        p = {"name": sanitize(mod_name), "module": mod_name, "type": kind,
             "observer": mod_name in observed}
        op = None
        if kind == "QFunctional":
            op = qfunc_op(float_model, mod_name, x)
            p["op"] = op
        group = group_of.get(mod_name, [mod_name])
        p["fused_from"] = group if len(group) > 1 else None
        ref = float_outs[group[-1]]
        for suffix, (om, idx, ort_vals, bn_kept) in onnx_models.items():
            if kind == "Quantize":
                cands = onnx_value(idx, ["quant"], None, om.graph.input[0].name)
            else:
                ops = expect_onnx_ops(kind, group, op)
                if bn_kept and kind in ("Conv2d", "ConvReLU2d"):
                    ops = ops[:1] + ["BatchNormalization"] + ops[1:]
                cands = onnx_value(idx, group, ops, None, ff=kind == "QFunctional")
            # the ONNX value must hold the same float tensor as the float PyTorch model's module
            if ort_vals is not None:
                ok = [c for c in cands if ort_vals[c[0]].shape == ref.shape
                      and np.allclose(ort_vals[c[0]], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))]
                assert len(ok) == 1, f"{mod_name}: {len(ok)} ONNX values match the float output, of {cands}"
                onnx_val, nodes = ok[0]
                p["onnx_value" + suffix + "_max_abs_diff_float"] = float(np.abs(ort_vals[onnx_val] - ref).max())
            else:
                assert len(cands) == 1, f"{mod_name}: ambiguous ONNX values {cands} (no onnxruntime)"
                onnx_val, nodes = cands[0]
            p["onnx_value" + suffix], p["onnx_nodes" + suffix] = onnx_val, nodes
        p.update({"shape": list(out.shape), "dtype": str(out.dtype).replace("torch.", ""),
                  "qscheme": str(out.qscheme()).replace("torch.", ""),
                  "scale": f32(out.q_scale()), "zero_point": int(out.q_zero_point())})
        if p["observer"]:
            p["activation_observer"] = observed[mod_name]
            # the output qparams are the observer's (stored on the converted module)
            mod = qm.get_submodule(mod_name)
            sc, zp = (torch.as_tensor(v).reshape(-1)[0].item() for v in (mod.scale, mod.zero_point))
            assert f32(sc) == p["scale"] and int(zp) == p["zero_point"], mod_name
        else:
            assert len(qin) == 1 and qin[0].is_quantized
            p["same_qparams_as_input"] = (f32(qin[0].q_scale()) == p["scale"]
                                          and int(qin[0].q_zero_point()) == p["zero_point"])
        ints = out.int_repr().numpy()
        np.save(os.path.join(out_dir, p["name"] + ".npy"), ints)
        p["file"] = p["name"] + ".npy"
        mod = qm.get_submodule(mod_name)
        if hasattr(mod, "weight") and callable(mod.weight):
            w, b = mod.weight(), mod.bias()
            wd = {"qscheme": str(w.qscheme()).replace("torch.", ""),
                  "dtype": str(w.dtype).replace("torch.", ""), "shape": list(w.shape)}
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                wd["axis"] = int(w.q_per_channel_axis())
                wd["scales"] = [f32(s) for s in w.q_per_channel_scales().tolist()]
                wd["zero_points"] = [int(z) for z in w.q_per_channel_zero_points().tolist()]
            else:
                wd["scales"] = [f32(w.q_scale())]
                wd["zero_points"] = [int(w.q_zero_point())]
            np.save(os.path.join(out_dir, p["name"] + ".weight.npy"), w.int_repr().numpy())
            wd["file"] = p["name"] + ".weight.npy"
            p["weight"] = wd
            if b is not None:
                np.save(os.path.join(out_dir, p["name"] + ".bias.npy"), b.detach().numpy().astype(np.float32))
                p["bias_file"] = p["name"] + ".bias.npy"
            if kind in ("Conv2d", "ConvReLU2d"):
                p["conv"] = {"stride": list(mod.stride), "padding": list(mod.padding),
                             "dilation": list(mod.dilation), "groups": int(mod.groups),
                             "kernel_size": list(mod.kernel_size)}
        for a in ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad",
                  "divisor_override", "output_size", "start_dim", "end_dim"):
            if kind in ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten") and hasattr(mod, a):
                v = getattr(mod, a)
                p.setdefault("attrs", {})[a] = list(v) if isinstance(v, tuple) else v
        points.append(p)
    # every observer is a point, and every point with an observer is one of them
    assert {p["module"] for p in points if p["observer"]} == set(observed), (set(observed), [(p["module"], p["observer"]) for p in points])
    np.save(os.path.join(out_dir, "output.npy"), y.numpy().astype(np.float32))
    doc = {
        "model": name, "engine": engine, "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "fbgemm_isa": fbgemm_isa(),
        "qconfig": wobs,
        "fuse_groups": fuse_groups,
        "input_file": "../input.npy", "output_file": "output.npy",
        # docs/ops.md: on the x86 engine, quantized add/add_relu (ATen vector/scalar split, set by
        # cpu_capability) and linear (FBGEMM: saturating int16 pair sums without VNNI) can depend
        # on the machine; qnnpack's kernels and everything else here do not.
        "potentially_isa_dependent_points": {
            p["name"]: ("x86 add: ATen AVX2/AVX512 vector path dequantizes with FMA, scalar tail and "
                        "ATEN_CPU_CAPABILITY=default do not (cpu_capability)"
                        if p["type"] == "QFunctional" and p.get("op") in ("add", "add_relu") else
                        "x86 linear: FBGEMM without AVX512-VNNI saturates int16 pair sums "
                        "(fbgemm_isa; cannot trigger with reduce_range activations <= 127)")
            for p in points if engine == "x86" and (p["type"] == "Linear" or (
                p["type"] == "QFunctional" and p.get("op") in ("add", "add_relu")))},
        "points": points,
    }
    return doc, qm


def weight_impact(doc, onnx_w, engine, out_dir):
    """Quantizes the exporter's folded Conv weights with the engine's weight observer and
    compares scales and ints with PyTorch's (from fuse_conv_bn_weights): does the ULP-level
    difference of the two BN folds reach the int8 weights?"""
    torch.backends.quantized.engine = engine
    qc = torch.ao.quantization.get_default_qconfig(engine)
    res = {"convs": 0, "scales_differ": 0, "ints_differ": 0, "ints": 0, "per_conv": {}}
    for p in doc["points"]:
        if p["module"] not in onnx_w:
            continue
        w_ox = torch.from_numpy(onnx_w[p["module"]][0])
        obs = qc.weight()
        obs(w_ox)
        sc, zp = obs.calculate_qparams()
        if obs.qscheme in (torch.per_channel_affine, torch.per_channel_symmetric):
            q = torch.quantize_per_channel(w_ox, sc.double(), zp.long(), obs.ch_axis, torch.qint8)
        else:
            q = torch.quantize_per_tensor(w_ox, float(sc), int(zp), torch.qint8)
        ref = np.load(os.path.join(out_dir, p["weight"]["file"]))
        ints_d = int((q.int_repr().numpy() != ref).sum())
        sc_d = int((np.float32(sc.reshape(-1).numpy()) != np.float32(p["weight"]["scales"])).sum())
        res["convs"] += 1
        res["ints"] += ref.size
        res["ints_differ"] += ints_d
        res["scales_differ"] += sc_d
        if ints_d or sc_d:
            res["per_conv"][p["name"]] = {"ints_differ": ints_d, "scales_differ": sc_d}
    doc["onnx_weight_quantization"] = res
    return res


# ---------------------------------------------------------------- ISA sweep
ISA_VARIANTS = [
    ("avx2", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("default", {"ATEN_CPU_CAPABILITY": "default"}),
    ("fbgemm_avx2", {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("onednn_avx2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
]


def run_saved(name, engine, qpath, outpath):
    """In a subprocess (other ISA): rebuilds the quantized model (calibrating here), notes which
    qparams this calibration gives differently, then loads the parent's converted state_dict
    (so the same qparams and weights are used) and runs inference on input.npy."""
    torch.backends.quantized.engine = engine
    fm = build(name)
    x, calib = data(name)
    qm, _, _ = quantize_model(fm, calib, engine, fm.fuse_groups())
    saved = torch.load(qpath, weights_only=False)
    own = qm.state_dict()
    calib_diff = [k for k, v in saved.items() if k.endswith(("scale", "zero_point"))
                  and not torch.equal(torch.as_tensor(own[k]), torch.as_tensor(v))]
    qm.load_state_dict(saved)
    rec, y = trace_points(qm, x)
    res = {sanitize(n): o.int_repr().numpy().tolist() for n, k, o, _ in rec if o.is_quantized}
    res["__cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    res["__fbgemm_isa"] = fbgemm_isa()
    res["__calibration_qparams_differ"] = calib_diff
    with open(outpath, "w") as f:
        json.dump(res, f)


def isa_sweep(name, engine, qm, doc, out_dir):
    """Re-runs the converted model's inference under other ISAs; returns, per variant, the
    number of differing ints per point (and records which calibration qparams differ)."""
    dependent, calib = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        qpath = os.path.join(tmp, "q.pt")
        torch.save(qm.state_dict(), qpath)
        for var, env in ISA_VARIANTS:
            outp = os.path.join(tmp, var + ".json")
            subprocess.run([sys.executable, os.path.abspath(__file__), "--run-saved", name, engine,
                            qpath, outp], check=True, env=dict(os.environ, **env))
            with open(outp) as f:
                res = json.load(f)
            key = {"fbgemm_avx2": f"FBGEMM {res['__fbgemm_isa']}", "onednn_avx2": "ONEDNN_MAX_CPU_ISA=AVX2"}.get(
                var, f"ATEN_CPU_CAPABILITY={res['__cpu_capability']}")
            diffs = {}
            for p in doc["points"]:
                ref = np.load(os.path.join(out_dir, p["file"]))
                got = np.array(res[p["name"]], dtype=np.uint8)
                n = int((ref != got).sum())
                if n:
                    diffs[p["name"]] = n
            dependent[key] = diffs
            calib[key] = res["__calibration_qparams_differ"]
    doc["isa_calibration_qparams_differ"] = calib
    return dependent


def dump_json(obj, path):
    """Indented JSON with lists of numbers kept on one line."""
    import re
    text = json.dumps(obj, indent=1)
    text = re.sub(r"\[\s*([-0-9.e, \n]+?)\s*\]", lambda m: "[" + ", ".join(
        v.strip() for v in m.group(1).split(",")) + "]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------- observer placement probe
def placement_probe():
    """Which module types get an activation observer from eager `prepare`, and what the
    converted module's output qparams are: QuantStub -> Conv2d -> <module> -> DeQuantStub, per
    engine. Also: can fuse_modules fuse conv-bn-relu6?"""
    mods = {
        "ReLU": lambda: nn.ReLU(), "ReLU6": lambda: nn.ReLU6(), "Hardtanh": lambda: nn.Hardtanh(-1.0, 1.0),
        "MaxPool2d": lambda: nn.MaxPool2d(2), "AvgPool2d": lambda: nn.AvgPool2d(2),
        "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(1), "Flatten": lambda: nn.Flatten(1),
        "Identity": lambda: nn.Identity(), "Dropout": lambda: nn.Dropout(0.5),
        "Hardswish": lambda: nn.Hardswish(), "Sigmoid": lambda: nn.Sigmoid(),
    }
    out = {"torch_version": torch.__version__, "engines": {}}
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 8, 8, generator=g)
    for engine in ENGINES:
        torch.backends.quantized.engine = engine
        res = {}
        for tname, ctor in mods.items():
            torch.manual_seed(3)
            m = nn.Sequential(QuantStub(), nn.Conv2d(3, 4, 3, padding=1), ctor(), DeQuantStub()).eval()
            m.qconfig = torch.ao.quantization.get_default_qconfig(engine)
            torch.ao.quantization.prepare(m, inplace=True)
            observed = hasattr(m[2], "activation_post_process")
            with torch.no_grad():
                m(x)
            torch.ao.quantization.convert(m, inplace=True)
            seen = {}
            h1 = m[1].register_forward_hook(lambda _m, i, o: seen.__setitem__("in", o))
            h2 = m[2].register_forward_hook(lambda _m, i, o: seen.__setitem__("out", o))
            with torch.no_grad():
                m(x)
            h1.remove(), h2.remove()
            qi, qo = seen["in"], seen["out"]
            res[tname] = {
                "observer": observed, "converted_type": type(m[2]).__module__ + "." + type(m[2]).__name__,
                "output_quantized": bool(qo.is_quantized),
                "same_qparams_as_input": bool(qo.is_quantized and qo.q_scale() == qi.q_scale()
                                              and qo.q_zero_point() == qi.q_zero_point()),
                "out_scale": f32(qo.q_scale()) if qo.is_quantized else None,
                "out_zero_point": int(qo.q_zero_point()) if qo.is_quantized else None,
                "in_scale": f32(qi.q_scale()), "in_zero_point": int(qi.q_zero_point()),
            }
        out["engines"][engine] = res
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6()).eval()
    try:
        torch.ao.quantization.fuse_modules(m, [["0", "1", "2"]])
        out["fuse_conv_bn_relu6"] = "fused"
    except Exception as e:  # noqa: BLE001
        out["fuse_conv_bn_relu6"] = f"{type(e).__name__}: {e}"
    return out


# ---------------------------------------------------------------- main
def gen_model(name, root):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    fm = build(name)
    x, calib = data(name)
    np.save(os.path.join(d, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(d, "calib.npy"), calib.numpy().astype(np.float32))
    with torch.no_grad():
        y_float = fm(x)
    np.save(os.path.join(d, "float_output.npy"), y_float.numpy().astype(np.float32))
    om = export_onnx(copy.deepcopy(fm), x, os.path.join(d, "model.onnx"))
    onnx_ops = sorted({n.op_type for n in om.graph.node})
    bn_folded = "BatchNormalization" not in onnx_ops
    om_bn = export_onnx(copy.deepcopy(fm), x, os.path.join(d, "model_bn.onnx"), keep_bn=True)
    bn_ops = sorted({n.op_type for n in om_bn.graph.node})
    assert "BatchNormalization" in bn_ops
    ort = None
    try:
        import onnxruntime as rt
        ort = {"onnxruntime_version": rt.__version__}
        for fname in ("model.onnx", "model_bn.onnx"):
            sess = rt.InferenceSession(os.path.join(d, fname), providers=["CPUExecutionProvider"])
            y_ort = sess.run(None, {"input": x.numpy()})[0]
            if fname == "model.onnx":
                np.save(os.path.join(d, "ort_output.npy"), y_ort.astype(np.float32))
            ort[f"{fname}: max_abs_diff_vs_torch"] = float(np.abs(y_ort - y_float.numpy()).max())
    except ImportError:
        pass
    wcheck = fused_weight_check(fm, om, fm.fuse_groups())
    float_outs = float_module_outputs(fm, x)
    onnx_models = {
        "": (om, onnx_index(om), ort_all_values(os.path.join(d, "model.onnx"), x), False),
        "_bn": (om_bn, onnx_index(om_bn), ort_all_values(os.path.join(d, "model_bn.onnx"), x), True),
    }
    bn_check = bn_params_check(fm, om_bn)
    summary = {"model": name, "onnx_ops": onnx_ops, "bn_folded_by_exporter": bn_folded,
               "model_bn_onnx_ops": bn_ops, "model_bn_params_exact": bn_check,
               "onnx_nodes": [[n.name, n.op_type, list(n.input), list(n.output)] for n in om.graph.node],
               "ort": ort, "fused_weight_check": wcheck, "engines": {}}
    onnx_w = wcheck.pop("_onnx_w")
    for engine in ENGINES:
        ed = os.path.join(d, engine)
        doc, qm = engine_fixtures(name, fm, onnx_models, x, calib, engine, ed, float_outs)
        doc["isa_dependent_points"] = isa_sweep(name, engine, qm, doc, ed)
        doc_w = weight_impact(doc, onnx_w, engine, ed)
        dump_json(doc, os.path.join(ed, "points.json"))
        y = np.load(os.path.join(ed, "output.npy"))
        summary["engines"][engine] = {
            "onnx_weight_quantization": doc_w,
            "points": [(p["name"], p["onnx_value"], p["onnx_value_bn"], p["observer"], p["scale"],
                        p["zero_point"]) for p in doc["points"]],
            "isa_calibration": doc["isa_calibration_qparams_differ"],
            "max_abs_diff_quant_vs_float": float(np.abs(y - y_float.numpy()).max()),
            "isa_dependent_points": doc.get("isa_dependent_points")}
    write_readme(d, summary)
    return summary


def write_readme(d, s):
    w = s["fused_weight_check"]
    lines = [f"# {s['model']}: PyTorch eager static quantization fixtures", "",
             "Generated by `scripts/gen_model_fixtures.py`; format and rules in `docs/models.md`.", "",
             f"* torch {torch.__version__}, cpu_capability {torch.backends.cpu.get_cpu_capability()}, "
             f"FBGEMM ISA {fbgemm_isa()}.",
             f"* `model.onnx`: float unfused eval model, TorchScript exporter (`dynamo=False`), "
             f"`do_constant_folding=True`, opset 17, static shapes. ONNX ops: {', '.join(s['onnx_ops'])}.",
             f"* BatchNorm folded into Conv **by the exporter** in `model.onnx`: "
             f"{'yes' if s['bn_folded_by_exporter'] else 'no'}"
             " (no BatchNormalization node is left; every conv has a bias). The exporter's formula "
             "(`eval_peephole.cpp`: `s = gamma / sqrt(var + eps)`, `w' = w * s`, `b' = beta - mean * s`) "
             f"reproduces its initializers exactly: {w.get('exporter_formula_exact')}.",
             f"* Those Conv weights vs PyTorch's `fuse_modules` (`fuse_conv_bn_weights`): "
             f"{w['weights_differ']} of {w['weights']} weights differ (max abs diff {w['w_max_abs_diff']:.3g}, "
             f"max {w['w_max_ulp']} ulp); {w['biases_differ']} of {w['biases']} biases differ "
             f"(max abs diff {w['b_max_abs_diff']:.3g}, max {w['b_max_ulp']} ulp).",
             f"* `model_bn.onnx`: the same export with `training=TrainingMode.PRESERVE` (BN kept; ops "
             f"{', '.join(s['model_bn_onnx_ops'])}); its conv weights and BN parameters are PyTorch's, bit "
             f"for bit ({s['model_bn_params_exact']['convs_checked']} conv-BN pairs checked).",
             ]
    if s["ort"]:
        lines.append(f"* onnxruntime {s['ort']['onnxruntime_version']} vs PyTorch float output: " + ", ".join(
            f"{k.split(':')[0]} max abs diff {v:.3g}" for k, v in s["ort"].items() if k.endswith("vs_torch")) + ".")
    for e, v in s["engines"].items():
        q = v["onnx_weight_quantization"]
        lines += ["", f"## {e}", "",
                  f"Quantized vs float output: max abs diff {v['max_abs_diff_quant_vs_float']:.3g}.",
                  f"Quantizing `model.onnx`'s (exporter-folded) conv weights with this engine's weight "
                  f"observer instead of PyTorch's fused ones: {q['scales_differ']} weight scales and "
                  f"{q['ints_differ']} of {q['ints']} weight ints differ.", "",
                  "| point (file stem) | ONNX value (`model.onnx`) | value in `model_bn.onnx` if other | observer | scale | zero_point |",
                  "|---|---|---|---|---|---|"]
        for n, val, val_bn, obs, sc, zp in v["points"]:
            lines.append(f"| `{n}` | `{val}` | {'`' + val_bn + '`' if val_bn != val else ''} | "
                         f"{'yes' if obs else 'no'} | {sc:.9g} | {zp} |")
        lines += ["", "Inference re-run (same converted state_dict) under other ISAs, ints differing per point: " +
                  "; ".join(f"{k}: {dict(sorted(dd.items())) or 'none'}" for k, dd in v["isa_dependent_points"].items()) + ".",
                  "Calibration under those ISAs gives different qparams for: " +
                  "; ".join(f"{k}: {', '.join(dd) or 'none'}" for k, dd in v["isa_calibration"].items()) + "."]
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "models"))
    ap.add_argument("--run-saved", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_saved:
        run_saved(*args.run_saved)
        return
    os.makedirs(args.out, exist_ok=True)
    dump_json(placement_probe(), os.path.join(args.out, "observer_placement.json"))
    for name in MODELS:
        s = gen_model(name, args.out)
        print(json.dumps({k: v for k, v in s.items() if k != "onnx_nodes"}, indent=1))


if __name__ == "__main__":
    main()
