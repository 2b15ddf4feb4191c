"""``pnpseg segment`` on this machine (the default engine).

* :class:`SegmentJob` (:mod:`.job`) — the shared pre-flight and run frame of
  :mod:`pnpseg.engines.common`, with batching and the local pipeline.
* :mod:`.parallel` — what only this engine needs: image prefetch, the step-4 worker pool
  (:class:`~.parallel.Finisher`) and ``--batch-size`` (``auto`` probes the GPU).
"""

from pnpseg.engines.local.job import SegmentJob

__all__ = ["SegmentJob"]
