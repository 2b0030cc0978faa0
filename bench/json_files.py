"""The bench's one way of writing a JSON file: a temporary name beside it, then a rename, so the
parent process or the report never reads half a file.

Standard library only: the peer cases (published_case.py, mpicasa_case.py) run in venvs of their own
without this project and, run as files there, import it as a sibling file (``json_files``); imported
as modules (the tests) and everywhere else it is ``bench.json_files``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path
