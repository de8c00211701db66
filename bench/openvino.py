"""The OpenVINO rows of `make bench` (bench/run.py): stochseg on the full-size case with
`--device openvino` at f32 and at bf16, beside ONNX Runtime's own CPU provider and the Python
references, and how far their results move.

- f32 against the CPU provider (the same seed and passes, so the same noise): max and mean
  |diff| of the mean logits in the brain (the issue's bound: 1e-4), labels and blobs identical;
- bf16 against f32: Dice of the tumour labels (at least 0.99), blobs matched by overlap, each
  blob's mean logit within 1% of max(|f32|, 1) (blobs of --blob-min-voxels or more);
- batch sizes: OpenVINO f32 with the pipeline's batch and with larger ones (--openvino-batches;
  patches per call capped by voxels as the pipeline caps them, `inference.max_batch_voxels`
  scaled with the batch), one run each unless --runs says otherwise.

bf16 runs only where OpenVINO's CPU device lists BF16 (AVX512_BF16 or AMX); elsewhere its rows
say why they are missing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

F32_TOL = 1e-4
BF16_DICE_MIN = 0.99
BF16_BLOB_REL_TOL = 0.01
# issue 15's speed targets against the plain reference (wall time, full size, 30 passes)
SPEEDUP_TARGETS = {"f32": 3.5, "bf16": 6.0}
# a batch variant B gets inference.max_batch_voxels = B x 2^18: B patches of 16x32x32 and
# 16x64x64 per call, B/4 (at least 1) of 16x256x256
VOXELS_PER_BATCH = 1 << 18


def plugin_info(python: str = sys.executable) -> dict:
    """The plugin's version and its CPU device's capabilities, through onnxruntime's Python API
    (in a child: a library registers once per process); {"error": ...} when it cannot load."""
    code = (
        "import importlib.metadata as md, json, onnxruntime as ort, onnxruntime_ep_openvino as ov\n"
        "ort.register_execution_provider_library('ov', ov.get_library_path())\n"
        "d = [d for d in ort.get_ep_devices() if d.ep_name == 'OpenVINOExecutionProvider'"
        " and d.ep_metadata.get('ov_device') == 'CPU']\n"
        "m = d[0].ep_metadata if d else {}\n"
        "print(json.dumps({'package': md.version('onnxruntime-ep-openvino'),"
        " 'version': m.get('version'), 'library': ov.get_library_path(),"
        " 'device': m.get('FULL_DEVICE_NAME'),"
        " 'capabilities': m.get('OPTIMIZATION_CAPABILITIES', '').split()}))\n")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["unknown"])[-1]}
    import json

    return json.loads(out.stdout)


def batch_pipeline(pipeline: Path, dest: Path, batch: int) -> Path:
    """A copy of `pipeline` whose `inference.batch_size` is `batch` and whose voxel cap grows
    with it (VOXELS_PER_BATCH)."""
    import yaml

    cfg = yaml.safe_load(pipeline.read_text())
    for m in cfg["models"]:
        src = Path(m["path"])
        m["path"] = str(src if src.is_absolute() else (pipeline.parent / src).resolve())
    inference = cfg.setdefault("inference", {})
    inference["batch_size"] = batch
    inference["max_batch_voxels"] = VOXELS_PER_BATCH * batch
    variant = dest / "snapshot" / f"{pipeline.stem}-batch{batch}.yaml"
    variant.parent.mkdir(parents=True, exist_ok=True)
    variant.write_text(f"# {pipeline} with batch {batch}, made by bench/openvino.py\n"
                       + yaml.safe_dump(cfg, sort_keys=False))
    return variant


def compare_f32(ov_out: Path, cpu_out: Path, brain: np.ndarray, blobs_ov, blobs_cpu, load_map,
                abs_stats, match_blobs) -> dict:
    mo, mc = load_map(ov_out / "mean_logits.nii.gz"), load_map(cpu_out / "mean_logits.nii.gz")
    lo, lc = load_map(ov_out / "labels.nii.gz"), load_map(cpu_out / "labels.nii.gz")
    d_brain, d_all = abs_stats((mo - mc)[brain]), abs_stats(mo - mc)
    blobs = match_blobs(lo, lc, blobs_ov, blobs_cpu, 1, 0.0)
    blob_diff = max((abs(x["mean_logit"] - y["mean_logit"]) for x, y in zip(blobs_ov, blobs_cpu)),
                    default=0.0)
    same_blobs = len(blobs_ov) == len(blobs_cpu) and all(
        x["voxels"] == y["voxels"] for x, y in zip(blobs_ov, blobs_cpu))
    labels_identical = bool(np.array_equal(lo, lc))
    ok = d_all["max"] <= F32_TOL and labels_identical and same_blobs and blob_diff <= F32_TOL
    return {"tolerance_abs": F32_TOL, "mean_logit_abs_diff_brain": d_brain,
            "mean_logit_abs_diff_all": d_all, "labels_identical": labels_identical,
            "label_voxels_differing": int((lo != lc).sum()), "blobs": blobs,
            "blobs_identical": same_blobs, "blob_mean_logit_max_abs_diff": blob_diff,
            "ok": bool(ok)}


def compare_bf16(bf_out: Path, f32_out: Path, brain: np.ndarray, blobs_bf, blobs_f32, a,
                 load_map, abs_stats, match_blobs) -> dict:
    mb, mf = load_map(bf_out / "mean_logits.nii.gz"), load_map(f32_out / "mean_logits.nii.gz")
    lb, lf = load_map(bf_out / "labels.nii.gz") > 0, load_map(f32_out / "labels.nii.gz") > 0
    both = int(lb.sum() + lf.sum())
    dice = 2.0 * int((lb & lf).sum()) / both if both else 1.0
    blobs = match_blobs(load_map(bf_out / "labels.nii.gz"), load_map(f32_out / "labels.nii.gz"),
                        blobs_bf, blobs_f32, a.blob_min_voxels, a.blob_rel_tol)
    confidence = []
    for row in blobs["matches"]:
        if row["rust_voxels"] < a.blob_min_voxels or row.get("ref_mean_logit") is None:
            continue
        diff = abs(row["rust_mean_logit"] - row["ref_mean_logit"])
        allowed = BF16_BLOB_REL_TOL * max(abs(row["ref_mean_logit"]), 1.0)
        confidence.append({"bf16_id": row["rust_id"], "f32_id": row["ref_id"],
                           "f32_mean_logit": row["ref_mean_logit"], "abs_diff": diff,
                           "rel_diff": diff / max(abs(row["ref_mean_logit"]), 1.0),
                           "allowed": allowed, "ok": diff <= allowed})
    ok = dice >= BF16_DICE_MIN and blobs["ok"] and all(c["ok"] for c in confidence)
    return {"mean_logit_abs_diff_brain": abs_stats((mb - mf)[brain]), "foreground_dice": dice,
            "dice_min": BF16_DICE_MIN, "label_voxels_differing": int((lb != lf).sum()),
            "blobs": blobs, "blob_confidence": confidence,
            "confidence_rel_tol": BF16_BLOB_REL_TOL, "ok": bool(ok)}


def placement(part: dict) -> dict:
    """Provider, precision and plugin version the last run's report gives for its models."""
    runs = [r for r in part["runs"] if r.get("rc") == 0]
    return runs[-1].get("placement", {}) if runs else {}


