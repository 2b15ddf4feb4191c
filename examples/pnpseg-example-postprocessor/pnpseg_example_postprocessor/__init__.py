"""A third-party pnpseg postprocessor: small islands of a label are given to their neighbours.

The postprocessor is :class:`pnpseg_example_postprocessor.islands.RemoveIslands`; this
package imports nothing heavy itself, so loading the plugin stays cheap.
"""
