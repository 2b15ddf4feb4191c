"""``eval --out`` through the one owner of an output folder (:mod:`pnpseg.io.ownership`).

The reports, the resumable state and ``--save-predictions``' label PNGs are planned from
the samples and checked before the model loads: a file in their way that pnpseg did not
write, or one of the inputs scored, is refused (exit 2). They are claimed in the folder's
ledger before the first is written; ``--overwrite`` (a fresh evaluation) also deletes the
saved predictions of samples no longer planned. A folder an earlier version wrote (its
``eval_state.npz``, no ledger) owns the files of these names it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from pnpseg.errors import PnpsegError
from pnpseg.evaluation.datasets import Sample
from pnpseg.evaluation.state import STATE
from pnpseg.io.ownership import Ownership, Planned
from pnpseg.io.store import Store

REPORTS = ("results.json", "results.md", "per_class_iou.csv", "confusion.png")
PREDICTIONS = "predictions"
#: Ledger groups: the evaluation's own files, and its saved predictions (pruned by --overwrite).
EVAL, SAVED = "eval", "eval predictions"


def prediction_file(sample: Sample) -> str:
    """Where ``--save-predictions`` writes a sample's label PNG, inside ``--out``."""
    return f"{PREDICTIONS}/{sample.id}.png"


class EvalFolder:
    """The files an evaluation writes into ``out``, and the only way it writes them."""

    def __init__(self, out: Path, samples: Sequence[Sample], save_predictions: bool = False):
        self.out = Path(out)
        self.store = Store(self.out)
        self.owned = Ownership(self.store)
        self.planned = [
            Planned(STATE, EVAL, "evaluation state"),
            *(Planned(n, EVAL, "evaluation report") for n in REPORTS),
        ]
        if save_predictions:
            self.planned += [
                Planned(f"{PREDICTIONS}/classes.json", SAVED, "class table of the saved predictions"),
                *(Planned(prediction_file(s), SAVED, "saved prediction") for s in samples),
            ]

    def check(self, inputs: Iterable[str | Path]) -> EvalFolder:
        """Refuse what cannot be written (before the model loads); writes nothing."""
        from pnpseg.io.folders import check_output_folder

        check_output_folder(self.out)
        self.owned.load(self._adopt).check(self.planned, inputs)
        return self

    def claim(self, overwrite: bool = False) -> None:
        """Record the plan in the ledger before anything is written. The ledger and the files
        in the way are checked again (time has passed); the inputs were, by :meth:`check`."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.owned.load(self._adopt).claim(self.planned)
        if overwrite:
            self.owned.prune([SAVED], keep=[e.rel for e in self.planned])

    def write(self, rel: str, data: bytes) -> None:
        self.owned.write(rel, data)

    def _adopt(self) -> Mapping[str, str]:
        if not (self.out / STATE).is_file():
            return {}
        return {e.rel: e.group for e in self.planned if (self.out / e.rel).is_file()}


def checked_folder(
    out: Path, samples: Sequence[Sample], save_predictions: bool, inputs: Callable[[Sample], list[Path]]
) -> EvalFolder:
    """``out``'s files for ``samples``, checked against everything the evaluation reads."""
    return EvalFolder(out, samples, save_predictions).check(scored_inputs(samples, inputs))


def scored_inputs(samples: Sequence[Sample], inputs: Callable[[Sample], list[Path]]) -> list[Path]:
    """Every file an evaluation reads: images, labels and what each prediction depends on (a
    prediction that cannot be found is that sample's error, reported in its turn)."""
    found: list[Path] = []
    for sample in samples:
        found += [sample.image, sample.label]
        try:
            found += inputs(sample)
        except (OSError, PnpsegError):
            pass
    return found


def export_classes(path: Path, names: Sequence[str]) -> None:
    """``eval --export-classes``: the class names, one per line, into ``path`` through its
    folder's owner (a file of that name pnpseg did not write is refused, exit 2)."""
    from pnpseg.io.folders import check_output_folder

    path = Path(path)
    check_output_folder(path.parent)
    folder = Ownership(Store(path.parent)).load()
    folder.claim([Planned(path.name, "classes", "exported class list")])
    folder.write(path.name, ("\n".join(names) + "\n").encode("utf-8"))