def run_series(bench, full: Path, threads: int, brain: np.ndarray, cpu_part: dict | None,
               plain_median: dict | None, h) -> dict:
    """Runs the OpenVINO rows; `cpu_part` is the CPU provider's full-size run at `threads` (run
    here when None), `plain_median` the plain reference's medians (for the targets), `h` the
    helpers of bench/run.py (load_map, abs_stats, match_blobs, ratios)."""
    a = bench.a
    info = plugin_info()
    res = {"plugin": info, "threads": threads}
    if "error" in info:
        res["error"] = f"the OpenVINO plugin does not load: {info['error']}"
        return res
    if cpu_part is None:
        cpu_part = bench.run("rust", f"rust-{FULL}-t{threads}", full, threads, a.runs)
    rows = {"cpu": cpu_part}
    rows["f32"] = bench.run("rust", f"rust-openvino-f32-t{threads}", full, threads, a.runs,
                            device="openvino", precision="f32")
    if "BF16" in info.get("capabilities", []):
        rows["bf16"] = bench.run("rust", f"rust-openvino-bf16-t{threads}", full, threads,
                                 a.runs, device="openvino", precision="bf16")
    else:
        res["bf16_missing"] = ("OpenVINO offers no bf16 on this CPU (capabilities "
                               f"{' '.join(info.get('capabilities', []))})")
    res["rows"] = {k: {"median": p["median"], "placement": placement(p), "out": p["out"],
                       "runs": p["runs"]} for k, p in rows.items()}
    agreement = {}
    if rows["f32"]["median"] and cpu_part["median"]:
        agreement["f32_vs_cpu"] = compare_f32(
            Path(rows["f32"]["out"]), Path(cpu_part["out"]), brain,
            rows["f32"]["runs"][-1]["blobs"], cpu_part["runs"][-1]["blobs"], h.load_map,
            h.abs_stats, h.match_blobs)
    if rows.get("bf16") and rows["bf16"]["median"] and rows["f32"]["median"]:
        agreement["bf16_vs_f32"] = compare_bf16(
            Path(rows["bf16"]["out"]), Path(rows["f32"]["out"]), brain,
            rows["bf16"]["runs"][-1]["blobs"], rows["f32"]["runs"][-1]["blobs"], a, h.load_map,
            h.abs_stats, h.match_blobs)
    res["agreement"] = agreement
    if plain_median:
        res["ratios_plain"] = {k: h.ratios(p["median"], plain_median)
                               for k, p in rows.items() if p["median"]}
    res["targets"] = targets(res)
    if "openvino-batch" not in a.skip:
        res["batches"] = batch_series(bench, full, threads, rows["f32"])
    return res


