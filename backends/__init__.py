"""Backends: the Backend protocol (base.py) and one module per implementation."""
