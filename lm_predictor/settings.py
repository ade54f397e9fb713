"""One place for configuration from the environment and `./.env` (python-dotenv).

| setting        | environment variable      | default                                    |
|----------------|---------------------------|--------------------------------------------|
| run database   | `LM_PREDICTOR_DB`         | `<user data dir>/runs.duckdb`              |
| check database | `LM_PREDICTOR_CHECK_DB`   | `<user data dir>/check.duckdb`             |
| user formulas  | `LM_PREDICTOR_FORMULAS`   | `<user data dir>/formulas.json`            |
| user devices   | `LM_PREDICTOR_DEVICES`    | `<user data dir>/devices.json`             |
| closed-form cache | `LM_PREDICTOR_CACHE`   | `<user cache dir>` (compiled predictors)   |
| hub token      | `HF_TOKEN`                | none: the hub is not consulted             |

An explicit argument (`--db`, `--formulas`, `--devices`) always wins. `lm-predictor check`
writes its many small runs to the check database, never to the run database, so they do not
crowd out the user's runs in `lm-predictor runs`. `load_env()` reads `./.env`
once without overriding variables already set; the CLI calls it before anything else. The
formula and device defaults are owned by their layers (`formula_db.registry.user_db_path`,
`hardware.catalog.user_devices_path`), which read their variable themselves so that those
packages also work alone; this module only re-exports them. Nothing here imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path

DB_ENV = "LM_PREDICTOR_DB"
CHECK_DB_ENV = "LM_PREDICTOR_CHECK_DB"
CHECK_DB_NAME = "check.duckdb"
CACHE_ENV = "LM_PREDICTOR_CACHE"
HF_TOKEN_ENV = "HF_TOKEN"
DEFAULT_DB_NAME = "runs.duckdb"
APP_NAME = "lm-predictor"

_loaded = False


def load_env() -> None:
    """Read `./.env` into the environment once (variables already set are kept)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    env_file = Path.cwd() / ".env"
    if env_file.is_file():
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)


def db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The run database: `explicit`, else $LM_PREDICTOR_DB, else runs.duckdb in the user data
    dir, beside the user formulas and devices (every command says where it stored a run)."""
    chosen = os.fspath(explicit) if explicit else os.environ.get(DB_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)) / DEFAULT_DB_NAME


def check_db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The check database: `explicit`, else $LM_PREDICTOR_CHECK_DB, else check.duckdb in the
    user data dir (beside the user formulas)."""
    chosen = os.fspath(explicit) if explicit else os.environ.get(CHECK_DB_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME)) / CHECK_DB_NAME


def hf_token() -> str | None:
    """The Hugging Face token, or None when none is set (the hub is then not consulted)."""
    return os.environ.get(HF_TOKEN_ENV) or None


def formulas_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The user formula database file (see `formula_db.registry.user_db_path`)."""
    from formula_db.registry import user_db_path

    return user_db_path(explicit)


def devices_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The user devices file (see `hardware.catalog.user_devices_path`)."""
    from hardware.catalog import user_devices_path

    return user_devices_path(explicit)


def cache_dir() -> Path:
    """Where derived, rebuildable data lives (compiled closed forms): $LM_PREDICTOR_CACHE or the
    user cache dir."""
    chosen = os.environ.get(CACHE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))
