"""Defaults that several layers share, in a module that imports nothing (the CLI reads them
when it builds its options, before torch is loaded)."""

#: The adapter used when neither ``--adapter`` nor a preset names one.
DEFAULT_ADAPTER = "blip"
