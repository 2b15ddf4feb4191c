import numpy as np
import torch

from pnpseg.method.labels import labels_from_scores, minmax, scores_from_saliency
from pnpseg.method.params import SegmentParams
from pnpseg.method.postprocess.blur import GaussianBlur
from pnpseg.method.postprocess.crf import DenseCRF


def test_minmax_per_channel_and_constant_channel():
    maps = torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]])
    assert minmax(maps).tolist() == [[[0.0, 1.0]], [[0.0, 0.0]]]


def test_threshold_upsample_and_background():
    saliency = torch.tensor([[[0.0, 10.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 4.0]]])  # K=2, 2x2 grid
    scores = scores_from_saliency(saliency, (2, 2), threshold=0.15, background=True)
    # class 0: normalised [0, 1, 0.1, 0]; 0.1 < 0.15 is dropped. class 1 keeps its corner.
    assert scores.shape == (3, 2, 2)
    assert scores[1].tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert scores[2].tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert scores[0].tolist() == [[1.0, 0.0], [1.0, 0.0]]  # background where no class survives
    assert labels_from_scores(scores, background=True).tolist() == [[0, 1], [0, 2]]


def test_labels_without_background_start_at_one():
    scores = torch.tensor([[[0.9, 0.1]], [[0.2, 0.8]]])
    assert labels_from_scores(scores, background=False).tolist() == [[1, 2]]


def test_upsampling_keeps_orientation_on_non_square_maps():
    saliency = torch.zeros(1, 2, 3)
    saliency[0, 0, 2] = 1.0  # top-right patch
    scores = scores_from_saliency(saliency, (20, 30), threshold=0.5, background=True)
    labels = labels_from_scores(scores, background=True)
    assert labels[0, 29] == 1 and labels[19, 0] == 0 and labels[19, 29] == 0


def test_authors_compat_keeps_raw_values():
    saliency = torch.tensor([[[0.0, 4.0], [2.0, 1.0]]])
    scores = scores_from_saliency(saliency, (2, 2), threshold=0.3, background=False, compat="authors")
    assert scores.tolist() == [[[0.0, 4.0], [2.0, 0.0]]]


def test_blur_sigma_is_relative_and_output_normalised():
    scores = torch.zeros(1, 50, 100)
    scores[0, 25, 50] = 1.0
    blurred = GaussianBlur()(scores, np.zeros((50, 100, 3), np.uint8), SegmentParams(blur_sigma=0.05))
    assert blurred.max() == 1.0 and blurred.min() == 0.0
    # σ = 5 px: one σ away the Gaussian is exp(-1/2) of its peak.
    assert abs(float(blurred[0, 25, 55]) / float(blurred[0, 25, 50]) - np.exp(-0.5)) < 0.02


def test_threaded_blur_is_bit_identical_to_one_thread_and_to_a_3d_filter():
    from scipy.ndimage import gaussian_filter

    scores = torch.rand(5, 75, 100, generator=torch.Generator().manual_seed(0))
    image, params = np.zeros((75, 100, 3), np.uint8), SegmentParams(blur_sigma=0.05)
    results = []
    for threads in (1, 2, 4):
        blur = GaussianBlur()
        blur.threads = threads
        results.append(blur(scores, image, params))
    one, two, four = results
    assert torch.equal(one, two) and torch.equal(one, four)
    whole = gaussian_filter(scores.numpy(), sigma=(0, 5.0, 5.0), mode="reflect")  # the paper's step, as one call
    assert torch.equal(one, minmax(torch.from_numpy(whole)))


def test_crf_snaps_to_colour_edges():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = 255
    scores = torch.zeros(2, 40, 40)
    scores[0, :, :24] = 1.0  # class boundary 4 px off the colour edge
    scores[1, :, 24:] = 1.0
    refined = DenseCRF()(scores, image, SegmentParams())
    labels = refined.argmax(0)
    assert (labels[:, :20] == 0).float().mean() > 0.95
    assert (labels[:, 20:] == 1).float().mean() > 0.95
