"""The ``pclean`` command: tclean-style imaging by default, plus subcommands.

Subcommands live in their own modules (``pclean_provider.cli.<name>``), each exposing
``main(argv) -> int``, so that a subcommand's heavy imports happen only when it is used.
"""

from __future__ import annotations

import importlib
import sys

from pclean_provider.version import __version__

# name -> (module, one-line help). A module that is not present yet is simply not offered.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("pclean_provider.cli.simulate", "write a simulated MeasurementSet and its truth file"),
    "cluster": ("pclean_provider.cli.cluster", "start, stop or inspect a long-lived Dask cluster host"),
    "submit": ("pclean_provider.cli.submit", "run a pclean coordinator as a SLURM batch job"),
    "presets": ("pclean_provider.cli.presets", "list the presets --preset can apply and their files"),
    "ingest": ("pclean_provider.cli.ingest", "validate MeasurementSets in a landing area"),
    "plan": ("pclean_provider.cli.plan", "derive each target's imaging parameters from a MeasurementSet"),
    "qa": ("pclean_provider.cli.qa", "compute QA metrics, scores and reports for imaging products"),
    "archive": ("pclean_provider.cli.archive", "export, checksum and publish products; verify an archive"),
    "measures": ("pclean_provider.cli.measures", "show how current CASA's measures data are; refresh a site copy"),
}


def available_subcommands() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, text) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, text)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        print(f"pclean {__version__}")
        return 0
    subs = available_subcommands()
    if argv and argv[0] in subs:
        module = importlib.import_module(subs[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    from pclean_provider.cli import imaging

    return int(imaging.main(argv, subcommands=subs) or 0)


if __name__ == "__main__":
    sys.exit(main())
