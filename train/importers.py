"""Checkpoint series written by other code, imported as ordinary probe runs (``probe import``;
docs/design.md, "Importing and exporting checkpoint series").

A *source kind* is one registration in :data:`SOURCE_KINDS`: its name, one line saying what it
reads, how to recognise it, and how to open it as a :class:`Source`, whose steps are known before any
tensor is read and whose checkpoints are read one at a time (``Source.read``), with what the source
records besides (its model config, task, split and the losses it logged). Shipped kinds:

- ``tl-demo``: one ``.pth`` as TransformerLens' grokking demo saves it (``model``, ``config``,
  ``checkpoints``, ``checkpoint_epochs``, ``train_losses``, ``test_losses``, ``train_indices``,
  ``test_indices``);
- ``hf-trainer``: a Hugging Face Trainer output directory (``checkpoint-N/`` folders holding
  ``model.safetensors`` or ``pytorch_model.bin``, the loss history in ``trainer_state.json``);
- ``state-dicts``: a directory of per-step state dicts (``.pt``/``.pth``/``.bin``/``.ckpt``,
  ``.safetensors``, ``.npz``), the step from each file name.

Nothing is unpickled beyond what ``torch.load(weights_only=True)`` allows: tensors, numbers,
strings, containers and numpy arrays, and configuration objects (a pickled class whose name ends in
``Config``), which are read as plain fields through an allow-listed stand-in that never runs any of
the original class's code. Any other pickled global (a ``__reduce__`` calling a function) is refused
before anything is unpickled; ``.npz`` files are read with ``allow_pickle=False``.

Tensor names map onto a probe model kind through a :class:`TensorMap`: TransformerLens' names are
probe's transformer's, one to one; probe's own names (an exported run) are themselves; any other
layout through a declared map (``--map FILE``). Every parameter must be filled with a tensor of its
shape and every source tensor used or ignored, or the import is refused listing the names that do
not fit, before anything is written.

The run is written into a hidden directory beside ``--out`` and renamed into place once complete, so
a refused or failed import leaves nothing behind. Checkpoints stream into the writer one at a time
(memory stays flat whatever the series' length); at each one probe evaluates the loss and accuracy
on the stored split (the run's metric rows) and compares them with the losses the source recorded
for those weights (the fidelity check).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from probe.errors import ProbeError, RunWriteError, valid
from probe.registry import Registry

if TYPE_CHECKING:
    from probe.config import TrainConfig
    from probe.models.base import ProbeModel
    from probe.tasks import Split, Task

#: relative tolerance of the fidelity check: |probe - recorded| <= RTOL * |recorded| + ATOL
RTOL = 1e-3
ATOL = 1e-8
#: the file probe's own safetensors export writes beside the checkpoints (config, task, split, metrics)
EXPORT_META = "probe-export.json"
EXPORT_STATIC = "static.safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
STATE_DICT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors", ".npz")
#: the default step pattern: the last run of digits in a file (or folder) name
DEFAULT_STEP_PATTERN = r"(\d+)\D*$"
HF_STEP_PATTERN = r"^checkpoint-(\d+)$"
MAX_JSON_BYTES = 64 << 20
#: buffers TransformerLens models keep in their state dicts (the causal mask, the masking value, rotary
#: tables): derived from the config, never parameters, so an import leaves them out
TL_BUFFERS = re.compile(r"(^|\.)(mask|IGNORE|rotary_sin|rotary_cos)$")
#: checkpoints held before they are committed to the run file together: at most this many bytes, and at
#: most COMMIT_CHECKPOINTS of them (each evaluation's temporary arrays land between the held ones, so
#: the heap a commit frees grows with the number held, not only with their bytes)
COMMIT_BYTES = 4 << 20
COMMIT_CHECKPOINTS = 32
#: names under which a training loop's checkpoint file keeps the model's state dict
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "module")
#: modules whose globals never get a configuration stand-in (whatever the class is called)
NEVER_STAND_IN = ("builtins", "os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pickle",
                  "socket", "ctypes", "torch", "numpy")


# --------------------------------------------------------------------------------------------------
# the registry of source kinds
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceKind:
    """One layout of checkpoint series probe reads: ``detect(path)`` says whether ``path`` looks like
    one (cheaply, reading no tensors), ``open(path, request)`` returns its :class:`Source`."""

    name: str
    layout: str
    detect: Callable[[Path], bool]
    open: Callable[[Path, "ImportRequest"], "Source"]


SOURCE_KINDS: Registry[SourceKind] = Registry("source kind")


def source_kind(name: str, layout: str, detect: Callable[[Path], bool]) -> Callable[[Callable[..., "Source"]], Any]:
    """Decorator registering an ``open(path, request) -> Source`` function as source kind ``name``."""

    def wrap(open_fn: Callable[[Path, "ImportRequest"], "Source"]) -> Callable[[Path, "ImportRequest"], "Source"]:
        SOURCE_KINDS.add(name, SourceKind(name, layout, detect, open_fn))
        return open_fn

    return wrap


@dataclass
class Source:
    """An opened checkpoint series.

    ``steps``: every checkpoint's step, increasing, known before any tensor is read. ``read()`` yields
    ``(step, tensors, recorded)`` in that order, one checkpoint at a time: the state dict as numpy
    arrays by the source's names, and what the source recorded for those very weights
    (``train_loss``, ``val_loss``: compared by the fidelity check; ``lr``: the metric rows' learning
    rate). ``hashes`` fills with each file's SHA-256 as it is read. ``tl_config``: a TransformerLens
    config's fields; ``probe_meta``: probe's own export record; ``task_hint``: ``{"name", "p",
    "why"}``; ``split``: ``(train, val, order)`` with ``order`` ``grid`` (``a * n + b``, TransformerLens'
    demo) or ``samples`` (probe's task order).
    """

    kind: str
    root: Path
    steps: list[int]
    read: Callable[[], Iterator[tuple[int, dict[str, np.ndarray], dict[str, float]]]]
    hashes: dict[str, str] = field(default_factory=dict)
    tl_config: dict[str, Any] | None = None
    probe_meta: dict[str, Any] | None = None
    task_hint: dict[str, Any] | None = None
    split: tuple[np.ndarray, np.ndarray | None, str, str] | None = None  # (train, val, order, where from)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportRequest:
    """What ``probe import`` was asked (flags win over what the source records)."""

    source: Path
    out: Path
    kind: str | None = None
    task: str | None = None
    p: int | None = None
    train_indices: Path | None = None
    map: Path | None = None
    step_pattern: str | None = None
    force: bool = False
    progress: bool = False


@dataclass
class ImportResult:
    run_dir: Path
    kind: str
    steps: list[int]
    record: dict[str, Any]
    notes: list[str]


# --------------------------------------------------------------------------------------------------
# reading files safely
# --------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ProbeError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB; not read")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ProbeError(f"{path} is not JSON ({str(exc).splitlines()[0][:80]})") from None


class ConfigFields:
    """A pickled configuration object read as its plain fields (``vars(obj)``), never as its own class:
    the allow-listed stand-in for every ``...Config`` class a checkpoint names (TransformerLens'
    ``HookedTransformerConfig`` of any version, a training script's own config). It runs none of the
    original's code: construction and state only store values."""

    pickled_as = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "ConfigFields":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})

    def fields(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _stand_in(name: str) -> type:
    return type(name.rpartition(".")[2], (ConfigFields,), {"pickled_as": name, "__module__": __name__})


def _is_config_class(name: str) -> bool:
    module, _, cls = name.rpartition(".")
    return bool(module) and module.split(".")[0] not in NEVER_STAND_IN and re.fullmatch(r"[A-Za-z_]\w*Config", cls) \
        is not None


def _numpy_globals() -> dict[str, Any]:
    """numpy's array and scalar reconstruction, which ``torch.load``'s documentation allows for
    checkpoints holding numpy arrays (object arrays are refused after loading)."""
    out: dict[str, Any] = {}
    for mod_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            import importlib

            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for attr in ("_reconstruct", "scalar"):
            if hasattr(mod, attr):
                out[f"{mod_name}.{attr}"] = getattr(mod, attr)
    out["numpy.ndarray"] = np.ndarray
    out["numpy.dtype"] = np.dtype
    for code in "?bBhHiIlLqQefdgFDG":
        dt = type(np.dtype(code))
        out[f"{dt.__module__}.{dt.__qualname__}"] = dt
    return out


def _refusal(where: str, names: list[str]) -> ProbeError:
    shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
    return ProbeError(f"{where} is refused: it holds pickled code or objects probe does not load ({shown}); only "
                      "tensors, numbers, strings, containers, numpy arrays and configuration objects (read as plain "
                      "fields) are read, with torch.load(weights_only=True), and nothing in the file was run")


def load_torch(data: Path | bytes, where: str, mmap: bool = False) -> Any:
    """A ``torch.save`` file (a path, mapped into memory with ``mmap``, or its bytes) loaded with
    ``weights_only=True``: configuration classes come back as :class:`ConfigFields`; a file naming any
    other global outside torch's allow-list is refused, one line, before anything is unpickled."""
    import pickle

    import torch

    def handle() -> Any:
        return str(data) if isinstance(data, Path) else io.BytesIO(data)

    try:
        zipped = zipfile.is_zipfile(data if isinstance(data, Path) else io.BytesIO(data))
    except OSError as exc:
        raise ProbeError(f"cannot read {where}: {exc.strerror or exc}") from None
    allowed = _numpy_globals()
    stand_ins: list[Any] = []
    if zipped:
        try:
            with torch.serialization.safe_globals(list(allowed.values())):
                names = torch.serialization.get_unsafe_globals_in_checkpoint(handle())
        except Exception as exc:  # noqa: BLE001 - any failure to parse is a damaged file
            raise ProbeError(f"{where} is not a readable torch checkpoint ({str(exc).splitlines()[0][:100]})") from None
        names = [n for n in names if n not in allowed]
        refused = [n for n in names if not _is_config_class(n)]
        if refused:
            raise _refusal(where, refused)
        stand_ins = [(_stand_in(n), n) for n in names]
    safe = [*[(obj, name) for name, obj in allowed.items()], *stand_ins]
    try:
        with torch.serialization.safe_globals(safe):
            obj = torch.load(handle(), map_location="cpu", weights_only=True,
                             mmap=bool(mmap and zipped and isinstance(data, Path)))
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.findall(r"GLOBAL ([\w.]+)", text) or re.findall(r"unrecognized function ([\w.<>]+)", text)
        if found or "Unsupported" in text or "allowlisted" in text:
            raise _refusal(where, found or ["an object"]) from None
        raise ProbeError(f"{where} is not a readable torch checkpoint ({text.splitlines()[0][:100]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError, KeyError, IndexError) as exc:
        raise ProbeError(f"{where} is not a readable torch checkpoint ({str(exc).splitlines()[0][:100]})") from None
    _refuse_object_arrays(obj, where)
    return obj


def _refuse_object_arrays(obj: Any, where: str, depth: int = 0) -> None:
    if depth > 8:
        return
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise _refusal(where, ["numpy object array"])
    if isinstance(obj, dict):
        for v in obj.values():
            _refuse_object_arrays(v, where, depth + 1)
    elif isinstance(obj, (list, tuple)) and len(obj) < 100_000:
        for v in obj:
            if isinstance(v, (dict, list, tuple, np.ndarray)):
                _refuse_object_arrays(v, where, depth + 1)


def load_safetensors(data: bytes, where: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and the ``__metadata__`` of a ``.safetensors`` file's bytes."""
    import torch
    from safetensors.torch import load

    try:
        n = int.from_bytes(data[:8], "little")
        if not 2 <= n <= len(data) - 8:
            raise ValueError("header length out of range")
        header = json.loads(data[8:8 + n])
        meta = header.get("__metadata__") or {}
        tensors = load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ProbeError(f"{where} is not a readable safetensors file ({str(exc).splitlines()[0][:100]})") from None
    out = {}
    for k, t in tensors.items():
        out[k] = (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).numpy()
    return out, {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def load_npz(data: bytes, where: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file's bytes, read with ``allow_pickle=False``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise _refusal(where, ["a pickled (object) array"]) from None
        raise ProbeError(f"{where} is not a readable .npz file ({str(exc).splitlines()[0][:100]})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ProbeError(f"{where} is not a readable .npz file ({str(exc).splitlines()[0][:100]})") from None


def _array(value: Any) -> np.ndarray | None:
    """A tensor or array as numpy (half precisions widened to float32); None for anything else."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.cpu().numpy()
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return value.astype(np.float32) if value.dtype == np.float16 else value
    return None


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    arr = _array(value)
    if arr is not None and arr.size == 1 and arr.dtype.kind in "iuf":
        return float(arr.reshape(-1)[0])
    return None


def _tensor_dict(obj: Any) -> dict[str, np.ndarray] | None:
    if not isinstance(obj, dict) or not obj:
        return None
    out = {}
    for k, v in obj.items():
        arr = _array(v)
        if arr is None or not isinstance(k, str):
            return None
        out[k] = arr
    return out


def state_dict_of(obj: Any, where: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The model's tensors in a loaded checkpoint file (a state dict, or one kept under
    :data:`STATE_DICT_KEYS` beside other entries), and the numbers recorded beside it."""
    sd = _tensor_dict(obj)
    scalars: dict[str, float] = {}
    if sd is None and isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            sd = _tensor_dict(obj.get(key))
            if sd is not None:
                break
        for k, v in obj.items():
            x = _scalar(v)
            if isinstance(k, str) and x is not None:
                scalars[k] = x
    if sd is None:
        raise ProbeError(f"{where} holds no state dict (a dict of tensors, or one under "
                         f"{', '.join(repr(k) for k in STATE_DICT_KEYS)})")
    return sd, scalars


def _fields(obj: Any) -> dict[str, Any] | None:
    """A configuration object's fields as JSON-able values (None when there is none)."""
    if isinstance(obj, ConfigFields):
        raw = obj.fields()
    elif isinstance(obj, dict):
        raw = obj
    else:
        return None
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[str(k)] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[str(k)] = list(v)
        else:
            out[str(k)] = str(v)
    return out


def _recorded(values: dict[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


# --------------------------------------------------------------------------------------------------
# step patterns
# --------------------------------------------------------------------------------------------------
def compile_step_pattern(pattern: str | None, default: str = DEFAULT_STEP_PATTERN) -> re.Pattern[str]:
    text = pattern if pattern is not None else default
    try:
        rx = re.compile(text)
    except re.error as exc:
        raise ProbeError(f"{text!r} is not a regular expression ({exc})", param="step_pattern") from None
    if rx.groups < 1:
        raise ProbeError(f"{text!r} has no group; put the step in one, e.g. 'step_(\\d+)'", param="step_pattern")
    return rx


def step_of(rx: re.Pattern[str], name: str) -> int | None:
    m = rx.search(name)
    if m is None:
        return None
    text = m.group("step") if "step" in rx.groupindex else m.group(1)
    return int(text) if text is not None and text.isdigit() else None


def _steps_of(items: list[Path], rx: re.Pattern[str], req: ImportRequest, what: str,
              notes: list[str]) -> list[tuple[int, Path]]:
    pairs, skipped = [], []
    for item in items:
        s = step_of(rx, item.name if item.is_dir() else item.stem if req.step_pattern is None else item.name)
        (skipped.append(item.name) if s is None else pairs.append((s, item)))
    if not pairs:
        shown = ", ".join(p.name for p in items[:3])
        raise ProbeError(f"{rx.pattern!r} matches none of the {len(items)} {what} in {req.source} (e.g. {shown})",
                         param="step_pattern")
    if skipped:
        notes.append(f"skipped {len(skipped)} {what} whose name holds no step: {', '.join(skipped[:5])}"
                     + (", ..." if len(skipped) > 5 else ""))
    pairs.sort(key=lambda sp: sp[0])
    for (a, pa), (b, pb) in zip(pairs, pairs[1:]):
        if a == b:
            raise ProbeError(f"{pa.name} and {pb.name} both hold step {a} (by {rx.pattern!r})", param="step_pattern")
    return pairs


# --------------------------------------------------------------------------------------------------
# source kinds
# --------------------------------------------------------------------------------------------------
def _mentions_demo_keys(path: Path) -> bool:
    """Whether ``path`` is a torch file whose pickle names the demo's ``checkpoint_epochs`` (read from the
    pickle's own record, never the tensors)."""
    if not path.is_file() or path.suffix.lower() not in TORCH_SUFFIXES:
        return False
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                pkl = [i for i in zf.infolist() if i.filename.endswith("data.pkl")]
                if not pkl or pkl[0].file_size > MAX_JSON_BYTES:
                    return False
                text = zf.read(pkl[0])
        else:
            with open(path, "rb") as fh:
                text = fh.read(MAX_JSON_BYTES)
    except (OSError, zipfile.BadZipFile):
        return False
    return b"checkpoint_epochs" in text and b"checkpoints" in text


@source_kind("tl-demo", "one .pth/.pt file as TransformerLens' grokking demo saves it (checkpoints, "
             "checkpoint_epochs, config, train/test losses and indices)", _mentions_demo_keys)
def open_tl_demo(path: Path, req: ImportRequest) -> Source:
    """TransformerLens' grokking demo: checkpoint ``k`` was saved after epoch ``checkpoint_epochs[k]``'s
    update, so it holds the weights after ``epoch + 1`` updates: probe step ``epoch + 1`` (step 0 would be
    the initialisation). ``train_losses[e]`` was computed before epoch ``e``'s update (weights at step
    ``e``), ``test_losses[e]`` after it (step ``e + 1``). The final ``model`` is one more checkpoint at
    step ``len(train_losses)`` when no checkpoint holds that step."""
    if not path.is_file():
        raise ProbeError(f"{path} is not a file; the tl-demo kind reads one .pth file")
    obj = load_torch(path, str(path), mmap=True)
    if not isinstance(obj, dict) or "checkpoints" not in obj or "checkpoint_epochs" not in obj:
        raise ProbeError(f"{path} does not hold the grokking demo's 'checkpoints' and 'checkpoint_epochs'")
    cks, epochs = obj["checkpoints"], obj["checkpoint_epochs"]
    if _array(epochs) is not None:  # saved as a tensor or array rather than a list
        epochs = _array(epochs).reshape(-1).tolist()
    if not isinstance(cks, (list, tuple)) or not isinstance(epochs, (list, tuple)) or len(cks) != len(epochs):
        raise ProbeError(f"{path} is damaged: {len(cks) if hasattr(cks, '__len__') else '?'} checkpoints but "
                         f"{len(epochs) if hasattr(epochs, '__len__') else '?'} checkpoint_epochs")
    try:
        steps = [int(e) + 1 for e in epochs]
    except (TypeError, ValueError):
        raise ProbeError(f"{path} is damaged: checkpoint_epochs are not integers") from None
    if any(b <= a for a, b in zip(steps, steps[1:])) or (steps and steps[0] < 0):
        raise ProbeError(f"{path} is damaged: checkpoint_epochs do not increase")
    losses = {k: [_scalar(v) for v in obj.get(k) or []] for k in ("train_losses", "test_losses")}
    items: list[Any] = list(cks)
    final = obj.get("model")
    n_epochs = len(losses["train_losses"]) or len(losses["test_losses"])
    notes: list[str] = []
    if isinstance(final, dict) and n_epochs and (not steps or n_epochs > steps[-1]):
        steps.append(n_epochs)
        items.append(final)
        notes.append(f"the final 'model' is the checkpoint at step {n_epochs} (after {n_epochs} updates)")

    def recorded(step: int) -> dict[str, float]:
        tr, te = losses["train_losses"], losses["test_losses"]
        return _recorded({"train_loss": tr[step] if step < len(tr) else None,
                          "val_loss": te[step - 1] if 1 <= step <= len(te) else None})

    def read() -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, float]]]:
        for k, (step, sd) in enumerate(zip(steps, items)):
            tensors = _tensor_dict(sd)
            if tensors is None:
                raise ProbeError(f"{path} is damaged: checkpoint {k} (step {step}) is not a state dict of tensors")
            yield step, tensors, recorded(step)

    fields = _fields(obj.get("config"))
    probe_meta = obj["probe"] if isinstance(obj.get("probe"), dict) else None
    split = None
    if obj.get("train_indices") is not None:
        train = _indices(obj["train_indices"], f"{path}: train_indices")
        val = _indices(obj["test_indices"], f"{path}: test_indices") if obj.get("test_indices") is not None else None
        split = (train, val, "grid", "the file's train_indices and test_indices (order a * p + b)")
    hint = None
    if fields is not None and isinstance(fields.get("d_vocab_out"), int):
        name = next((str(v) for k in ("fn_name", "operation", "task") for v in (obj.get(k), fields.get(k))
                     if isinstance(v, str)), None)
        hint = {"name": name or "add", "p": fields["d_vocab_out"],
                "why": "the file names its operation" if name else
                "the demo's task (the file does not name its operation; --task to change)"}
    return Source(kind="tl-demo", root=path, steps=steps, read=read, hashes={path.name: sha256_file(path)},
                  tl_config=fields, probe_meta=probe_meta, task_hint=hint, split=split, notes=notes,
                  extra={"object": obj})


def _indices(value: Any, where: str) -> np.ndarray:
    arr = _array(value)
    if arr is None:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            arr = None
    if arr is None or arr.ndim != 1 or arr.dtype.kind not in "iu" and not (arr.size == 0):
        raise ProbeError(f"{where} is not a list of integer indices")
    return arr.astype(np.int64)


def _is_hf(path: Path) -> bool:
    try:
        return path.is_dir() and any(d.is_dir() and re.match(HF_STEP_PATTERN, d.name) for d in path.iterdir())
    except OSError:
        return False


@source_kind("hf-trainer", "a Hugging Face Trainer output directory (checkpoint-N/ folders with model.safetensors "
             "or pytorch_model.bin, the loss history in trainer_state.json)", _is_hf)
def open_hf_trainer(path: Path, req: ImportRequest) -> Source:
    """``checkpoint-N`` holds the weights after N optimizer updates (step N). The fidelity check compares
    ``eval_loss`` logged at step N with probe's validation loss there; the logged training ``loss`` is
    an average over the logging window's minibatches, not a loss of the saved weights, so it is not
    compared. ``learning_rate`` logged at a checkpoint's step fills the metric rows' ``lr``."""
    if not path.is_dir():
        raise ProbeError(f"{path} is not a directory; the hf-trainer kind reads a Trainer output directory")
    notes: list[str] = []
    dirs = sorted(d for d in path.iterdir() if d.is_dir())
    if not dirs:
        raise ProbeError(f"{path} holds no checkpoint-N folders")
    rx = compile_step_pattern(req.step_pattern, HF_STEP_PATTERN)
    pairs = _steps_of(dirs, rx, req, "folders", notes)
    weights = []
    for step, d in pairs:
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (d / name).is_file():
                weights.append((step, d / name))
                break
        else:
            have = ", ".join(sorted(p.name for p in d.iterdir())[:6]) or "nothing"
            raise ProbeError(f"{d} holds neither model.safetensors nor pytorch_model.bin (it holds: {have})")
    states = [d / "trainer_state.json" for _, d in reversed(pairs)] + [path / "trainer_state.json"]
    state_file = next((s for s in states if s.is_file()), None)
    hashes: dict[str, str] = {}
    evals: dict[int, float] = {}
    rates: dict[int, float] = {}
    if state_file is None:
        notes.append("no trainer_state.json: the source records no losses")
    else:
        state = _read_json(state_file)
        hashes[str(state_file.relative_to(path))] = sha256_file(state_file)
        history = state.get("log_history") if isinstance(state, dict) else None
        for entry in history if isinstance(history, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                continue
            if _scalar(entry.get("eval_loss")) is not None:
                evals[entry["step"]] = float(entry["eval_loss"])
            if _scalar(entry.get("learning_rate")) is not None:
                rates[entry["step"]] = float(entry["learning_rate"])

    def read() -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, float]]]:
        for step, file in weights:
            data = _read_bytes(file)
            hashes[str(file.relative_to(path))] = hashlib.sha256(data).hexdigest()
            tensors = _load_state_file(file, data)[0]
            yield step, tensors, _recorded({"val_loss": evals.get(step), "lr": rates.get(step)})

    return Source(kind="hf-trainer", root=path, steps=[s for s, _ in weights], read=read, hashes=hashes,
                  notes=notes)


def _load_state_file(file: Path, data: bytes) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
    """``(tensors, recorded numbers, metadata)`` of one state-dict file, by its suffix."""
    suffix = file.suffix.lower()
    if suffix == ".safetensors":
        tensors, meta = load_safetensors(data, str(file))
        return tensors, {}, meta
    if suffix == ".npz":
        arrays = load_npz(data, str(file))
        tensors = {k: v for k, v in arrays.items() if v.ndim > 0 or v.dtype.kind == "f"}
        return tensors, {}, {}
    obj = load_torch(data, str(file))
    tensors, scalars = state_dict_of(obj, str(file))
    return tensors, scalars, {}


def _is_state_dict_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(f.is_file() and f.suffix.lower() in STATE_DICT_SUFFIXES for f in path.iterdir())
    except OSError:
        return False


@source_kind("state-dicts", "a directory of per-step state dicts (.pt/.pth/.bin/.ckpt, .safetensors, .npz), the "
             "step from each file name", _is_state_dict_dir)
def open_state_dicts(path: Path, req: ImportRequest) -> Source:
    """One file per checkpoint; the step is the last number in the file name (or ``--step-pattern``'s
    group, searched in the whole name). A torch file may keep its state dict under ``model`` (or
    ``state_dict``, ``model_state_dict``) beside numbers: ``train_loss`` and ``test_loss`` /
    ``val_loss`` there are taken as the losses of the saved weights. probe's own export (a
    ``probe-export.json`` beside the files) brings its config, task, split and metric rows."""
    if not path.is_dir():
        raise ProbeError(f"{path} is not a directory; the state-dicts kind reads a directory of per-step files")
    notes: list[str] = []
    exported = (path / EXPORT_META).is_file()
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in STATE_DICT_SUFFIXES
                   and not (exported and f.name == EXPORT_STATIC))
    if not files:
        raise ProbeError(f"{path} holds no state-dict files ({', '.join(STATE_DICT_SUFFIXES)})")
    rx = compile_step_pattern(req.step_pattern)
    pairs = _steps_of(files, rx, req, "checkpoint files", notes)
    hashes: dict[str, str] = {}
    meta = None
    split = None
    static: dict[str, np.ndarray] = {}
    metric_rows: dict[int, dict[str, float]] = {}
    if (path / EXPORT_META).is_file():
        meta = _read_json(path / EXPORT_META)
        if not isinstance(meta, dict) or meta.get("format") != "probe-export":
            raise ProbeError(f"{path / EXPORT_META} is not probe's export record")
        hashes[EXPORT_META] = sha256_file(path / EXPORT_META)
        sp = meta.get("split")
        if isinstance(sp, dict):
            split = (_indices(sp.get("train"), f"{EXPORT_META}: split.train"),
                     _indices(sp.get("val"), f"{EXPORT_META}: split.val"), "samples", "probe's export record")
        m = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
        for i, s in enumerate(m.get("step") or []):
            metric_rows[int(s)] = {k: (m[k][i] if k in m and i < len(m[k]) else None)
                                   for k in ("train_loss", "val_loss", "lr")}
        if (path / EXPORT_STATIC).is_file():  # fixed tensors (the toy model's targets), one file for the series
            data = _read_bytes(path / EXPORT_STATIC)
            hashes[EXPORT_STATIC] = hashlib.sha256(data).hexdigest()
            static = load_safetensors(data, str(path / EXPORT_STATIC))[0]

    def read() -> Iterator[tuple[int, dict[str, np.ndarray], dict[str, float]]]:
        for step, file in pairs:
            data = _read_bytes(file)
            hashes[file.name] = hashlib.sha256(data).hexdigest()
            tensors, scalars, _ = _load_state_file(file, data)
            tensors.update({k: v for k, v in static.items() if k not in tensors})
            rec = metric_rows.get(step) or {
                "train_loss": scalars.get("train_loss"),
                "val_loss": scalars.get("val_loss", scalars.get("test_loss"))}
            yield step, tensors, _recorded(rec)

    return Source(kind="state-dicts", root=path, steps=[s for s, _ in pairs], read=read, hashes=hashes,
                  probe_meta=meta, split=split, notes=notes)


def detect(path: Path) -> SourceKind:
    """The first registered kind whose ``detect`` accepts ``path``; else one error naming every kind tried."""
    if not path.exists():
        raise ProbeError(f"{path} does not exist")
    for _, kind in SOURCE_KINDS.items():
        if kind.detect(path):
            return kind
    tried = "; ".join(f"{k.name}: {k.layout}" for _, k in SOURCE_KINDS.items())
    raise ProbeError(f"{path} matches no checkpoint layout probe reads (tried {tried})")


# --------------------------------------------------------------------------------------------------
# tensor maps
# --------------------------------------------------------------------------------------------------
RULE_KEYS = ("from", "transpose", "permute", "reshape", "slice")


@dataclass(frozen=True)
class Rule:
    """One probe parameter filled from one source tensor: axes permuted (``transpose``: the last two
    swapped; ``permute``: any order), then ``reshape``d, then sliced along one axis (``slice``:
    ``[axis, start, stop]``)."""

    target: str
    source: str
    transpose: bool = False
    permute: tuple[int, ...] | None = None
    reshape: tuple[int, ...] | None = None
    slice: tuple[int, int | None, int | None] | None = None

    def apply(self, arr: np.ndarray) -> np.ndarray:
        try:
            if self.permute is not None:
                arr = np.transpose(arr, self.permute)
            elif self.transpose:
                arr = np.swapaxes(arr, -1, -2)
            if self.reshape is not None:
                arr = arr.reshape(self.reshape)
            if self.slice is not None:
                axis, lo, hi = self.slice
                index = [slice(None)] * arr.ndim
                index[axis] = slice(lo, hi)
                arr = arr[tuple(index)]
        except (ValueError, IndexError) as exc:
            raise ProbeError(f"the map's rule for {self.target} (from {self.source}) does not apply to its shape "
                             f"{tuple(arr.shape)}: {str(exc).splitlines()[0][:80]}") from None
        return arr

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"from": self.source}
        if self.transpose:
            out["transpose"] = True
        for key in ("permute", "reshape", "slice"):
            if getattr(self, key) is not None:
                out[key] = list(getattr(self, key))
        return out


@dataclass(frozen=True)
class TensorMap:
    """How a source's tensor names become a probe model's parameters: explicit :class:`Rule` s, then
    every other tensor by its own name; ``ignore`` (glob patterns) and TransformerLens' buffers are
    left out. ``model`` is the model config a map file declares (``kind`` and keys)."""

    name: str
    rules: tuple[Rule, ...] = ()
    ignore: tuple[str, ...] = ()
    model: dict[str, Any] | None = None
    file: Path | None = None

    def ignored(self, name: str) -> bool:
        return TL_BUFFERS.search(name) is not None or any(fnmatchcase(name, pat) for pat in self.ignore)

    def apply(self, tensors: dict[str, np.ndarray], where: str) -> tuple[dict[str, np.ndarray], list[str]]:
        """``(parameters by probe name, source tensors used by nothing)``."""
        missing = [r.source for r in self.rules if r.source not in tensors]
        if missing:
            have = ", ".join(sorted(tensors)[:12]) + (", ..." if len(tensors) > 12 else "")
            raise ProbeError(f"the map names tensors {where} does not hold: {', '.join(missing[:8])} "
                             f"(it holds: {have})")
        out = {r.target: r.apply(tensors[r.source]) for r in self.rules}
        used = {r.source for r in self.rules}
        unused = []
        for name, arr in tensors.items():
            if name in used or self.ignored(name):
                continue
            if name in out:
                unused.append(name)
            else:
                out[name] = arr
        return out, unused

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.file is not None:
            out["file"] = str(self.file)
        if self.rules:
            out["rules"] = {r.target: r.describe() for r in self.rules}
        if self.ignore:
            out["ignore"] = list(self.ignore)
        if self.model is not None:
            out["model"] = self.model
        return out


BY_NAME = TensorMap("by name (TransformerLens' and probe's names are the same)")


def load_map(path: Path) -> TensorMap:
    """A map file (YAML): ``model`` (the probe model kind and its config keys), ``tensors`` (probe
    parameter: source tensor name, or ``{from: NAME, transpose: true, permute: [...], reshape: [...],
    slice: [axis, start, stop]}``) and ``ignore`` (glob patterns of source tensors to leave out)."""
    from probe.yamlfile import load_yaml

    where = f"map file {path}"
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ProbeError(f"cannot read {where}: {exc.strerror or exc}", param="map") from None
    data = load_yaml(text, where)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProbeError(f"{where} is not a mapping with model, tensors and ignore", param="map")
    extra = sorted(set(data) - {"model", "tensors", "ignore"})
    if extra:
        raise ProbeError(f"{where}: unknown key {extra[0]!r}{valid(['model', 'tensors', 'ignore'])}", param="map")
    model = data.get("model")
    if model is not None and not isinstance(model, dict):
        raise ProbeError(f"{where}: model must be a mapping of model config keys (kind, d_model, ...)", param="map")
    rules = []
    tensors = data.get("tensors") or {}
    if not isinstance(tensors, dict):
        raise ProbeError(f"{where}: tensors must map probe parameter names to source tensors", param="map")
    for target, spec in tensors.items():
        rules.append(_rule(str(target), spec, where))
    ignore = data.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise ProbeError(f"{where}: ignore must be a list of glob patterns", param="map")
    return TensorMap(f"map file {path.name}", tuple(rules), tuple(ignore),
                     {str(k): v for k, v in model.items()} if model else None, path)


def _ints(value: Any, what: str, where: str, allow_none: bool = False) -> tuple[Any, ...]:
    if not isinstance(value, list) or not all(
            (isinstance(v, int) and not isinstance(v, bool)) or (allow_none and v is None) for v in value):
        raise ProbeError(f"{where}: {what} must be a list of integers", param="map")
    return tuple(value)


def _rule(target: str, spec: Any, where: str) -> Rule:
    if isinstance(spec, str):
        return Rule(target, spec)
    if not isinstance(spec, dict) or not isinstance(spec.get("from"), str):
        raise ProbeError(f"{where}: {target} must name a source tensor, or be {{from: NAME, transpose: true, ...}}",
                         param="map")
    extra = sorted(set(spec) - set(RULE_KEYS))
    if extra:
        raise ProbeError(f"{where}: {target}: unknown key {extra[0]!r}{valid(RULE_KEYS)}", param="map")
    if "transpose" in spec and not isinstance(spec["transpose"], bool):
        raise ProbeError(f"{where}: {target}: transpose must be true or false", param="map")
    if spec.get("transpose") and spec.get("permute") is not None:
        raise ProbeError(f"{where}: {target}: give transpose or permute, not both", param="map")
    sl = _ints(spec["slice"], f"{target}.slice", where, allow_none=True) if spec.get("slice") is not None else None
    if sl is not None and (len(sl) != 3 or sl[0] is None):
        raise ProbeError(f"{where}: {target}: slice is [axis, start, stop]", param="map")
    return Rule(target, spec["from"], bool(spec.get("transpose", False)),
                _ints(spec["permute"], f"{target}.permute", where) if spec.get("permute") is not None else None,
                _ints(spec["reshape"], f"{target}.reshape", where) if spec.get("reshape") is not None else None,
                sl)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# model, task and split
# --------------------------------------------------------------------------------------------------
TL_FIELDS_REFUSED = {"attn_only": True, "parallel_attn_mlp": True, "gated_mlp": True, "use_local_attn": True,
                     "final_rms": True}


def model_from_tl(fields: dict[str, Any], where: str) -> dict[str, Any]:
    """probe's transformer config (``model.*`` keys) from a TransformerLens config's fields; a field
    probe's transformer has no equivalent for is refused, naming it."""
    def need(key: str) -> int:
        v = fields.get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise ProbeError(f"{where}: the TransformerLens config has no integer {key}")
        return v

    for key, bad in TL_FIELDS_REFUSED.items():
        if fields.get(key) == bad:
            raise ProbeError(f"{where}: the TransformerLens config sets {key}={bad}, which probe's transformer "
                             "does not have")
    norm = fields.get("normalization_type")
    if norm not in (None, "None", "LN"):
        raise ProbeError(f"{where}: normalization_type {norm!r} has no equivalent in probe's transformer (None or LN)")
    pos = fields.get("positional_embedding_type", "standard")
    if pos != "standard":
        raise ProbeError(f"{where}: positional_embedding_type {pos!r} has no equivalent in probe's transformer "
                         "(standard)")
    act = fields.get("act_fn", "relu")
    if act not in ("relu", "gelu"):
        raise ProbeError(f"{where}: act_fn {act!r} has no equivalent in probe's transformer (relu or gelu)")
    kv = fields.get("n_key_value_heads")
    if kv not in (None, "None") and kv != fields.get("n_heads"):
        raise ProbeError(f"{where}: grouped key/value heads (n_key_value_heads={kv}) are not in probe's transformer")
    n_ctx = need("n_ctx")
    if n_ctx not in (2, 3, 4):
        raise ProbeError(f"{where}: n_ctx={n_ctx}; probe's transformer reads [a, b], [a, b, =] or [a, op, b, =]")
    d_model, n_heads = need("d_model"), need("n_heads")
    model: dict[str, Any] = {"kind": "transformer", "n_layers": need("n_layers"), "d_model": d_model,
                             "n_heads": n_heads, "d_mlp": need("d_mlp"), "act": act, "layernorm": norm == "LN",
                             "op_token": n_ctx == 4, "eq_token": n_ctx != 2,
                             "causal": fields.get("attention_dir", "causal") != "bidirectional"}
    d_head = fields.get("d_head")
    if isinstance(d_head, int) and d_head * n_heads != d_model:
        model["d_head"] = d_head
    return model


def model_from_tl_shapes(shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, Any], list[str]] | None:
    """probe's transformer config read off TransformerLens-named tensors' shapes (None when the names are
    not TransformerLens'); the notes say what the shapes cannot tell."""
    if "embed.W_E" not in shapes or "blocks.0.attn.W_Q" not in shapes or "blocks.0.mlp.W_in" not in shapes:
        return None
    layers = {int(m.group(1)) for n in shapes for m in [re.match(r"blocks\.(\d+)\.", n)] if m}
    h, d, dh = shapes["blocks.0.attn.W_Q"]
    n_ctx = shapes["pos_embed.W_pos"][0] if "pos_embed.W_pos" in shapes else 2
    model: dict[str, Any] = {"kind": "transformer", "n_layers": max(layers) + 1, "d_model": d, "n_heads": h,
                             "d_mlp": shapes["blocks.0.mlp.W_in"][1], "layernorm": "blocks.0.ln1.w" in shapes,
                             "op_token": n_ctx == 4, "eq_token": n_ctx != 2,
                             "attn_bias": "blocks.0.attn.b_Q" in shapes, "head_bias": "unembed.b_U" in shapes}
    if "pos_embed.W_pos" not in shapes:
        model["positional"] = "none"
    if model["layernorm"] and "ln_final.w" not in shapes:
        model["ln_final"] = False
    if dh * h != d:
        model["d_head"] = dh
    return model, ["the activation is not stored in a state dict: relu assumed (a map file's model.act changes it; "
                   "the fidelity check tests it where the source records losses)"]


