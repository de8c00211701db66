#!/usr/bin/env python3
"""Train the three demonstration 3-D U-Nets on synthetic phantoms and export ONNX.

    python onnx/train.py                 # everything (about 20-25 min on 2 CPU cores)
    python onnx/train.py --only p32      # one model
    python onnx/train.py --eval-only     # re-evaluate the exported .onnx files
    python onnx/train.py --task classes  # the four-class softmax models (unet4-*)
    python onnx/train.py --task regions  # the sigmoid region model (unetr-p64)

Writes onnx/unet-p32.onnx, onnx/unet-p64.onnx, onnx/unet-p256.onnx and
onnx/training-report.json (losses, timings, held-out Dice and lesion counts).

--task classes writes onnx/unet4-p32.onnx, unet4-p64.onnx, unet4-p256.onnx: the same network
with a four-channel head, class logits for the BraTS labels 0 background, 1 NETC, 2 SNFH,
3 ET (softmax over channels, not inside the graph), trained with cross-entropy + soft Dice of
the nested regions WT, TC, ET (+ soft Dice per class in p64's second phase and p256; with
--resume-finetune a model with a second phase runs only that phase, from its exported
weights).  --task regions writes onnx/unetr-p64.onnx: three sigmoid
logits, one per nested region WT (1|2|3), TC (1|3), ET (3), trained with binary cross-entropy
+ soft Dice per region (region-based training as nnU-Net does for BraTS).  Both declare their
outputs in the ONNX metadata key `outputs` and report to onnx/training-report-regions.json
(per-region Dice on the same held-out cases).  To fit the CPU budget they start from the
trained whole-tumour models (warm_start), so they need onnx/unet-p32.onnx and
onnx/unet-p64.onnx.

Training data: phantoms from scripts/phantom.py generated in memory with seeds
TRAIN_SEEDS (1000-1023).  Held-out evaluation: seeds EVAL_SEEDS (9000-9003) plus the
shipped demo case (seed 42) and test fixture (seed 7); none of them is ever used in
training.  Training phantoms have 0-3 simple mimics (bright on one modality); some
evaluation cases also have "hard" tumour-like mimics (phantom.py --hard-mimics) that
never occur in training.  Evaluation uses the reference sliding window of
tests/fixtures/golden/make_golden.py (Gaussian weighting, overlap 0.5) on the
exported ONNX models in onnxruntime.

Demonstration models only.  NOT for clinical use.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import phantom  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "make_golden", os.path.join(ROOT, "tests", "fixtures", "golden", "make_golden.py"))
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

CHANNELS = ("t1n", "t1c", "t2w", "t2f")
BASE_WIDTH = 8

# training phantoms: (seed, shape (x, y, z)); seeds 1000..1023
TRAIN_SEEDS = list(range(1000, 1024))


def train_shape(seed: int):
    if seed < 1010:
        return (240, 240, 155)                     # full size (BraTS grid)
    r = np.random.default_rng(seed + 77)           # small phantoms of varied size
    return (int(r.integers(80, 161)), int(r.integers(96, 177)), int(r.integers(40, 97)))


EVAL_CASES = [  # (name, seed, shape, tumours, exact, mimics, hard (tumour-like) mimics)
    ("eval-9000", 9000, (240, 240, 155), 3, False, 2, 0),
    ("eval-9001", 9001, (240, 240, 155), 2, True, 3, 2),
    ("eval-9002", 9002, (128, 144, 80), 2, False, 2, 1),
    ("eval-9003", 9003, (96, 112, 48), 2, False, 1, 0),
]
SHIPPED_CASES = [  # (label, directory, case id)
    ("demo (seed 42)", "demo/BraTS-DEMO-00000-000", "BraTS-DEMO-00000-000"),
    ("fixture case-small (seed 7)", "tests/fixtures/case-small", "SMALL-00001-000"),
]

MODELS = {
    # name: patch (D, H, W), steps, batch, lr
    "p32": dict(patch=(16, 32, 32), steps=1400, batch=16, lr=3e-3),
    "p64": dict(patch=(16, 64, 64), steps=900, batch=8, lr=3e-3),
    # p256 starts from the trained p64 weights (read back from onnx/unet-p64.onnx) and is
    # fine-tuned on whole 256x256 slabs: training it from scratch on 1M-voxel patches
    # did not fit the CPU budget of a shared 2-core machine.
    "p256": dict(patch=(16, 256, 256), steps=120, batch=1, lr=1e-3, init="p64"),
}

# Sub-region models.  `warm`: the body (every layer but the head) starts from that trained
# whole-tumour model and the head from its whole-tumour head (warm_start below), so that the
# short schedules a shared 2-core machine allows go into the sub-regions.  `init` as above:
# all weights from the same task's model of that name (p256 fine-tuned from p64).
SOFTMAX_CLASSES = [{"name": "background", "label": 0}, {"name": "NETC", "label": 1},
                   {"name": "SNFH", "label": 2}, {"name": "ET", "label": 3}]
SIGMOID_REGIONS = [{"name": "WT", "labels": [1, 2, 3]}, {"name": "TC", "labels": [1, 3]},
                   {"name": "ET", "labels": [3]}]
BRATS_REGIONS = [(r["name"], r["labels"]) for r in SIGMOID_REGIONS]
TASKS = {
    "wt": dict(prefix="unet", out=1, report="training-report.json", models=MODELS),
    "classes": dict(prefix="unet4", out=4, report="training-report-regions.json",
                    outputs={"softmax": SOFTMAX_CLASSES}, classes="background,NETC,SNFH,ET",
                    models={
                        "p32": dict(patch=(16, 32, 32), steps=800, batch=16, lr=2e-3,
                                    warm="unet-p32"),
                        # after its 400 steps p64 had not learned NETC (Dice 0 on the
                        # fixture case): a second phase adds the per-class soft Dice
                        "p64": dict(patch=(16, 64, 64), steps=400, batch=8, lr=2e-3,
                                    warm="unet-p64",
                                    finetune=dict(steps=150, lr=1e-3, seed=1335,
                                                  loss="classes_dice")),
                        "p256": dict(patch=(16, 256, 256), steps=80, batch=1, lr=1e-3,
                                     init="p64", loss="classes_dice"),
                    }),
    "regions": dict(prefix="unetr", out=3, report="training-report-regions.json",
                    outputs={"sigmoid": SIGMOID_REGIONS}, classes="WT,TC,ET",
                    models={
                        "p64": dict(patch=(16, 64, 64), steps=400, batch=8, lr=2e-3,
                                    warm="unet-p64", seed=1244),
                    }),
}


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------
def cbr(cin, cout, k=3, stride=1):
    k3 = (k,) * 3 if isinstance(k, int) else k
    return nn.Sequential(nn.Conv3d(cin, cout, k3, stride, tuple(kk // 2 for kk in k3)),
                         nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """3 resolution levels: full, (1,2,2)-strided, then (2,2,2)-strided.
    No normalisation layers; ReLU; transposed-conv upsampling; concat skips."""

    def __init__(self, w=BASE_WIDTH, out=1):
        super().__init__()
        self.enc0 = cbr(4, w)
        self.down1 = cbr(w, 2 * w, 3, (1, 2, 2))
        self.enc1 = cbr(2 * w, 2 * w)
        self.down2 = cbr(2 * w, 4 * w, 3, (2, 2, 2))
        self.enc2 = cbr(4 * w, 4 * w)
        self.up2 = nn.ConvTranspose3d(4 * w, 2 * w, 2, 2)
        self.dec1 = cbr(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose3d(2 * w, w, (1, 2, 2), (1, 2, 2))
        self.dec0 = cbr(2 * w, w, 1)
        self.head = nn.Conv3d(w, out, 1)

    def forward(self, x):
        a = self.enc0(x)
        b = self.enc1(self.down1(a))
        c = self.enc2(self.down2(b))
        b = self.dec1(torch.cat([self.up2(c), b], 1))
        a = self.dec0(torch.cat([self.up1(b), a], 1))
        return self.head(a)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def phantom_arrays(seed, shape, tumors=3, exact=False, mimics=None, hard_mimics=0,
                   labels=False):
    """Normalised image float32 [4, z, y, x] and whole-tumour target uint8 [z, y, x]
    (labels: the BraTS labels 0..3 instead)."""
    if mimics is None:
        mimics = int(np.random.default_rng(seed + 5).integers(0, 4))
    images, seg, _ = phantom.make_phantom(shape, (1.0, 1.0, 1.0), seed, tumors, mimics, exact,
                                          hard_mimics)
    stack = np.stack([images[c].astype(np.float64).transpose(2, 1, 0) for c in CHANNELS], 0)
    target = seg if labels else (seg > 0)
    return ref.normalize(stack), np.ascontiguousarray(target.transpose(2, 1, 0)).astype(np.uint8)


class PatchSampler:
    """Random training patches.  mode "wt": target = tumour mask [1, ...] float32; "classes":
    BraTS labels [...] int64; "regions": nested WT, TC, ET masks [3, ...] float32.  In the
    sub-region modes the tumour-centred patches are centred on a voxel of one class (drawn
    uniformly among the classes the case has) so that the small NETC and ET get seen."""

    def __init__(self, cases, patch, rng, mode="wt"):
        self.patch = patch
        self.rng = rng
        self.mode = mode
        self.by_class = []
        self.cases = []
        for img, tgt in cases:
            # zero padding (normalised space) so every axis is >= patch, centred as in inference
            pads = []
            for s, p in zip(tgt.shape, patch):
                pb = max(0, (p - s) // 2)
                pads.append((pb, max(0, p - s - pb)))
            if any(p != (0, 0) for p in pads):
                img = np.pad(img, [(0, 0)] + pads)
                tgt = np.pad(tgt, pads)
            fg = np.argwhere(tgt > 0)
            brain = np.argwhere(np.any(img[:, ::4, ::4, ::4] != 0, 0)) * 4
            self.cases.append((img, tgt, fg, brain))
            if mode != "wt":
                self.by_class.append([k for k in (np.argwhere(tgt == c) for c in (1, 2, 3))
                                      if len(k)])

    def _start(self, centre, shape):
        return [int(np.clip(c - p // 2 + self.rng.integers(-p // 4, p // 4 + 1), 0, s - p))
                for c, p, s in zip(centre, self.patch, shape)]

    def sample(self, n):
        xs, ys = [], []
        for _ in range(n):
            ci = self.rng.integers(len(self.cases))
            img, tgt, fg, brain = self.cases[ci]
            u = self.rng.random()
            if u < 0.45 and len(fg) and self.mode != "wt":
                vox = self.by_class[ci][self.rng.integers(len(self.by_class[ci]))]
                st = self._start(vox[self.rng.integers(len(vox))], tgt.shape)
            elif u < 0.45 and len(fg):
                st = self._start(fg[self.rng.integers(len(fg))], tgt.shape)
            elif u < 0.9 and len(brain):
                st = self._start(brain[self.rng.integers(len(brain))], tgt.shape)
            else:
                st = [int(self.rng.integers(0, s - p + 1)) for s, p in zip(tgt.shape, self.patch)]
            sl = tuple(slice(a, a + p) for a, p in zip(st, self.patch))
            x = img[(slice(None),) + sl].copy()
            y = tgt[sl]
            # augmentation: flips, per-channel intensity scale/shift, Gaussian noise
            for ax in range(3):
                if self.rng.random() < 0.5:
                    x = np.flip(x, ax + 1)
                    y = np.flip(y, ax)
            mask = np.any(x != 0, 0)
            scale = self.rng.uniform(0.9, 1.1, (4, 1, 1, 1)).astype(np.float32)
            shift = self.rng.uniform(-0.1, 0.1, (4, 1, 1, 1)).astype(np.float32)
            sigma = np.float32(self.rng.uniform(0.1, 0.3))
            noise = self.rng.standard_normal(x.shape, dtype=np.float32) * sigma
            x = np.where(mask[None], x * scale + shift + noise, 0.0).astype(np.float32)
            xs.append(x)
            ys.append(self.encode(np.ascontiguousarray(y)))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))

    def encode(self, y):
        if self.mode == "classes":
            return y.astype(np.int64)
        if self.mode == "regions":
            return np.stack([np.isin(y, labels) for _, labels in BRATS_REGIONS]).astype(np.float32)
        return y.astype(np.float32)[None]


def loss_fn(logits, target):
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = 1.0 - (2.0 * inter + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + dice


def soft_dice(p, target):
    """Batch-wise soft Dice loss per channel of [N, C, ...] probabilities, averaged."""
    dims = (0,) + tuple(range(2, p.dim()))
    inter = (p * target).sum(dims)
    return (1.0 - (2.0 * inter + 1.0) / (p.sum(dims) + target.sum(dims) + 1.0)).mean()


def loss_classes(logits, labels):
    """Cross-entropy over the four classes + soft Dice of the nested regions WT, TC, ET, whose
    probabilities are sums of class probabilities."""
    p = torch.softmax(logits, 1)
    region_p = torch.stack([p[:, ls].sum(1) for _, ls in BRATS_REGIONS], 1)
    region_t = torch.stack([sum((labels == k) for k in ls).float() for _, ls in BRATS_REGIONS], 1)
    return F.cross_entropy(logits, labels) + soft_dice(region_p, region_t)


def loss_classes_dice(logits, labels):
    """loss_classes + soft Dice of each tumour class (NETC, SNFH, ET): the small NETC gets a
    term of its own."""
    p = torch.softmax(logits, 1)
    onehot = torch.stack([(labels == k).float() for k in (1, 2, 3)], 1)
    return loss_classes(logits, labels) + soft_dice(p[:, 1:], onehot)


def loss_regions(logits, target):
    """Binary cross-entropy per region + soft Dice per region."""
    return (F.binary_cross_entropy_with_logits(logits, target)
            + soft_dice(torch.sigmoid(logits), target))


LOSSES = {"wt": loss_fn,
          "classes": loss_classes, "classes_dice": loss_classes_dice, "regions": loss_regions}


def warm_start(model, path, out):
    """Body from a trained whole-tumour model; head from its whole-tumour head h = w.a + b:
    four classes: background -h/2, each tumour class h/2 - log 3, so that the WT log-odds
    log(sum_tumour e^l) - l_background starts equal to h; regions: every region starts as h."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    sd = model.state_dict()
    body = {k: torch.from_numpy(inits[k].copy()) for k in sd if not k.startswith("head.")}
    w, b = inits["head.weight"].astype(np.float64), inits["head.bias"].astype(np.float64)
    if out == 4:
        hw = np.concatenate([-w / 2] + [w / 2] * 3)
        hb = np.concatenate([-b / 2] + [b / 2 - np.log(3.0)] * 3)
    else:
        hw, hb = np.concatenate([w] * out), np.concatenate([b] * out)
    body["head.weight"] = torch.from_numpy(hw.astype(np.float32))
    body["head.bias"] = torch.from_numpy(hb.astype(np.float32))
    model.load_state_dict(body)
    return model


