"""``pnpseg segment --engine ray`` and ``pnpseg eval --engine ray``: the same pipeline on Ray Data.

Imported only when ``--engine ray`` is chosen; ``ray`` itself is imported inside the
functions below, so this module imports (and the core works) without the ``ray`` extra.

Segment, as a Ray Data pipeline over the image paths still to do::

    from_items(paths) ──map_batches(SegmentActor, ActorPoolStrategy(size=N), num_gpus=F)──▶ saliency
                     ──map_batches(finish_and_write, tasks)──────────────────▶ manifest records

Both engines compose the same parts (:mod:`pnpseg.engines.common`): the job spec, the batch
step, the output layout and the output folder (the record sink).

* :class:`~pnpseg.engines.ray.actors.SegmentActor` builds the job from its
  :class:`~pnpseg.engines.common.JobSpec` once (the model loads in ``__init__``) and runs the
  shared :class:`~pnpseg.engines.common.BatchStep` (decoding, class source, model passes,
  per-image error isolation), handing each image's saliency maps on as an ``Unfinished``.
* :func:`~pnpseg.engines.ray.actors.finish_and_write` is a plain CPU task: step 4
  (:func:`pnpseg.method.segmenter.finish_image`, i.e. blur and CRF), then the outputs written
  through the shared :class:`~pnpseg.engines.common.OutputLayout` (atomically: temp name +
  rename), then its block's records as one part file ``OUT/.pnpseg-parts/<block>.jsonl``.
* The driver (:mod:`pnpseg.engines.ray.segment`) owns the output folder
  (:class:`~pnpseg.engines.common.OutputFolder`: lock, class table, fingerprint) and is the
  manifest's single writer: it appends the records the pipeline streams back (in input
  order, deduplicated by key) and removes the part files at the end. If the driver dies, the
  next run first merges the part files left behind, so nothing a worker finished is redone.

Paths: plain paths are local (the local engine's writers are used, so outputs are
byte-identical); ``scheme://...`` URIs go through ``pyarrow.fs`` (``file://``, ``s3://``,
``gs://``, ``hdfs://``, ...) or, for schemes pyarrow does not know, fsspec.
"""

from pnpseg.engines.ray.actors import SegmentActor, finish_and_write
from pnpseg.engines.ray.cluster import init_ray
from pnpseg.engines.ray.evaluate import RayPredictions, ray_evaluate
from pnpseg.engines.ray.segment import RaySegmentJob
from pnpseg.engines.ray.storage import discover_uris

__all__ = [
    "RayPredictions",
    "RaySegmentJob",
    "SegmentActor",
    "discover_uris",
    "finish_and_write",
    "init_ray",
    "ray_evaluate",
]