def grid_split(task: "Task", train: np.ndarray, val: np.ndarray | None, order: str, where: str) -> "Split":
    """Indices in ``order`` (``grid``: ``a * n + b`` over the n x n operand table, as TransformerLens'
    demo numbers its samples; ``samples``: probe's task order) as probe's split of ``task``, sorted;
    ``val`` None: every task sample not in ``train``."""
    from probe.tasks import Split

    n_samples = task.n_samples
    if order == "grid" and task.inputs.ndim == 2 and task.inputs.shape[1] == 2 and task.inputs.dtype.kind in "iu":
        n = task.n_symbols
        lookup = np.full(n * n, -1, dtype=np.int64)
        a, b = task.inputs[:, 0], task.inputs[:, 1]
        if not task.commutative or len(task.inputs) == n * n:
            lookup[a * n + b] = np.arange(n_samples)
        else:  # unordered pairs: (b, a) names the same sample
            lookup[b * n + a] = np.arange(n_samples)
            lookup[a * n + b] = np.arange(n_samples)

        def convert(idx: np.ndarray, what: str) -> np.ndarray:
            bad = idx[(idx < 0) | (idx >= n * n)]
            if bad.size:
                raise ProbeError(f"{where}: {what} index {int(bad[0])} is outside task {task.describe()} (its "
                                 f"operand table has {n * n} cells, a * {n} + b)")
            out = lookup[idx]
            if np.any(out < 0):
                i = int(idx[np.flatnonzero(out < 0)[0]])
                raise ProbeError(f"{where}: {what} index {i} (a={i // n}, b={i % n}) is not a sample of task "
                                 f"{task.describe()}")
            return out
    else:
        def convert(idx: np.ndarray, what: str) -> np.ndarray:
            bad = idx[(idx < 0) | (idx >= n_samples)]
            if bad.size:
                raise ProbeError(f"{where}: {what} index {int(bad[0])} is outside task {task.describe()} "
                                 f"({n_samples} samples)")
            return idx

    tr = convert(np.asarray(train, np.int64), "train")
    if len(np.unique(tr)) != len(tr):
        raise ProbeError(f"{where}: the training indices name a sample twice")
    if val is None:
        va = np.setdiff1d(np.arange(n_samples), tr)
    else:
        va = convert(np.asarray(val, np.int64), "validation")
        if len(np.unique(va)) != len(va):
            raise ProbeError(f"{where}: the validation indices name a sample twice")
        both = np.intersect1d(tr, va)
        if both.size:
            raise ProbeError(f"{where}: sample {int(both[0])} is in both the training and the validation split")
    return Split(train=np.sort(tr), val=np.sort(va))


