"""Bad-input matrix (issue 7): every row runs the real binary on one broken input, config, model
or output location and checks the contract of README "Exit codes":

* the documented exit code (never 101, never a "panicked" message),
* exactly one stderr line starting ``stochseg: error:``, the last one, naming the file, folder
  or config key at fault and the problem (key words per row),
* no output folder, no ``.<name>.partial-*`` staging folder and no ``.<name>.lock`` left beside
  ``--out`` (the folder holding ``--out`` lists exactly what the row put there),
* no patient attribute of the DICOM fixtures in stderr.

Rows build their inputs in the test's temporary folder: NIfTI files with nibabel (or by editing
header bytes), DICOM series with ``tests/fixtures/dicom/make_series.py`` (its ``bad-*``
variants), ONNX models with the ``onnx`` package. The two output rows that need a full or a
read-only file system mount a tmpfs in a private mount namespace (``unshare -rm``), which works
for root and for unprivileged users alike and leaves nothing mounted behind.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import (BIN, CASE_DIR, CASE_ID, CHANNELS, FIXTURES, case_channel_paths, env,
                      error_line, make_series_module, model_path, require, write_config)

OPSET = [helper.make_opsetid("", 17)]
PATIENT_VALUES = [v for v in make_series_module().FAKE_PATIENT.values() if len(v) > 1]


# --------------------------------------------------------------------------------------------
# what a row builds
# --------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """Arguments of `stochseg run` (without --out) and what the error line must name."""

    args: list
    names: list = field(default_factory=list)
    # --out; default RESULTS/out
    out: Path | None = None
    # a tmpfs mounted over RESULTS/mnt in a private mount namespace: mount options
    tmpfs: str | None = None
    # files the row put beside --out (they must be all that is there afterwards)
    keep: tuple = ()


class Ctx:
    """Builders for one row, writing into the test's temporary folder."""

    def __init__(self, tmp: Path, dicom):
        self.tmp = tmp
        self.dicom = dicom
        self.results = tmp / "results"
        self.results.mkdir()

    # --- models and config ------------------------------------------------------------------
    @staticmethod
    def model():
        return ["--model", model_path("unet-p32"), "--passes", "1", "--threads", "2"]

    def config(self, extra: dict, models=None, name="pipeline.yaml") -> Path:
        return write_config(self.tmp / name, models or [model_path("unet-p32")], extra)

    def config_text(self, text: str) -> Path:
        p = self.tmp / "pipeline.yaml"
        p.write_text(text)
        return p

    def onnx(self, name: str, graph, metadata: dict | None = None) -> Path:
        m = helper.make_model(graph, opset_imports=OPSET, producer_name="test_bad_inputs")
        m.ir_version = 8
        for k, v in (metadata or {}).items():
            e = m.metadata_props.add()
            e.key, e.value = k, v
        path = self.tmp / name
        onnx.save(m, str(path))
        return path

    # --- NIfTI --------------------------------------------------------------------------------
    @staticmethod
    def good() -> dict:
        return dict(case_channel_paths())

    @staticmethod
    def inputs(paths: dict) -> list:
        out = []
        for c in CHANNELS:
            out += ["--input", f"{c}={paths[c]}"]
        return out

    def with_channel(self, channel: str, path: Path) -> list:
        paths = self.good()
        paths[channel] = path
        return self.inputs(paths)

    def nifti(self, name: str, data, affine=None, header=None, codes=True) -> Path:
        ref = nib.load(str(case_channel_paths()["t1n"]))
        affine = ref.affine if affine is None else affine
        img = nib.Nifti1Image(data, affine, header)
        if codes:
            img.set_sform(affine, 1)
            img.set_qform(affine, 1)
        path = self.tmp / name
        nib.save(img, str(path))
        return path

    def voxels(self, channel="t1c", dtype=np.float32) -> np.ndarray:
        return nib.load(str(case_channel_paths()[channel])).get_fdata().astype(dtype)

    def raw_nii(self, name: str, edit: Callable[[bytearray], None] | None = None,
                keep_bytes: int | None = None) -> Path:
        """The t1n channel as an uncompressed .nii, header bytes edited in place."""
        data = bytearray(gzip.decompress(case_channel_paths()["t1n"].read_bytes()))
        if edit:
            edit(data)
        if keep_bytes is not None:
            data = data[:keep_bytes]
        path = self.tmp / name
        path.write_bytes(bytes(data))
        return path

    # --- DICOM --------------------------------------------------------------------------------
    def dicom_inputs(self, variant: str) -> tuple[list, Path]:
        """--input per channel: t1n from the bad variant, the others from the plain series."""
        bad = self.dicom.get(variant, ("t1n",))
        plain = self.dicom.get("plain", CHANNELS)
        args = []
        for c in CHANNELS:
            source = bad["channels"].get(c) or plain["channels"][c]
            args += ["--input", f"{c}={source['folder']}"]
        return args, Path(bad["channels"]["t1n"]["folder"])