def batch_series(bench, full: Path, threads: int, base: dict) -> list[dict]:
    """OpenVINO f32 at each of --openvino-batches (the pipeline's own batch is `base`)."""
    a = bench.a
    out = []
    for batch in a.openvino_batches:
        if batch == a.batch_size:
            part = base
        else:
            cfg = batch_pipeline(a.pipeline, bench.out, batch)
            part = bench.run("rust", f"rust-openvino-f32-batch{batch}-t{threads}", full, threads,
                             1 if a.quick else max(1, a.runs - 2), device="openvino",
                             precision="f32", pipeline=cfg)
        r0 = next((r for r in part["runs"] if r.get("rc") == 0), None)
        out.append({"batch_size": batch, "median": part["median"],
                    "per_model": r0["work"]["per_model"] if r0 else None})
    return out


def targets(res: dict) -> list[dict]:
    """Issue 15's targets, each with what was measured and whether it was met."""
    out = []
    ag, rp, rows = res.get("agreement", {}), res.get("ratios_plain", {}), res.get("rows", {})
    for prec, bound in SPEEDUP_TARGETS.items():
        if prec in rp:
            s = rp[prec]["speedup"]
            cpu = f"; CPU time {1 / rp[prec]['cpu']:.2f}x" if rp[prec].get("cpu") else ""
            base = f" (CPU provider {rp['cpu']['speedup']:.2f}x)" if "cpu" in rp else ""
            out.append({"target": f"OpenVINO {prec} >= {bound}x the plain reference (wall)",
                        "measured": f"{s:.2f}x{cpu}{base}", "met": s >= bound})
    f = ag.get("f32_vs_cpu")
    if f:
        out.append({"target": f"OpenVINO f32 mean logits within {F32_TOL:g} of the CPU provider",
                    "measured": f"max {f['mean_logit_abs_diff_all']['max']:.1e}", "met":
                    f["mean_logit_abs_diff_all"]["max"] <= F32_TOL})
        out.append({"target": "OpenVINO f32: identical labels and blobs",
                    "measured": f"{f['label_voxels_differing']} label voxels differ, blobs "
                                f"{'identical' if f['blobs_identical'] else 'differ'}",
                    "met": f["labels_identical"] and f["blobs_identical"]})
    b = ag.get("bf16_vs_f32")
    if b:
        out.append({"target": f"OpenVINO bf16: label Dice >= {BF16_DICE_MIN} against f32",
                    "measured": f"{b['foreground_dice']:.4f}",
                    "met": b["foreground_dice"] >= BF16_DICE_MIN})
        worst = max((c["rel_diff"] for c in b["blob_confidence"]), default=0.0)
        out.append({"target": "OpenVINO bf16: every blob's mean logit within 1% of f32's",
                    "measured": f"largest {worst:.2%}",
                    "met": all(c["ok"] for c in b["blob_confidence"])})
    for prec in ("f32", "bf16"):
        md = rows.get(prec, {}).get("median")
        if not md:
            continue
        ort = md.get("onnxruntime_s")
        if ort is not None:
            share = 1.0 - ort / md["wall_s"]
            out.append({"target": f"OpenVINO {prec}: time outside the models <= 10% of wall",
                        "measured": f"{share:.1%}", "met": share <= 0.10})
        peak = md["peak_rss_mib"] * 1024 * 1024
        out.append({"target": f"OpenVINO {prec}: peak RSS <= 1 GB (10^9 bytes)",
                    "measured": f"{peak / 1e9:.3f} GB ({md['peak_rss_mib']:.0f} MiB)",
                    "met": peak <= 1e9})
    return out