def read_indices(path: Path) -> np.ndarray:
    """Training indices from a file: ``.npy`` (integers, or ``[N, 2]`` pairs ``(a, b)``), ``.json`` (a
    list), or text (one index, or one ``a,b`` pair, per line). Pairs are returned as ``[N, 2]``."""
    where = f"--train-indices {path}"
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".json":
            arr = np.asarray(_read_json(path))
        else:
            rows = [line.replace(",", " ").split() for line in path.read_text().splitlines() if line.strip()
                    and not line.lstrip().startswith("#")]
            arr = np.asarray([[int(x) for x in r] for r in rows])
            if arr.ndim == 2 and arr.shape[1] == 1:
                arr = arr[:, 0]
    except (OSError, ValueError) as exc:
        raise ProbeError(f"cannot read {where}: {str(exc).splitlines()[0][:100]}") from None
    if arr.dtype.kind not in "iu" or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 2):
        raise ProbeError(f"{where} holds no list of integer indices (or (a, b) pairs)")
    return arr.astype(np.int64)


@dataclass
class Plan:
    """Everything the run is laid out from, settled before anything is written."""

    cfg: "TrainConfig"
    task: "Task"
    split: "Split | None"
    model: "ProbeModel"
    tmap: TensorMap
    shapes: dict[str, tuple[int, ...]]
    static: dict[str, np.ndarray]
    series_dtype: str
    record: dict[str, Any]
    notes: list[str]


