"""The PnP-OVSS authors' released code, run as it is, for ``benchmarks/released.py``.

Runs in the LAVIS environment (its Python is ``released.py --lavis-python``), never in the
main one. Their repository is given by path; nothing of it is copied into pnpseg. What this
script supplies is what their scripts take from their machine:

- LAVIS 1.0.2 with their six replaced files ("Files to replace for BLIP"), as their README
  says, laid over a copy of the installed ``lavis`` package in the work folder (the
  environment itself is left as it is);
- a Pascal VOC folder tree under ``--work``/home (their ``--home_dir``): the benchmark's
  images as ``JPEGImages``, an all-background ``SegmentationClass`` mask each, and a GPT-4o
  class file that lists all 20 classes at 100 % for every image, so that every image is
  prompted with the whole VOC list, as ours is;
- the model: ``BlipITM`` built from their ``blip_itm_large.yaml`` with random weights
  (``build``; saved as a released checkpoint, ``{"model": state_dict}``, with the BERT
  ``vocab.txt`` the driver wrote), loaded from that file (``serve``), and handed to their
  code behind a ``.module`` attribute, the only way their code uses its DDP wrapper;
- their ``utils.MetricLogger``, which is not in their repository: a stand-in whose
  ``log_every`` yields the batches.

``serve`` then reads image ids on stdin, one per line, and for each runs their
``captions_text_loc`` (their dataset's preprocessing, their GradCAM, Saliency DropOut,
blur, dense CRF and scoring, all of it) with the flags of their ``Run_seg.sh`` for VOC, and
answers one JSON line: wall seconds, seconds per stage, and the path of the final label map
(their all-drop prediction). Their own prints go to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
import types
from pathlib import Path

#: Their README: each file of "Files to replace for BLIP" and where it goes in ``lavis``.
REPLACED = {
    "blip_image_text_matching.py": "models/blip_models",
    "blip_itm_large.yaml": "configs/models",
    "med.py": "models",
    "vit.py": "models",
    "base_model.py": "models",
    "blip_processors.py": "processors",
}
#: Their ``load_voc`` class names, VOC ids 1–20.
VOC_AUTHORS = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip
#: Their ``Run_seg.sh``, with ``--data_type voc`` and one image per batch.
RUN_SEG = [
    "--gen_multiplecap_withpnpvqa", "label", "--world_size", "1", "--img_size", "336",
    "--del_patch_num", "sort_thresh005", "--batch_size", "1", "--max_att_block_num", "8",
    "--drop_iter", "4", "--prune_att_head", "9", "--sort_threshold", "0.05", "--threshold", "0.15",
    "--postprocess", "blur+crf", "--data_type", "voc",
]  # fmt: skip
#: The module of their VOC / Context / ADE20K script.
SCRIPT = "PnP_OVSS_0514_updated_segmentation"


def overlay_lavis(authors: Path, work: Path) -> Path:
    """A copy of the installed ``lavis`` with their replaced files, under ``work``; put first on ``sys.path``."""
    spec = importlib.util.find_spec("lavis")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("salesforce-lavis is not installed here: run this with the LAVIS environment's Python")
    root = work / "lavis-overlay"
    if not root.exists():
        partial = work / "lavis-overlay.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(
            spec.submodule_search_locations[0], partial / "lavis", ignore=shutil.ignore_patterns("__pycache__")
        )
        for name, folder in REPLACED.items():
            shutil.copyfile(authors / "Files to replace for BLIP" / name, partial / "lavis" / folder / name)
        partial.rename(root)
    sys.path.insert(0, str(root))
    return root


def set_tokenizer(vocab_folder: Path) -> None:
    """LAVIS's ``BlipBase.init_tokenizer``, reading ``vocab.txt`` from ``vocab_folder`` instead of the hub."""
    from lavis.models.blip_models.blip import BlipBase
    from transformers import BertTokenizer

    def init_tokenizer(cls):  # as LAVIS's, but offline
        tokenizer = BertTokenizer(vocab_file=str(vocab_folder / "vocab.txt"))
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
        return tokenizer

    BlipBase.init_tokenizer = classmethod(init_tokenizer)


def build_model(work: Path, tiny: bool, seed: int):
    """Their ``blip_itm_large.yaml`` model (ViT-L at 336 px, BERT-base), random weights; or a tiny one."""
    import torch
    from lavis.common.registry import registry
    from lavis.models.blip_models.blip_image_text_matching import BlipITM
    from lavis.models.med import XBertEncoder
    from lavis.models.vit import VisionTransformerEncoder
    from omegaconf import OmegaConf

    set_tokenizer(work)
    config = OmegaConf.load(Path(registry.get_path("library_root")) / BlipITM.PRETRAINED_MODEL_CONFIG_DICT["large"])
    model_config = config.model
    torch.manual_seed(seed)
    if tiny:  # 4 vision layers of 256 at 64 px; the text side as it is (their code needs 12 heads of 12 layers)
        vision = VisionTransformerEncoder(img_size=64, patch_size=16, embed_dim=256, depth=4, num_heads=4)
        vision.vision_width = 256
        from transformers import BertConfig

        med = BertConfig.from_json_file(str(Path(registry.get_path("library_root")) / model_config.med_config_path))
        med.update({"encoder_width": 256})
        text = XBertEncoder(config=med, add_pooling_layer=False)
    else:
        vision = VisionTransformerEncoder.from_config(model_config)
        text = XBertEncoder.from_config(model_config)
    return BlipITM(image_encoder=vision, text_encoder=text, embed_dim=model_config.get("embed_dim", 256)).eval()