# --------------------------------------------------------------------------------------------
# row builders: NIfTI
# --------------------------------------------------------------------------------------------
def set_i16(offset: int, *values: int):
    def edit(b: bytearray):
        for i, v in enumerate(values):
            struct.pack_into("<h", b, offset + 2 * i, v)
    return edit


def set_f32(offset: int, *values: float):
    def edit(b: bytearray):
        for i, v in enumerate(values):
            struct.pack_into("<f", b, offset + 4 * i, v)
    return edit


def chain(*edits):
    def edit(b: bytearray):
        for e in edits:
            e(b)
    return edit


# NIfTI-1 header offsets
DIM, DATATYPE, BITPIX, PIXDIM, VOX_OFFSET, SCL_SLOPE = 40, 70, 72, 76, 108, 112
QFORM_CODE, SFORM_CODE, SROW_X, MAGIC = 252, 254, 280, 344


def nifti_truncated(c: Ctx) -> Setup:
    t = c.tmp / f"{CASE_ID}-t1n.nii.gz"
    data = case_channel_paths()["t1n"].read_bytes()
    t.write_bytes(data[: len(data) // 3])
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_truncated_raw(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-cut.nii", keep_bytes=352 + 1000)
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_bad_magic(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-magic.nii", lambda b: b.__setitem__(slice(MAGIC, MAGIC + 4), b"XYZ\0"))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_absurd_dims(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-huge.nii", set_i16(DIM, 3, 30000, 30000, 30000), keep_bytes=352 + 64)
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_negative_dim(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-negdim.nii", set_i16(DIM, 3, -5, 64, 48), keep_bytes=352 + 64)
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_bad_rank(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-rank.nii", set_i16(DIM, 9))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_4d(c: Ctx) -> Setup:
    v = c.voxels()
    t = c.nifti("t1c-4d.nii.gz", np.stack([v, v], axis=-1))
    return Setup(c.model() + c.with_channel("t1c", t), [t])


def nifti_nan(c: Ctx) -> Setup:
    v = c.voxels()
    v[10, 10, 10] = np.nan
    t = c.nifti("t1c-nan.nii.gz", v)
    return Setup(c.model() + c.with_channel("t1c", t), [t])


def nifti_inf(c: Ctx) -> Setup:
    v = c.voxels()
    v[3, 4, 5] = -np.inf
    t = c.nifti("t1c-inf.nii.gz", v)
    return Setup(c.model() + c.with_channel("t1c", t), [t])


def nifti_nan_intercept(c: Ctx) -> Setup:
    # nibabel: a slope of 0 or not finite means "no scaling"; a usable slope needs a finite
    # intercept
    t = c.raw_nii("t1n-scaling.nii", set_f32(SCL_SLOPE, 2.0, float("nan")))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_all_zero(c: Ctx) -> Setup:
    t = c.nifti("t2w-zero.nii.gz", np.zeros_like(c.voxels("t2w")))
    return Setup(c.model() + c.with_channel("t2w", t), [t, "t2w"])


def nifti_other_shape(c: Ctx) -> Setup:
    t = c.nifti("t2f-small.nii.gz", c.voxels("t2f")[::2, ::2, ::2].copy())
    return Setup(c.model() + c.with_channel("t2f", t), [t, "t2f"])


def nifti_other_affine(c: Ctx) -> Setup:
    ref = nib.load(str(case_channel_paths()["t1c"]))
    aff = ref.affine.copy()
    aff[0, 3] += 5.0
    t = c.nifti("t1c-shifted.nii.gz", c.voxels(), affine=aff)
    return Setup(c.model() + c.with_channel("t1c", t), [t, "t1c"])


def nifti_singular_affine(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-singular.nii", chain(
        set_i16(QFORM_CODE, 0, 1), set_f32(SROW_X, *([0.0] * 12))))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_negative_pixdim(c: Ctx) -> Setup:
    # qform only, with a negative voxel size: nifti 0.18's qform_affine would panic on it
    t = c.raw_nii("t1n-negpix.nii", chain(
        set_i16(QFORM_CODE, 1, 0), set_f32(PIXDIM, 1.0, -1.0, 1.0, 1.0)))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_bad_datatype(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-dtype.nii", chain(set_i16(DATATYPE, 1234), set_i16(BITPIX, 16)))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_bitpix_mismatch(c: Ctx) -> Setup:
    # nifti 0.18 sizes the buffer from bitpix and decodes by datatype: it panicked on this
    t = c.raw_nii("t1n-bitpix.nii", set_i16(BITPIX, 8))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_rgb(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-rgb.nii", chain(set_i16(DATATYPE, 128), set_i16(BITPIX, 24)))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_huge_extension(c: Ctx) -> Setup:
    # an extension claiming 2 GiB in a small file (nifti 0.18 would reserve that much)
    def edit(b: bytearray):
        b[348] = 1
        struct.pack_into("<f", b, VOX_OFFSET, 368.0)
        b[352:352] = struct.pack("<ii", 2**31 - 1, 0) + bytes(8)
    t = c.raw_nii("t1n-ext.nii", edit)
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_gap_before_voxels(c: Ctx) -> Setup:
    # vox_offset past the header with no extension: nifti 0.18 would read the voxels shifted
    def edit(b: bytearray):
        struct.pack_into("<f", b, VOX_OFFSET, 368.0)
        b[352:352] = bytes(16)
    t = c.raw_nii("t1n-gap.nii", edit)
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_vox_offset_past_end(c: Ctx) -> Setup:
    t = c.raw_nii("t1n-offset.nii", set_f32(VOX_OFFSET, 4.0e9))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_not_gzip(c: Ctx) -> Setup:
    t = c.tmp / "t1n-plain.nii.gz"
    t.write_bytes(gzip.decompress(case_channel_paths()["t1n"].read_bytes()))
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_zero_bytes(c: Ctx) -> Setup:
    t = c.tmp / "t1n-empty.nii.gz"
    t.write_bytes(b"")
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_is_a_folder(c: Ctx) -> Setup:
    t = c.tmp / "t1n-folder.nii.gz"
    t.mkdir()
    return Setup(c.model() + c.with_channel("t1n", t), [t])


def nifti_missing_file(c: Ctx) -> Setup:
    t = c.tmp / "nowhere" / f"{CASE_ID}-t2f.nii.gz"
    return Setup(c.model() + c.with_channel("t2f", t), [t])


def case_missing_channel(c: Ctx) -> Setup:
    case = c.tmp / "case"
    case.mkdir()
    for ch, p in case_channel_paths().items():
        if ch != "t2w":
            os.symlink(p, case / p.name)
    return Setup(c.model() + ["--case", case], [case, "t2w"])


def case_two_files_for_a_channel(c: Ctx) -> Setup:
    case = c.tmp / "case"
    case.mkdir()
    for ch, p in case_channel_paths().items():
        os.symlink(p, case / p.name)
    os.symlink(case_channel_paths()["t1c"], case / "OTHER-t1c.nii.gz")
    return Setup(c.model() + ["--case", case], [case, "t1c"])


def case_folder_missing(c: Ctx) -> Setup:
    case = c.tmp / "no-such-case"
    return Setup(c.model() + ["--case", case], [case])


def input_unknown_channel(c: Ctx) -> Setup:
    return Setup(c.model() + c.inputs(c.good()) + ["--input", f"foo={CASE_DIR}"],
                 ["--input", "foo"])


def input_channel_twice(c: Ctx) -> Setup:
    return Setup(c.model() + c.inputs(c.good()) + ["--input", f"t1n={CASE_DIR}"],
                 ["--input", "t1n"])


def input_channel_missing(c: Ctx) -> Setup:
    paths = c.good()
    args = []
    for ch in CHANNELS[:3]:
        args += ["--input", f"{ch}={paths[ch]}"]
    return Setup(c.model() + args, ["--input", "t2f"])


def input_empty_path(c: Ctx) -> Setup:
    paths = c.good()
    args = ["--input", "t1n="]
    for ch in CHANNELS[1:]:
        args += ["--input", f"{ch}={paths[ch]}"]
    return Setup(c.model() + args, ["--input", "t1n="])


def model_empty_path(c: Ctx) -> Setup:
    return Setup(["--model", "", "--case", CASE_DIR], ["--model"])


def cli_missing_value(c: Ctx) -> Setup:
    return Setup(c.model() + ["--case"], ["--case"])


def input_without_equals(c: Ctx) -> Setup:
    return Setup(c.model() + ["--input", str(case_channel_paths()["t1n"])], ["--input"])


# --------------------------------------------------------------------------------------------
# row builders: limits
# --------------------------------------------------------------------------------------------
def limit_voxels(c: Ctx) -> Setup:
    cfg = c.config({"limits": {"max_voxels": 1000}})
    return Setup(["--pipeline", cfg, "--passes", "1", "--case", CASE_DIR],
                 [case_channel_paths()["t1n"]])


def limit_memory(c: Ctx) -> Setup:
    cfg = c.config({"limits": {"max_memory_mib": 1}})
    return Setup(["--pipeline", cfg, "--passes", "1", "--case", CASE_DIR],
                 [case_channel_paths()["t1n"]])


# --------------------------------------------------------------------------------------------
# row builders: DICOM
# --------------------------------------------------------------------------------------------
def dicom_variant(variant: str):
    def build(c: Ctx) -> Setup:
        args, folder = c.dicom_inputs(variant)
        return Setup(c.model() + args, [folder])
    build.__name__ = f"dicom_{variant}"
    return build


def dicom_huge_element(c: Ctx) -> Setup:
    """A copy of the t1n series with, in one file, a private element claiming 2 GiB (dicom-rs
    would reserve and zero that much before reading it)."""
    plain = c.dicom.get("plain", CHANNELS)
    folder = c.tmp / "t1n"
    folder.mkdir()
    for f in sorted(Path(plain["channels"]["t1n"]["folder"]).iterdir()):
        (folder / f.name).write_bytes(f.read_bytes())
    victim = sorted(folder.iterdir())[5]
    data = victim.read_bytes()
    at = data.rindex(b"\xe0\x7f\x10\x00")  # the PixelData tag
    bomb = struct.pack("<HH2sHI", 0x0009, 0x1010, b"UN", 0, 0x7FFFFFF0)
    victim.write_bytes(data[:at] + bomb + data[at:])
    args = ["--input", f"t1n={folder}"]
    for ch in CHANNELS[1:]:
        args += ["--input", f"{ch}={plain['channels'][ch]['folder']}"]
    return Setup(c.model() + args, [victim])


def dicom_case_folder_empty(c: Ctx) -> Setup:
    case = c.tmp / "empty-case"
    case.mkdir()
    return Setup(c.model() + ["--case", case], [case])


# --------------------------------------------------------------------------------------------
# row builders: models
# --------------------------------------------------------------------------------------------
def model_missing(c: Ctx) -> Setup:
    m = c.tmp / "absent.onnx"
    return Setup(["--model", m, "--passes", "1", "--case", CASE_DIR], [m])


def model_not_onnx(c: Ctx) -> Setup:
    m = c.tmp / "random.onnx"
    m.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return Setup(["--model", f"{m}:16x32x32", "--passes", "1", "--case", CASE_DIR], [m])


def model_empty_file(c: Ctx) -> Setup:
    m = c.tmp / "empty.onnx"
    m.write_bytes(b"")
    return Setup(["--model", f"{m}:16x32x32", "--passes", "1", "--case", CASE_DIR], [m])


def _first_channel_plus(c: Ctx, name: str, x_shape, y_shape, tail_nodes, inits=(),
                        metadata=None, x_type=TensorProto.FLOAT) -> Path:
    """y = f(x[:, 0:1]) with declared shapes."""
    x = helper.make_tensor_value_info("x", x_type, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)
    base = [numpy_helper.from_array(np.array([0], np.int64), "starts"),
            numpy_helper.from_array(np.array([1], np.int64), "ends"),
            numpy_helper.from_array(np.array([1], np.int64), "axes")]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["first"])] + tail_nodes
    g = helper.make_graph(nodes, name, [x], [y], base + list(inits))
    return c.onnx(f"{name}.onnx", g, metadata)


def model_wrong_rank(c: Ctx) -> Setup:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 32, 32])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "rank4", [x], [y])
    m = c.onnx("rank4.onnx", g)
    return Setup(["--model", f"{m}:16x32x32", "--passes", "1", "--case", CASE_DIR], [m])


def model_wrong_input_type(c: Ctx) -> Setup:
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 4, 16, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 32, 32])
    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                          "double", [x], [y])
    m = c.onnx("double.onnx", g)
    return Setup(["--model", m, "--passes", "1", "--case", CASE_DIR], [m])


