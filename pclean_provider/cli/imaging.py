"""``pclean [options]``: tclean-style imaging from the command line.

The options are generated from the configuration models, so every tclean parameter (and every
pclean extra and cluster knob) is a ``--name`` option whose help shows the model's default, and
a new model field appears here without touching this file. Only options given on the command
line become overrides; everything else comes from the defaults, presets and config files.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pclean_provider.config import SECTIONS, ConfigError, list_presets, load_config
from pclean_provider.config.model import unknown_parameter_error
from pclean_provider.engine.continuum.stages import StageTime, stage_table
from pclean_provider.exit_codes import ImagingExit

_SECTION_TITLES = {
    "selection": "data selection",
    "image": "image definition",
    "spectral": "spectral axis",
    "gridding": "gridding",
    "weighting": "weighting",
    "deconvolution": "deconvolution and masking (incl. auto-multithresh)",
    "iteration": "iteration control",
    "normalization": "normalization",
    "misc": "miscellaneous",
    "extras": "pclean extras",
    "cluster": "Dask cluster",
}

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in get_args(annotation) for m in _members(a)]
    return [annotation]


def _scalar_members(annotation: Any) -> list[Any]:
    return [m for m in _members(annotation) if get_origin(m) is not list]


def _element_members(annotation: Any) -> list[Any]:
    return [e for m in _members(annotation) if get_origin(m) is list for e in _members(get_args(m)[0])]


def _convert_token(token: str, members: list[Any]) -> Any:
    """A command-line word -> the Python value the field expects ('8arcsec' stays a string, '0.5'
    becomes a number only where the field takes numbers, so that spw='0' stays a selection string)."""
    if type(None) in members and token.lower() in ("none", "null"):
        return None
    if int in members and _INT.match(token):
        return int(token)
    if float in members and (_FLOAT.match(token) or _INT.match(token)):
        return float(token)
    return token


def _is_bool(annotation: Any) -> bool:
    return [m for m in _members(annotation) if m is not type(None)] == [bool]


def _metavar(annotation: Any, name: str) -> str:
    literal = [m for m in _members(annotation) if get_origin(m) is Literal]
    if literal:
        return "{" + ",".join(str(v) for v in get_args(literal[0])) + "}"
    return name.upper()


class _FieldAction(argparse.Action):
    """Stores the converted value: one word -> scalar where the field allows it, else a list."""

    def __init__(self, option_strings, dest, annotation=None, **kwargs):
        self.annotation = annotation
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        words = values if isinstance(values, list) else [values]
        scalars = _scalar_members(self.annotation)
        elements = _element_members(self.annotation)
        if len(words) == 1 and scalars:
            value: Any = _convert_token(words[0], scalars)
        else:
            value = [_convert_token(w, elements) for w in words]
        setattr(namespace, self.dest, value)


def _help_text(description: str, default: Any) -> str:
    return f"{description} [default: {default!r}]".replace("%", "%%")


def build_parser(subcommands: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    epilog_lines = []
    if subcommands:
        width = max(len(n) for n in subcommands) + 2
        epilog_lines.append("subcommands (pclean <subcommand> --help for their options):")
        epilog_lines += [f"  {name.ljust(width)}{text}" for name, (_, text) in subcommands.items()]
        epilog_lines.append("")
    epilog_lines += [
        "Layers, later wins: model defaults < --preset (in order) < --config (in order) < options.",
        "Presets: " + (", ".join(sorted(list_presets())) or "none found") + ".",
    ]
    parser = argparse.ArgumentParser(
        prog="pclean",
        usage="pclean [--preset NAME] [--config FILE] [--dump-config] [--PARAMETER VALUE ...]\n"
        "       pclean SUBCOMMAND ...",
        description="Parallel tclean: image MeasurementSets with CASA's tclean parameters, serially or on a "
        "Dask cluster (local or SLURM).",
        epilog="\n".join(epilog_lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        # tclean names are exact: `--nit` silently meaning niter would hide typos.
        allow_abbrev=False,
    )
    general = parser.add_argument_group("configuration")
    general.add_argument("--preset", action="append", default=[], metavar="NAME",
                         help="apply a preset: a packaged one or one in $PCLEAN_PRESETS_DIR (repeatable)")
    general.add_argument("--config", action="append", default=[], metavar="FILE",
                         help="apply a YAML config file, flat or grouped (repeatable)")
    general.add_argument("--dump-config", action="store_true", default=False,
                         help="print the merged configuration as YAML and exit without imaging")
    general.add_argument("--no-progress", action="store_true", default=False,
                         help="do not draw a progress bar")

    for section, model in SECTIONS.items():
        group = parser.add_argument_group(_SECTION_TITLES.get(section, section))
        for name, field in model.model_fields.items():
            help_text = _help_text(field.description or "", field.get_default(call_default_factory=True))
            flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
            if _is_bool(field.annotation):
                group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                                   help=help_text)
                continue
            takes_list = bool(_element_members(field.annotation))
            group.add_argument(*flags, dest=name, action=_FieldAction, annotation=field.annotation,
                               nargs="*" if takes_list else None, metavar=_metavar(field.annotation, name),
                               help=help_text)
    return parser


_GENERAL = ("preset", "config", "dump_config", "no_progress")


def main(argv: list[str] | None = None, subcommands: dict[str, tuple[str, str]] | None = None) -> int:
    parser = build_parser(subcommands)
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error (already printed)
        return int(exc.code or 0)
    overrides = {k: v for k, v in vars(args).items() if k not in _GENERAL}
    try:
        _reject_unknown(unknown)
        cfg = load_config(presets=args.preset, files=args.config, overrides=overrides)
        if args.dump_config:
            sys.stdout.write(cfg.to_yaml(header=_dump_header(args)))
            return ImagingExit.OK
        cfg.require_runnable()
    except ConfigError as exc:
        print(f"pclean: error: {exc}", file=sys.stderr)
        return ImagingExit.BAD_INPUT

    import logging

    # After the arguments are read: the engine loads numpy, psutil and CASA's modules, which
    # `pclean --help` and a usage error never need.
    from pclean_provider.engine.api import run

    # With the bar on, the bar is the progress display; without it (logs, batch jobs) one line per
    # finished sub-cube or major cycle goes to stderr instead.
    logging.basicConfig(level=logging.WARNING if not args.no_progress else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pclean_provider").setLevel(logging.INFO if args.no_progress else logging.WARNING)
    try:
        result = run(cfg, progress=not args.no_progress)
    except ValueError as exc:
        # Bad input found by the engine's preflight (MS, selection, channel range): nothing ran.
        print(f"pclean: error: {exc}", file=sys.stderr)
        return ImagingExit.BAD_INPUT
    except RuntimeError as exc:
        print(f"pclean: failed: {exc}", file=sys.stderr)
        return ImagingExit.FAILED
    _report(result)
    return ImagingExit.OK


def _reject_unknown(words: list[str]) -> None:
    """argparse of Python 3.11 has no did-you-mean; unknown options get the config's one."""
    for word in words:
        if word.startswith("--"):
            name = word[2:].split("=", 1)[0].replace("-", "_")
            if name.startswith("no_"):
                name = name[3:]
            raise unknown_parameter_error(name)
    if words:
        raise ConfigError(f"unexpected argument {words[0]!r}; parameters are given as --name value, "
                          "e.g. --vis target.ms")


def _dump_header(args: argparse.Namespace) -> str:
    layers = [f"preset {p}" for p in args.preset] + [f"file {f}" for f in args.config]
    return "pclean configuration (" + " < ".join(["defaults", *layers, "command line"]) + ")"


def _report(result: Any) -> None:
    products = getattr(result, "products", None) or {}
    imagename = getattr(result, "imagename", "")
    print(f"pclean: done ({getattr(result, 'specmode', '')}, {getattr(result, 'iterations', 0)} iterations, "
          f"{getattr(result, 'seconds', 0.0):.1f} s); products of {imagename}:")
    for kind, path in sorted(products.items()):
        print(f"  {kind:12s} {path}")
    reason = getattr(result, "in_process_reason", None)
    if reason:
        # Asked for in parallel, made here: the bar hides the engine's log line, so say it once.
        print(f"pclean: {reason}")
    continuum = getattr(result, "continuum", None) or {}
    if continuum.get("stages"):
        # Where the time went (cluster start, set-up, gathers, cycles...): the engine's stage table.
        print("pclean: continuum stages")
        print(stage_table([StageTime.model_validate(s) for s in continuum["stages"]],
                          float(continuum.get("elapsed_s") or 0.0)))


if __name__ == "__main__":
    sys.exit(main())
