"""Per-image class sources (``--class-source``): which of the vocabulary to segment in each image."""
