"""The PnP-OVSS authors' compute pattern, reproduced on our BLIP model object (the baseline).

It keeps the released (LAVIS-based) code's costs: every parameter requires grad and the
vision encoder runs with autograd; one ``loss.backward()`` per round with parameter
gradients; ``retain_grad`` on the cross-attention maps of all layers, GradCAM of all
layers × heads kept for every round; patches zeroed one by one in a Python loop;
thresholding, blur and the CRF serially. The arithmetic is the ``compat`` mode's (the
paper's, or with ``compat="authors"`` the released code's), so its label maps equal ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_measure import measured
from bench_models import VOC

from pnpseg.io.outputs import save_label_png
from pnpseg.method import profiling
from pnpseg.method.compat import arithmetic
from pnpseg.method.dropout import drop_patches
from pnpseg.method.labels import labels_from_scores, scores_from_saliency
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess.blur import GaussianBlur
from pnpseg.method.postprocess.crf import DenseCRF
from pnpseg.method.prompts import plan_prompts, token_weights


def run_baseline(
    adapter: Any, images: list[Path], out: Path, params: SegmentParams, classes: list[str] = VOC
) -> dict[str, Any]:
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
        return _baseline(adapter, model, images, out, params, classes, capture_cross_attentions)


def _baseline(
    adapter: Any,
    model: Any,
    images: list[Path],
    out: Path,
    params: SegmentParams,
    classes: list[str],
    capture_cross_attentions: Any,
) -> dict[str, Any]:
    from pnpseg.io.images import load_image

    model.requires_grad_(True)
    ps = adapter.patch_size
    size = tuple(s // ps * ps for s in params.image_size)
    chunks = plan_prompts(classes, adapter.tokenize, adapter.max_text_length)
    assert len(chunks) == 1, "the baseline handles one prompt chunk"
    text = adapter.tokenize([chunks[0].prompt])
    rules = arithmetic(params.compat)
    weights = token_weights(chunks, text.input_ids.shape[1], len(classes), params.compat)[0]  # (K, T)
    pieces = (weights > 0).float()[None]  # the authors' drop score counts every class token
    blur, crf = GaussianBlur(), DenseCRF()
    blur.threads = 1  # the reference blurs channel by channel, serially
    all_layers = list(range(adapter.num_layers))
    out.mkdir(parents=True, exist_ok=True)
    labels_out, saliency_out = {}, {}
    try:
        with measured() as result:
            for path in images:
                with profiling.stage("I/O"):
                    image = load_image(path)
                pixels = adapter.preprocess([image], size)
                gh, gw = size[0] // ps, size[1] // ps
                dropped: list[int] = []
                kept_maps = []  # every round: (layers, heads, T, P), as the reference keeps them
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
                        if round_ == 0:
                            total = rules.first_total(maps)
                        maps[:, dropped] = 0
                        total += maps
                        if round_ + 1 < params.drop_rounds:
                            mask = torch.zeros(1, gh * gw, dtype=torch.bool)
                            mask[0, dropped] = True
                            score = rules.drop_score(maps[None], cam[None], pieces, torch.tensor([0]), 1)
                            new = drop_patches(params.drop_rule or "median", score, mask, params.compat)
                            dropped.extend(new[0].nonzero().flatten().tolist())
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
                saliency_out[path.name] = total.view(-1, gh, gw)
                del kept_maps
    finally:
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)
    result["labels"], result["saliency"] = labels_out, saliency_out
    return result
