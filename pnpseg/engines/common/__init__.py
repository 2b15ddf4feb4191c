"""The seam both engines compose: what a job is, one batch step, and where its results go.

* :class:`JobSpec` (:mod:`.job`) — the engine-neutral description of a ``segment`` job:
  classes, adapter/model/parameters, class source. :meth:`JobSpec.build` makes the
  segmenter, the class source and the settings the same way on a laptop and on a Ray worker.
* :class:`BatchStep` (:mod:`.step`) — decode → propose → saliency for one batch; it returns
  a finished record (an image that failed) or an :class:`Unfinished` image per input and
  writes nothing. :func:`complete` turns step 4's labels into the written outputs and record.
* :class:`OutputLayout` (:mod:`.layout`) — where outputs go and what a record says
  (key, settings fingerprint); picklable, so Ray workers write through it.
* :class:`OutputFolder` (:mod:`.folder`) — the record sink: the one ``--out`` a job owns,
  with its lock, class table, fingerprint check, temp-file cleanup and manifest.
* :class:`Summary`, :func:`report_skipped` and :func:`report` (:mod:`.report`) — the paths
  discovery skipped, counting records and the end-of-run table.
* :class:`SegmentRun` (:mod:`.run`) — the pre-flight (formats, output folder, discovery,
  skipped report, input guard, class table, class source) and the ``run()`` frame, once;
  progress reaches the caller through a ``progress(done, total)`` callback.

The local engine (:mod:`pnpseg.engines.local`) and the Ray engine (:mod:`pnpseg.engines.ray`)
subclass :class:`SegmentRun`, each adding only its own knobs, and use only these public
names of the shared parts.
"""

from pnpseg.engines.common.folder import OutputFolder
from pnpseg.engines.common.job import Built, JobSpec, fingerprint
from pnpseg.engines.common.layout import OutputLayout, to_vocabulary
from pnpseg.engines.common.report import Summary, report, report_skipped
from pnpseg.engines.common.run import Progress, RateBar, SegmentRun
from pnpseg.engines.common.step import BatchStep, DiskFull, Unfinished, complete, decode

__all__ = [
    "BatchStep",
    "Built",
    "DiskFull",
    "JobSpec",
    "OutputFolder",
    "OutputLayout",
    "Progress",
    "RateBar",
    "SegmentRun",
    "Summary",
    "Unfinished",
    "complete",
    "decode",
    "fingerprint",
    "report",
    "report_skipped",
    "to_vocabulary",
]