def build(args: argparse.Namespace) -> None:
    import torch

    model = build_model(args.work, args.tiny, args.seed)
    torch.save({"model": model.state_dict()}, args.work / "blip_itm_large.pth")


class _MetricLogger:
    """Their ``utils.MetricLogger`` (not in their repository): ``log_every`` yields the batches."""

    def __init__(self, delimiter: str = "") -> None:
        self.delimiter = delimiter

    def log_every(self, iterable, print_freq):
        yield from iterable


def voc_home(work: Path, ids: list[str]) -> Path:
    """Their ``--home_dir``: VOC's folders for ``ids`` (images already in ``JPEGImages``) and the GPT-4o file."""
    import numpy as np
    from PIL import Image

    home = work / "home"
    voc = home / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        width, height = Image.open(voc / "JPEGImages" / f"{image_id}.jpg").size
        Image.fromarray(np.zeros((height, width), np.uint8)).save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    listed = ", ".join(f"{n}: '{name}'" for n, name in enumerate(VOC_AUTHORS, 1))
    sure = ", ".join(f"{n}: 100%" for n in range(1, len(VOC_AUTHORS) + 1))
    (home / "GPT4o_classification").mkdir(exist_ok=True)
    (home / "GPT4o_classification" / "voc_classification_noboundary.json").write_text(
        json.dumps({i: f"[{listed}], [{sure}]" for i in ids})
    )
    return home


def serve(args: argparse.Namespace) -> None:
    """Load once, then run their code on each image id read from stdin."""
    import numpy as np
    import torch

    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # their prints go to stderr; stdout carries the answers only
    torch.set_num_threads(args.threads)
    sys.modules.setdefault("utils", types.SimpleNamespace(MetricLogger=_MetricLogger))
    sys.path.insert(1, str(args.authors))
    try:
        import Dataset

        script = __import__(SCRIPT)
    except ModuleNotFoundError as error:
        raise SystemExit(
            f"their script imports {error.name!r}, which the LAVIS environment lacks: "
            "pip install scikit-image matplotlib there (docs/performance.md)"
        ) from None
    stages = {"model passes": 0.0, "blur": 0.0, "crf": 0.0}
    for name, stage in (("compute_gradcam_ensemble", "model passes"), ("blurring", "blur"), ("densecrf", "crf")):
        setattr(script, name, _timed(getattr(script, name), stage, stages))
    predictions: list = []  # the label maps their code scores: the 1-drop prediction, then the all-drop one
    script.scores = _recording(script.scores, predictions)

    set_tokenizer(args.work)
    model = build_model(args.work, args.tiny, args.seed)
    state = torch.load(args.work / "blip_itm_large.pth", map_location="cpu")["model"]
    model.load_state_dict(state)
    model_textloc = types.SimpleNamespace(module=model)  # their code only ever calls DDP(...).module
    ids = [line.strip() for line in (args.work / "ids.txt").read_text().splitlines() if line.strip()]
    home = voc_home(args.work, ids)
    run = script.get_args_parser().parse_args(
        [*RUN_SEG, "--home_dir", str(home), "--save_path", str(args.work / "authors-out")]
    )
    if args.tiny:
        run.img_size = 64
    data = Dataset.PascalVOC(  # their dataset class, as their load_voc builds it
        str(home / "VOCdevkit" / "VOC2012"), split="val", args=run, device="cpu"
    )
    cats = {n: name for n, name in enumerate(VOC_AUTHORS, 1)}
    clear_refs, status = Path("/proc/self/clear_refs"), Path("/proc/self/status")
    print(json.dumps({"ready": True}), file=answers)
    for line in sys.stdin:
        image_id = line.strip()
        if not image_id:
            continue
        for key in stages:
            stages[key] = 0.0
        predictions.clear()
        clear_refs.write_text("5")  # resets VmHWM, the peak RSS
        start = time.perf_counter()
        batch = torch.utils.data.default_collate([data[ids.index(image_id)]])
        script.captions_text_loc(run, VOC_AUTHORS, model_textloc, [batch], None, None, "cpu", cats)
        seconds = time.perf_counter() - start
        assert len(predictions) == 2, f"their code scored {len(predictions)} predictions, not the 1-drop and all-drop"
        labels = np.asarray(predictions[1][0], dtype=np.uint8)  # the all-drop prediction, in VOC ids
        path = args.work / "authors-labels" / f"{image_id}.npy"
        path.parent.mkdir(exist_ok=True)
        np.save(path, labels)
        peak = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        answer = {"id": image_id, "seconds": seconds, "stages": dict(stages), "labels": str(path)}
        print(json.dumps({**answer, "peak_mb": float(peak.split()[1]) / 1024}), file=answers)


def _recording(scores, predictions: list):
    """Their ``scores(label_trues, label_preds, ...)``, keeping each ``label_preds``."""

    def recorded(label_trues, label_preds, *args, **kwargs):
        predictions.append(label_preds)
        return scores(label_trues, label_preds, *args, **kwargs)

    return recorded


def _timed(function, stage: str, totals: dict[str, float]):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[stage] += time.perf_counter() - start

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "serve"])
    parser.add_argument("--authors", type=Path, required=True, help="their repository (letitiabanana/PnP-OVSS)")
    parser.add_argument("--work", type=Path, required=True, help="the driver's work folder (vocab.txt, images)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model at 64 px (a smoke run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    overlay_lavis(args.authors, args.work)
    build(args) if args.command == "build" else serve(args)


if __name__ == "__main__":
    main()
