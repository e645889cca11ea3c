"""CPU inference back-ends for the shipped segmenter, side by side on the same input (issue 15).

Candidates (``--backends``, default all):

* ``torch-fp32``: the model as ``cellgen segment`` runs it now (batch norm folded, channels-last
  weights and inputs, ``segment.pipeline.get_model``);
* ``torch-int8``: FX-graph static post-training quantization (``torch.ao.quantization``,
  ``--qengine`` x86 / fbgemm / onednn), calibrated on ``--calib`` training slices;
* ``ort-fp32``: ONNX Runtime on the model exported with ``torch.onnx.export`` (dynamic batch, H, W);
* ``ort-int8``: ONNX Runtime on that export quantized by ``onnxruntime.quantization.quantize_static``
  (QDQ, per-channel int8 weights, uint8 activations, calibrated on the same ``--calib`` slices);
* ``openvino-fp32`` / ``openvino-int8``: OpenVINO's CPU plugin on the same two ONNX files
  (f32 inference precision forced; the int8 one runs the QDQ graph as int8). Skipped if
  ``openvino`` is not installed.

Every candidate plugs its forward into the pipeline's own tiled predictor
(``segment.predict.predict_stack``: the card's scale, tile, overlap and 2.5D context, cosine
blending, ``--views`` test-time views, uint8 probabilities), so every number is for the same
tiles. Per candidate:

* ``fwd_mpix_per_s``: model-forward throughput, counting the slices' input pixels at their
  original resolution (the pipeline shrinks them by the card's scale before the model), over
  all the forwards the pipeline makes for those slices (``--views`` of them per tile): the
  median over ``--repeats`` runs of the same recorded tiles, after a warm-up; the candidates
  take turns within each round, so that a load drifting during the run weighs on all alike;
* ``predict_mpix_per_s``: the same for one whole ``predict_stack`` pass (normalise, resize,
  forwards, blend, resize back);
* agreement with torch-fp32: max |probability difference| and foreground IoU at 0.5, on the
  raw tile outputs and on the blended uint8 probability maps;
* ``iou_gt``: foreground IoU (probabilities >= 0.5, pooled over ``--slices``) against the Lucchi
  ground truth, as ``segment_accuracy.py``'s ``iou_threshold_only`` (no labelling);
* ``size_bytes``: the file the candidate loads (the int8 torch model as a saved state dict).

A candidate that fails (export, quantization, a missing package) is recorded with its error
and the run goes on. ``pipeline_check`` compares the tiled predictor as called here with
``cellgen segment``'s probabilities (``segment.pipeline.segment``) on the first slice.

    python benchmarks/speed_candidates.py                                  # all back-ends
    python benchmarks/speed_candidates.py --slices 140,150 --repeats 1 --backends torch-fp32,ort-int8

Needs ``pip install napari-cellgen[speed]`` (onnxruntime, onnx) for the ONNX candidates and
``pip install openvino`` for the OpenVINO ones.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
from _provenance import check_unseen, model_ref, stamp, write_json  # run as a script: benchmarks/ is on sys.path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "lucchi"
BACKENDS = ("torch-fp32", "torch-int8", "ort-fp32", "ort-int8", "openvino-fp32", "openvino-int8")


def parse_slices(text: str) -> list[int]:
    """``"140,150,160-164"`` -> [140, 150, 160, 161, 162, 163, 164]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = (int(v) for v in part.split("-", 1))
            out.extend(range(a, b + 1))
        else:
            out.append(int(part))
    return out


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and "cpu" not in info:
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                info["isa"] = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni"))
                break
    return info


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:600]}"


# --- the pipeline's tiles, recorded --------------------------------------------------------------


def predict(model, card, vol, zs, views, tile, overlap, batch) -> np.ndarray:
    """uint8 probabilities of slices ``zs`` of ``vol`` (full context from ``vol``), as the pipeline does."""
    from napari_cellgen._progress import run
    from napari_cellgen.segment.predict import predict_stack

    out = np.zeros((len(zs), *vol.shape[1:]), np.uint8)
    for i, z in enumerate(zs):
        run(predict_stack(model, card, vol, out[i : i + 1], tile=tile, overlap=overlap, batch_size=batch,
                          device="cpu", tta=views, zs=range(z, z + 1)))
    return out


# --- the candidates: each returns (model: torch NCHW float32 -> logits, size_bytes, notes) --------


def build_torch_fp32(ctx):
    from napari_cellgen.segment.pipeline import get_model

    model, _ = get_model(ctx["model"], "cpu")
    return model, ctx["weights"].stat().st_size, {"as": "segment.pipeline.get_model (BN folded, channels-last)"}


