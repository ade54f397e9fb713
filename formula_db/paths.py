"""Where formula databases live, and a fingerprint of their contents (import-light).

The builtin layer is `module_db.json` (torch.nn) plus `zoo/*.json` (transformers architectures)
beside this file; the user layer is `explicit`, else `$LM_PREDICTOR_FORMULAS`, else
`<user data dir>/lm-predictor/formulas.json`. `fingerprint` hashes the bytes of every layer file
(a missing user file hashes as empty), so a cache keyed by it is invalid the moment any formula
changes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

BUILTIN_PATH = Path(__file__).with_name("module_db.json")
ZOO_DIR = Path(__file__).with_name("zoo")  # builtin entries for transformers architectures
FORMULAS_ENV = "LM_PREDICTOR_FORMULAS"


def builtin_paths() -> list[Path]:
    """The builtin database files: module_db.json (torch.nn) then zoo/*.json (architectures)."""
    return [BUILTIN_PATH] + sorted(ZOO_DIR.glob("*.json"))


def user_db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The user database: `explicit`, else $LM_PREDICTOR_FORMULAS, else the user data dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(FORMULAS_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("lm-predictor")) / "formulas.json"


def fingerprint(paths: list[Path]) -> str:
    """sha256 (16 hex digits) over the names and bytes of `paths` (missing files: empty)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            pass
        digest.update(b"\0")
    return digest.hexdigest()[:16]
