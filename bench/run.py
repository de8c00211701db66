#!/usr/bin/env python3
"""`make bench`: how fast and how big `stochseg run` is, against a plain numpy + onnxruntime
implementation of the same ensemble (bench/reference.py), and whether the two agree.

Every measured run is a fresh child process; its wall time is taken around the process and its
peak RSS and CPU time come from os.wait4 (the child's own rusage), so each run's ru_maxrss is its
own. Per configuration the medians of --runs runs are reported.

Series (defaults):
  scaling   stochseg on 64^3, 128^3 (cut from the demo case by bench/make_case.py) and the full
            240x240x155 demo case, with 1 and 2 threads, --passes per model (10: 30 passes)
  versus    the full-size case, 2 threads: stochseg (the scaling runs) vs bench/reference.py
            twice (--ref-runs each, default 3): as stochseg computes it (the
            windows placed on the brain's bounding box, as nnU-Net does) and plain (--no-crop:
            the windows over the whole grid, as MONAI's sliding_window_inference runs them)
  agreement stochastic: the full-size outputs above; stochseg vs the same-windows reference
            (different noise streams, so the mean logits agree statistically: judged against
            the reference's noise standard error), and vs the plain reference (window placement
            differs too: judged by blobs, labels and blob confidences);
            deterministic: `stochseg --deterministic` vs `reference.py --passes 1 --sigma 0`,
            and the same with the crop off on both sides (same computation: mean logits within
            1e-4, identical labels)

Writes out/bench/results.json and out/bench/results.md and prints the markdown. Exit status 1
when a run failed or an agreement check did not pass.

    python bench/run.py            # the full benchmark (about 45 min on 2 idle cores)
    python bench/run.py --quick    # one run per configuration
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.dont_write_bytecode = True  # no bench/__pycache__ in the work tree
import make_case  # noqa: E402
import openvino  # noqa: E402
import reference  # noqa: E402

DEFAULT_MODELS = [ROOT / "onnx" / f"unet-p{n}.onnx" for n in (32, 64, 256)]
FULL = "full"


# ---------------------------------------------------------------------------------------------
# measuring one child process

def measure(cmd, env=None, timeout=None, log_path: Path | None = None) -> dict:
    """Runs `cmd` as a fresh process; wall time, peak RSS and CPU time of that process alone."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env, stdout=log, stderr=log, cwd=ROOT)
    killed = []
    timer = None
    if timeout:
        timer = threading.Timer(timeout, lambda: (killed.append(True), proc.kill()))
        timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if timer:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if log_path:
        log.close()
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "cmd": [str(c) for c in cmd],
        "rc": proc.returncode,
        "timed_out": bool(killed),
        "wall_s": wall,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,  # Linux: KiB
        "cpu_s": cpu,
        "cpu_util": cpu / wall if wall > 0 else None,
        "loadavg_1m_before": load_before,
    }


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------
# work counts from the documented window rules

def crop_shape(box: dict) -> list[int]:
    return [e - s for s, e in zip(box["start_zyx"], box["end_zyx"])]


def work(crop_zyx, models: list[dict], passes: int, overlap: float) -> dict:
    """Windows (patches) per pass per model and model calls (on the CPU both implementations send
    a shorter last batch; stochseg pads it only on GPUs, which this benchmark does not run)."""
    per_model = []
    for m in models:
        windows = reference.window_count(crop_zyx, m["patch_size"], overlap)
        batch = int(m["batch_size"])
        calls = math.ceil(windows / batch)
        per_model.append({"name": m.get("name"), "patch_size": list(m["patch_size"]),
                          "batch_size": batch, "windows_per_pass": windows,
                          "calls_per_pass": calls})
    return {"per_model": per_model,
            "patches": passes * sum(m["windows_per_pass"] for m in per_model)}


def ort_seconds(timings: dict):
    for key in ("ensemble_onnxruntime", "onnxruntime", "inference", "ort"):
        if key in timings:
            return float(timings[key])
    return None


def summarize_run(kind: str, m: dict, out: Path, overlap: float) -> dict:
    """Adds the program's own report (timings, crop, models, blobs) to a measurement."""
    if m["rc"] != 0:
        return m
    # stochseg's report.json and the reference's summary.json share these fields
    rep = json.loads((out / ("report.json" if kind == "rust" else "summary.json")).read_text())
    models = rep["models"]
    passes = rep["ensemble"]["passes_per_model"]
    total_passes = rep["ensemble"]["total_passes"]
    crop = rep["preprocess"]["crop_canonical_zyx"]
    blobs = [{"id": b["id"], "voxels": b["voxels"], "mean_logit": b["mean_logit"]}
             for b in rep["blobs"]]
    threads = rep["runtime"]["threads"]
    version = rep["tool"]["version"] if kind == "rust" else rep["versions"]["onnxruntime"]
    timings = {k: float(v) for k, v in rep["timings_s"].items()}
    w = work(crop_shape(crop), models, passes, overlap)
    ens = timings.get("ensemble")
    m.update({
        "timings_s": timings,
        "onnxruntime_s": ort_seconds(timings),
        "crop_canonical_zyx": crop,
        "crop_shape_zyx": crop_shape(crop),
        "threads": threads,
        "passes_per_model": passes,
        "total_passes": total_passes,
        "work": w,
        "passes_per_s": total_passes / ens if ens else None,
        "patches_per_s": w["patches"] / ens if ens else None,
        "models_sha256": {x.get("name", Path(str(x.get("path"))).stem): x["sha256"] for x in models},
        "blobs": blobs,
        "version": version,
        # the program's own figure where it reports one (stochseg: VmHWM), beside wait4's
        "self_reported_peak_rss_mib": rep.get("peak_rss_mib"),
    })
    if kind == "rust":
        m["placement"] = {x["name"]: {"provider": x["execution_provider"],
                                      "precision": x.get("precision"),
                                      "plugin_version": x.get("plugin", {}).get("version")}
                          for x in models}
    return m


