"""The LAVIS adapters on tiny random LAVIS models: protocol, LAVIS's own arithmetic, errors."""

from __future__ import annotations

import pytest

pytest.importorskip("lavis", reason="LAVIS tests run in the LAVIS environment (requirements-lavis.txt)")

import torch
from PIL import Image

import pnpseg
from pnpseg.plugins import adapters
from pnpseg.testing import CLAUSES, check_adapter, make_scene
from pnpseg_lavis import AlbefAdapter, LavisBlipAdapter

PROMPTS = ["a picture of cat.", "red dog sky", "grass"]


def scene(height=60, width=100, seed=0) -> Image.Image:
    return make_scene(height, width, ["red", "blue"], seed=seed)[0]


def test_registered_under_their_names():
    found = adapters()  # registered lazily: the plugin's import stays light for --help
    assert found["lavis-blip"].load() is LavisBlipAdapter and found["albef"].load() is AlbefAdapter


def test_sizes_come_from_the_checkpoint(blip_adapter, albef_adapter):
    # tiny BLIP: 3 text layers, all cross-attending; tiny ALBEF: 4 text layers, the upper 2 fused
    assert (blip_adapter.num_layers, blip_adapter.num_heads, blip_adapter.max_text_length) == (3, 2, 64)
    assert (albef_adapter.num_layers, albef_adapter.num_heads, albef_adapter.patch_size) == (2, 2, 16)
    assert not AlbefAdapter(albef_adapter.name).weights_loaded  # sizes need no model


def test_blip_puts_enc_first_albef_keeps_cls(blip_adapter, albef_adapter):
    text = blip_adapter.tokenize(["a picture of cat."])
    enc = blip_adapter.tokenizer.convert_tokens_to_ids("[ENC]")
    assert enc == blip_adapter.tokenizer.convert_tokens_to_ids("[DEC]") + 1 == len(blip_adapter.tokenizer) - 1
    assert text.input_ids[0, 0] == enc
    assert text.offsets[0][:5] == [(0, 0), (0, 1), (2, 9), (10, 12), (13, 16)]
    assert albef_adapter.tokenize(["cat"]).input_ids[0, 0] == albef_adapter.tokenizer.cls_token_id
    assert albef_adapter.tokenize(["cat 🐱"]).unknown[0] == [False, False, True, False]


def test_blip_match_logit_is_lavis_itm(blip_adapter):
    """Same pixels and captions: the adapter's logit is LAVIS's own BlipITM.forward 'itm' logit."""
    pixels = blip_adapter.preprocess([scene()], (64, 64))
    with torch.no_grad():
        ours = blip_adapter.forward(pixels, blip_adapter.tokenize(PROMPTS), []).match_logit
        lavis = blip_adapter.model({"image": pixels.expand(3, -1, -1, -1), "text_input": PROMPTS}, match_head="itm")
    torch.testing.assert_close(ours, lavis[:, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["blip", "albef"])
def test_attention_and_gradient_are_lavis_gradcam_ones(which, blip_adapter, albef_adapter):
    """LAVIS's own GradCAM hooks (save_attention) see the very tensors and gradients we return."""
    adapter = blip_adapter if which == "blip" else albef_adapter
    layer = adapter.num_layers - 1
    module = adapter.cross_attention(layer)
    pixels = adapter.preprocess([scene()], (64, 96))
    text = adapter.tokenize(PROMPTS)
    module.save_attention = True
    try:
        out = adapter.forward(pixels, text, [layer])
        (grad,) = torch.autograd.grad(out.match_logit.sum(), out.attentions)
    finally:
        module.save_attention = False
    assert out.attentions[0] is module.get_attention_map()
    torch.testing.assert_close(grad, module.get_attn_gradients())
    assert out.grid == (4, 6) and out.to_text_image(grad).shape == (3, 2, text.input_ids.shape[1], 24)
    assert grad.abs().sum() > 0


def test_other_grids_use_lavis_position_interpolation(blip_checkpoint, blip_adapter):
    """At 96 px (6×6 patches) the logit equals a LAVIS BlipITM built for 96 px whose position
    table LAVIS's interpolate_pos_embed resized, as LAVIS does when it loads a checkpoint."""
    from lavis.models.vit import VisionTransformerEncoder, interpolate_pos_embed

    pixels = blip_adapter.preprocess([scene()], (96, 96))
    text = blip_adapter.tokenize(PROMPTS)
    with torch.no_grad():
        ours = blip_adapter.forward(pixels, text, []).match_logit
    lavis = blip_adapter.model
    native = blip_adapter.forward(blip_adapter.preprocess([scene()], (64, 64)), text, []).match_logit
    state = torch.load(blip_checkpoint, weights_only=True)["model"]
    vit = VisionTransformerEncoder(img_size=96, patch_size=16, embed_dim=128, depth=2, num_heads=2)
    vision_state = {k[len("visual_encoder.") :]: v for k, v in state.items() if k.startswith("visual_encoder.")}
    vision_state["pos_embed"] = interpolate_pos_embed(vision_state["pos_embed"], vit)
    vit.load_state_dict(vision_state)
    with torch.no_grad():
        image_embeds = vit.eval().forward_features(pixels).expand(3, -1, -1)
        hidden = lavis.text_encoder(
            text.input_ids,
            attention_mask=text.attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long),
            return_dict=True,
        ).last_hidden_state
        reference = lavis.itm_head(hidden[:, 0])[:, 1]
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, native.detach())