def _task(req: ImportRequest, source: Source, mapped: dict[str, np.ndarray], notes: list[str]) -> tuple["Task", str]:
    from probe.tasks import make_task, task_from_spec

    meta = source.probe_meta
    if req.task is None and req.p is None and meta is not None and isinstance(meta.get("task"), dict):
        table = np.asarray(meta["table"], np.int64) if meta.get("table") is not None else None
        symbols = tuple(str(s) for s in meta["symbols"]) if table is not None and meta.get("symbols") else None
        return task_from_spec(meta["task"], table=table, symbols=symbols), "probe's export record"
    hint = source.task_hint or {}
    name = req.task or hint.get("name")
    if name is None:
        raise ProbeError(f"{source.root} does not record its task: give --task NAME (and --p P)", param="task")
    p = req.p if req.p is not None else hint.get("p")
    why = "--task" if req.task else hint.get("why", "the source")
    if p is None and "unembed.W_U" in mapped:
        out_dim = int(mapped["unembed.W_U"].shape[-1])
        for cand in (out_dim, (out_dim + 1) // 2):
            try:
                if make_task(name, p=cand).n_classes == out_dim:
                    p = cand
                    notes.append(f"p={cand} read off the unembedding's {out_dim} outputs")
                    break
            except ProbeError:
                continue
    try:
        return make_task(name, p=p), why
    except ProbeError as exc:
        raise ProbeError(f"task {name} (p={p}): {exc.message}", param="task") from None


def _model_dict(req: ImportRequest, source: Source, tmap: TensorMap, mapped: dict[str, np.ndarray],
                notes: list[str]) -> tuple[dict[str, Any], str]:
    if tmap.model is not None:
        model = dict(tmap.model)
        if "kind" not in model:
            model["kind"] = "transformer"
        if source.tl_config is not None and model["kind"] == "transformer" and set(model) == {"kind"}:
            model = model_from_tl(source.tl_config, str(source.root))
        return model, "the map file"
    meta = source.probe_meta
    if meta is not None and isinstance(meta.get("config"), dict) and isinstance(meta["config"].get("model"), dict):
        return dict(meta["config"]["model"]), "probe's export record"
    if source.tl_config is not None:
        return model_from_tl(source.tl_config, str(source.root)), "the TransformerLens config in the file"
    inferred = model_from_tl_shapes({k: tuple(v.shape) for k, v in mapped.items()})
    if inferred is not None:
        notes.extend(inferred[1])
        return inferred[0], "the TransformerLens-named tensors' shapes"
    shown = ", ".join(sorted(mapped)[:8]) + (", ..." if len(mapped) > 8 else "")
    raise ProbeError(f"the tensors of {source.root} are not named as TransformerLens' or probe's (they hold: {shown}); "
                     "give --map FILE naming the probe model (model: kind and keys) and which tensor fills each of "
                     "its parameters (docs/design.md, 'Importing and exporting checkpoint series')", param="map")


def _config(req: ImportRequest, source: Source, model: dict[str, Any], task: "Task", split: "Split | None",
            steps: list[int]) -> "TrainConfig":
    from probe.config import TrainConfig

    meta = source.probe_meta
    if meta is not None and isinstance(meta.get("config"), dict) and req.task is None and req.p is None \
            and req.map is None and req.train_indices is None:
        try:
            return TrainConfig.from_dict(meta["config"])
        except ProbeError as exc:
            raise ProbeError(f"{source.root}: probe's export record holds a config this probe refuses: {exc}") from None
    spec = task.spec
    data: dict[str, Any] = {k: spec.get(k) for k in ("p", "n", "group", "ordered") if spec.get(k) is not None}
    data["task"] = task.name
    data["model"] = model
    data["steps"] = max(1, steps[-1] if steps else 1)
    gaps = np.diff(np.asarray(steps, np.int64))
    every = int(np.gcd.reduce(gaps)) if gaps.size else 1
    data["checkpoint"] = {"schedule": "every", "every": max(1, every), "metrics_every": max(1, every)}
    if split is not None and len(split.train):
        data["n_train"] = int(len(split.train))
        data["train_fraction"] = min(1.0, max(1e-9, len(split.train) / task.n_samples))
    try:
        return TrainConfig.from_dict(data)
    except ProbeError as exc:
        raise ProbeError(f"{source.root}: {exc}") from None


def plan_import(req: ImportRequest, source: Source, tmap: TensorMap | None,
                first: tuple[int, dict[str, np.ndarray], dict[str, float]]) -> Plan:
    """Settle model, task, split, config and the tensor map from the source, the flags and its first
    checkpoint, and check that every parameter is filled with a tensor of its shape: nothing written."""
    import torch

    from probe.models import build_model

    notes = list(source.notes)
    tmap = tmap or BY_NAME
    step, tensors, _ = first
    mapped, unused = tmap.apply(tensors, f"{source.root} (step {step})")
    model_dict, model_from = _model_dict(req, source, tmap, mapped, notes)
    task, task_from = _task(req, source, mapped, notes)
    split, split_from = None, "none"
    if req.train_indices is not None:
        idx = read_indices(req.train_indices)
        if idx.ndim == 2:
            n = task.n_symbols
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ProbeError(f"--train-indices {req.train_indices}: operand {int(idx.max())} is outside task "
                                 f"{task.describe()} ({n} symbols)")
            idx = idx[:, 0] * n + idx[:, 1]
        split = grid_split(task, idx, None, "grid", f"--train-indices {req.train_indices}")
        split_from = f"--train-indices {req.train_indices} (order a * n + b; validation: every other sample)"
    elif source.split is not None:
        train, val, order, why = source.split
        split = grid_split(task, train, val, order, str(source.root))
        split_from = why
    else:
        notes.append("no split: the source stores none and --train-indices was not given; metrics that need a "
                     "split refuse on this run, and no losses are evaluated or compared")
    cfg = _config(req, source, model_dict, task, split, source.steps)
    with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: leave the caller's RNG alone
        model = build_model(cfg.model, task).set_loss(cfg.softmax, cfg.softmax_dtype).eval()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    buffers = cfg.model.buffer_shapes(task.n_classes)
    wanted = {**shapes, **buffers}
    extra = [n for n in mapped if n not in wanted]
    missing = [n for n in wanted if n not in mapped]
    if unused or extra or missing:
        parts = []
        if unused or extra:
            parts.append(f"no parameter of the {cfg.model.kind} model takes {', '.join((unused + extra)[:8])}"
                         + (", ..." if len(unused) + len(extra) > 8 else ""))
        if missing:
            parts.append(f"no tensor fills {', '.join(missing[:8])}" + (", ..." if len(missing) > 8 else ""))
        raise ProbeError(f"the tensors of {source.root} do not fit probe's {cfg.model.kind} model ({model_from}): "
                         f"{'; '.join(parts)}; give --map FILE (docs/design.md, 'Importing and exporting checkpoint "
                         "series')", param="map")
    _check_shapes(mapped, wanted, cfg.model.kind, f"step {step}")
    floats = [a for n, a in mapped.items() if n in shapes]
    series_dtype = "float64" if floats and all(a.dtype == np.float64 for a in floats) else "float32"
    static = {n: np.asarray(mapped[n], np.float32) for n in buffers}
    files = []
    if tmap.file is not None:
        files.append({"path": str(tmap.file), "sha256": sha256_file(tmap.file)})
    record = {
        "kind": source.kind, "source": str(source.root.resolve()), "files": files,
        "mapping": tmap.record(), "model_from": model_from, "task_from": task_from, "split_from": split_from,
        "training_settings": "recorded" if (source.probe_meta is not None and cfg.to_dict() ==
                                            _meta_config(source)) else "not recorded by the source",
        "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return Plan(cfg=cfg, task=task, split=split, model=model, tmap=tmap, shapes=shapes, static=static,
                series_dtype=series_dtype, record=record, notes=notes)


def _meta_config(source: Source) -> dict[str, Any] | None:
    from probe.config import TrainConfig

    meta = source.probe_meta
    try:
        return TrainConfig.from_dict(meta["config"]).to_dict() if meta and isinstance(meta.get("config"), dict) \
            else None
    except ProbeError:
        return None


def _check_shapes(mapped: dict[str, np.ndarray], wanted: dict[str, tuple[int, ...]], kind: str, where: str) -> None:
    for name, want in wanted.items():
        got = tuple(mapped[name].shape)
        if got != tuple(want):
            raise ProbeError(f"at {where}, tensor {name} has shape {got}; probe's {kind} model needs {tuple(want)} "
                             "(a map file's transpose, permute, reshape and slice rearrange tensors)", param="map")
        if mapped[name].dtype.kind not in "fiub":
            raise ProbeError(f"at {where}, tensor {name} holds {mapped[name].dtype}, not numbers")


# --------------------------------------------------------------------------------------------------
# evaluation and the fidelity check
# --------------------------------------------------------------------------------------------------
class Evaluator:
    """probe's loss and accuracy of one checkpoint's weights on the stored split (the model's own loss:
    cross-entropy in float64 unless the config says otherwise), as the trainer records them."""

    def __init__(self, plan: Plan) -> None:
        import torch

        self.model = plan.model
        self.split = plan.split
        if plan.split is not None:
            x = self.model.model_inputs(torch.as_tensor(plan.task.inputs))
            y = torch.as_tensor(plan.task.labels)
            tr, va = torch.as_tensor(plan.split.train), torch.as_tensor(plan.split.val)
            self.sets = {"train": (x[tr], y[tr]), "val": (x[va], y[va])}

    def __call__(self, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        import torch

        if self.split is None:
            return {}
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name], dtype=np.float32)))
            for name, buf in self.model.named_buffers():
                if name in arrays:
                    buf.copy_(torch.from_numpy(np.ascontiguousarray(arrays[name], dtype=np.float32)))
            out: dict[str, float] = {}
            for part, (x, y) in self.sets.items():
                if x.shape[0] == 0:
                    out[f"{part}_loss"] = out[f"{part}_acc"] = float("nan")
                    continue
                ans = self.model.answer(x, last_only=True)
                out[f"{part}_loss"] = float(self.model.loss(ans, y))
                out[f"{part}_acc"] = float((self.model.predict(ans) == y).double().mean())
        return out


