"""Speed and memory of pnpseg against the reference's way of computing, on the same model.

    python benchmarks/run.py --images 2 --sizes 336,768

Builds a full-size, randomly initialised BLIP ITM large (the numbers of
Salesforce/blip-itm-large-flickr's config; nothing is downloaded), saves it with a generated
BERT vocabulary to a temp folder and loads it through the real ``blip`` adapter. Then, in
this one process, on the same model, images and classes (the 20 VOC names):

* ours      — ``SegmentJob`` (the ``pnpseg segment`` loop: prefetch, model passes, blur+CRF
              in ``--workers`` processes, PNG output), with per-stage timers on;
* baseline  — the authors' compute pattern: every parameter requires grad, the vision
              encoder runs with autograd, ``loss.backward()`` over everything, GradCAM of all
              12 layers × 12 heads kept every round, Python-loop patch zeroing, serial CRF;
* floor     — R × (one forward + the gradient w.r.t. the chosen layer's attention), with the
              adapter's fused (SDPA) attention wherever nothing is captured, as ours runs;
* floor eager — the same with eager attention everywhere (the floor before fusion);
* bf16      — ours under ``--precision bf16``: share of label pixels equal to fp32;
* bf16-vision — ours under ``--precision bf16-vision`` (the vision tower alone in bf16), the same.

The baseline and the eager floor run every attention eager (``pnpseg_hf.eager``), as the
reference code does. ``--tiny`` runs the same on a tiny model in seconds (the test suite does, so the harness
cannot rot). Results are printed as tables and, with ``--json PATH``, written as JSON.
See docs/performance.md for the measured numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pnpseg.engines.common import JobSpec
from pnpseg.engines.local import SegmentJob
from pnpseg.io.outputs import save_label_png
from pnpseg.method import profiling
from pnpseg.method.gradcam import capture
from pnpseg.method.labels import labels_from_scores, scores_from_saliency
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess.blur import GaussianBlur
from pnpseg.method.postprocess.crf import DenseCRF
from pnpseg.method.prompts import plan_prompts, token_weights
from pnpseg.plugins import lookup
from pnpseg.testing import make_scene

VOC = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "dining table",
    "dog",
    "horse",
    "motorbike",
    "person",
    "potted plant",
    "sheep",
    "sofa",
    "train",
    "tv monitor",
]
#: The precisions ours also runs at (``--bf16``), each against fp32.
LOWER_PRECISIONS = ("bf16", "bf16-vision")
STAGES = [
    "vision forward",
    "text forward",
    "multimodal forward",
    "gradient",
    "backward",
    "dropout bookkeeping",
    "resize",
    "blur",
    "crf",
    "I/O",
]


# -- memory ---------------------------------------------------------------------------------


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def reset_peak() -> None:
    """Reset VmHWM (peak RSS) of this process; Linux ≥ 4.0 (ignored elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_kb("VmHWM") / 1024


def _status_kb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# -- models (random weights, real classes, saved and loaded by path) ---------------------------


def bert_vocab(extra_words: list[str]) -> dict[str, int]:
    """A 30522-entry BERT-style WordPiece vocabulary: [PAD], [unused*], [UNK] [CLS] [SEP]
    [MASK] at bert-base-uncased's ids, characters and their ## forms, the words, filler."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = string.ascii_lowercase + string.digits
    tokens += list(chars) + [f"##{c}" for c in chars] + list(".,!?'-_/()")
    for word in extra_words:
        for piece in word.lower().split():
            if piece not in tokens:
                tokens.append(piece)
    tokens += [f"[filler{i}]" for i in range(30522 - len(tokens))]
    return {tok: i for i, tok in enumerate(tokens)}


#: The vision tower of Salesforce/blip-itm-large-flickr (its config.json): ViT-L/16 at 384 px.
BLIP_L_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=384,
    patch_size=16,
    layer_norm_eps=1e-5,
)


def build_blip(folder: Path, tiny: bool) -> Path:
    """BLIP ITM large (ViT-L/16 @384, BERT-base with cross-attention to 1024-d), or a tiny one."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForImageTextRetrieval,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = bert_vocab(["a picture of"] + VOC)
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    if tiny:
        vision = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
        )
        text = dict(
            hidden_size=48, intermediate_size=64, num_hidden_layers=12, num_attention_heads=12, encoder_hidden_size=32
        )
    else:  # Salesforce/blip-itm-large-flickr config.json
        vision = dict(BLIP_L_VISION)
        text = dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            encoder_hidden_size=1024,
        )
    config = BlipConfig(
        vision_config=vision,
        text_config=dict(
            text,
            vocab_size=30524,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=30522,
            sep_token_id=102,
            is_decoder=True,
        ),
        image_text_hidden_size=256,
        projection_dim=256,
    )
    config.architectures = ["BlipForImageTextRetrieval"]
    torch.manual_seed(0)
    model = BlipForImageTextRetrieval(config).eval()
    model.save_pretrained(folder)
    size = vision["image_size"]
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer
    ).save_pretrained(folder)
    del model
    return folder