def markdown(res: dict, fmt) -> str:
    L = [f"## OpenVINO (plugin {res['plugin'].get('version', '?')}, "
         f"{res['plugin'].get('device', '?')}), full size, {res['threads']} threads\n"]
    if res.get("error"):
        return "\n".join(L + [f"Not run: {res['error']}\n"])
    L.append("| provider | runs | wall s | ensemble s | inside the models s | peak RSS MiB "
             "| CPU s | CPU util | speedup vs plain reference |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    names = {"cpu": "ONNX Runtime CPU provider", "f32": "OpenVINO f32", "bf16": "OpenVINO bf16"}
    for key, row in res.get("rows", {}).items():
        md = row["median"]
        if not md:
            L.append(f"| {names[key]} | 0 | FAILED | | | | | | |")
            continue
        sp = res.get("ratios_plain", {}).get(key, {}).get("speedup")
        L.append(f"| {names[key]} | {md['runs_ok']} | {fmt(md['wall_s'])} | "
                 f"{fmt(md['timings_s'].get('ensemble'))} | {fmt(md.get('onnxruntime_s'))} | "
                 f"{fmt(md['peak_rss_mib'], 0)} | {fmt(md.get('cpu_s'))} | "
                 f"{fmt(md['cpu_util'], 2)} | {fmt(sp, 2, 'x')} |")
    if res.get("bf16_missing"):
        L.append(f"\nbf16: not run ({res['bf16_missing']}).")
    L.append("")
    ag = res.get("agreement", {})
    f = ag.get("f32_vs_cpu")
    if f:
        m = f["mean_logit_abs_diff_brain"]
        L.append(f"**OpenVINO f32 vs the CPU provider** (same seed and noise): |Δ mean logit| in "
                 f"the brain max {m['max']:.2e}, mean {m['mean']:.2e} (whole grid max "
                 f"{f['mean_logit_abs_diff_all']['max']:.2e}); labels identical: "
                 f"{f['labels_identical']}; blobs identical: {f['blobs_identical']} "
                 f"({f['blobs']['count_rust']} vs {f['blobs']['count_ref']}), blob mean logits "
                 f"|Δ| max {f['blob_mean_logit_max_abs_diff']:.1e}; tolerance "
                 f"{f['tolerance_abs']:g}: **{'PASS' if f['ok'] else 'FAIL'}**\n")
    b = ag.get("bf16_vs_f32")
    if b:
        m = b["mean_logit_abs_diff_brain"]
        conf = ", ".join(f"#{c['f32_id']} {c['f32_mean_logit']:.3f}: {c['abs_diff']:.3f} "
                         f"({c['rel_diff']:.2%})" for c in b["blob_confidence"]) or "none"
        L.append(f"**OpenVINO bf16 vs f32**: label Dice {b['foreground_dice']:.4f} (at least "
                 f"{b['dice_min']}; {b['label_voxels_differing']} voxels differ); |Δ mean logit| "
                 f"in the brain max {m['max']:.3f}, mean {m['mean']:.4f}, p99 {m['p99']:.3f}; "
                 f"blobs {b['blobs']['count_rust']} vs {b['blobs']['count_ref']}; blob mean "
                 f"logit |Δ| (f32 blob: f32 mean logit: |Δ|) {conf} (at most "
                 f"{b['confidence_rel_tol']:.0%} of max(|f32|, 1)): "
                 f"**{'PASS' if b['ok'] else 'FAIL'}**\n")
    if res.get("batches"):
        L.append("OpenVINO f32 by batch size (patches per call for the 16x32x32 / 16x64x64 / "
                 "16x256x256 models):\n")
        L.append("| batch | patches per call | wall s | ensemble s | peak RSS MiB | CPU s |")
        L.append("|---|---|---|---|---|---|")
        for row in res["batches"]:
            md = row["median"] or {}
            per = "/".join(str(m["batch_size"]) for m in row["per_model"] or [])
            L.append(f"| {row['batch_size']} | {per or 'n/a'} | {fmt(md.get('wall_s'))} | "
                     f"{fmt(md.get('timings_s', {}).get('ensemble'))} | "
                     f"{fmt(md.get('peak_rss_mib'), 0)} | {fmt(md.get('cpu_s'))} |")
        L.append("")
    if res.get("targets"):
        L.append("Targets (issue 15, full size, medians):\n")
        L.append("| target | measured | met |")
        L.append("|---|---|---|")
        L.extend(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
                 for t in res["targets"])
        L.append("")
    return "\n".join(L)


FULL = "full"
