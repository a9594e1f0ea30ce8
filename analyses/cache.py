"""The analysis cache: ``RUN_DIR/analysis/<metric>-<key>.parquet``, never inside the run file.

The key is a hash of the metric, its parameters and the *content* the metric reads (the run's
per-checkpoint digests, checked against the tensors once per file state, with its config, task and
split: :meth:`probe.Run.content_key`), so a run copied over another or edited gets fresh results.
Each cache file carries a hash of its own table and a seal: an HMAC under the local key
(:mod:`probe.integrity`) over the file's name (which holds the key), the table's hash and the
recorded parameters. A file whose table no longer matches its hash, or whose seal does not verify
(edited, rewritten with a recomputed hash, renamed, or written on another machine) is ignored with
a warning and recomputed. Without a local key nothing is cached (docs/design.md, "Cache").
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from probe import integrity
from probe.run import CheckpointSource

if TYPE_CHECKING:
    import pandas as pd

    from probe.analyses.registry import Metric

CACHE_VERSION = 2


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_path(src: CheckpointSource, metric: "Metric", params: dict[str, Any], idx: np.ndarray) -> Path | None:
    if src.cache_dir is None:
        return None
    content = src.content_key(idx)
    if content is None:
        return None
    key = key_of({"v": CACHE_VERSION, "metric": metric.name, "params": params, "content": content})
    return src.cache_dir / f"{metric.name}-{key}.parquet"


def _table_hash(df: "pd.DataFrame") -> str:
    import pandas as pd

    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _sealed(path: Path, table_hash: str, info_json: str) -> tuple[str, ...]:
    return "analysis-cache", str(CACHE_VERSION), path.name, table_hash, info_json


def read(path: Path) -> tuple["pd.DataFrame", dict[str, Any]] | None:
    """The cached table and its recorded parameters, or None (recompute) when the file is unusable
    or there is no local key to check its seal with."""
    import pyarrow.parquet as pq

    if integrity.local_key() is None:
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"probe"])
        df = table.to_pandas()
        table_hash = _table_hash(df)
        if meta.get("table_sha256") != table_hash:
            raise ValueError("its table does not match the hash it was written with")
        info = meta["info"]
        if not integrity.verify(meta.get("seal"), *_sealed(path, table_hash, json.dumps(info, sort_keys=True))):
            raise ValueError("its seal does not verify: it was altered or written elsewhere")
        return df, info
    except Exception as exc:  # noqa: BLE001 - any unreadable or altered cache is recomputed
        warnings.warn(f"cache file {path} is unusable ({str(exc).splitlines()[0][:80] or type(exc).__name__}); "
                      "recomputing", stacklevel=3)
        return None


def write(path: Path, df: "pd.DataFrame", info: dict[str, Any]) -> None:
    """Cache ``df`` at ``path`` with its hash and seal (nothing is written without a local key)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = json.loads(json.dumps(info, default=str))  # as a reader will see it
    table_hash = _table_hash(df)
    seal = integrity.seal(*_sealed(path, table_hash, json.dumps(info, sort_keys=True)))
    if seal is None:
        return
    try:
        path.parent.mkdir(exist_ok=True)
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"probe"] = json.dumps({"info": info, "table_sha256": table_hash, "seal": seal}).encode()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the analysis cache {path}: {exc}", stacklevel=3)