@dataclass
class Fidelity:
    """The comparison of the losses the source recorded with probe's, checkpoint by checkpoint."""

    force: bool
    compared: int = 0
    worst: tuple[float, int, str, float, float] | None = None  # (relative difference, step, which, recorded, probe)
    failed: list[tuple[int, str, float, float]] = field(default_factory=list)

    def check(self, step: int, recorded: dict[str, float], probe: dict[str, float], source: str) -> None:
        seen = False
        for key in ("train_loss", "val_loss"):
            if key not in recorded or key not in probe or not math.isfinite(probe[key]):
                continue
            seen = True
            rec, got = recorded[key], probe[key]
            rel = abs(got - rec) / max(abs(rec), 1e-300)
            if self.worst is None or rel > self.worst[0]:
                self.worst = (rel, step, key, rec, got)
            if abs(got - rec) > RTOL * abs(rec) + ATOL:
                if not self.force:
                    which = "training" if key == "train_loss" else "validation"
                    raise ProbeError(
                        f"fidelity check failed at step {step}: {source} records {which} loss {rec:.6g}, probe "
                        f"computes {got:.6g} on the stored split (relative difference {rel:.2g}, tolerance {RTOL:g}); "
                        "the map, task or split does not match the source (--force imports it anyway)")
                self.failed.append((step, key, rec, got))
        self.compared += seen

    @property
    def failed_steps(self) -> list[int]:
        return sorted({s for s, *_ in self.failed})

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"compared": self.compared, "rtol": RTOL, "atol": ATOL, "forced": self.force,
                               "failed": len(self.failed_steps)}
        if self.worst is not None:
            rel, step, key, rec, got = self.worst
            out["worst"] = {"step": step, "loss": key, "recorded": rec, "probe": got, "relative": rel}
        if self.failed:
            out["failed_steps"] = self.failed_steps[:100]
        return out