def model_wrong_channels(c: Ctx) -> Setup:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 16, 32, 32])
    w = numpy_helper.from_array(np.full((1, 3, 1, 1, 1), 0.5, np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1, 1])
    m = c.onnx("three.onnx", helper.make_graph([node], "three", [x], [y], [w]))
    return Setup(["--model", m, "--passes", "1", "--case", CASE_DIR], [m])


def model_channel_metadata(c: Ctx) -> Setup:
    m = _first_channel_plus(c, "meta-channels", ["N", 4, 16, 32, 32], ["N", 1, 16, 32, 32],
                            [helper.make_node("Identity", ["first"], ["y"])],
                            metadata={"channels": "t1,t1ce,t2,flair"})
    return Setup(["--model", m, "--passes", "1", "--case", CASE_DIR], [m])


def model_declared_output_shape(c: Ctx) -> Setup:
    # fixed input [N, 4, 16, 32, 32], declared (and real) output at half resolution
    m = _first_channel_plus(c, "half-out", ["N", 4, 16, 32, 32], ["N", 1, 8, 16, 16],
                            [helper.make_node("MaxPool", ["first"], ["y"],
                                              kernel_shape=[2, 2, 2], strides=[2, 2, 2])])
    return Setup(["--model", m, "--passes", "1", "--case", CASE_DIR], [m])


