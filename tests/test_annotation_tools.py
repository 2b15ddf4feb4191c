"""The ``--format`` documents taken by the annotation tools' own code, following the steps of
docs/formats.md: Datumaro (what CVAT runs to import "Segmentation mask 1.1" and COCO) and a
real Label Studio server. Each tool lives in its own environment, which ``.ci/run`` builds:

- ``PNPSEG_DATUMARO_PYTHON``: a Python with ``datumaro``;
- ``PNPSEG_LABEL_STUDIO_URL`` and ``PNPSEG_LABEL_STUDIO_TOKEN``: a Label Studio server on
  127.0.0.1 that serves local files from ``/`` (and its legacy API token).

Without them these tests are skipped, as the LAVIS parity test is without its environment.
The images have the names that broke the tools before: ``+ & # %`` and a space.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pnpseg.cli import app
from pnpseg.testing import COLOURS, make_scene

VOCAB = list(COLOURS)[:4]
SIZE = (48, 64)
NAMES = ["a+b.png", "shot #1.png", "sub/100% sure.png"]
DATUMARO = os.environ.get("PNPSEG_DATUMARO_PYTHON")
LS_URL = os.environ.get("PNPSEG_LABEL_STUDIO_URL")
LS_TOKEN = os.environ.get("PNPSEG_LABEL_STUDIO_TOKEN", "")


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """Step 1 of every tool: ``pnpseg segment photos/ --out masks/ --format ...``."""
    root = tmp_path_factory.mktemp("tools")
    photos = root / "R&D photos"
    for i, name in enumerate(NAMES):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        make_scene(*SIZE, VOCAB[i % 3 : i % 3 + 2], seed=i)[0].save(photos / name)
    out = root / "masks"
    result = CliRunner().invoke(
        app,
        ["segment", str(photos), "--classes", ",".join(VOCAB), "--adapter", "synthetic", "--device", "cpu"]
        + ["--image-size", f"{SIZE[0]}x{SIZE[1]}", "--out", str(out), "--format", "coco,cvat,labelstudio"],
    )
    assert result.exit_code == 0, result.output
    pngs = {name: np.array(Image.open(out / Path(name).with_suffix(".png"))) for name in NAMES}
    assert all(len(np.unique(labels)) > 1 for labels in pngs.values())
    return photos, out, pngs


# -- Datumaro: CVAT's "Segmentation mask 1.1" and COCO importers ------------------------------

DATUMARO_SCRIPT = """
import json, sys
import numpy as np
import datumaro as dm
path, fmt, out = sys.argv[1:]
dataset = dm.Dataset.import_from(path, fmt)
names = [c.name for c in dataset.categories()[dm.AnnotationType.label]]
offset = 1 if fmt == "coco_instances" else 0  # COCO has no background category
maps, colours = {}, {}
for item in dataset:
    masks = [ann for ann in item.annotations if ann.type == dm.AnnotationType.mask]
    labels = np.zeros(masks[0].image.shape, np.uint8)  # VOC items have no image, only masks
    for ann in masks:
        labels[ann.image.astype(bool)] = ann.label + offset
    maps[item.id] = labels
mask_cats = dataset.categories().get(dm.AnnotationType.mask)
if mask_cats is not None:
    colours = {names[k]: list(v) for k, v in mask_cats.colormap.items()}
np.savez(out, **maps)
print(json.dumps({"labels": names, "colours": colours, "ids": list(maps)}))
"""


def datumaro_import(path: Path, fmt: str, tmp_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    if not DATUMARO:
        pytest.skip("PNPSEG_DATUMARO_PYTHON is not set: a Python with datumaro (.ci/run builds one)")
    out = tmp_path / f"{fmt}.npz"
    done = subprocess.run(
        [DATUMARO, "-c", DATUMARO_SCRIPT, str(path), fmt, str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as maps:
        return json.loads(done.stdout.splitlines()[-1]), {k: maps[k] for k in maps.files}


def test_cvat_zip_imports_through_datumaro_voc_segmentation_as_the_pngs(segmented, tmp_path):
    """docs/formats.md CVAT steps 2, 4 and 5: the zip CVAT is given, read by the importer CVAT
    runs, holds every PNG's labels, and ``labels.json`` registers every label it uses."""
    _, out, pngs = segmented
    archive = tmp_path / "cvat.zip"  # step 4: cd masks/cvat && zip -r ../cvat.zip .
    with zipfile.ZipFile(archive, "w") as zipped:
        for file in sorted((out / "cvat").rglob("*")):
            zipped.write(file, file.relative_to(out / "cvat").as_posix())
    unpacked = tmp_path / "unpacked"  # what CVAT does with the upload
    zipfile.ZipFile(archive).extractall(unpacked)
    meta, maps = datumaro_import(unpacked, "voc_segmentation", tmp_path)
    task_labels = json.loads((out / "cvat" / "labels.json").read_text())  # step 2
    assert meta["labels"] == [label["name"] for label in task_labels] == ["background", *VOCAB]
    assert {name: "#" + bytes(rgb).hex() for name, rgb in meta["colours"].items()} == {
        label["name"]: label["color"] for label in task_labels
    }
    assert sorted(maps) == sorted(str(Path(name).with_suffix("")) for name in NAMES)
    for name, labels in pngs.items():
        np.testing.assert_array_equal(maps[str(Path(name).with_suffix(""))], labels)