def load_from_onnx(model, path):
    """Copy the weights of an exported model (initializer names = state_dict keys)."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    sd = model.state_dict()
    missing = set(sd) - set(inits)
    if missing:
        raise RuntimeError(f"{path}: no initializers for {sorted(missing)}")
    model.load_state_dict({k: torch.from_numpy(inits[k].copy()) for k in sd})
    return model


def torch_vs_ort(path, patch, seed=5, out=1):
    """Max |torch - onnxruntime| on random input, torch model rebuilt from the .onnx weights."""
    model = load_from_onnx(SmallUNet(out=out), path).eval()
    x = np.random.default_rng(seed).standard_normal((2, 4) + tuple(patch)).astype(np.float32)
    with torch.no_grad():
        t = model(torch.from_numpy(x)).numpy()
    o = ref.runner(ref.ort_session(path))(x)
    return float(np.abs(t - o).max())


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------
def export(model, name, patch, path, task="wt"):
    import onnx

    model.eval()
    x = torch.zeros((1, 4) + tuple(patch))
    tmp = path + ".tmp"
    torch.onnx.export(model, (x,), tmp, input_names=["image"], output_names=["logits"],
                      opset_version=17, dynamo=False, do_constant_folding=True,
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    m = onnx.load(tmp)
    os.remove(tmp)
    meta = {
        "patch_size": ",".join(str(p) for p in patch),
        "channels": ",".join(CHANNELS),
        "normalization": "zscore_nonzero",
        "classes": "whole_tumor",
        "output": "logits",
        "axis_order": "zyx (D = NIfTI axis 3, H = axis 2, W = axis 1)",
        "orientation": "LPS",
        "name": f"unet-{name}",
        "version": "1",
        "description": (f"stochseg demonstration 3-D U-Net, patch {patch[0]}x{patch[1]}x{patch[2]} "
                        "(DxHxW), trained on synthetic phantoms only. Demonstration of the "
                        "pipeline, NOT for clinical use."),
    }
    if task != "wt":
        t = TASKS[task]
        kind = ("four-class softmax (class logits: 0 background, 1 NETC, 2 SNFH, 3 ET; softmax "
                "over channels, not in the graph)" if task == "classes" else
                "three sigmoid region logits (WT = labels 1,2,3; TC = 1,3; ET = 3)")
        meta.update({
            "classes": t["classes"],
            "name": f"{t['prefix']}-{name}",
            "description": (f"stochseg demonstration 3-D U-Net, {kind}, patch "
                            f"{patch[0]}x{patch[1]}x{patch[2]} (DxHxW), trained on synthetic "
                            "phantoms only. Demonstration of the pipeline, NOT for clinical use."),
            "outputs": json.dumps(t["outputs"]),
        })
    del m.metadata_props[:]
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    m.producer_name = "stochseg onnx/train.py"
    m.doc_string = meta["description"]
    onnx.checker.check_model(m)
    onnx.save(m, path)


# --------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------
def lesion_counts(pred, gt):
    from scipy import ndimage

    st = np.ones((3, 3, 3), bool)
    gl, ng = ndimage.label(gt, st)
    pl, npred = ndimage.label(pred, st)
    detected = len(set(np.unique(gl[pred & (gl > 0)])) - {0})
    fp_ids = set(range(1, npred + 1)) - set(np.unique(pl[gt & (pl > 0)]))
    fp_sizes = np.bincount(pl.ravel())[sorted(fp_ids)] if fp_ids else np.zeros(0, int)
    return {"gt_lesions": int(ng), "detected": int(detected), "missed": int(ng - detected),
            "pred_components": int(npred), "false_positive_components": len(fp_ids),
            "false_positive_components_ge10vox": int((fp_sizes >= 10).sum()),
            "largest_false_positive_vox": int(fp_sizes.max()) if len(fp_sizes) else 0}


def evaluate(name, path, cases):
    sess = ref.ort_session(path)
    patch = ref.patch_of(sess)
    run = ref.runner(sess)
    rows = []
    for label, img, gt in cases:
        t0 = time.time()
        logit, plan = ref.sliding_window(run, img, patch, 0.5, "gaussian", batch_size=8)
        pred = logit > 0
        g = gt > 0
        inter = float((pred & g).sum())
        dice = 2.0 * inter / max(1.0, float(pred.sum() + g.sum()))
        row = {"case": label, "dice": round(dice, 4), "windows": plan["n_windows"],
               "seconds": round(time.time() - t0, 2), **lesion_counts(pred, g)}
        rows.append(row)
        print(f"  eval {name} {label}: {row}", flush=True)
    return rows


def bench(path, patch, reps=30):
    sess = ref.ort_session(path, threads=2)
    run = ref.runner(sess)
    x = np.random.default_rng(0).standard_normal((1, 4) + tuple(patch)).astype(np.float32)
    for _ in range(3):
        run(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return {"median_ms": round(1000 * float(np.median(times)), 2),
            "min_ms": round(1000 * float(np.min(times)), 2)}


def load_eval_cases(labels=False):
    """Held-out cases (name, image, target): target = tumour mask, or the BraTS labels."""
    import nibabel as nib

    cases = []
    for label, seed, shape, k, exact, m, hard in EVAL_CASES:
        img, tgt = phantom_arrays(seed, shape, k, exact, m, hard, labels)
        cases.append((f"{label} {shape}", img, tgt))
    for label, d, cid in SHIPPED_CASES:
        full = os.path.join(ROOT, d)
        if os.path.exists(os.path.join(full, f"{cid}-seg.nii.gz")):
            img, _ = ref.load_case(full, cid)
            seg = np.asarray(nib.load(os.path.join(full, f"{cid}-seg.nii.gz")).dataobj)
            seg = np.ascontiguousarray(seg.transpose(2, 1, 0))
            cases.append((label, img, seg if labels else seg > 0))
    return cases


def reference_module():
    """tests/python/reference.py: the independent reference with the all-channel sliding window
    and the region rules of the output-declaration spec."""
    spec = importlib.util.spec_from_file_location(
        "reference", os.path.join(ROOT, "tests", "python", "reference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def dice(pred, gt):
    return round(2.0 * float((pred & gt).sum()) / max(1.0, float(pred.sum() + gt.sum())), 4)


def evaluate_regions(name, path, cases, task):
    """Per-region Dice (WT, TC, ET) of a sub-region model on BraTS-labelled cases, both from
    the region logits > 0 (what stochseg's per-region blobs use; for the softmax model the
    log-odds of the region's classes after stitching) and from the BraTS label map (softmax:
    argmax of the class probabilities; sigmoid: the nested rule), plus per-class Dice of the
    label map and whole-tumour lesion counts."""
    rmod = reference_module()
    sess = rmod.session(path)
    class_labels = [c["label"] for c in SOFTMAX_CLASSES]
    rows = []
    for label, img, seg in cases:
        t0 = time.time()
        out = rmod.sliding_window(sess, img, None, 0.5, "gaussian", batch=8, all_channels=True)
        if task == "classes":
            region_logit = {r: rmod.region_log_odds(out, class_labels, ls) for r, ls in BRATS_REGIONS}
            z = out.astype(np.float64) - out.max(0, keepdims=True)
            prob = np.exp(z) / np.exp(z).sum(0, keepdims=True)
            labels = rmod.brats_argmax(prob, class_labels)
        else:
            region_logit = {r: out[i] for i, (r, _) in enumerate(BRATS_REGIONS)}
            labels = rmod.brats_nested(out[0], out[1], out[2], 0.0)
        windows = np.prod([len(rmod.window_starts(max(s, p), p, 0.5))
                           for s, p in zip(img.shape[1:], rmod.model_patch(sess))])
        row = {"case": label, "windows": int(windows),
               "seconds": round(time.time() - t0, 2)}
        row["dice_region_logit_gt0"] = {r: dice(region_logit[r] > 0, np.isin(seg, ls))
                                        for r, ls in BRATS_REGIONS}
        row["dice_label_map"] = {r: dice(np.isin(labels, ls), np.isin(seg, ls))
                                 for r, ls in BRATS_REGIONS}
        row["dice_label_map_classes"] = {c["name"]: dice(labels == c["label"], seg == c["label"])
                                         for c in SOFTMAX_CLASSES[1:]}
        row["voxels_gt"] = {c["name"]: int((seg == c["label"]).sum()) for c in SOFTMAX_CLASSES[1:]}
        row["voxels_pred"] = {c["name"]: int((labels == c["label"]).sum())
                              for c in SOFTMAX_CLASSES[1:]}
        row["wt_lesions"] = lesion_counts(region_logit["WT"] > 0, seg > 0)
        rows.append(row)
        print(f"  eval {name} {label}: {row}", flush=True)
    return rows


def train_loop(model, sampler, cfg, loss_fn, name):
    """Adam with a one-cycle schedule (10% warm-up) for cfg["steps"]; returns the losses."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=cfg["steps"],
                                                pct_start=0.1)
    t1 = time.time()
    losses = []
    model.train()
    for step in range(cfg["steps"]):
        x, y = sampler.sample(cfg["batch"])
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == cfg["steps"] - 1:
            print(f"{name} step {step} loss {np.mean(losses[-50:]):.4f} "
                  f"({time.time() - t1:.0f} s)", flush=True)
    return losses