def model_runtime_output_shape(c: Ctx) -> Setup:
    # nothing declared: the wrong shape shows only when the model runs
    m = _first_channel_plus(c, "half-out-dyn", ["N", 4, "D", "H", "W"], ["N", 1, "d", "h", "w"],
                            [helper.make_node("MaxPool", ["first"], ["y"],
                                              kernel_shape=[2, 2, 2], strides=[2, 2, 2])])
    return Setup(["--model", f"{m}:16x32x32", "--passes", "1", "--case", CASE_DIR], [m])


def model_nan_output(c: Ctx) -> Setup:
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    m = _first_channel_plus(c, "nan-out", ["N", 4, "D", "H", "W"], ["N", 1, "D", "H", "W"],
                            [helper.make_node("Mul", ["first", "zero"], ["z"]),
                             helper.make_node("Div", ["z", "zero"], ["y"])], [zero])
    return Setup(["--model", f"{m}:16x32x32", "--passes", "1", "--case", CASE_DIR], [m])


def model_patch_unknown(c: Ctx) -> Setup:
    m = model_path("identity-plus-one.onnx")
    return Setup(["--model", m, "--passes", "1", "--case", CASE_DIR], [m])


def model_patch_disagrees(c: Ctx) -> Setup:
    m = model_path("conv3.onnx")
    return Setup(["--model", f"{m}:16x64x64", "--passes", "1", "--case", CASE_DIR], [m])


