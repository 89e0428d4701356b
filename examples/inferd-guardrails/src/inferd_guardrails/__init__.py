"""Example inferd plugins, shipped as a package of their own (see docs/plugins.md)."""