def build_torch_int8(ctx):
    import torch
    from torch import nn
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from napari_cellgen.models.store import load_model

    engine = ctx["qengine"]
    torch.backends.quantized.engine = engine
    model, _ = load_model(ctx["model"], "cpu")  # batch norm unfolded: prepare_fx fuses conv+bn+relu itself
    model.eval()
    calib = ctx["calib"]
    qmap = get_default_qconfig_mapping(engine)
    if not ctx["int8_convtranspose"]:
        # the quantized ConvTranspose2d ruins the output here (torch 2.13, x86 and fbgemm: max |dp| ~1,
        # IoU with fp32 ~0; onednn refuses its per-channel weights): the 4 up-convolutions stay fp32
        qmap = qmap.set_object_type(nn.ConvTranspose2d, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model, qmap, example_inputs=(calib[0],))
        with torch.no_grad():
            for x in calib:
                prepared(x.contiguous(memory_format=torch.channels_last))
        qmodel = convert_fx(prepared)
    buf = io.BytesIO()
    torch.save(qmodel.state_dict(), buf)
    kept = [] if ctx["int8_convtranspose"] else ["ConvTranspose2d"]
    return qmodel, buf.getbuffer().nbytes, {"engine": engine, "qconfig": f"get_default_qconfig_mapping({engine!r})",
                                            "kept_fp32": kept, "calibration_tiles": len(calib),
                                            "size_of": "torch.save(state_dict)"}


def export_onnx(ctx) -> Path:
    """The fp32 model as ONNX (dynamic batch, H and W), once per run."""
    path = ctx["tmp"] / "model_fp32.onnx"
    if path.exists():
        return path
    if "onnx_error" in ctx:
        raise RuntimeError(ctx["onnx_error"])
    import torch

    from napari_cellgen.models.store import load_model
    from napari_cellgen.models.unet import fuse_batchnorm

    model = fuse_batchnorm(load_model(ctx["model"], "cpu")[0])
    dyn = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (ctx["calib"][0],), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": dyn, "logits": dyn}, opset_version=17, dynamo=False)
    except Exception as exc:
        ctx["onnx_error"] = f"torch.onnx.export: {error_text(exc)}"
        raise
    ctx["onnx_exporter"] = "torch.onnx.export(dynamo=False, opset 17), BN folded"
    return path


def quantize_onnx(ctx) -> Path:
    """QDQ int8 ONNX from the fp32 export (calibrated on ``ctx['calib']``), once per run."""
    path = ctx["tmp"] / "model_int8.onnx"
    if path.exists():
        return path
    if "onnx_int8_error" in ctx:
        raise RuntimeError(ctx["onnx_int8_error"])
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fp32 = export_onnx(ctx)
    src = fp32
    pre_error = None
    try:  # shape inference + graph clean-up, as onnxruntime recommends (symbolic: fails on dynamic H, W)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        pre = ctx["tmp"] / "model_fp32_pre.onnx"
        cwd = os.getcwd()
        os.chdir(ctx["tmp"])  # it may leave temporary files in the working directory
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        finally:
            os.chdir(cwd)
        src = pre
    except Exception as exc:
        pre_error = error_text(exc)

    class Reader(CalibrationDataReader):
        def __init__(self, batches):
            self.it = iter([{"input": b.contiguous().numpy()} for b in batches])

        def get_next(self):
            return next(self.it, None)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(src), str(path), Reader(ctx["calib"]), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
    except Exception as exc:
        ctx["onnx_int8_error"] = f"quantize_static: {error_text(exc)}"
        raise
    ctx["onnx_int8_settings"] = {"format": "QDQ", "per_channel": True, "activations": "uint8", "weights": "int8",
                                 "calibration": "MinMax", "calibration_tiles": len(ctx["calib"]),
                                 "pre_processed": src != fp32}
    if pre_error:
        ctx["onnx_int8_settings"]["pre_process_error"] = pre_error
    return path


def ort_model(path: Path, threads: int):
    import onnxruntime as ort
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def model(x):
        return torch.from_numpy(sess.run(None, {"input": np.ascontiguousarray(x.numpy())})[0])

    return model


def build_ort_fp32(ctx):
    import onnxruntime as ort

    path = export_onnx(ctx)
    return ort_model(path, ctx["threads"]), path.stat().st_size, {"onnxruntime": ort.__version__,
                                                                  "exporter": ctx.get("onnx_exporter")}


def build_ort_int8(ctx):
    import onnxruntime as ort

    path = quantize_onnx(ctx)
    return ort_model(path, ctx["threads"]), path.stat().st_size, {"onnxruntime": ort.__version__,
                                                                  **ctx["onnx_int8_settings"]}