def model_bad_patch_argument(c: Ctx) -> Setup:
    return Setup(["--model", f"{model_path('conv3.onnx')}:16x0x32", "--case", CASE_DIR],
                 ["--model", "16x0x32"])


# --------------------------------------------------------------------------------------------
# row builders: pipeline config
# --------------------------------------------------------------------------------------------
def config_row(extra: dict, key: str):
    def build(c: Ctx) -> Setup:
        cfg = c.config(extra)
        return Setup(["--pipeline", cfg, "--case", CASE_DIR], [cfg, key])
    build.__name__ = f"config_{key}"
    return build


def config_yaml_syntax(c: Ctx) -> Setup:
    cfg = c.config_text(f"models: [{{path: {model_path('unet-p32')}}}\nensemble: {{passes: 1\n")
    return Setup(["--pipeline", cfg, "--case", CASE_DIR], [cfg])


def config_tabs_and_duplicates(c: Ctx) -> Setup:
    cfg = c.config_text(f"models: [{{path: {model_path('unet-p32')}}}]\n"
                        "ensemble: {passes: 1}\nensemble: {passes: 2}\n")
    return Setup(["--pipeline", cfg, "--case", CASE_DIR], [cfg])


def config_not_a_mapping(c: Ctx) -> Setup:
    cfg = c.config_text("- just\n- a list\n")
    return Setup(["--pipeline", cfg, "--case", CASE_DIR], [cfg])


def config_missing(c: Ctx) -> Setup:
    cfg = c.tmp / "absent.yaml"
    return Setup(["--pipeline", cfg, "--case", CASE_DIR], [cfg])


def config_binary(c: Ctx) -> Setup:
    cfg = c.tmp / "binary.yaml"
    cfg.write_bytes(b"models: \xff\xfe\x00\x01")
    return Setup(["--pipeline", cfg, "--case", CASE_DIR], [cfg])


def config_model_missing_relative(c: Ctx) -> Setup:
    cfg = c.config_text("models: [{path: not-here.onnx}]\n")
    return Setup(["--pipeline", cfg, "--passes", "1", "--case", CASE_DIR],
                 [c.tmp / "not-here.onnx"])


def cli_bad_sigma(c: Ctx) -> Setup:
    return Setup(c.model() + ["--sigma", "-0.5", "--case", CASE_DIR], ["sigma"])


def cli_bad_device(c: Ctx) -> Setup:
    return Setup(c.model() + ["--device", "quantum:0", "--case", CASE_DIR], ["quantum"])


# --------------------------------------------------------------------------------------------
# row builders: outputs
# --------------------------------------------------------------------------------------------
def out_exists(c: Ctx) -> Setup:
    out = c.results / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    return Setup(c.model() + ["--case", CASE_DIR], [out, "--overwrite"], keep=("out",))


def out_parent_is_a_file(c: Ctx) -> Setup:
    blocker = c.results / "file"
    blocker.write_text("x")
    return Setup(c.model() + ["--case", CASE_DIR], [blocker], out=blocker / "out",
                 keep=("file",))