def make_images(folder: Path, count: int, size: tuple[int, int] = (375, 500)) -> list[Path]:
    """VOC-sized (500×375) JPEG scenes; the model is random, so content is irrelevant."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = make_scene(size[0], size[1], ["red", "green", "blue"], seed=i, jpeg_quality=90)
        path = folder / f"img{i:03d}.jpg"
        image.save(path)
        paths.append(path)
    return paths


# -- timing helpers -------------------------------------------------------------------------


@contextlib.contextmanager
def measured() -> Iterator[dict[str, Any]]:
    """Wall time, per-stage totals and peak memory (above nothing: absolute) of a block."""
    result: dict[str, Any] = {}
    profiling.reset()
    profiling.enable(True)
    reset_peak()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        result["stages"] = profiling.totals()
        result["peak_mb"] = peak_mb()
        profiling.enable(False)


# -- ours -----------------------------------------------------------------------------------


def run_ours(
    adapter: Any,
    adapter_name: str,
    model_dir: Path,
    images: list[Path],
    out: Path,
    params: dict,
    workers: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The ``pnpseg segment`` loop (SegmentJob) on ``images``' folder, on the shared ``adapter``."""
    spec = JobSpec(VOC, adapter_name, str(model_dir), "cpu", params, precision)
    job = SegmentJob(spec, [images[0].parent], out, workers=workers, overwrite=True, console=_quiet_console())
    job.segmenter.adapter = adapter  # the very model object the baseline and floor use (weights loaded)
    with measured() as result:
        summary = job.run()
    assert summary.done == len(images), f"ours segmented {summary.done} of {len(images)} images"
    result["labels"] = {p.name: np.asarray(Image.open(out / f"{p.stem}.png")) for p in images}
    return result


def _quiet_console():
    from rich.console import Console

    return Console(stderr=True, quiet=True)


# -- floor ----------------------------------------------------------------------------------


