"""The analysis cache: ``RUN_DIR/analysis/<metric>-<key>.parquet``, never inside the run file.

The key is a hash of the metric, its parameters and the *content* the metric reads (the run's
per-checkpoint digests with its config, task and split: :meth:`probe.Run.content_key`), so a run
copied over another or edited gets fresh results. Each cache file carries a hash of its own table;
a file whose table no longer matches (edited by hand, truncated) is ignored with a warning and
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from probe.analyses.sources import Source

if TYPE_CHECKING:
    import pandas as pd

    from probe.analyses.registry import Metric

CACHE_VERSION = 2


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_path(src: Source, metric: "Metric", params: dict[str, Any], idx: np.ndarray) -> Path | None:
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


def read(path: Path) -> tuple["pd.DataFrame", dict[str, Any]] | None:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[b"probe"])
        df = table.to_pandas()
        if meta.get("table_sha256") != _table_hash(df):
            raise ValueError("its table does not match the hash it was written with")
        return df, meta["info"]
    except Exception as exc:  # noqa: BLE001 - any unreadable or altered cache is recomputed
        warnings.warn(f"cache file {path} is unusable ({str(exc).splitlines()[0][:80] or type(exc).__name__}); "
                      "recomputing", stacklevel=3)
        return None


def write(path: Path, df: "pd.DataFrame", info: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        path.parent.mkdir(exist_ok=True)
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[b"probe"] = json.dumps({"info": info, "table_sha256": _table_hash(df)}, default=str).encode()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pq.write_table(table.replace_schema_metadata(meta), tmp)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"could not write the analysis cache {path}: {exc}", stacklevel=3)
