"""The agent's wheel, built by the hub from its own copy of `agent/`, so a GPU owner installs it from the hub.

A pure-Python wheel is a zip of the sources and three metadata files, so the hub writes it with the standard
library from `agent/pyproject.toml` rather than running setuptools: the hub's environment need not have
setuptools, `wheel` or a network, and the same sources always give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import tomllib
import zipfile
from pathlib import Path

import agent

SOURCE = Path(agent.__file__).resolve().parent
TAG = "py3-none-any"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: fixed, so builds are reproducible


def filename() -> str:
    """The wheel's name, e.g. gpuclub_agent-0.1.0-py3-none-any.whl; also the last part of its URL."""
    return f"{_dist_name()}-{agent.__version__}-{TAG}.whl"


def wheel_path(data_dir: Path) -> Path:
    """The wheel in `data_dir/wheels`, (re)built when it is missing or older than the agent's sources."""
    target = data_dir / "wheels" / filename()
    sources = _sources()
    newest = max(path.stat().st_mtime for path in [*sources, SOURCE / "pyproject.toml"])
    if not target.exists() or target.stat().st_mtime < newest:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: two requests building at once each produce the whole file.
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
        os.close(handle)
        try:
            _write(Path(temporary), sources)
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
    return target


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((SOURCE / "pyproject.toml").read_text())["project"]
    return project


def _dist_name() -> str:
    return re.sub(r"[-_.]+", "_", str(_project()["name"])).lower()


def _sources() -> list[Path]:
    return sorted(SOURCE.glob("*.py"))


def _metadata() -> dict[str, str]:
    project = _project()
    dependencies = project.get("dependencies", [])
    assert isinstance(dependencies, list)
    scripts = project.get("scripts", {})
    assert isinstance(scripts, dict)
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {agent.__version__}",
        f"Summary: {project.get('description', '')}",
        f"Requires-Python: {project.get('requires-python', '>=3.11')}",
        *(f"Requires-Dist: {requirement}" for requirement in dependencies),
    ]
    wheel = ["Wheel-Version: 1.0", "Generator: gpuclub hub", "Root-Is-Purelib: true", f"Tag: {TAG}"]
    entry_points = ["[console_scripts]", *(f"{name} = {target}" for name, target in scripts.items())]
    return {
        "METADATA": "\n".join(metadata) + "\n",
        "WHEEL": "\n".join(wheel) + "\n",
        "entry_points.txt": "\n".join(entry_points) + "\n",
    }


def _write(path: Path, sources: list[Path]) -> None:
    dist_info = f"{_dist_name()}-{agent.__version__}.dist-info"
    files = {f"agent/{source.name}": source.read_bytes() for source in sources}
    files |= {f"{dist_info}/{name}": text.encode() for name, text in _metadata().items()}
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
