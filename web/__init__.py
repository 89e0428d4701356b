"""The built-in web chat page (package data)."""