def test_coco_imports_through_datumaro_coco_instances_as_the_pngs(segmented, tmp_path):
    """docs/formats.md COCO step 2, Datumaro: link the images in, import the dataset root."""
    photos, out, pngs = segmented
    dataset = out / "coco"
    (dataset / "images").mkdir(exist_ok=True)
    (dataset / "images" / "default").symlink_to(photos)  # ln -s "$PWD/photos" masks/coco/images/default
    meta, maps = datumaro_import(dataset, "coco_instances", tmp_path)
    assert meta["labels"] == VOCAB
    assert sorted(maps) == sorted(str(Path(name).with_suffix("")) for name in NAMES)
    for name, labels in pngs.items():
        np.testing.assert_array_equal(maps[str(Path(name).with_suffix(""))], labels)


# -- a real Label Studio server -------------------------------------------------------------


class LabelStudio:
    """The HTTP API calls behind the UI steps of docs/formats.md."""

    def __init__(self, url: str, token: str):
        import requests

        self.url, self.http = url.rstrip("/"), requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, **kwargs):
        response = self.http.request(method, self.url + path, timeout=120, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def project(self, title: str, config: str) -> int:
        return self.call("POST", "/api/projects", json={"title": title, "label_config": config})["id"]

    def tasks(self, project: int) -> list[dict]:
        return self.call("GET", "/api/tasks", params={"project": project, "fields": "all"})["tasks"]


@pytest.fixture
def label_studio():
    if not LS_URL:
        pytest.skip("PNPSEG_LABEL_STUDIO_URL is not set: a Label Studio server (.ci/run starts one)")
    server = LabelStudio(LS_URL, LS_TOKEN)
    made: list[int] = []
    yield server, made
    for project in made:
        server.call("DELETE", f"/api/projects/{project}")


def test_label_studio_serves_the_images_and_exports_the_pngs(segmented, label_studio):
    """docs/formats.md Label Studio steps 3-7 against the real server: every image is served
    (HTTP 200, the file's bytes), the predictions accepted as they are export as the PNGs,
    decoded by the SDK's brush decoder."""
    from label_studio_sdk.converter import brush

    photos, out, pngs = segmented
    server, made = label_studio
    project = server.project("pnpseg round trip", (out / "labelstudio-config.xml").read_text())  # step 3
    made.append(project)
    server.call(  # step 4: a Local Storage that holds the images, not synced
        "POST", "/api/storages/localfiles", json={"project": project, "path": str(photos), "title": "photos"}
    )
    server.call("POST", f"/api/projects/{project}/import", json=json.loads((out / "labelstudio.json").read_text()))
    tasks = server.tasks(project)  # step 5
    assert len(tasks) == len(NAMES)
    by_input = {}
    for task in tasks:
        image = server.http.get(server.url + task["data"]["image"], timeout=60)
        name = Path(task["data"]["pnpseg_input"]).relative_to(photos).as_posix()
        assert image.status_code == 200, (task["data"]["image"], image.status_code)
        assert image.content == (photos / name).read_bytes()
        (prediction,) = task["predictions"]
        server.call(  # step 6: the annotator submits the pre-annotation as it is
            "POST", f"/api/tasks/{task['id']}/annotations", json={"result": prediction["result"]}
        )
        by_input[task["id"]] = name
    exported = server.call("GET", f"/api/projects/{project}/export", params={"exportType": "JSON"})  # step 7
    assert sorted(by_input[t["id"]] for t in exported) == sorted(NAMES)
    for task in exported:
        labels = pngs[by_input[task["id"]]]
        (annotation,) = task["annotations"]
        decoded = np.zeros_like(labels)
        for region in annotation["result"]:
            alpha = brush.decode_rle(region["value"]["rle"]).reshape(*labels.shape, 4)[..., 3]
            decoded[alpha == 255] = VOCAB.index(region["value"]["brushlabels"][0]) + 1
        np.testing.assert_array_equal(decoded, labels)