# --------------------------------------------------------------------------------------------------
# the import
# --------------------------------------------------------------------------------------------------
def check_out(out: Path) -> None:
    """``--out`` must be a new directory (or an empty one): never a run, a file or a folder with contents."""
    from probe.runfile import run_file_path

    if run_file_path(out).exists() and out.is_dir():
        raise ProbeError(f"{out} already holds a run; choose a new directory", param="out")
    if out.exists() and not out.is_dir():
        raise ProbeError(f"{out} exists and is not a directory", param="out")
    if out.is_dir() and any(out.iterdir()):
        raise ProbeError(f"{out} exists and is not empty; choose a new directory", param="out")


def _staging(out: Path) -> tuple[Path, list[Path]]:
    """A hidden directory beside ``out`` to write the run into, and the parents created for it."""
    created = []
    parent = out.resolve().parent
    missing = []
    p = parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
        tmp = parent / f".{out.name}.importing-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
        raise ProbeError(f"cannot write to {out}: {exc.strerror or exc}", param="out") from None
    return tmp, created


def import_series(req: ImportRequest) -> ImportResult:
    """Import the checkpoint series ``req.source`` into a new probe run at ``req.out`` (see the module
    docstring). Bad input is one :class:`ProbeError` and nothing is written."""
    src = Path(req.source)
    out = Path(req.out)
    if not src.exists():
        raise ProbeError(f"{src} does not exist")
    check_out(out)
    if req.step_pattern is not None:
        compile_step_pattern(req.step_pattern)
    if req.train_indices is not None and not Path(req.train_indices).is_file():
        raise ProbeError(f"{req.train_indices} is not a file", param="train_indices")
    if req.p is not None and req.p < 2:
        raise ProbeError(f"must be >= 2, got {req.p}", param="p")
    tmap = load_map(Path(req.map)) if req.map is not None else None
    kind = SOURCE_KINDS.get(req.kind) if req.kind is not None else detect(src)
    source = kind.open(src, req)
    if not source.steps:
        raise ProbeError(f"{src} holds no checkpoints")
    reader = source.read()
    first = next(reader)
    plan = plan_import(req, source, tmap, first)
    tmp, created = _staging(out)
    try:
        record = _write(plan, source, first, reader, tmp, req)
        os.replace(tmp, out) if not out.exists() else _replace_empty(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
        if isinstance(exc, RunWriteError):
            raise ProbeError(str(exc).split("; the checkpoints")[0] + "; nothing was imported") from None
        raise
    return ImportResult(run_dir=out, kind=source.kind, steps=list(source.steps), record=record, notes=plan.notes)


def _replace_empty(tmp: Path, out: Path) -> None:
    out.rmdir()  # an empty directory: nothing of anyone's is lost
    os.replace(tmp, out)


def _write(plan: Plan, source: Source, first: tuple[int, dict[str, np.ndarray], dict[str, float]],
           rest: Iterator[tuple[int, dict[str, np.ndarray], dict[str, float]]], tmp: Path,
           req: ImportRequest) -> dict[str, Any]:
    import h5py
    from tqdm import tqdm

    from probe.runfile import RUN_FILENAME, RunWriter, digest, package_versions
    from probe.run import Run
    from probe.schedules import STATE_SIZE
    from probe.schema import ATTRS_BY_NAME, RunHeader, RunLayout
    from probe.tasks import Split
    from probe.train.loop import write_config_copy

    task, cfg = plan.task, plan.cfg
    names = list(plan.shapes)
    record = dict(plan.record)
    header = RunHeader(config=cfg.to_dict(), task=task.spec, symbols=tuple(task.symbols), parameters=tuple(names),
                       packages=package_versions(), n_classes=task.n_classes,
                       created=record["imported"], imported_from={**record, "files": []})
    task_arrays = {"inputs": task.inputs, "labels": task.labels}
    if task.table is not None and task.name in ("group", "table"):
        task_arrays["table"] = task.table
    split = plan.split if plan.split is not None else Split(train=np.zeros(0, np.int64), val=np.zeros(0, np.int64))
    stored = {"train": split.train, "val": split.val}
    layout = RunLayout(header=header, task_arrays=task_arrays, split=stored,
                       static=plan.static, param_shapes=plan.shapes, saved=tuple(names),
                       series_dtype=plan.series_dtype, optim_shapes={}, rng_sizes={}, schedule_size=STATE_SIZE)
    path = tmp / RUN_FILENAME
    writer = RunWriter.create(path, layout)
    evaluate = Evaluator(plan)
    fidelity = Fidelity(req.force)
    seen: dict[bytes, int] = {}
    duplicates: list[list[int]] = []
    dtype = np.dtype(plan.series_dtype)
    row_bytes = sum(int(np.prod(s)) for s in plan.shapes.values()) * dtype.itemsize
    per_commit = max(1, min(COMMIT_CHECKPOINTS, COMMIT_BYTES // max(1, row_bytes)))
    bar = tqdm(total=len(source.steps), desc="import", unit="ckpt", disable=not req.progress, mininterval=0.5,
               dynamic_ncols=True, leave=False, file=sys.stderr)
    last: tuple[int, dict[str, np.ndarray]] | None = None
    try:
        count = 0
        for step, tensors, recorded in _chain(first, rest):
            if count:  # the first checkpoint was mapped and checked when the import was planned
                mapped, unused = plan.tmap.apply(tensors, f"{source.root} (step {step})")
                wanted = {**plan.shapes, **{k: v.shape for k, v in plan.static.items()}}
                if unused or set(mapped) != set(wanted):
                    odd = sorted(set(unused) | (set(mapped) ^ set(wanted)))
                    raise ProbeError(f"the checkpoint at step {step} of {source.root} holds other tensors than the "
                                     f"first: {', '.join(odd[:6])}")
                _check_shapes(mapped, wanted, cfg.model.kind, f"step {step}")
            else:
                mapped, _ = plan.tmap.apply(tensors, f"{source.root} (step {step})")
            arrays = {n: np.ascontiguousarray(mapped[n], dtype=dtype) for n in names}
            key = digest([arrays[n] for n in names]).tobytes()
            if key in seen:
                duplicates.append([step, seen[key]])
            else:
                seen[key] = step
            probe_row = evaluate({**arrays, **{k: mapped[k] for k in plan.static}})
            fidelity.check(step, recorded, probe_row, str(source.root))
            if probe_row:
                writer.add_metrics({"step": step, **probe_row, "lr": recorded.get("lr", float("nan"))})
            writer.queue_checkpoint(step, arrays)
            last = (step, arrays)
            count += 1
            if writer.queued >= per_commit:
                writer.commit(_resume(step, arrays, STATE_SIZE))
            bar.update(1)
        assert last is not None
        writer.commit(_resume(last[0], last[1], STATE_SIZE))
        writer.close(finished=True)
    except RunWriteError:
        raise
    except BaseException:
        if writer.f.id.valid:
            writer.f.close()
        raise
    finally:
        bar.close()
    if count != len(source.steps):
        raise ProbeError(f"{source.root} yielded {count} checkpoints, not the {len(source.steps)} it lists")
    record["files"] = [{"path": p, "sha256": h} for p, h in sorted(source.hashes.items())] + record["files"]
    record["checkpoints"] = count
    record["fidelity"] = fidelity.record()
    record["duplicates"] = duplicates
    if not fidelity.compared:
        plan.notes.append("fidelity check: nothing to compare (the source records no losses of its checkpoints"
                          + (", and there is no split)" if plan.split is None else ")"))
    if fidelity.failed:
        s, key, rec, got = fidelity.failed[0]
        warnings.warn(f"fidelity check failed at {len(fidelity.failed_steps)} of {fidelity.compared} checkpoints "
                      f"(first at step {s}: {key} recorded {rec:.6g}, probe {got:.6g}); imported anyway (--force)",
                      stacklevel=2)
    if duplicates:
        pairs = ", ".join(f"step {a} = step {b}" for a, b in duplicates[:4]) + (", ..." if len(duplicates) > 4 else "")
        warnings.warn(f"{len(duplicates)} checkpoint(s) hold exactly the tensors of an earlier one ({pairs}): the "
                      "source saved one state under several steps", stacklevel=2)
    with h5py.File(path, "r+", libver="latest", locking=False) as f:
        f.attrs["imported_from"] = ATTRS_BY_NAME["imported_from"].store(record)
    run = Run(tmp)  # the same validation every reader applies
    run.close()
    write_config_copy(tmp, cfg)
    return record


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _resume(step: int, arrays: dict[str, np.ndarray], schedule_size: int) -> Any:
    """The resume slot of an imported run: the last checkpoint's weights, no optimizer, RNG or schedule
    state (the source does not have them), so a resume refuses instead of training from scratch."""
    from probe.runfile import ResumeState

    return ResumeState(step=step, params=arrays, optim={}, has_optim=False, rng={},
                       schedule=np.zeros(schedule_size, np.float64))