def ov_model(path: Path, ctx):
    import openvino as ov
    import torch

    core = ov.Core()
    net = core.read_model(str(path))
    shapes = {tuple(b.shape) for b in ctx["tiles"]}
    static = len(shapes) == 1
    if static:  # one tile shape for every forward: compile it static (OpenVINO is faster so)
        net.reshape({net.inputs[0]: ov.PartialShape(list(next(iter(shapes))))})
    compiled = core.compile_model(net, "CPU", {"INFERENCE_NUM_THREADS": ctx["threads"], "PERFORMANCE_HINT": "LATENCY",
                                               "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def model(x):
        return torch.from_numpy(request.infer({0: np.ascontiguousarray(x.numpy())})[0].copy())

    return model, {"openvino": ov.__version__, "static_shape": static, "precision_hint": "f32"}


def build_ov_fp32(ctx):
    path = export_onnx(ctx)
    model, notes = ov_model(path, ctx)
    return model, path.stat().st_size, {**notes, "reads": "the ort-fp32 ONNX file"}


def build_ov_int8(ctx):
    path = quantize_onnx(ctx)
    model, notes = ov_model(path, ctx)
    return model, path.stat().st_size, {**notes, "reads": "the ort-int8 QDQ ONNX file"}


BUILDERS = {"torch-fp32": build_torch_fp32, "torch-int8": build_torch_int8, "ort-fp32": build_ort_fp32,
            "ort-int8": build_ort_int8, "openvino-fp32": build_ov_fp32, "openvino-int8": build_ov_int8}


# --- measuring -------------------------------------------------------------------------------------


def forward_all(model, tiles) -> list:
    import torch

    with torch.inference_mode():
        return [torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)))[:, 0].float().numpy()
                for x in tiles]


def agreement(a, b) -> dict:
    """max |a - b| and foreground IoU at 0.5 of two probability arrays (float in [0, 1] or uint8)."""
    from napari_cellgen.metrics import foreground_iou

    scale = 255.0 if np.asarray(a).dtype == np.uint8 else 1.0
    half = 0.5 * scale
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return {"max_abs_prob_diff": float(np.max(np.abs(a - b)) / scale),
            "mean_abs_prob_diff": float(np.mean(np.abs(a - b)) / scale),
            "iou_at_0.5": foreground_iou(a >= half, b >= half)}


def build(name, ctx) -> tuple:
    """``(model or None, result)``: the candidate built and warmed up, or its error."""
    import torch

    t0 = time.perf_counter()
    try:
        model, size, notes = BUILDERS[name](ctx)
        with torch.inference_mode():  # warm-up: first-run allocations, kernel selection, lazy compilation
            for _ in range(2):
                model(ctx["tiles"][0].contiguous(memory_format=torch.channels_last))
    except Exception as exc:
        return None, {"status": "failed", "error": error_text(exc)}
    return model, {"status": "ok", "build_s": time.perf_counter() - t0, "size_bytes": int(size), **notes}


def time_rounds(models: dict, ctx) -> dict:
    """Seconds of all the recorded forwards, per candidate, ``ctx['repeats']`` times.

    The candidates take turns within each round (a, b, c, a, b, c, ...), so that a load that
    drifts during the run (another job on the machine) weighs on all of them alike.
    """
    times: dict = {name: [] for name in models}
    for i in range(ctx["repeats"]):
        for name, model in models.items():
            t = time.perf_counter()
            forward_all(model, ctx["tiles"])
            times[name].append(time.perf_counter() - t)
        print(f"  round {i + 1}/{ctx['repeats']}: " + ", ".join(f"{n} {v[-1]:.2f} s" for n, v in times.items()),
              flush=True)
    return times


def accuracy(model, ctx, res: dict) -> np.ndarray:
    """Agreement with torch-fp32 (tiles and maps), IoU against the ground truth, one predict pass's time
    (into ``res``); returns the uint8 probabilities of the slices."""
    from napari_cellgen.metrics import foreground_iou

    pix = ctx["input_pixels"]
    outs = forward_all(model, ctx["tiles"])
    t = time.perf_counter()
    prob = predict(model, ctx["card"], ctx["vol"], ctx["slices"], ctx["views"], ctx["tile"], ctx["overlap"],
                   ctx["batch"])
    wall = time.perf_counter() - t
    res.update(predict_s=wall, predict_mpix_per_s=pix / 1e6 / wall)
    cut = ctx["threshold"] * 255
    res["iou_gt"] = foreground_iou(prob >= cut, ctx["gt"])
    res["per_slice_iou_gt"] = [foreground_iou(p >= cut, g) for p, g in zip(prob, ctx["gt"], strict=True)]
    if "ref_tiles" not in ctx:  # the first one measured is the reference, torch-fp32
        ctx["ref_tiles"], ctx["ref_prob"] = outs, prob
    res["vs_torch_fp32_tiles"] = agreement(np.concatenate([o.ravel() for o in outs]),
                                           np.concatenate([o.ravel() for o in ctx["ref_tiles"]]))
    res["vs_torch_fp32_maps"] = agreement(prob, ctx["ref_prob"])
    return prob


