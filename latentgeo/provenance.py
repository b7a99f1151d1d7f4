"""What a run was made with, for its record: the code's commit (``git_sha``), the versions of
Python and the packages that make the numbers (``versions``), and the config with its secrets
redacted (``scrub_secrets``). ``record()`` is what status.json keeps of it; the writer
(``training``, the command line) passes it to ``RunDir.start`` / ``RunDir.fail``.

Foundation layer: the standard library only.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd)", re.IGNORECASE)
# the packages whose versions a run records (those present)
PACKAGES = ("latentgeo", "torch", "torchvision", "numpy", "scikit-learn", "hydra-core", "wandb")


def scrub_secrets(obj: Any, environ: dict[str, str] | None = None) -> Any:
    """Redact values under secret-looking keys and any value equal to a secret env variable."""
    environ = os.environ if environ is None else environ
    secrets = {v for k, v in environ.items() if SECRET_KEY.search(k) and len(v) >= 4}

    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v, key) for v in value]
        if isinstance(value, str) and (value in secrets or (SECRET_KEY.search(key) and value)):
            return "<redacted>"
        return value

    return scrub(obj)


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import importlib.metadata as md  # only when a run starts: the command line's start-up

    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


def record() -> dict[str, Any]:
    """The provenance keys of status.json: ``git_sha`` and ``versions``."""
    return {"git_sha": git_sha(), "versions": versions()}