def median_of(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        return {}

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    stages = sorted({k for r in ok for k in r["timings_s"]})
    return {
        "runs_ok": len(ok),
        "wall_s": med([r["wall_s"] for r in ok]),
        "peak_rss_mib": med([r["peak_rss_mib"] for r in ok]),
        "cpu_util": med([r["cpu_util"] for r in ok]),
        "cpu_s": med([r["cpu_s"] for r in ok]),
        "onnxruntime_s": med([r["onnxruntime_s"] for r in ok]),
        "passes_per_s": med([r["passes_per_s"] for r in ok]),
        "patches_per_s": med([r["patches_per_s"] for r in ok]),
        "timings_s": {k: med([r["timings_s"].get(k) for r in ok]) for k in stages},
        "wall_s_all": [round(r["wall_s"], 2) for r in ok],
    }


# ---------------------------------------------------------------------------------------------
# commands

class Bench:
    def __init__(self, a):
        self.a = a
        self.out = a.out
        self.runs_dir = self.out / "runs"
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        if not self.env.get("ORT_DYLIB_PATH"):
            self.env["ORT_DYLIB_PATH"] = default_ort_lib()
        self.failures: list[dict] = []
        self.extra: list[dict] = []  # every configuration run, for the model checksum check

    def rust_cmd(self, case: Path, out: Path, threads: int, deterministic=False, device="cpu",
                 precision=None, pipeline=None):
        """stochseg on `device` (the CPU provider unless said otherwise: the series before the
        OpenVINO rows measure it, whatever the pipeline's default)."""
        cmd = [self.a.bin, "run", "--pipeline", pipeline or self.a.pipeline, "--case", case,
               "--out", out, "--threads", threads, "--seed", self.a.seed, "--overwrite", "-q",
               "--device", device]
        if precision:
            cmd += ["--precision", precision]
        if deterministic:
            cmd.append("--deterministic")
        else:
            cmd += ["--passes", self.a.passes, "--sigma", self.a.sigma]
        return cmd

    def ref_cmd(self, case: Path, out: Path, threads: int, deterministic=False, plain=False):
        passes, sigma = (1, 0.0) if deterministic else (self.a.passes, self.a.sigma)
        return [sys.executable, BENCH / "reference.py", "--case", case, "--models", *self.a.models,
                "--passes", passes, "--sigma", sigma, "--seed", self.a.seed,
                "--threads", threads, "--batch-size", self.a.batch_size, "--out", out, "-q",
                *(["--no-crop"] if plain else [])]

    def run(self, kind: str, label: str, case: Path, threads: int, runs: int,
            deterministic=False, plain=False, **rust) -> dict:
        """`plain`: the windows over the whole grid (reference --no-crop; stochseg with its
        pipeline's crop turned off); `rust`: device, precision, pipeline of stochseg's run."""
        out = self.runs_dir / label
        results = []
        for i in range(runs):
            if kind == "rust":
                cmd = self.rust_cmd(case, out, threads, deterministic, **rust)
                if plain:
                    cmd[cmd.index("--pipeline") + 1] = no_crop_pipeline(self.a.pipeline, self.out)
            else:
                cmd = self.ref_cmd(case, out, threads, deterministic, plain)
            log = self.runs_dir / f"{label}.log"
            print(f"[bench] {label} run {i + 1}/{runs}: {' '.join(map(str, cmd))}",
                  file=sys.stderr, flush=True)
            m = measure(cmd, env=self.env, timeout=self.a.timeout, log_path=log)
            m = summarize_run(kind, m, out, self.a.overlap)
            if m["rc"] != 0:
                m["log_tail"] = tail(log)
                self.failures.append({"label": label, "cmd": m["cmd"], "rc": m["rc"],
                                      "timed_out": m["timed_out"], "log_tail": m["log_tail"]})
                print(f"[bench] {label} FAILED rc={m['rc']}\n{m['log_tail']}", file=sys.stderr)
                results.append(m)
                break
            print(f"[bench]   wall {m['wall_s']:.1f} s, peak RSS {m['peak_rss_mib']:.0f} MiB, "
                  f"cpu util {m['cpu_util']:.2f}", file=sys.stderr, flush=True)
            results.append(m)
        part = {"label": label, "kind": kind, "case": str(case), "threads": threads,
                "deterministic": deterministic, "out": str(out), "runs": results,
                "median": median_of(results)}
        self.extra.append(part)
        return part


def snapshot_pipeline(pipeline: Path, dest: Path):
    """A frozen copy of the pipeline config and its models (models may be retrained while the
    benchmark runs): DEST/<config name> with absolute paths to DEST/models/<file>. Returns
    (config, model paths, its inference section) or None when the config cannot be read (then the originals are used)."""
    try:
        import yaml
        cfg = yaml.safe_load(pipeline.read_text())
        entries = cfg["models"]
    except Exception as e:  # noqa: BLE001 - any failure just means "no snapshot"
        print(f"[bench] no model snapshot ({e}); running the live files", file=sys.stderr)
        return None
    (dest / "models").mkdir(parents=True, exist_ok=True)
    models = []
    for m in entries:
        src = Path(m["path"])
        src = src if src.is_absolute() else (pipeline.parent / src).resolve()
        copy = dest / "models" / src.name
        shutil.copy2(src, copy)
        m["path"] = str(copy.resolve())
        models.append(copy.resolve())
    frozen = dest / pipeline.name
    frozen.write_text(f"# frozen copy of {pipeline} made by bench/run.py\n"
                      + yaml.safe_dump(cfg, sort_keys=False))
    return frozen.resolve(), models, cfg.get("inference", {})


def no_crop_pipeline(pipeline: Path, dest: Path) -> Path:
    """A copy of `pipeline` with `preprocess.crop_to_nonzero: false` (model paths made absolute):
    stochseg computing what `reference.py --no-crop` computes."""
    import yaml
    cfg = yaml.safe_load(pipeline.read_text())
    for m in cfg["models"]:
        src = Path(m["path"])
        m["path"] = str(src if src.is_absolute() else (pipeline.parent / src).resolve())
    cfg.setdefault("preprocess", {})["crop_to_nonzero"] = False
    variant = dest / "snapshot" / f"{pipeline.stem}-no-crop.yaml"
    variant.parent.mkdir(parents=True, exist_ok=True)
    variant.write_text(f"# {pipeline} with the crop off, made by bench/run.py\n"
                       + yaml.safe_dump(cfg, sort_keys=False))
    return variant


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"head": git("rev-parse", "--short", "HEAD"),
            "dirty_files": len([x for x in git("status", "--porcelain").splitlines() if x])}