def pipeline_check(ctx, prob_ref: np.ndarray) -> dict:
    """This script's tiled prediction (torch-fp32) of the first slice vs ``cellgen segment``'s probabilities.

    ``segment`` runs on the slices within the context of the first slice (so that its context is
    the same as in the whole volume); its uint8 probabilities of that slice are compared.
    """
    from napari_cellgen.segment.pipeline import SegmentOptions, segment

    z, k, n = ctx["slices"][0], int(ctx["card"].get("context", 0)), len(ctx["vol"])
    lo = max(0, z - k)
    sub = ctx["vol"][lo : min(n, z + k + 1)]  # mirrored at the volume's ends exactly as the whole volume
    opts = SegmentOptions(model=ctx["model"], device="cpu", views=ctx["views"], batch=ctx["batch"], measure=False)
    got = segment(np.ascontiguousarray(sub), opts).probabilities[z - lo]
    diff = np.abs(got.astype(np.int16) - prob_ref.astype(np.int16))
    return {"slice": z, "segment_options": {"views": opts.views, "batch": opts.batch, "threshold": opts.threshold},
            "max_abs_diff_uint8": int(diff.max()), "fraction_identical": float(np.mean(diff == 0)),
            **{f"vs_segment_{k}": v for k, v in agreement(prob_ref, got).items()}}