def run_floor(adapter: Any, images: list[Path], params: SegmentParams, fused: bool = True) -> dict[str, Any]:
    """R × (one forward + the gradient w.r.t. the chosen layer's attention), nothing else;
    ``fused=False`` runs every attention eager."""
    from pnpseg.io.images import load_image
    from pnpseg_hf import eager

    size = tuple(s // adapter.patch_size * adapter.patch_size for s in params.image_size)
    chunks = plan_prompts(VOC, adapter.tokenize, adapter.max_text_length)
    text = adapter.tokenize([c.prompt for c in chunks])
    pixels = [adapter.preprocess([load_image(p)], size) for p in images]
    modules = () if fused else list(adapter.model.modules())
    with eager(modules), measured() as result:
        for px in pixels:
            for _ in range(params.drop_rounds):
                capture(adapter, px.expand(len(chunks), -1, -1, -1), text, [params.layer - 1])
    return result


# -- baseline: the reference's compute pattern ---------------------------------------------------


def run_baseline(adapter: Any, images: list[Path], out: Path, params: SegmentParams) -> dict[str, Any]:
    """The authors' way of computing (LAVIS-based PnP-OVSS), on our BLIP model object.

    Per round: Python-loop patch zeroing; a forward with autograd through the vision
    encoder and every parameter requiring grad; ``loss.backward()`` (parameter gradients
    included) with ``retain_grad`` on the cross-attention maps of all layers; GradCAM of all
    layers × heads kept for every round; then thresholding, blur and the CRF serially.
    """
    from pnpseg_blip.adapter import capture_cross_attentions
    from pnpseg_hf import eager

    model = adapter.model
    with eager(list(model.modules())):  # the reference's attention is eager throughout
        return _baseline(adapter, model, images, out, params, capture_cross_attentions)


def _baseline(
    adapter: Any, model: Any, images: list[Path], out: Path, params: SegmentParams, capture_cross_attentions: Any
) -> dict[str, Any]:
    from pnpseg.io.images import load_image

    model.requires_grad_(True)
    ps = adapter.patch_size
    size = tuple(s // ps * ps for s in params.image_size)
    chunks = plan_prompts(VOC, adapter.tokenize, adapter.max_text_length)
    assert len(chunks) == 1, "the baseline handles one prompt chunk"
    text = adapter.tokenize([chunks[0].prompt])
    weights = token_weights(chunks, text.input_ids.shape[1], len(VOC))[0]  # (K, T)
    blur, crf = GaussianBlur(), DenseCRF()
    blur.threads = 1  # the reference blurs channel by channel, serially
    all_layers = list(range(adapter.num_layers))
    out.mkdir(parents=True, exist_ok=True)
    labels_out = {}
    try:
        with measured() as result:
            for path in images:
                with profiling.stage("I/O"):
                    image = load_image(path)
                pixels = adapter.preprocess([image], size)
                gh, gw = size[0] // ps, size[1] // ps
                dropped: list[int] = []
                kept_maps = []  # every round: (layers, heads, T, P), as the reference keeps them
                total = torch.zeros(len(VOC), gh * gw)
                for round_ in range(params.drop_rounds):
                    with profiling.stage("dropout bookkeeping"):
                        masked = pixels.clone()
                        for p in dropped:  # the reference zeroes patch by patch
                            r, c = p // gw, p % gw
                            masked[:, :, r * ps : (r + 1) * ps, c * ps : (c + 1) * ps] = 0
                    model.zero_grad(set_to_none=False)
                    with torch.enable_grad(), capture_cross_attentions(model, all_layers) as captured:
                        with profiling.stage("vision forward"):
                            embeds = model.vision_model(
                                pixel_values=masked, interpolate_pos_encoding=True
                            ).last_hidden_state
                        with profiling.stage("text forward"):
                            hidden = model.text_encoder(
                                input_ids=text.input_ids,
                                attention_mask=text.attention_mask,
                                encoder_hidden_states=embeds,
                                return_dict=True,
                            ).last_hidden_state
                            logit = model.itm_head(hidden[:, 0, :])[:, 1]
                            for probs in captured.values():
                                probs.retain_grad()
                        with profiling.stage("backward"):
                            logit.sum().backward()
                    with profiling.stage("dropout bookkeeping"):
                        cams = torch.stack(
                            [(captured[i].grad.clamp(min=0) * captured[i].detach())[0, :, :, 1:] for i in all_layers]
                        )
                        kept_maps.append(cams)
                        cam = cams[params.layer - 1, params.head - 1]  # (T, P)
                        maps = weights @ cam
                        maps[:, dropped] = 0
                        total += maps
                        u = maps.sum(0)
                        remaining = torch.ones(gh * gw, dtype=torch.bool)
                        remaining[dropped] = False
                        if round_ + 1 < params.drop_rounds and remaining.any():
                            median = u[remaining].median()
                            for p in range(gh * gw):
                                if remaining[p] and u[p] >= median and u[p] > 0:
                                    dropped.append(p)
                width, height = image.size
                rgb = np.asarray(image, dtype=np.uint8)
                with profiling.stage("resize"):
                    scores = scores_from_saliency(
                        total.view(-1, gh, gw), (height, width), params.threshold, params.background, params.compat
                    )
                with profiling.stage("blur"):
                    scores = blur(scores, rgb, params)
                with profiling.stage("crf"):
                    scores = crf(scores, rgb, params)
                labels = labels_from_scores(scores, params.background).numpy().astype(np.uint8)
                with profiling.stage("I/O"):
                    save_label_png(out / f"{path.stem}.png", labels)
                labels_out[path.name] = labels
                del kept_maps
    finally:
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)
    result["labels"] = labels_out
    return result


# -- report ---------------------------------------------------------------------------------


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    equal = sum(int((a[k] == b[k]).sum()) for k in a)
    return equal / sum(a[k].size for k in a)


def stage_table(rows: dict[str, dict[str, Any]], n: int) -> str:
    names = [s for s in STAGES if any(s in r["stages"] for r in rows.values())]
    lines = ["| stage (s/image) | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for s in names:
        lines.append(f"| {s} | " + " | ".join(f"{r['stages'].get(s, 0.0) / n:.3f}" for r in rows.values()) + " |")
    lines.append("| **wall** | " + " | ".join(f"**{r['seconds'] / n:.3f}**" for r in rows.values()) + " |")
    return "\n".join(lines)


def bench_size(
    name: str,
    model_dir: Path,
    adapter_name: str,
    images: list[Path],
    work: Path,
    size: int,
    args: argparse.Namespace,
    baseline: bool,
) -> dict[str, Any]:
    """All methods on the same adapter object, interleaved image by image (the order rotates),
    so that load from other processes on a shared machine hits every column alike."""
    params = dict(image_size=size, drop_rounds=args.rounds, postprocess=args.postprocess)  # layer/head: the adapter's
    n = len(images)
    print(
        f"\n## {name} at {size} px: {n} image(s), K = {len(VOC)}, R = {args.rounds}, {args.postprocess}, "
        f"workers {args.workers}",
        flush=True,
    )
    adapter = lookup("adapters", adapter_name)(model=str(model_dir), device="cpu")
    _ = adapter.model  # load the weights now: loading is not part of the per-image cost
    seg_params = SegmentParams.build(adapter.default_params, params)
    methods: dict[str, Callable[[list[Path], Path], dict[str, Any]]] = {
        "ours": lambda imgs, out: run_ours(adapter, adapter_name, model_dir, imgs, out, params, args.workers),
        "floor": lambda imgs, out: run_floor(adapter, imgs, seg_params),
        "floor eager": lambda imgs, out: run_floor(adapter, imgs, seg_params, fused=False),
    }
    if baseline:
        methods["baseline"] = lambda imgs, out: run_baseline(adapter, imgs, out, seg_params)
    if args.bf16:
        for precision in LOWER_PRECISIONS:
            methods[f"ours {precision}"] = lambda imgs, out, precision=precision: run_ours(
                adapter, adapter_name, model_dir, imgs, out, params, args.workers, precision
            )
    rows: dict[str, dict[str, Any]] = {
        key: {"seconds": 0.0, "stages": {}, "peak_mb": 0.0, "labels": {}, "per_image": []} for key in methods
    }
    order = list(methods)
    for i, path in enumerate(images):
        single = _own_folder([path], work / f"{adapter_name}-{size}-{i}")
        for key in order[i % len(order) :] + order[: i % len(order)]:
            result = methods[key](single, work / f"out-{adapter_name}-{size}-{key.replace(' ', '-')}")
            row = rows[key]
            row["seconds"] += result["seconds"]
            row["per_image"].append(result["seconds"])
            row["peak_mb"] = max(row["peak_mb"], result["peak_mb"])
            row["labels"].update(result.get("labels", {}))
            for stage_name, value in result["stages"].items():
                row["stages"][stage_name] = row["stages"].get(stage_name, 0.0) + value
            print(f"  image {i + 1}/{n} {key}: {result['seconds']:.1f} s", flush=True)
    columns = ("ours", "baseline", "floor", "floor eager", *(f"ours {p}" for p in LOWER_PRECISIONS))
    rows = {k: rows[k] for k in columns if k in rows}
    ours, floor, floor_eager = rows["ours"], rows["floor"], rows["floor eager"]
    report: dict[str, Any] = {"model": name, "size": size, "images": n}
    if baseline:
        report["labels_agree_baseline"] = agreement(ours["labels"], rows["baseline"]["labels"])
    if args.bf16:
        for precision in LOWER_PRECISIONS:
            report[f"{precision}_agreement"] = agreement(ours["labels"], rows[f"ours {precision}"]["labels"])
    for key, row in rows.items():
        report[key] = {
            "s_per_image": row["seconds"] / n,
            "images_per_s": n / row["seconds"],
            "fastest_image_s": min(row["per_image"]),
            "peak_mb": row["peak_mb"],
            "stages": {k: v / n for k, v in row["stages"].items()},
        }
    model_stages = ("vision forward", "text forward", "multimodal forward", "gradient", "dropout bookkeeping")
    ours_model = sum(ours["stages"].get(s, 0.0) for s in model_stages)
    print("\n| | s/image (mean) | images/s | fastest image s | peak RSS MB |\n|---|---|---|---|---|")
    for key, row in rows.items():
        print(
            f"| {key} | {row['seconds'] / n:.3f} | {n / row['seconds']:.3f} | {min(row['per_image']):.3f} "
            f"| {row['peak_mb']:.0f} |"
        )
    print()
    print(stage_table(rows, n))
    print()
    if baseline:
        base = rows["baseline"]
        ratio = base["seconds"] / ours["seconds"]
        report["speedup_vs_baseline"] = ratio
        print(f"RATIO {name} {size}px baseline/ours (per image): {ratio:.2f}x")
        fastest = min(base["per_image"]) / min(ours["per_image"])
        report["speedup_vs_baseline_fastest"] = fastest
        print(f"RATIO {name} {size}px baseline/ours (fastest image of each, less load noise): {fastest:.2f}x")
        print(f"RATIO {name} {size}px peak memory ours/baseline: {ours['peak_mb'] / base['peak_mb']:.2f}")
        print(
            f"CHECK {name} {size}px label maps ours vs baseline agree on {100 * report['labels_agree_baseline']:.2f}% of pixels"
        )
    report["ours_over_floor"] = ours["seconds"] / floor["seconds"]
    report["ours_model_over_floor"] = ours_model / floor["seconds"]
    print(f"RATIO {name} {size}px ours/floor (whole pipeline): {report['ours_over_floor']:.2f}")
    print(f"RATIO {name} {size}px ours/floor (model stages only): {report['ours_model_over_floor']:.2f}")
    report["ours_over_floor_fastest"] = min(ours["per_image"]) / min(floor["per_image"])
    print(f"RATIO {name} {size}px ours/floor (fastest image of each): {report['ours_over_floor_fastest']:.2f}")
    report["floor_eager_over_fused"] = floor_eager["seconds"] / floor["seconds"]
    print(
        f"RATIO {name} {size}px floor eager/fused (what fused attention saves): {report['floor_eager_over_fused']:.2f}x"
    )
    report["ours_over_floor_eager"] = ours["seconds"] / floor_eager["seconds"]
    print(f"RATIO {name} {size}px ours/floor eager (whole pipeline): {report['ours_over_floor_eager']:.2f}")
    if args.bf16:
        for precision in LOWER_PRECISIONS:
            speedup = ours["seconds"] / rows[f"ours {precision}"]["seconds"]
            print(f"RATIO {name} {size}px ours fp32/{precision}: {speedup:.2f}x")
            if baseline:
                print(
                    f"RATIO {name} {size}px baseline/ours {precision}: {base['seconds'] / rows[f'ours {precision}']['seconds']:.2f}x"
                )
            print(
                f"CHECK {name} {size}px {precision} vs fp32 label agreement: {100 * report[f'{precision}_agreement']:.2f}%"
            )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2, help="images at the first size (default 2)")
    parser.add_argument("--large-images", type=int, default=1, help="images at every further size (default 1)")
    parser.add_argument("--sizes", default="336", help="comma-separated input sizes, e.g. 336,768")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--postprocess", default="blur,crf")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="CRF worker processes for ours (default 0: on 2 cores the model already uses both)",
    )
    parser.add_argument("--no-baseline-large", action="store_true", help="skip the baseline at sizes after the first")
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run ours in bf16 and bf16-vision at the first size and report label agreement",
    )
    parser.add_argument(
        "--bridgetower",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also benchmark BridgeTower (default: if its adapter is installed)",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny random model: checks the harness in seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.tiny:
        sizes = [64 if s == sizes[0] else 128 for s in sizes]
    cpu = _cpu_name()
    print(
        f"# pnpseg benchmark — {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device cpu"
    )
    print(f"load average at start: {_loadavg()}")
    reports = []
    with tempfile.TemporaryDirectory(prefix="pnpseg-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model_dir = build_blip(work / "blip", args.tiny)
        print(
            f"built {'tiny' if args.tiny else 'BLIP ITM large'} (random weights) in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        images = make_images(work / "images", max(args.images, args.large_images))
        for i, size in enumerate(sizes):
            few = images[: args.images] if i == 0 else images[: args.large_images]
            with _args_override(args, bf16=args.bf16 and i == 0):
                reports.append(
                    bench_size(
                        "BLIP-L" if not args.tiny else "tiny-BLIP",
                        model_dir,
                        "blip",
                        few,
                        work,
                        size,
                        args,
                        baseline=not (i and args.no_baseline_large),
                    )
                )
        want_bt = args.bridgetower
        has_bt = _has_adapter("bridgetower")
        if want_bt is None:
            want_bt = has_bt
        if want_bt and not has_bt:
            print("\nBridgeTower: no `bridgetower` adapter installed; skipped")
        elif want_bt:
            reports.extend(bench_bridgetower(work, images[: args.images], sizes[0], args))
        else:
            print("\nBridgeTower: skipped" + ("" if has_bt else " (no `bridgetower` adapter installed)"))
    print(f"\nload average at end: {_loadavg()} (other processes on this machine slow every column alike)")
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu, "cores": os.cpu_count(), "results": reports}, indent=2, default=float)
        )
    return 0


