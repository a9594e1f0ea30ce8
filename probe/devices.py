"""The one device resolver: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import contextlib
from typing import Iterator

from probe.errors import ProbeError, valid

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def check_device_name(name: str) -> None:
    """Validate a device name without touching torch (configs call this)."""
    ok = name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())
    if not ok:
        raise ProbeError(f"unknown device {name!r}{valid(DEVICE_CHOICES)}", param="device")


def resolve_device(name: str) -> str:
    """The torch device for ``name``; asking for CUDA where there is none is an error."""
    check_device_name(name)
    if name == "cpu":
        return name
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ProbeError(f"device {name!r} requested but CUDA is not available", param="device")
    return name


@contextlib.contextmanager
def one_thread_pool() -> Iterator[None]:
    """numpy's OpenBLAS held to one thread while torch's pool keeps the cores (docs/design.md
    "Threads"). Analyses alternate small numpy products with torch passes; two pools that each
    size themselves to the machine and keep spinning after a call slow every operation of the other
    several-fold (3x measured on 2 cores for the batched Fourier norms). numpy's products here are
    small (``[p, d]`` bases, Gram matrices of embeddings), so one thread costs them little."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency
        yield
        return
    with ThreadpoolController().select(internal_api="openblas").limit(limits=1):
        yield
