"""A template pnpseg adapter plugin: copy this package and replace the toy model with yours.

The package imports nothing heavy: the ``pnpseg`` entry point (``plugin.py``) is loaded by
every ``pnpseg`` command, so the adapter module (and torch) is imported only when used.
"""
