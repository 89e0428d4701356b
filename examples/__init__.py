"""Example plugins for inferd (not installed with the package; see docs/plugins.md)."""