def _own_folder(paths: list[Path], folder: Path) -> list[Path]:
    """Copy a subset of images into a folder of their own (SegmentJob reads folders)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in paths]


@contextlib.contextmanager
def _args_override(args: argparse.Namespace, **values: Any) -> Iterator[None]:
    old = {k: getattr(args, k) for k in values}
    vars(args).update(values)
    try:
        yield
    finally:
        vars(args).update(old)


def _has_adapter(name: str) -> bool:
    from pnpseg.plugins import lookup

    try:
        lookup("adapters", name)
        return True
    except Exception:
        return False


def bench_bridgetower(work: Path, images: list[Path], size: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ours and the floor for BridgeTower large (no baseline: its reference code is BLIP-only)."""
    try:
        model_dir = build_bridgetower(work / "bridgetower", args.tiny)
    except Exception as error:  # noqa: BLE001 - report, do not fail the BLIP numbers
        print(f"\nBridgeTower: could not build the model ({type(error).__name__}: {error}); skipped")
        return []
    if args.tiny:
        size = 64
    with _args_override(args, bf16=False):
        return [
            bench_size(
                "BridgeTower-L" if not args.tiny else "tiny-BridgeTower",
                model_dir,
                "bridgetower",
                images,
                work,
                size,
                args,
                baseline=False,
            )
        ]


