"""The method, one module per paper step: adapter protocol → prompts → GradCAM → DropOut →
saliency → labels → postprocess, orchestrated by :class:`~pnpseg.method.segmenter.Segmenter`.
Pure tensor functions; no file I/O: of :mod:`pnpseg.io` only image decoding
(:mod:`pnpseg.io.images`) is used, and presets, checkpoint configs and class files are read
in :mod:`pnpseg.io` (docs/architecture.md; ``tests/test_architecture.py`` checks it)."""
