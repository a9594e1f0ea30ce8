"""Shipped Cayley tables (S3, D4, Q8, A4), installed as package data ``probe.groups``."""