def table(results: dict, ref_speed: float | None) -> str:
    head = ("| back-end | status | fwd MPix/s | s/forward | predict MPix/s | x fp32 | max abs dp (tiles) | "
            "IoU vs fp32 (maps) | IoU GT | size MB |")
    rows = [head, "|" + "---|" * 10]
    for name, r in results.items():
        if r.get("status") != "ok":
            msg = r.get("error", r.get("status", ""))[:80].replace("|", "/")
            rows.append(f"| {name} | {msg} |" + " |" * 8)
            continue
        vs_t, vs_m = r.get("vs_torch_fp32_tiles", {}), r.get("vs_torch_fp32_maps", {})
        speedup = f"{r['fwd_mpix_per_s'] / ref_speed:.2f}" if ref_speed else "-"
        rows.append(f"| {name} | ok | {r['fwd_mpix_per_s']:.2f} | {r['s_per_forward']:.3f} | "
                    f"{r['predict_mpix_per_s']:.2f} | {speedup} | {vs_t.get('max_abs_prob_diff', float('nan')):.4f} | "
                    f"{vs_m.get('iou_at_0.5', float('nan')):.4f} | {r['iou_gt']:.4f} | {r['size_bytes'] / 1e6:.2f} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mito-unet")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--slices", default="140,144,148,152,156,160,164",
                    help="held-out slices measured: comma list, a-b ranges (default %(default)s)")
    ap.add_argument("--calib", default="10,50,90,130",
                    help="training slices whose tiles calibrate the int8 candidates (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs over the tiles; the median is kept")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every back-end (default 2)")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help=f"comma list out of {', '.join(BACKENDS)} (torch-fp32, the reference, is always run)")
    ap.add_argument("--views", type=int, default=None, choices=(1, 2, 4),
                    help="test-time views per tile (default: cellgen segment's)")
    ap.add_argument("--qengine", default="x86", choices=("x86", "fbgemm", "onednn"),
                    help="torch quantized engine of torch-int8 (default %(default)s)")
    ap.add_argument("--int8-convtranspose", action="store_true",
                    help="torch-int8: quantize the ConvTranspose2d layers too (default: they stay fp32)")
    ap.add_argument("--no-pipeline-check", action="store_true", help="skip the comparison with cellgen segment")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_candidates.json"))
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        ap.error(f"unknown back-ends {unknown}; choose from {', '.join(BACKENDS)}")

    import torch

    from napari_cellgen.models.store import WEIGHTS, resolve
    from napari_cellgen.segment.pipeline import SegmentOptions, get_model
    from napari_cellgen.segment.quantize import BatchRecorder

    torch.set_num_threads(args.threads)
    check_unseen(args.model, parse_slices(args.slices))
    opts = SegmentOptions(model=args.model, device="cpu")
    views = args.views or opts.views
    _, card = get_model(args.model, "cpu")
    tile, overlap = opts.at_model_scale(card)  # None: the card's, as cellgen segment without --tile
    vol = tifffile.imread(args.data / "training.tif")
    slices, calib_slices = parse_slices(args.slices), parse_slices(args.calib)
    gt = tifffile.imread(args.data / "training_groundtruth.tif")[slices] > 0
    folder = resolve(args.model)
    ctx = {"model": args.model, "weights": folder if folder.is_file() else folder / WEIGHTS, "card": card,
           "vol": vol, "gt": gt, "slices": slices, "views": views, "tile": tile, "overlap": overlap,
           "batch": opts.batch, "threshold": opts.threshold, "threads": args.threads, "repeats": max(1, args.repeats),
           "qengine": args.qengine, "int8_convtranspose": args.int8_convtranspose,
           "input_pixels": len(slices) * int(np.prod(vol.shape[1:]))}
    rec = BatchRecorder()  # the forwards the pipeline makes for the measured slices (views included)
    predict(rec, card, vol, slices, views, tile, overlap, opts.batch)
    ctx["tiles"] = rec.tensors()
    rec = BatchRecorder()  # calibration: training slices, one view
    predict(rec, card, vol, calib_slices, 1, tile, overlap, opts.batch)
    ctx["calib"] = rec.tensors()

    res = {"what": "CPU inference back-ends of the segmenter, same tiles, side by side (issue 15)",
           "model": model_ref(args.model), **cpu_info(), "threads": args.threads, "torch": torch.__version__,
           "slices": slices, "calibration_slices": calib_slices, "views": views,
           "tiling": {"scale": card.get("scale"), "tile": tile or card.get("tile"),
                      "overlap": card.get("overlap") if overlap is None else overlap,
                      "context": card.get("context"), "batch": opts.batch, "threshold": opts.threshold,
                      "forwards": len(ctx["tiles"]), "tile_shapes": sorted({tuple(b.shape) for b in ctx["tiles"]})},
           "input_pixels": ctx["input_pixels"], "repeats": ctx["repeats"],
           "units": {"fwd_mpix_per_s": "input pixels (original resolution) / median time of all forwards",
                     "predict_mpix_per_s": "input pixels / one predict_stack pass (normalise..blend, views incl.)",
                     "iou_gt": "foreground IoU of uint8 probabilities >= threshold*255 vs ground truth, pooled"},
           **stamp(argv), "backends": {}}
    print(f"{len(slices)} slices, {len(ctx['tiles'])} forwards of {res['tiling']['tile_shapes']}, "
          f"{len(ctx['calib'])} calibration tiles, {args.threads} threads", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ctx["tmp"] = Path(tmp)
        models = {}
        # torch-fp32 first, and always: it is the reference the others are compared with
        for name in ["torch-fp32"] + [b for b in backends if b != "torch-fp32"]:
            model, res["backends"][name] = build(name, ctx)
            r = res["backends"][name]
            print(f"{name}: {r['status']}" + (f" (built in {r['build_s']:.0f} s)" if model else f" {r['error']}"),
                  flush=True)
            if model is not None:
                models[name] = model
        print(f"timing {len(models)} candidates, {ctx['repeats']} rounds", flush=True)
        for name, runs in time_rounds(models, ctx).items():
            fwd = float(np.median(runs))
            res["backends"][name].update(fwd_s=fwd, fwd_runs_s=runs, fwd_mpix_per_s=ctx["input_pixels"] / 1e6 / fwd,
                                         s_per_forward=fwd / len(ctx["tiles"]))
        for name, model in models.items():
            r = res["backends"][name]
            try:
                prob = accuracy(model, ctx, r)
            except Exception as exc:
                r.update(status="failed", error=f"accuracy: {error_text(exc)}")
                continue
            print(f"{name}: IoU {r['iou_gt']:.4f}, vs torch-fp32 {r['vs_torch_fp32_maps']['iou_at_0.5']:.4f}",
                  flush=True)
            if name == "torch-fp32" and not args.no_pipeline_check:
                try:
                    res["pipeline_check"] = pipeline_check(ctx, prob[0])
                except Exception as exc:
                    res["pipeline_check"] = {"error": error_text(exc)}
    ref = res["backends"]["torch-fp32"].get("fwd_mpix_per_s")
    write_json(args.out, res)
    print(json.dumps(res.get("pipeline_check", {}), indent=2))
    print(table(res["backends"], ref))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
