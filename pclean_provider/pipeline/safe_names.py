"""File-name-safe names made from outside text (run ids, MS names, run conf values).

Its own small module, below pipeline_template (run folders) and notify (log lines), so that
both import it at module level.
"""

from __future__ import annotations


def safe_name(text: str) -> str:
    """`text` with every character but letters, digits, '-', '_' and '.' replaced by '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