def build_bridgetower(folder: Path, tiny: bool) -> Path:
    """BridgeTower large ITM (RoBERTa-large text, CLIP ViT-L/14 @294 vision, 6 cross-modal
    layers of 1024-d × 16 heads), or a tiny one; byte-level BPE vocabulary generated here."""
    from transformers import (
        BridgeTowerConfig,
        BridgeTowerForImageAndTextRetrieval,
        BridgeTowerImageProcessor,
        BridgeTowerProcessor,
        RobertaTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = byte_level_vocab(["a", "picture", "of"] + VOC)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=512)
    if tiny:
        hidden, layers, heads, text_layers, inter, vision_hidden, vision_layers, image, patch = (
            64,
            3,
            8,
            2,
            128,
            64,
            2,
            64,
            16,
        )
    else:  # BridgeTower/bridgetower-large-itm-mlm-itc
        hidden, layers, heads, text_layers, inter, vision_hidden, vision_layers, image, patch = (
            1024,
            6,
            16,
            24,
            4096,
            1024,
            24,
            294,
            14,
        )
    config = BridgeTowerConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        text_config=dict(
            vocab_size=50265,
            hidden_size=hidden,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=514,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=vision_hidden, num_hidden_layers=vision_layers, image_size=image, patch_size=patch
        ),
    )
    torch.manual_seed(0)
    BridgeTowerForImageAndTextRetrieval(config).eval().save_pretrained(folder)
    image_processor = BridgeTowerImageProcessor(size={"shortest_edge": image}, crop_size={"shortest_edge": image})
    BridgeTowerProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def byte_level_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """RoBERTa specials, the 256 byte-level symbols, merges spelling ``Ġword`` per word."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in sorted({piece for w in words for piece in w.split()}):
        current = "Ġ"
        for piece in word:
            if (current, piece) not in merges:
                merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    return vocab, merges


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