def out_read_only_fs(c: Ctx) -> Setup:
    out = c.results / "mnt" / "out"
    out.parent.mkdir()
    return Setup(c.model() + ["--case", CASE_DIR], [out.parent], out=out,
                 tmpfs="ro,size=1m", keep=("mnt",))


def out_disk_full(c: Ctx) -> Setup:
    out = c.results / "mnt" / "out"
    out.parent.mkdir()
    return Setup(c.model() + ["--case", CASE_DIR], [out.parent], out=out,
                 tmpfs="size=600k", keep=("mnt",))


# --------------------------------------------------------------------------------------------
# the matrix: id, builder, exit code, words the error line must hold, extra checks
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    id: str
    build: Callable[[Ctx], Setup]
    code: int
    words: tuple = ()
    max_seconds: float | None = None


def _config_rows():
    return [
        Row("config-unknown-key", config_row({"ensemble": {"pases": 3}}, "pases"), 2,
            ("/ensemble",)),
        Row("config-wrong-type", config_row({"ensemble": {"passes": "ten"}}, "/ensemble/passes"),
            2, ("integer",)),
        Row("config-negative-sigma", config_row({"ensemble": {"sigma": -0.1}}, "/ensemble/sigma"),
            2, ("minimum",)),
        Row("config-zero-passes", config_row({"ensemble": {"passes": 0}}, "/ensemble/passes"), 2,
            ("minimum",)),
        Row("config-threshold-out-of-range",
            config_row({"blobs": {"threshold": 1000}}, "/blobs/threshold"), 2, ("maximum",)),
        Row("config-threshold-below-outside-logit",
            config_row({"blobs": {"threshold": -20}}, "/blobs/threshold"), 2,
            ("outside_logit",)),
        Row("config-orientation-pattern", config_row({"orientation": "XYZ"}, "/orientation"), 2),
        Row("config-orientation-not-orthogonal",
            config_row({"orientation": "LLP"}, "/orientation"), 2, ("orthogonal",)),
        Row("config-bad-connectivity", config_row({"blobs": {"connectivity": 7}},
                                                  "/blobs/connectivity"), 2),
        Row("config-max-voxels-zero", config_row({"limits": {"max_voxels": 0}},
                                                 "/limits/max_voxels"), 2),
        Row("config-bad-regex", config_row({"dicom": {"series": {"t1n": {
            "series_description": "(unclosed"}}}}, "/dicom/series/t1n/series_description"), 2,
            ("regular expression",)),
        Row("config-yaml-syntax", config_yaml_syntax, 2, ("not valid YAML",)),
        Row("config-duplicate-key", config_tabs_and_duplicates, 2, ("duplicate",)),
        Row("config-not-a-mapping", config_not_a_mapping, 2),
        Row("config-missing", config_missing, 2, ("cannot read",)),
        Row("config-not-utf8", config_binary, 2),
        Row("config-model-path-relative-missing", config_model_missing_relative, 4,
            ("no such model file",)),
        Row("cli-negative-sigma", cli_bad_sigma, 2, ("/ensemble/sigma",)),
        Row("cli-unknown-device", cli_bad_device, 2),
        Row("cli-bad-patch-argument", model_bad_patch_argument, 2, ("DxHxW",)),
    ]


