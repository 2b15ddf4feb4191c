"""Test helpers shipped with pnpseg: a weight-free synthetic VLM and scenes with known labels.

Plugin authors can test a postprocessor or the whole pipeline without downloading a model::

    from pnpseg.testing import SyntheticAdapter, make_scene, miou
    image, labels = make_scene(240, 320, ["red", "blue"], seed=0)
    # segment ``image`` with classes ["red", "blue"] and adapter "synthetic", then
    # miou(prediction, labels, num_classes=3)

and check an adapter against every clause of the protocol (docs/adapters.md)::

    from pnpseg.testing import check_adapter
    check_adapter(MyAdapter(model=tiny_folder))   # raises AdapterCheckError naming each failed clause
"""

from pnpseg.testing.conformance import (
    CLAUSES,
    AdapterCheckError,
    AdapterReport,
    check_adapter,
    compare_devices,
    repainted_patch_deviations,
)
from pnpseg.testing.images import COLOURS, make_scene, miou
from pnpseg.testing.synthetic import SyntheticAdapter

__all__ = [
    "CLAUSES",
    "COLOURS",
    "AdapterCheckError",
    "AdapterReport",
    "SyntheticAdapter",
    "check_adapter",
    "compare_devices",
    "make_scene",
    "miou",
    "repainted_patch_deviations",
]