def lavis_gradcam_reference(adapter, pixels, text, layers):
    """∂match/∂attention from LAVIS's own GradCAM hooks (``save_attention``: the tensor hook
    its ``compute_gradcam`` reads) with a full autograd graph, the ViT and every parameter in it."""
    with torch.no_grad():
        adapter.forward(pixels, text, [])  # the adapter sets the ViT to the pixels' grid
    model = adapter.model
    modules = [adapter.cross_attention(layer) for layer in layers]
    model.requires_grad_(True)
    for module in modules:
        module.save_attention = True
    try:
        image = model.visual_encoder.forward_features(pixels)
        hidden = model.text_encoder(
            text.input_ids,
            attention_mask=text.attention_mask,
            encoder_hidden_states=image,
            encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long),
            return_dict=True,
        ).last_hidden_state
        model.itm_head(hidden[:, 0])[:, 1].sum().backward()
        return [module.get_attn_gradients()[..., 1:] for module in modules]
    finally:
        for module in modules:
            module.save_attention = False
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)


@pytest.mark.parametrize("which", ["blip", "albef"])
def test_conformance_kit(which, blip_adapter, albef_adapter):
    adapter = blip_adapter if which == "blip" else albef_adapter
    report = check_adapter(adapter, reference_gradients=lavis_gradcam_reference, atol=1e-7)
    assert not report.skipped and not report.failed and set(report.passed) == set(CLAUSES)


def test_bad_arguments(blip_adapter):
    pixels = blip_adapter.preprocess([scene()], (64, 64))
    with pytest.raises(IndexError, match="out of range 0..2"):
        blip_adapter.forward(pixels, blip_adapter.tokenize(["cat"]), [3])
    with pytest.raises(pnpseg.PnpsegError, match="multiple of LAVIS BLIP's patch size 16"):
        blip_adapter.preprocess([scene()], (60, 64))
    with pytest.raises(ValueError, match="allows 64"):
        blip_adapter.forward(pixels, blip_adapter.tokenize(["cat " * 70]), [0])


def test_albef_checkpoint_without_momentum_encoders(albef_checkpoint, albef_adapter, tmp_path):
    """Only the ITM's parts are required: momentum encoders and queues serve retrieval training."""
    import shutil

    state = torch.load(albef_checkpoint, weights_only=True)["model"]
    kept = {k: v for k, v in state.items() if "_m." not in k and "queue" not in k}
    assert len(kept) < len(state)
    torch.save({"model": kept}, tmp_path / "itm_only.pth")
    shutil.copy(albef_checkpoint.parent / "vocab.txt", tmp_path / "vocab.txt")
    slim = AlbefAdapter(str(tmp_path / "itm_only.pth"))
    pixels = slim.preprocess([scene()], (64, 64))
    text = slim.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(
            slim.forward(pixels, text, []).match_logit, albef_adapter.forward(pixels, text, []).match_logit
        )
