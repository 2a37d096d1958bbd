"""Files shipped inside the package (model configs, the embedded MovieLens copy, the page, the
default configs), found through importlib.resources so that a wheel installed anywhere reads its
own copy, and an editable install reads the checkout's."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(package: str, *parts: str) -> Path:
    """The filesystem path of `parts` inside `package`, e.g. ("coldstart.index", "static").

    coldstart installs as plain files (never zipped), so the resource is a real path that the
    callers can glob, open and hand to libraries that want a filename.
    """
    resource = resources.files(package)
    for part in parts:
        resource = resource / part
    path = Path(str(resource))
    if not path.exists():
        raise FileNotFoundError(f"{'/'.join(parts)} is missing from the {package} package ({path})")
    return path