def save_report(path, report, keys, merge):
    """Write the report; with merge, into the file as it is now, replacing only the entries of
    `keys` (the classes and regions tasks share one report and may run at the same time)."""
    if merge and os.path.exists(path):
        with open(path) as f:
            on_disk = json.load(f)
        models = on_disk.get("models", {})
        models.update({k: report["models"][k] for k in keys if k in report["models"]})
        report = {**on_disk, **{k: v for k, v in report.items() if k != "models"},
                  "models": models}
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=sorted(TASKS), default="wt",
                    help="wt: the whole-tumour unet-*; classes: four-class unet4-*; "
                         "regions: sigmoid region model unetr-p64")
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--resume-finetune", action="store_true",
                    help="models with a finetune phase run only that phase, from their "
                         "exported weights; the others train as usual")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true",
                    help="quick plumbing test: 3 small phantoms, 5 steps (writes the .onnx files!)")
    a = ap.parse_args()
    task = TASKS[a.task]
    models = task["models"]
    if a.only and set(a.only) - set(models):
        ap.error(f"--task {a.task} has the models {sorted(models)}")
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    names = a.only or list(models)
    report_path = os.path.join(HERE, task["report"])
    report = json.load(open(report_path)) if os.path.exists(report_path) else {}
    report["environment"] = {"torch": torch.__version__, "numpy": np.__version__,
                             "python": platform.python_version(), "threads": a.threads,
                             "onnxruntime": __import__("onnxruntime").__version__}
    report.setdefault("models", {})

    def key(name):
        return name if a.task == "wt" else f"{task['prefix']}-{name}"

    if not a.eval_only:
        t0 = time.time()
        seeds = TRAIN_SEEDS[-3:] if a.smoke else TRAIN_SEEDS
        if a.smoke:
            for cfg in models.values():
                cfg["steps"] = 5
        train_cases = [phantom_arrays(s, train_shape(s), labels=a.task != "wt") for s in seeds]
        report["training_data"] = {
            "seeds": f"{TRAIN_SEEDS[0]}-{TRAIN_SEEDS[-1]}",
            "shapes_xyz": {str(s): list(train_shape(s)) for s in TRAIN_SEEDS},
            "generation_seconds": round(time.time() - t0, 1)}
        print(f"generated {len(train_cases)} training phantoms in {time.time() - t0:.0f} s", flush=True)
        for name in names:
            cfg = models[name]
            seed = cfg.get("seed", 1234 + list(models).index(name))
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            sampler = PatchSampler(train_cases, cfg["patch"], rng, a.task)
            model = SmallUNet(out=task["out"])
            if cfg.get("init"):
                load_from_onnx(model, os.path.join(HERE, f"{task['prefix']}-{cfg['init']}.onnx"))
            if cfg.get("warm"):
                warm_start(model, os.path.join(HERE, f"{cfg['warm']}.onnx"), task["out"])
            t1 = time.time()
            path = os.path.join(HERE, f"{task['prefix']}-{name}.onnx")
            ft = cfg.get("finetune")
            resume = a.resume_finetune and ft
            if resume:
                load_from_onnx(model, path)
            else:
                losses = train_loop(model, sampler, cfg, LOSSES[cfg.get("loss", a.task)], name)
            seconds = time.time() - t1
            if ft:
                t2 = time.time()
                # a second phase, reseeded: the same whether it follows the first phase in
                # this process or starts from its exported weights (--resume-finetune)
                torch.manual_seed(ft["seed"])
                sampler = PatchSampler(train_cases, cfg["patch"],
                                       np.random.default_rng(ft["seed"]), a.task)
                ft_losses = train_loop(model, sampler, {**cfg, **ft}, LOSSES[ft["loss"]],
                                       f"{name} finetune")
            export(model, name, cfg["patch"], path, a.task)
            init = cfg.get("init") or (f"warm start from {cfg['warm']}" if cfg.get("warm")
                                       else "random")
            if resume:
                entry = report["models"][key(name)]
            else:
                entry = report["models"][key(name)] = {
                    "patch_dhw": list(cfg["patch"]), "steps": cfg["steps"], "batch": cfg["batch"],
                    "lr_max": cfg["lr"], "train_seed": seed, "init": init,
                    "parameters": int(sum(p.numel() for p in model.parameters())),
                    "train_seconds": round(seconds, 1),
                    "loss_first50": round(float(np.mean(losses[:50])), 4),
                    "loss_last50": round(float(np.mean(losses[-50:])), 4),
                }
                if a.task != "wt":
                    entry["loss"] = cfg.get("loss", a.task)
            if ft:
                entry["finetune"] = {
                    **ft, "train_seconds": round(time.time() - t2, 1),
                    "loss_first50": round(float(np.mean(ft_losses[:50])), 4),
                    "loss_last50": round(float(np.mean(ft_losses[-50:])), 4)}
            print(f"{name}: trained in {time.time() - t1:.0f} s", flush=True)
            save_report(report_path, report, [key(n) for n in names], a.task != "wt")
        del train_cases

    cases = load_eval_cases(labels=a.task != "wt")
    if a.smoke:
        cases = cases[3:4] + cases[-1:]
    for name in names:
        path = os.path.join(HERE, f"{task['prefix']}-{name}.onnx")
        entry = report["models"].setdefault(key(name), {})
        entry["file_bytes"] = os.path.getsize(path)
        entry["torch_vs_ort_max_abs_diff"] = torch_vs_ort(path, models[name]["patch"],
                                                          out=task["out"])
        entry["ort_cpu_2threads_batch1"] = bench(path, models[name]["patch"])
        if a.task == "wt":
            entry["eval"] = evaluate(name, path, cases)
        else:
            entry["eval"] = evaluate_regions(key(name), path, cases, a.task)
        save_report(report_path, report, [key(n) for n in names], a.task != "wt")


if __name__ == "__main__":
    main()
