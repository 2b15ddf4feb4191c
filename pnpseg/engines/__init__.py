"""Engines that run a segmentation job over many images: ``local`` (this machine) and ``ray``."""
