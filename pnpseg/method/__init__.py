"""The method, one module per paper step: adapter protocol → prompts → GradCAM → DropOut →
saliency → labels → postprocess, orchestrated by :class:`~pnpseg.method.segmenter.Segmenter`.
Pure tensor functions; no file I/O (docs/method.md)."""