def default_ort_lib() -> str:
    import onnxruntime
    libs = sorted(glob.glob(str(Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime.so.*")))
    return libs[-1] if libs else ""


# ---------------------------------------------------------------------------------------------
# agreement

def load_map(path: Path) -> np.ndarray:
    img = nib.load(str(path))
    return np.asarray(img.dataobj) if np.issubdtype(img.get_data_dtype(), np.integer) \
        else img.get_fdata(dtype=np.float32)


def brain_mask(case: Path) -> np.ndarray:
    mask = None
    for c in reference.CHANNELS:
        d = np.asarray(nib.load(str(reference.find_channel(case, c))).dataobj) != 0
        mask = d if mask is None else mask | d
    return mask


def abs_stats(d: np.ndarray) -> dict:
    a = np.abs(d.astype(np.float64))
    if a.size == 0:
        return {"max": None, "mean": None, "p99": None}
    return {"max": float(a.max()), "mean": float(a.mean()), "p99": float(np.percentile(a, 99))}


def match_blobs(lab_r: np.ndarray, lab_p: np.ndarray, blobs_r, blobs_p, min_voxels: int,
                rel_tol: float) -> dict:
    """Each stochseg blob against the reference blob it overlaps most (and back)."""
    nr, npy = int(lab_r.max()), int(lab_p.max())
    both = (lab_r > 0) | (lab_p > 0)
    pairs = np.bincount(lab_r[both].astype(np.int64) * (npy + 1) + lab_p[both],
                        minlength=(nr + 1) * (npy + 1)).reshape(nr + 1, npy + 1)
    size_r, size_p = pairs.sum(1), pairs.sum(0)
    logit_r = {b["id"]: b["mean_logit"] for b in blobs_r}
    logit_p = {b["id"]: b["mean_logit"] for b in blobs_p}
    rows, ok = [], True
    used = set()
    for i in range(1, nr + 1):
        j = int(np.argmax(pairs[i, 1:])) + 1 if npy else 0
        inter = int(pairs[i, j]) if j else 0
        row = {"rust_id": i, "rust_voxels": int(size_r[i]), "rust_mean_logit": logit_r.get(i)}
        if inter > 0:
            used.add(j)
            rel = abs(int(size_r[i]) - int(size_p[j])) / max(int(size_r[i]), 1)
            row.update({"ref_id": j, "ref_voxels": int(size_p[j]),
                        "ref_mean_logit": logit_p.get(j), "rel_voxel_diff": rel,
                        "dice": 2 * inter / (int(size_r[i]) + int(size_p[j]))})
            row["ok"] = rel <= rel_tol or size_r[i] < min_voxels
        else:
            row.update({"ref_id": None, "ok": bool(size_r[i] < min_voxels)})
        ok &= row["ok"]
        rows.append(row)
    unmatched_ref = [{"ref_id": j, "ref_voxels": int(size_p[j]), "ref_mean_logit": logit_p.get(j)}
                     for j in range(1, npy + 1) if j not in used]
    ok &= all(u["ref_voxels"] < min_voxels for u in unmatched_ref)
    big_r = sum(1 for i in range(1, nr + 1) if size_r[i] >= min_voxels)
    big_p = sum(1 for j in range(1, npy + 1) if size_p[j] >= min_voxels)
    return {"count_rust": nr, "count_ref": npy, "count_rust_ge_min": big_r,
            "count_ref_ge_min": big_p, "min_voxels": min_voxels, "rel_tol": rel_tol,
            "matches": rows, "unmatched_ref": unmatched_ref, "ok": bool(ok and big_r == big_p)}


def compare_deterministic(rust_out: Path, ref_out: Path, brain: np.ndarray, tol: float) -> dict:
    mr, mp = load_map(rust_out / "mean_logits.nii.gz"), load_map(ref_out / "mean_logits.nii.gz")
    sr, sp = load_map(rust_out / "std_logits.nii.gz"), load_map(ref_out / "std_logits.nii.gz")
    lr, lp = load_map(rust_out / "labels.nii.gz"), load_map(ref_out / "labels.nii.gz")
    d_brain = abs_stats((mr - mp)[brain])
    d_all = abs_stats(mr - mp)
    d_std = abs_stats((sr - sp)[brain])
    differing = lr != lp
    # a label may only differ where the mean logit sits within the tolerance of the threshold
    near = np.abs(mp) <= tol
    labels_ok = bool(not differing.any() or (differing <= near).all())
    ok = d_all["max"] <= tol and d_std["max"] <= tol and labels_ok
    return {"tolerance_abs": tol, "mean_logit_abs_diff_brain": d_brain,
            "mean_logit_abs_diff_all": d_all, "std_logit_abs_diff_brain": d_std,
            "label_voxels_differing": int(differing.sum()), "labels_identical": not differing.any(),
            "ok": bool(ok)}


def batch_means_se(diff: np.ndarray, mask: np.ndarray, block: int) -> float | None:
    """Standard error of mean(diff[mask]) from the means of block^3 tiles (batch means), which
    holds for spatially correlated noise as long as tiles are larger than the correlation."""
    sums, counts = [], []
    for i in range(0, diff.shape[0], block):
        for j in range(0, diff.shape[1], block):
            for k in range(0, diff.shape[2], block):
                m = mask[i:i + block, j:j + block, k:k + block]
                n = int(m.sum())
                if n:
                    sums.append(float(diff[i:i + block, j:j + block, k:k + block][m].sum()))
                    counts.append(n)
    if len(counts) < 10:
        return None
    sums, counts = np.array(sums), np.array(counts, dtype=np.float64)
    mean = sums.sum() / counts.sum()
    # ratio estimator: var(mean) = sum((s_b - mean n_b)^2) / (sum n_b)^2 * B / (B - 1)
    b = len(counts)
    return float(np.sqrt(np.sum((sums - mean * counts) ** 2) * b / (b - 1)) / counts.sum())


def compare_stochastic(rust_out: Path, ref_out: Path, brain: np.ndarray, seed: int,
                       z_tail: float, tail_frac_max: float) -> dict:
    """Different noise streams: each mean logit averages K noisy passes per model, so the two
    maps differ by noise whose standard error se the reference measured per voxel (the spread
    within each model across its passes; the spread between models is the same in both). With
    Rust's noise drawn from the same N(0, sigma^2), diff ~ N(0, 2 se^2) per voxel. Checks:
    - scale: R = rms(diff) / rms(sqrt(2) se) near 1 (unbiased whatever K: E[se_est^2] = se^2;
      a noise sigma 10% off on one side gives R = 0.955, 15% off 0.937);
    - bias: mean(diff) against its standard error from batch means over 16^3 blocks (the noise
      in neighbouring voxels is correlated through the receptive field, so not rms / sqrt(N));
    - quantiles: p99 |diff| against p99 of |sqrt(2) se N(0, 1)| drawn once from the se map;
    - tail: P(|z| > z_tail), z = diff / (sqrt(2) se_s), se_s the se pooled over each voxel's
      3x3x3 neighbourhood (a per-voxel se from K - 1 dof per model alone has a heavy t tail)."""
    from scipy import ndimage

    mr, mp = load_map(rust_out / "mean_logits.nii.gz"), load_map(ref_out / "mean_logits.nii.gz")
    se_path = ref_out / "noise_se_logits.nii.gz"
    diff = (mr - mp)[brain].astype(np.float64)
    res = {"mean_logit_abs_diff_brain": abs_stats(diff),
           "mean_logit_signed_mean_diff_brain": float(diff.mean()) if diff.size else None}
    if not se_path.exists() or diff.size == 0:
        res.update({"ok": None, "note": "no noise_se map (one pass per model)"})
        return res
    se_map = load_map(se_path).astype(np.float64)
    se = se_map[brain] * math.sqrt(2.0)
    rng = np.random.default_rng(seed + 12345)
    expected = abs_stats(se * rng.standard_normal(se.shape))
    rms_se = float(np.sqrt(np.mean(se ** 2)))
    scale = float(np.sqrt(np.mean(diff ** 2))) / rms_se if rms_se > 0 else None
    bias_se = batch_means_se(mr - mp, brain, block=16)
    bias_z = float(diff.mean()) / bias_se if bias_se else None
    pooled = np.sqrt(np.maximum(ndimage.uniform_filter(se_map ** 2, size=3, mode="nearest"), 0))[brain]
    pos = pooled > 0
    z = diff[pos] / (math.sqrt(2.0) * pooled[pos])
    tail_frac = float(np.mean(np.abs(z) > z_tail)) if z.size else 0.0
    p99_ratio = res["mean_logit_abs_diff_brain"]["p99"] / expected["p99"] if expected["p99"] else None
    ok = (scale is not None and 0.93 <= scale <= 1.07
          and bias_z is not None and abs(bias_z) <= 4.0
          and tail_frac <= tail_frac_max and p99_ratio is not None and p99_ratio <= 1.25)
    res.update({
        "expected_abs_diff_from_noise": expected,
        "rms_scale_ratio": scale,
        "bias": {"mean_diff": float(diff.mean()), "se_batch_means": bias_se, "z": bias_z},
        "p99_ratio": p99_ratio,
        "z": {"mean": float(z.mean()), "std": float(z.std()), "tail": z_tail,
              "tail_fraction": tail_frac, "tail_fraction_max": tail_frac_max,
              "gaussian_tail_fraction": float(math.erfc(z_tail / math.sqrt(2)))},
        "voxels_without_noise_spread": int((se == 0).sum()),
        "criteria": f"rms(diff)/rms(sqrt2 se) in [0.93, 1.07], |mean diff| <= 4 x its batch-means "
                    f"standard error, "
                    f"p99|diff| <= 1.25 x p99 expected, P(|z| > {z_tail}) <= {tail_frac_max}",
        "ok": bool(ok),
    })
    return res


def compare_placement(rust_out: Path, plain_out: Path, brain: np.ndarray, rust_blobs, plain_blobs,
                      a) -> dict:
    """stochseg (windows placed on the brain's bounding box) vs the plain reference (windows over
    the whole grid). A U-Net's output at a voxel depends on where the window around it sits, so
    the per-voxel mean logits differ by more than rounding. Judged: the mean |difference| over
    the brain against the mean |logit| there (at most a.plain_logit_rel_tol of it; on the demo
    case the crop moves them by 5.5%, swapping t1n/t1c and t2w/t2f by 33%), the tumour labels
    (Dice of the two foregrounds >= a.plain_dice_min), the blobs (one to one for blobs of
    a.blob_min_voxels or more, voxel counts within a.blob_rel_tol) and each such blob's mean
    logit, the study's confidence (within a.plain_confidence_rel_tol x max(|ref|, 1))."""
    mr, mp = load_map(rust_out / "mean_logits.nii.gz"), load_map(plain_out / "mean_logits.nii.gz")
    lr, lp = load_map(rust_out / "labels.nii.gz"), load_map(plain_out / "labels.nii.gz")
    fr, fp = lr > 0, lp > 0
    both = int(fr.sum() + fp.sum())
    dice = 2.0 * int((fr & fp).sum()) / both if both else 1.0
    prob = lambda v: 1.0 / (1.0 + np.exp(-v[brain].astype(np.float64)))  # noqa: E731
    blobs = match_blobs(lr, lp, rust_blobs, plain_blobs, a.blob_min_voxels, a.blob_rel_tol)
    confidence = []
    for row in blobs["matches"]:
        if row["rust_voxels"] < a.blob_min_voxels or row.get("ref_mean_logit") is None:
            continue
        diff = abs(row["rust_mean_logit"] - row["ref_mean_logit"])
        allowed = a.plain_confidence_rel_tol * max(abs(row["ref_mean_logit"]), 1.0)
        confidence.append({"rust_id": row["rust_id"], "ref_id": row["ref_id"],
                           "abs_diff": diff, "allowed": allowed, "ok": diff <= allowed})
    diff = abs_stats((mr - mp)[brain])
    scale = float(np.mean(np.abs(mp[brain].astype(np.float64)))) if brain.any() else 0.0
    logit_rel = diff["mean"] / scale if scale > 0 and diff["mean"] is not None else None
    ok = (logit_rel is not None and logit_rel <= a.plain_logit_rel_tol
          and dice >= a.plain_dice_min and blobs["ok"] and all(c["ok"] for c in confidence))
    return {"mean_logit_abs_diff_brain": diff, "ref_mean_abs_logit_brain": scale,
            "mean_logit_rel_diff_brain": logit_rel, "logit_rel_tol": a.plain_logit_rel_tol,
            "probability_abs_diff_brain": abs_stats(prob(mr) - prob(mp)),
            "label_voxels_differing": int((fr != fp).sum()), "foreground_dice": dice,
            "dice_min": a.plain_dice_min, "blobs": blobs, "blob_confidence": confidence,
            "confidence_rel_tol": a.plain_confidence_rel_tol, "ok": bool(ok)}


# ---------------------------------------------------------------------------------------------
# output

def fmt(v, digits=1, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def ort_median(md: dict) -> float | None:
    if md.get("onnxruntime_s") is not None:
        return md["onnxruntime_s"]
    return ort_seconds(md.get("timings_s", {}))


def cpu_median(md: dict, runs: list) -> float | None:
    if md.get("cpu_s") is not None:
        return md["cpu_s"]
    values = [r["cpu_s"] for r in runs if r.get("rc") == 0 and r.get("cpu_s") is not None]
    return statistics.median(values) if values else None


GB = 1e9  # the issue's "1 GB": 10^9 bytes (953.7 MiB)


def targets(vs: dict) -> list[dict]:
    """Issue #5's targets on the full-size case, from the versus medians: each with what was
    measured, the bound, and whether it was met."""
    rust = vs.get("rust")
    if not rust:
        return []
    out = []
    ort = ort_median(rust)
    if ort is not None:
        share = 1.0 - ort / rust["wall_s"]
        out.append({"target": "time outside ONNX Runtime <= 10% of wall time",
                    "measured": f"{share:.1%}", "met": share <= 0.10})
    peak = rust["peak_rss_mib"] * 1024 * 1024
    out.append({"target": "peak RSS <= 1 GB (10^9 bytes)",
                "measured": f"{peak / GB:.3f} GB ({rust['peak_rss_mib']:.0f} MiB)",
                "met": peak <= GB})
    for name, key in (("plain", "ratios_plain"), ("same windows", "ratios")):
        if vs.get(key):
            r = vs[key]["peak_rss"]
            out.append({"target": f"peak RSS <= half of the reference's ({name})",
                        "measured": f"{r:.2f}", "met": r <= 0.5})
    plain = vs.get("ratios_plain")
    if plain:
        cpu = f"; CPU time {1 / plain['cpu']:.2f}x" if plain.get("cpu") else ""
        out.append({"target": "end to end >= 2x faster than the plain reference (wall)",
                    "measured": f"{plain['speedup']:.2f}x{cpu}", "met": plain["speedup"] >= 2.0})
    return out


def placement_markdown(g: dict, passes) -> str:
    m, pr = g["mean_logit_abs_diff_brain"], g["probability_abs_diff_brain"]
    b = g["blobs"]
    conf = ", ".join(f"#{c['rust_id']} {c['abs_diff']:.3f} (allowed {c['allowed']:.3f})"
                     for c in g["blob_confidence"]) or "none"
    return (f"**stochseg vs the plain reference** ({passes} passes each; windows on the brain's "
            f"bounding box vs over the whole grid, and different noise streams; window placement "
            f"moves a U-Net's logits): per voxel in the brain |Δ mean logit| mean {m['mean']:.3f} "
            f"= {g['mean_logit_rel_diff_brain']:.1%} of the mean |logit| "
            f"{g['ref_mean_abs_logit_brain']:.2f} (at most {g['logit_rel_tol']:.0%}), p99 "
            f"{m['p99']:.3f}, max {m['max']:.3f}; |Δ probability| mean {pr['mean']:.1e}, p99 "
            f"{pr['p99']:.1e}, max {pr['max']:.2f}; tumour labels Dice "
            f"{g['foreground_dice']:.4f} (>= {g['dice_min']}; {g['label_voxels_differing']} voxels "
            f"differ); blobs {b['count_rust']} vs {b['count_ref']}, ≥ {b['min_voxels']} voxels "
            f"{b['count_rust_ge_min']} vs {b['count_ref_ge_min']}, voxel counts within "
            f"{b['rel_tol']:.0%}; blob mean logit |Δ| {conf} (tolerance "
            f"{g['confidence_rel_tol']:.0%} of max(|ref|, 1)): **{'PASS' if g['ok'] else 'FAIL'}**\n")


def markdown(res: dict) -> str:
    L = []
    a = res["config"]
    L.append("# stochseg benchmark\n")
    L.append(f"{res['started']} on {res['machine']['cpus']} CPUs ({res['machine']['platform']}); "
             f"load average at start {res['machine']['loadavg_start']}. "
             f"stochseg {res.get('stochseg_version', '?')}, ONNX Runtime "
             f"{res['machine']['onnxruntime']} (CPU provider; the OpenVINO plugin in its own section), "
             f"{a['passes']} passes per model, sigma {a['sigma']}, seed {a['seed']}, "
             f"batch {a['batch_size']}, overlap {a['overlap']}. Medians of {a['runs']} run(s) "
             f"(reference: {a['ref_runs']}). Timings on a shared machine are noisy: compare "
             "ratios, and see the CPU utilization column (CPU seconds / wall seconds of the "
             "child; below the thread count means it waited for a core).\n")
    loads = [r["loadavg_1m_before"] for part in res.get("parts", []) for r in part["runs"]]
    utils = [(r["cpu_util"], part["threads"]) for part in res.get("parts", [])
             for r in part["runs"] if r.get("cpu_util") is not None]
    if loads:
        starved = sum(1 for u, t in utils if u < 0.8 * t)
        L.append(f"1-minute load average before the runs: {min(loads):.1f} to {max(loads):.1f} "
                 f"on {res['machine']['cpus']} CPUs; {starved} of {len(utils)} runs got less than "
                 f"80% of their threads' CPU time.\n")
    if res["series"]:
        L.append("## Scaling (stochseg)\n")
        L.append("| case | grid (i×j×k) | crop (z×y×x) | windows/pass p32/p64/p256 | threads | wall s "
                 "| ensemble s | inside ORT s | passes/s | patches/s | peak RSS MiB | CPU s | CPU util "
                 "| 1→T speedup |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        base = {}
        for s in res["series"]:
            md, r0 = s["median"], next((r for r in s["runs"] if r["rc"] == 0), None)
            if not md or r0 is None:
                L.append(f"| {s['case_name']} | | | | {s['threads']} | FAILED | | | | | | | | |")
                continue
            if s["threads"] == 1:
                base[s["case_name"]] = md["wall_s"]
            sp = base.get(s["case_name"])
            wins = "/".join(str(m["windows_per_pass"]) for m in r0["work"]["per_model"])
            L.append(f"| {s['case_name']} | {'×'.join(map(str, s['grid_ijk']))} | "
                     f"{'×'.join(map(str, r0['crop_shape_zyx']))} | {wins} | {s['threads']} | "
                     f"{fmt(md['wall_s'])} | {fmt(md['timings_s'].get('ensemble'))} | "
                     f"{fmt(ort_median(md))} | {fmt(md['passes_per_s'], 2)} | "
                     f"{fmt(md['patches_per_s'], 0)} | {fmt(md['peak_rss_mib'], 0)} | "
                     f"{fmt(cpu_median(md, s['runs']))} | {fmt(md['cpu_util'], 2)} | "
                     f"{fmt(sp / md['wall_s'], 2) if sp and s['threads'] != 1 else '—'} |")
        L.append("")
        stages = sorted({k for s in res["series"] for k in s["median"].get("timings_s", {})},
                        key=lambda k: (k == "total", k))
        L.append("Stages (stochseg report `timings_s`, medians, seconds):\n")
        L.append("| case | threads | " + " | ".join(stages) + " |")
        L.append("|---|---|" + "---|" * len(stages))
        for s in res["series"]:
            t = s["median"].get("timings_s", {})
            L.append(f"| {s['case_name']} | {s['threads']} | "
                     + " | ".join(fmt(t.get(k), 2) for k in stages) + " |")
        L.append("")
        L.append("passes/s and patches/s are over the `ensemble` stage; patches = windows per pass "
                 "(nnU-Net placement on the crop) x passes; on the CPU the last batch of a pass "
                 "holds only the patches left (see results.json `work`).\n")
        if res.get("reproducible_across_threads") is not None:
            L.append(f"stochseg output identical for 1 and 2 threads (full size): "
                     f"{res['reproducible_across_threads']}\n")
    vs = res.get("versus")
    if vs:
        L.append(f"## stochseg vs numpy + onnxruntime, full size, {vs['threads']} threads, "
                 f"{vs['total_passes']} passes\n")
        L.append("| implementation | runs | wall s | ensemble s | inside ORT s | passes/s "
                 "| patches/s | peak RSS MiB | CPU s | CPU util |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        cpu = {}
        rows = (("stochseg (Rust)", "rust"), ("reference.py, same windows", "ref"),
                ("reference.py --no-crop (plain)", "plain"))
        for name, key in rows:
            if key not in vs:
                continue
            md = vs[key]
            if not md:
                L.append(f"| {name} | 0 | FAILED | | | | | | | |")
                continue
            cpu[key] = cpu_median(md, vs.get(f"{key}_runs", []))
            L.append(f"| {name} | {md['runs_ok']} | {fmt(md['wall_s'])} | "
                     f"{fmt(md['timings_s'].get('ensemble'))} | {fmt(ort_median(md))} | "
                     f"{fmt(md['passes_per_s'], 2)} | {fmt(md['patches_per_s'], 0)} | "
                     f"{fmt(md['peak_rss_mib'], 0)} | {fmt(cpu[key])} | {fmt(md['cpu_util'], 2)} |")
        L.append("\nSame windows: the reference places them on the brain's bounding box as stochseg "
                 "does (nnU-Net's crop); plain: over the whole grid (`--no-crop`).")
        for key, name in (("ref", "same windows"), ("plain", "plain")):
            if not vs.get(key):
                continue
            t = vs[key]["timings_s"]
            L.append(f"reference.py ({name}) ensemble stage: inside ONNX Runtime "
                     f"{fmt(t.get('onnxruntime'))} s, noise {fmt(t.get('ensemble_noise'))} s, "
                     f"window copy + stitching {fmt(t.get('ensemble_stitch'))} s, aggregation "
                     f"{fmt(t.get('ensemble_aggregate'))} s.")
        L.append("")
        for key, name in (("ratios", "same windows"), ("ratios_plain", "plain")):
            r = vs.get(key)
            if not r:
                continue
            L.append(f"stochseg / reference.py ({name}): wall {fmt(r.get('wall'), 2)} "
                     f"(speedup {fmt(r.get('speedup'), 2)}x), ensemble stage "
                     f"{fmt(r.get('ensemble'), 2)}, CPU time {fmt(r.get('cpu'), 2)}, peak RSS "
                     f"{fmt(r.get('peak_rss'), 2)}.")
        L.append("\n(On a busy machine the CPU-time ratio is the steadier one: wall time depends "
                 "on how many cores each run got.)\n")
        rows = vs.get("targets")
        if rows:
            L.append("Targets (issue #5, full size, medians):\n")
            L.append("| target | measured | met |")
            L.append("|---|---|---|")
            L.extend(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
                     for t in rows)
            L.append("")
    ag = res.get("agreement", {})
    if ag.get("deterministic"):
        d = ag["deterministic"]
        m = d["mean_logit_abs_diff_brain"]
        L.append("## Agreement\n")
        L.append(f"**Deterministic** (`stochseg --deterministic` vs `reference.py --passes 1 "
                 f"--sigma 0`, full size): |Δ mean logit| in the brain max {m['max']:.2e}, mean "
                 f"{m['mean']:.2e}, p99 {m['p99']:.2e} (whole grid max "
                 f"{d['mean_logit_abs_diff_all']['max']:.2e}); |Δ std| max "
                 f"{d['std_logit_abs_diff_brain']['max']:.2e}; labels identical: "
                 f"{d['labels_identical']} ({d['label_voxels_differing']} voxels differ); "
                 f"tolerance {d['tolerance_abs']}: **{'PASS' if d['ok'] else 'FAIL'}**\n")
        tr, tp = d.get("timings", {}).get("rust"), d.get("timings", {}).get("ref")
        if tr and tp:
            L.append(f"Deterministic runs (3 passes, one run each): stochseg {fmt(tr['wall_s'])} s, "
                     f"{fmt(tr['peak_rss_mib'], 0)} MiB; reference {fmt(tp['wall_s'])} s, "
                     f"{fmt(tp['peak_rss_mib'], 0)} MiB.\n")
        if d.get("blobs"):
            b = d["blobs"]
            L.append(f"Blobs: {b['count_rust']} (stochseg) vs {b['count_ref']} (reference); "
                     f"**{'PASS' if b['ok'] else 'FAIL'}**\n")
    if ag.get("stochastic"):
        s = ag["stochastic"]
        m = s["mean_logit_abs_diff_brain"]
        if not ag.get("deterministic"):
            L.append("## Agreement\n")
        L.append(f"**Stochastic** ({vs['total_passes'] if vs else '?'} passes, different noise "
                 f"streams): |Δ mean logit| in the brain max {m['max']:.3f}, mean {m['mean']:.4f}, "
                 f"p99 {m['p99']:.3f}; signed mean {s['mean_logit_signed_mean_diff_brain']:.2e}.\n")
        if "z" in s:
            e, z = s["expected_abs_diff_from_noise"], s["z"]
            L.append(f"Expected from the noise alone (|√2·se·N(0,1)| with se the reference's "
                     f"per-voxel standard error of the mean): max {e['max']:.3f}, mean "
                     f"{e['mean']:.4f}, p99 {e['p99']:.3f}. rms(Δ)/rms(√2·se) = "
                     f"{s['rms_scale_ratio']:.3f}; mean(Δ) = {s['bias']['mean_diff']:+.2e} = "
                     f"{s['bias']['z']:+.2f} standard errors (batch means); "
                     f"p99 ratio {s['p99_ratio']:.3f}; z = Δ/(√2·se pooled 3×3×3): mean "
                     f"{z['mean']:+.3f}, std {z['std']:.3f}, P(|z| > {z['tail']:g}) = "
                     f"{z['tail_fraction']:.1e} (Gaussian {z['gaussian_tail_fraction']:.1e}). "
                     f"Criteria: {s['criteria']}: **{'PASS' if s['ok'] else 'FAIL'}**\n")
        else:
            L.append("")
        b = s.get("blobs")
        if b:
            L.append(f"Blobs: {b['count_rust']} (stochseg) vs {b['count_ref']} (reference); "
                     f"≥ {b['min_voxels']} voxels: {b['count_rust_ge_min']} vs "
                     f"{b['count_ref_ge_min']}; matched by overlap, voxel counts within "
                     f"{b['rel_tol']:.0%}: **{'PASS' if b['ok'] else 'FAIL'}**\n")
            L.append("| stochseg id | voxels | mean logit | ref id | voxels | mean logit | Δvoxels | Dice |")
            L.append("|---|---|---|---|---|---|---|---|")
            for row in b["matches"]:
                L.append(f"| {row['rust_id']} | {row['rust_voxels']} | "
                         f"{fmt(row.get('rust_mean_logit'), 3)} | {fmt(row.get('ref_id'))} | "
                         f"{fmt(row.get('ref_voxels'))} | {fmt(row.get('ref_mean_logit'), 3)} | "
                         f"{fmt(row.get('rel_voxel_diff', None) and 100 * row['rel_voxel_diff'], 2, '%')} | "
                         f"{fmt(row.get('dice'), 3)} |")
            for u in b["unmatched_ref"]:
                L.append(f"| — | | | {u['ref_id']} | {u['ref_voxels']} | "
                         f"{fmt(u['ref_mean_logit'], 3)} | | |")
            L.append("")
    if ag.get("deterministic_no_crop"):
        d = ag["deterministic_no_crop"]
        m = d["mean_logit_abs_diff_brain"]
        L.append(f"**Deterministic, crop off on both sides** (stochseg with "
                 f"`preprocess.crop_to_nonzero: false` vs `reference.py --no-crop`): |Δ mean logit| "
                 f"max {d['mean_logit_abs_diff_all']['max']:.2e} (brain mean {m['mean']:.2e}); labels "
                 f"identical: {d['labels_identical']}; blobs {d['blobs']['count_rust']} vs "
                 f"{d['blobs']['count_ref']}; tolerance {d['tolerance_abs']}: "
                 f"**{'PASS' if d['ok'] else 'FAIL'}**\n")
    if ag.get("placement"):
        L.append(placement_markdown(ag["placement"], vs["total_passes"] if vs else "?"))
    if res.get("model_mismatch"):
        mm = res["model_mismatch"]
        L.append("**The model files changed during the benchmark** (SHA-256 of the loaded models "
                 "differs between runs; comparisons across these groups are not like for like): "
                 + "; ".join(", ".join(g) for g in mm["runs per set"]) + "\n")
    if res.get("openvino"):
        L.append(openvino.markdown(res["openvino"], fmt))
    if res["failures"]:
        L.append("## Failures\n")
        for f in res["failures"]:
            L.append(f"- `{f['label']}` rc={f['rc']}{' (timed out)' if f['timed_out'] else ''}: "
                     f"`{' '.join(f['cmd'])}`\n\n```\n{f['log_tail']}\n```")
        L.append("")
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one run per configuration")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                   help="only re-render results.md (beside it) from an existing results.json")
    p.add_argument("--runs", type=int, default=3, help="runs per stochseg configuration (median)")
    p.add_argument("--ref-runs", type=int, default=3,
                   help="runs of each Python reference (same windows, plain)")
    p.add_argument("--passes", type=int, default=10, help="passes per model")
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4,
                   help="the reference's batch (the pipeline's inference.batch_size)")
    p.add_argument("--overlap", type=float, default=0.5, help="the pipeline's inference.overlap")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="scaling series")
    p.add_argument("--versus-threads", type=int, default=2)
    p.add_argument("--sizes", nargs="+", default=["64", "128", FULL],
                   help="scaling cases: N (an N^3 cut of the full case) or 'full'")
    p.add_argument("--skip", nargs="*", default=[],
                   choices=["scaling", "versus", "deterministic", "openvino", "openvino-batch"],
                   help="parts to leave out")
    p.add_argument("--openvino-batches", type=int, nargs="+", default=[4, 8],
                   help="OpenVINO f32 batch sizes to compare (the voxel cap grows with them)")
    p.add_argument("--full-case", type=Path, default=make_case.DEMO)
    p.add_argument("--bin", type=Path, default=ROOT / "target" / "release" / "stochseg")
    p.add_argument("--pipeline", type=Path, default=ROOT / "pipelines" / "brats-goat-stochastic.yaml")
    p.add_argument("--models", type=Path, nargs="+", default=DEFAULT_MODELS,
                   help="the reference's models (must be the pipeline's; checked by SHA-256)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench")
    p.add_argument("--no-snapshot", action="store_true",
                   help="run --bin, --pipeline and the models in place instead of copies made "
                        "at the start under OUT/bin and OUT/snapshot")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    p.add_argument("--det-tol", type=float, default=1e-4)
    p.add_argument("--blob-min-voxels", type=int, default=50,
                   help="blobs smaller than this may be unmatched (near-threshold specks)")
    p.add_argument("--blob-rel-tol", type=float, default=0.05)
    p.add_argument("--plain-logit-rel-tol", type=float, default=0.1,
                   help="vs the plain reference: mean |diff| of the mean logits in the brain "
                        "at most this x their mean |logit| there")
    p.add_argument("--plain-dice-min", type=float, default=0.99,
                   help="vs the plain reference: least Dice of the two tumour foregrounds")
    p.add_argument("--plain-confidence-rel-tol", type=float, default=0.01,
                   help="vs the plain reference: blob mean logits within this x max(|ref|, 1)")
    a = p.parse_args(argv)
    if a.quick:
        a.runs, a.ref_runs = 1, 1
    return a


def ratios(rust: dict, ref: dict) -> dict:
    """stochseg's medians over the reference's."""
    return {"wall": rust["wall_s"] / ref["wall_s"], "speedup": ref["wall_s"] / rust["wall_s"],
            "ensemble": rust["timings_s"]["ensemble"] / ref["timings_s"]["ensemble"],
            "peak_rss": rust["peak_rss_mib"] / ref["peak_rss_mib"],
            "cpu": rust["cpu_s"] / ref["cpu_s"] if rust.get("cpu_s") and ref.get("cpu_s") else None}


def deterministic_pair(bench: Bench, case: Path, threads: int, brain: np.ndarray,
                       plain: bool) -> dict | None:
    """`stochseg --deterministic` vs `reference.py --passes 1 --sigma 0` (both with the crop off
    when `plain`): the same computation, so within --det-tol everywhere and the same blobs."""
    tag = "det-no-crop" if plain else "det"
    rd = bench.run("rust", f"rust-{FULL}-{tag}", case, threads, 1, deterministic=True, plain=plain)
    pd = bench.run("ref", f"ref-{FULL}-{tag}", case, threads, 1, deterministic=True, plain=plain)
    if not (rd["median"] and pd["median"]):
        return None
    det = compare_deterministic(Path(rd["out"]), Path(pd["out"]), brain, bench.a.det_tol)
    lr = load_map(Path(rd["out"]) / "labels.nii.gz")
    lp = load_map(Path(pd["out"]) / "labels.nii.gz")
    blobs_r, blobs_p = rd["runs"][-1]["blobs"], pd["runs"][-1]["blobs"]
    det["blobs"] = match_blobs(lr, lp, blobs_r, blobs_p, 1, 0.0)
    det["blob_mean_logit_max_abs_diff"] = max(
        (abs(x["mean_logit"] - y["mean_logit"]) for x, y in zip(blobs_r, blobs_p)), default=0.0)
    det["ok"] = bool(det["ok"] and det["blobs"]["ok"])
    det["timings"] = {"rust": rd["median"], "ref": pd["median"]}
    det["version"] = rd["runs"][-1]["version"]
    return det


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.render:
        res = json.loads(a.render.read_text())
        md = markdown(res)
        (a.render.parent / "results.md").write_text(md + "\n")
        print(md)
        return 0
    if not a.bin.exists():
        print(f"bench: {a.bin}: not built (make build)", file=sys.stderr)
        return 2
    import onnxruntime
    built = a.bin
    if not a.no_snapshot:
        # other builds may replace the binary while the benchmark runs: time one fixed copy
        snap = a.out / "bin" / a.bin.name
        snap.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a.bin, snap)
        a.bin = snap
    frozen = None
    if not a.no_snapshot:
        frozen = snapshot_pipeline(a.pipeline, a.out / "snapshot")
        if frozen:
            a.pipeline, a.models, inference = frozen
            # the reference follows the pipeline's tiling
            a.batch_size = int(inference.get("batch_size", a.batch_size))
            a.overlap = float(inference.get("overlap", a.overlap))
    bench = Bench(a)
    res = {
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_start": [round(v, 2) for v in os.getloadavg()],
                    "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
                   if k != "models"} | {"models": [str(m) for m in a.models]},
        "ort_dylib_path": bench.env.get("ORT_DYLIB_PATH"),
        "pipeline_ran": str(a.pipeline), "models_ran": [str(m) for m in a.models],
        "binary": {"built": str(built), "ran": str(a.bin), "sha256": reference.sha256(a.bin),
                   "mtime": dt.datetime.fromtimestamp(built.stat().st_mtime).isoformat(
                       timespec="seconds")},
        "git": git_state(),
        "series": [], "failures": bench.failures,
    }
    cases = {}
    for size in a.sizes:
        if size == FULL:
            cases[FULL] = make_case.ensure_source(a.full_case)
        else:
            n = int(size)
            cases[f"{n}^3"] = make_case.make_case(a.full_case, a.out / "cases", (n, n, n))

    def grid(case: Path):
        return list(nib.load(str(reference.find_channel(case, "t1n"))).shape[:3])

    full_rust = {}
    if "scaling" not in a.skip:
        for name, case in cases.items():
            for t in a.threads:
                tag = name.replace("^3", "") if name != FULL else FULL
                s = bench.run("rust", f"rust-{tag}-t{t}", case, t, a.runs)
                s.update({"case_name": name, "grid_ijk": grid(case)})
                res["series"].append(s)
                if name == FULL:
                    full_rust[t] = s
    if len(full_rust) >= 2 and all(s["median"] for s in full_rust.values()):
        outs = [Path(s["out"]) for s in full_rust.values()]
        maps = [load_map(o / "mean_logits.nii.gz") for o in outs]
        res["reproducible_across_threads"] = bool(all(np.array_equal(maps[0], m) for m in maps[1:]))

    full = make_case.ensure_source(a.full_case)
    brain = None
    if "versus" not in a.skip:
        tv = a.versus_threads
        rust = full_rust.get(tv) or bench.run("rust", f"rust-{FULL}-t{tv}", full, tv, a.runs)
        ref = bench.run("ref", f"ref-{FULL}-t{tv}", full, tv, a.ref_runs)
        plain = bench.run("ref", f"ref-plain-{FULL}-t{tv}", full, tv, a.ref_runs, plain=True)
        rm, pm, qm = rust["median"], ref["median"], plain["median"]
        vs = {"threads": tv, "total_passes": a.passes * len(a.models), "rust": rm, "ref": pm,
              "plain": qm, "rust_runs": rust["runs"], "ref_runs": ref["runs"],
              "plain_runs": plain["runs"]}
        brain = brain_mask(full)
        if rm and qm:
            vs["ratios_plain"] = ratios(rm, qm)
            res.setdefault("agreement", {})["placement"] = compare_placement(
                Path(rust["out"]), Path(plain["out"]), brain, rust["runs"][-1]["blobs"],
                plain["runs"][-1]["blobs"], a)
        if rm and pm:
            vs["ratios"] = ratios(rm, pm)
            st = compare_stochastic(Path(rust["out"]), Path(ref["out"]), brain, a.seed,
                                    z_tail=5.0, tail_frac_max=2e-3)
            lr = load_map(Path(rust["out"]) / "labels.nii.gz")
            lp = load_map(Path(ref["out"]) / "labels.nii.gz")
            st["blobs"] = match_blobs(lr, lp, rust["runs"][-1]["blobs"], ref["runs"][-1]["blobs"],
                                      a.blob_min_voxels, a.blob_rel_tol)
            res.setdefault("agreement", {})["stochastic"] = st
            res["stochseg_version"] = rust["runs"][-1]["version"]
        vs["targets"] = targets(vs)
        res["versus"] = vs
    if "openvino" not in a.skip:
        tv = a.versus_threads
        brain = brain if brain is not None else brain_mask(full)
        cpu_part = full_rust.get(tv) if "versus" in a.skip else rust
        plain_median = res.get("versus", {}).get("plain")
        res["openvino"] = openvino.run_series(bench, full, tv, brain, cpu_part, plain_median,
                                              sys.modules[__name__])
    if "deterministic" not in a.skip:
        tv = a.versus_threads
        brain = brain if brain is not None else brain_mask(full)
        for key, plain in (("deterministic", False), ("deterministic_no_crop", True)):
            det = deterministic_pair(bench, full, tv, brain, plain)
            if det:
                res.setdefault("agreement", {})[key] = det
                res.setdefault("stochseg_version", det.pop("version"))
    sets = {}
    for part in bench.extra:
        for r in part["runs"]:
            if r.get("models_sha256"):
                sets.setdefault(json.dumps(sorted(r["models_sha256"].values())), []).append(
                    part["label"])
    if len(sets) > 1:
        res["model_mismatch"] = {"distinct model sets": len(sets),
                                 "runs per set": [sorted(set(v)) for v in sets.values()]}
    mismatch = res.get("model_mismatch")
    res["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    res["parts"] = [{k: v for k, v in part.items() if k != "median"} for part in bench.extra]

    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    (a.out / "results.md").write_text(md + "\n")
    print(md)
    checks = [c.get("ok") for c in res.get("agreement", {}).values()]
    checks += [c.get("ok") for c in res.get("openvino", {}).get("agreement", {}).values()]
    failed = bool(bench.failures) or any(c is False for c in checks) or bool(mismatch)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
