"""Servers that answer annotation tools from a warm model (``pnpseg serve ...``)."""