MATRIX = [
    # NIfTI
    Row("nifti-truncated-gz", nifti_truncated, 3, ("truncated",)),
    Row("nifti-truncated-raw", nifti_truncated_raw, 3, ("truncated",)),
    Row("nifti-bad-magic", nifti_bad_magic, 3, ("not a NIfTI-1 file",)),
    Row("nifti-absurd-dimensions", nifti_absurd_dims, 3,
        ("27000000000000 voxels", "raise limits.max_voxels"), max_seconds=5.0),
    Row("nifti-negative-dimension", nifti_negative_dim, 3, ("negative dimension -5",)),
    Row("nifti-invalid-rank", nifti_bad_rank, 3, ("rank",)),
    Row("nifti-4d", nifti_4d, 3, ("expected one 3-D volume", "4-D")),
    Row("nifti-nan-voxel", nifti_nan, 3, ("1 voxels are NaN or infinite",)),
    Row("nifti-inf-voxel", nifti_inf, 3, ("NaN or infinite",)),
    Row("nifti-nan-scl-inter", nifti_nan_intercept, 3, ("scl_inter",)),
    Row("nifti-all-zero-channel", nifti_all_zero, 3, ("all zero",)),
    Row("nifti-different-shape", nifti_other_shape, 3, ("different grid", "shape")),
    Row("nifti-different-affine", nifti_other_affine, 3, ("different grid", "affine")),
    Row("nifti-singular-affine", nifti_singular_affine, 3, ("singular",)),
    Row("nifti-negative-pixdim-qform", nifti_negative_pixdim, 3, ("pixdim",)),
    Row("nifti-unknown-datatype", nifti_bad_datatype, 3, ("datatype", "1234")),
    Row("nifti-bitpix-mismatch", nifti_bitpix_mismatch, 3, ("bitpix 8 does not match",)),
    Row("nifti-rgb", nifti_rgb, 3, ("Rgb24", "not supported")),
    Row("nifti-huge-extension", nifti_huge_extension, 3, ("extension at byte 352",),
        max_seconds=5.0),
    Row("nifti-gap-before-voxels", nifti_gap_before_voxels, 3, ("no extension is declared",)),
    Row("nifti-vox-offset-past-end", nifti_vox_offset_past_end, 3, ("vox_offset 4000000000",)),
    Row("nifti-gz-not-gzip", nifti_not_gzip, 3, ("gzip",)),
    Row("nifti-zero-bytes", nifti_zero_bytes, 3, ("empty",)),
    Row("nifti-path-is-a-folder", nifti_is_a_folder, 3, ("no DICOM image series found",
                                                         "no files")),
    Row("nifti-missing-file", nifti_missing_file, 3, ("no such file",)),
    Row("case-missing-channel", case_missing_channel, 3, ("no file for channel t2w",)),
    Row("case-two-files-for-a-channel", case_two_files_for_a_channel, 3, ("several files",)),
    Row("case-folder-missing", case_folder_missing, 3, ("no such file",)),
    Row("input-unknown-channel", input_unknown_channel, 2, ("unknown channel",)),
    Row("input-channel-twice", input_channel_twice, 2, ("given twice",)),
    Row("input-channel-missing", input_channel_missing, 2, ("missing channel",)),
    Row("input-without-equals", input_without_equals, 2, ("NAME=PATH",)),
    Row("input-empty-path", input_empty_path, 2, ("no path",)),
    Row("cli-empty-model-path", model_empty_path, 2, ("no model path",)),
    Row("cli-missing-value", cli_missing_value, 2, ("a value is required",)),
    # limits
    Row("limit-max-voxels", limit_voxels, 3, ("raise limits.max_voxels",)),
    Row("limit-max-memory", limit_memory, 3, ("MiB", "raise limits.max_memory_mib")),
    # DICOM (make_series.py bad variants: the t1n series is broken)
    Row("dicom-missing-slice", dicom_variant("bad-missing-slice"), 3, ("slice missing",)),
    Row("dicom-duplicate-position", dicom_variant("bad-duplicate-position"), 3,
        ("duplicate slice position",)),
    Row("dicom-uneven-spacing", dicom_variant("bad-uneven-spacing"), 3, ("not uniform",)),
    Row("dicom-mixed-orientation", dicom_variant("bad-mixed-orientation"), 3,
        ("mixed orientations",)),
    Row("dicom-mixed-size", dicom_variant("bad-mixed-size"), 3, ("mixed image sizes",)),
    Row("dicom-no-pixel-data", dicom_variant("bad-no-pixel-data"), 3, ("no pixel data",)),
    Row("dicom-unsupported-transfer-syntax", dicom_variant("bad-jpeg-ls"), 3,
        ("JPEG-LS", "cannot be decoded")),
    Row("dicom-rgb", dicom_variant("bad-rgb"), 3, ("RGB",)),
    Row("dicom-enhanced", dicom_variant("bad-enhanced"), 3, ("multi-frame",)),
    Row("dicom-truncated", dicom_variant("bad-truncated"), 3, ("cannot read",)),
    Row("dicom-non-image-only", dicom_variant("bad-non-image"), 3,
        ("no DICOM image series found", "SR")),
    Row("dicom-empty-folder", dicom_variant("bad-empty"), 3,
        ("no DICOM image series found", "no files")),
    Row("dicom-ambiguous", dicom_variant("bad-ambiguous"), 3, ("2 series match",)),
    Row("dicom-huge-element-length", dicom_huge_element, 3,
        ("(0009,1010)", "claims 2147483632 bytes"), max_seconds=10.0),
    Row("dicom-empty-case-folder", dicom_case_folder_empty, 3, ("no DICOM image series found",)),
    # models
    Row("model-missing", model_missing, 4, ("no such model file",)),
    Row("model-not-onnx", model_not_onnx, 4, ("cannot load model",)),
    Row("model-empty-file", model_empty_file, 4, ("cannot load model",)),
    Row("model-wrong-input-rank", model_wrong_rank, 4, ("5-D",)),
    Row("model-wrong-input-type", model_wrong_input_type, 4, ("float32", "double")),
    Row("model-wrong-channel-count", model_wrong_channels, 4, ("takes 3 channels",)),
    Row("model-channel-metadata", model_channel_metadata, 4, ("expects channels",)),
    Row("model-declared-output-shape", model_declared_output_shape, 4,
        ("spatial shape", "differs from the patch")),
    Row("model-runtime-output-shape", model_runtime_output_shape, 4, ("output has shape",)),
    Row("model-nan-output", model_nan_output, 4, ("NaN or infinite",)),
    Row("model-patch-size-unknown", model_patch_unknown, 4, ("patch size unknown",)),
    Row("model-patch-size-disagrees", model_patch_disagrees, 4, ("disagrees",)),
    # config and flags
    *_config_rows(),
    # outputs
    Row("out-exists", out_exists, 5, ("exists",)),
    Row("out-parent-is-a-file", out_parent_is_a_file, 5, ("is not a folder",)),
    Row("out-read-only-file-system", out_read_only_fs, 5, ("Read-only file system",)),
    Row("out-disk-full", out_disk_full, 5, ("No space left on device", "out/")),
]


