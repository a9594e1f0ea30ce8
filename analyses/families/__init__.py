"""Registered metric wrappers, one module per family (listed in the registry's catalogue)."""
