"""`pclean presets`: the presets `--preset NAME` can use, and the file each name comes from.

A site's own directories ($PCLEAN_PRESETS_DIR) come before the packaged presets, so the file
shown is the one that will be applied.
"""

from __future__ import annotations

import argparse

from pclean_provider.config import list_presets, presets_search_path
from pclean_provider.exit_codes import PresetsExit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pclean presets",
        description="List the presets --preset NAME can apply and the file each comes from "
                    "($PCLEAN_PRESETS_DIR first, then the packaged ones).")
    parser.parse_args(argv)

    found = list_presets()
    if not found:
        searched = ", ".join(str(d) for d in presets_search_path())
        print(f"no presets found (searched {searched})")
        return PresetsExit.NONE_FOUND
    width = max(len(name) for name in found) + 2
    for name, path in sorted(found.items()):
        print(f"{name.ljust(width)}{path}")
    return PresetsExit.OK