# --------------------------------------------------------------------------------------------
# running a row
# --------------------------------------------------------------------------------------------
def namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run_row(setup: Setup, out: Path) -> tuple[subprocess.CompletedProcess, list | None]:
    """Runs the binary; with a tmpfs, inside a private mount namespace, and returns what the
    tmpfs held afterwards (it disappears with the namespace)."""
    cmd = [str(BIN), "run"] + [str(a) for a in setup.args] + ["--out", str(out)]
    if setup.tmpfs is None:
        proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=120)
        return proc, None
    if not namespaces_work():
        pytest.fail("`unshare -rm` (a private mount namespace) is needed to mount the tmpfs "
                    "of the full/read-only file system rows", pytrace=False)
    mnt = out.parent
    listing = mnt.parent / "tmpfs-listing.txt"
    script = ('mount -t tmpfs -o "$1" stochseg-test "$2" || exit 99; shift 2; '
              '"$@"; rc=$?; ls -A "$(dirname "$LISTING_OF")" > "$LISTING"; exit $rc')
    e = env()
    e.update(LISTING=str(listing), LISTING_OF=str(out))
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", setup.tmpfs, str(mnt)]
                          + cmd, env=e, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 99, f"cannot mount a tmpfs: {proc.stderr}"
    held = listing.read_text().split() if listing.exists() else None
    listing.unlink(missing_ok=True)
    return proc, held


@pytest.mark.parametrize("row", MATRIX, ids=[r.id for r in MATRIX])
def test_bad_input(row: Row, tmp_path, dicom_series):
    require(BIN, "stochseg binary (cargo build --release)")
    ctx = Ctx(tmp_path, dicom_series)
    setup = row.build(ctx)
    out = setup.out or ctx.results / "out"
    before = sorted(os.listdir(ctx.results))
    t0 = time.monotonic()
    proc, tmpfs_held = run_row(setup, out)
    seconds = time.monotonic() - t0

    assert proc.returncode != 101 and "panicked" not in proc.stderr, \
        f"panic (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert proc.returncode == row.code, \
        f"exit {proc.returncode}, expected {row.code}; stderr:\n{proc.stderr[-3000:]}"
    line = error_line(proc)
    if os.environ.get("STOCHSEG_MATRIX_TABLE"):  # a Markdown row per case, for the report
        with open(os.environ["STOCHSEG_MATRIX_TABLE"], "a") as table:
            shown = line.replace(str(tmp_path), "$TMP").replace(str(FIXTURES.parent.parent), ".")
            table.write(f"| {row.id} | {proc.returncode} | `{shown}` |\n")
    for name in [*map(str, setup.names), *row.words]:
        assert name in line, f"error line does not hold {name!r}: {line}"
    assert "\x1b" not in line, f"escape codes in the error line: {line!r}"
    for value in PATIENT_VALUES:
        assert value not in proc.stderr, f"patient attribute {value!r} in stderr"
    if row.max_seconds is not None:
        assert seconds < row.max_seconds, f"took {seconds:.1f} s (limit {row.max_seconds} s)"

    # nothing left: the folder holding --out is as the row made it
    after = sorted(os.listdir(ctx.results))
    assert after == before, f"left beside --out: {sorted(set(after) - set(before))}"
    if tmpfs_held is not None:
        assert tmpfs_held == [], f"left on the tmpfs: {tmpfs_held}"
    elif out.parent.is_dir():
        stray = [n for n in os.listdir(out.parent) if n.startswith(f".{out.name}.")]
        assert not stray, f"staging or lock files left: {stray}"
    if row.id == "out-exists":
        assert sorted(os.listdir(out)) == ["keep.txt"]
        assert (out / "keep.txt").read_text() == "precious"


def test_matrix_is_large_enough():
    assert len(MATRIX) >= 30
    assert len({r.id for r in MATRIX}) == len(MATRIX)
