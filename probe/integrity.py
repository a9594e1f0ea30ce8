"""The local key that binds what probe records about data to that data (docs/design.md, "Integrity"
and "Cache").

Two records live beside a run and speed up later reads: the list of rows whose checksums (and
digests) were verified for one state of the run file (``analysis/verified.json``) and the cached
analysis tables (``analysis/*.parquet``). Either is trusted only when it carries a seal made with a
secret key that lives outside every run directory: an HMAC-SHA256 over the record and what it is
about. A record edited, forged with a recomputed plain hash, or copied in from another machine or
user does not verify and is ignored (the data are verified or computed again).

The key is 32 random bytes in ``$PROBE_KEY_FILE`` or else ``$XDG_CACHE_HOME/probe/key`` (default
``~/.cache/probe/key``), created on first use with mode 0600. Whoever can read that file can forge
a seal: the records are as trustworthy as the user account that holds the key. When no key can be
read or created (a read-only home), nothing is sealed and nothing recorded is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

KEY_ENV = "PROBE_KEY_FILE"
KEY_BYTES = 32

_keys: dict[Path, bytes] = {}


def key_path() -> Path:
    """Where the local key lives (see the module docstring)."""
    explicit = os.environ.get(KEY_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "probe" / "key"


def local_key() -> bytes | None:
    """The local secret key, created on first use; None when it can be neither read nor created."""
    path = key_path()
    if path in _keys:
        return _keys[path]
    key = _read(path)
    if key is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, os.urandom(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # atomic, and never replaces a key another process made first
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        except OSError:
            return None
        key = _read(path)
    if key is not None:
        _keys[path] = key
    return key


def _read(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) == KEY_BYTES else None


def seal(*parts: str | bytes) -> str | None:
    """HMAC-SHA256 (hex) of ``parts`` under the local key; None without a key. Parts are length
    prefixed, so no two different part lists give the same message."""
    key = local_key()
    if key is None:
        return None
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        mac.update(len(data).to_bytes(8, "little"))
        mac.update(data)
    return mac.hexdigest()


def verify(stored: object, *parts: str | bytes) -> bool:
    """Whether ``stored`` is the seal of ``parts`` under the local key (False without a key)."""
    expected = seal(*parts)
    return expected is not None and isinstance(stored, str) and hmac.compare_digest(stored, expected)
