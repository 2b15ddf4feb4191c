"""``pnpseg segment --engine ray`` and ``pnpseg eval --engine ray``: the same pipeline on Ray Data.

Imported only when ``--engine ray`` is chosen; ``ray`` itself is imported inside the
functions below, so this module imports (and the core works) without the ``ray`` extra.

Segment, as a Ray Data pipeline over the image paths still to do::

    from_items(paths) ──map_batches(SegmentActor, concurrency=N, num_gpus=F)──▶ saliency
                     ──map_batches(finish_and_write, tasks)──────────────────▶ manifest records

* :class:`SegmentActor` holds one :class:`~pnpseg.method.segmenter.Segmenter` per actor (the model
  is loaded once, in ``__init__``) and runs the local engine's own batch step
  (:meth:`pnpseg.engines.local.SegmentJob._run_batch`: decoding, class source, model passes, per-image
  error isolation), handing each image's saliency maps on instead of blurring them.
* :func:`finish_and_write` is a plain CPU task: step 4 (:func:`pnpseg.method.segmenter.finish`,
  i.e. blur and CRF), then the label PNG (and overlay) written straight to the output file
  system atomically (temp name + rename), then the manifest records of its block written as
  one part file ``OUT/.pnpseg-parts/<block>.jsonl`` (atomically too).
* The driver is the manifest's single writer: it appends the records the pipeline streams
  back (in input order, deduplicated by input) to ``OUT/manifest.jsonl`` and removes the
  part files at the end. If the driver dies, the next run first merges the part files left
  behind, so nothing a worker finished is redone. Resume skips done items before anything is
  scheduled.

Paths: plain paths are local (the local engine's writers are used, so outputs are
byte-identical); ``scheme://...`` URIs go through ``pyarrow.fs`` (``file://``, ``s3://``,
``gs://``, ``hdfs://``, ...) or, for schemes pyarrow does not know, fsspec.
"""

from pnpseg.engines.ray.cluster import init_ray
from pnpseg.engines.ray.evaluate import EvalConfig, RayEvaluation, ray_evaluate
from pnpseg.engines.ray.segment import RaySegmentJob, SegmentActor, SegmentConfig, finish_and_write
from pnpseg.engines.ray.storage import Store, discover_uris

__all__ = [
    "EvalConfig",
    "RayEvaluation",
    "RaySegmentJob",
    "SegmentActor",
    "SegmentConfig",
    "Store",
    "discover_uris",
    "finish_and_write",
    "init_ray",
    "ray_evaluate",
]
