"""``pclean simulate``: write a simulated MeasurementSet, its component list and truth file."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from pclean_provider.casa.runtime import CasaRuntimeError, ensure_casa_runtime
from pclean_provider.casa.simulator import SimulationError, simulate_ms
from pclean_provider.exit_codes import SimulateExit

_FREQ_UNITS = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}


def parse_hz(text: str) -> float:
    """'1e6', '1MHz', '1.4 GHz' -> Hz."""
    match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in ("", *_FREQ_UNITS):
        raise argparse.ArgumentTypeError(f"{text!r} is not a frequency; write e.g. 1e6, 1MHz or 1.4GHz")
    return float(match.group(1)) * _FREQ_UNITS.get(match.group(2).lower() or "hz", 1.0)


def _line_arg(text: str) -> dict:
    """--line takes nothing (a default line), a JSON/YAML file, or key=value pairs."""
    if text == "default":
        return {}
    path = Path(text).expanduser()
    if path.is_file():
        raw = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
        if not isinstance(data, dict):
            raise argparse.ArgumentTypeError(f"--line file {path} must hold a mapping of line parameters")
        return data
    out: dict[str, object] = {}
    for part in text.split(","):
        if "=" not in part:
            raise argparse.ArgumentTypeError(
                f"--line {text!r}: give a file, or key=value pairs such as peak_flux_jy=0.5,fwhm_hz=4MHz"
            )
        key, value = (p.strip() for p in part.split("=", 1))
        if key == "name":
            out[key] = value
        elif key.endswith("_hz"):
            out[key] = parse_hz(value)
        else:
            try:
                out[key] = float(value)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"--line {key}={value!r}: expected a number") from exc
    return out


def _widths_arg(text: str) -> list[float]:
    """--spw-chan-widths '1MHz,125kHz': one channel width per spw."""
    widths = [parse_hz(part) for part in text.split(",") if part.strip()]
    if not widths:
        raise argparse.ArgumentTypeError(f"--spw-chan-widths {text!r}: give one width per spw, e.g. 1MHz,125kHz")
    return widths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pclean simulate",
        description=(
            "Write a simulated MeasurementSet (point and Gaussian sources with spectral indices, "
            "optionally a spectral line, thermal noise) plus its component list (<stem>.cl) and "
            "truth file (<stem>.truth.json). Deterministic for a given --seed."
        ),
    )
    p.add_argument("output", help="MeasurementSet to write, e.g. sim.ms")
    p.add_argument("--array", default=None,
                   help="antenna configuration from the CASA data (vla.a, vla.d, alma.cycle10.8, meerkat, atca_6a, "
                   "aca.cycle10, ...; default: a built-in 12-antenna Y array at the VLA site)")
    p.add_argument("--antennas", type=int, default=None,
                   help="number of antennas (default 12); with --array, the most to keep, spread over the array "
                   "(default: all)")
    p.add_argument("--dec", type=float, default=None,
                   help="declination of the phase centre in degrees (default +40, or near the zenith of --array's site)")
    p.add_argument("--nchan", type=int, default=32, help="channels per spectral window (default 32)")
    p.add_argument("--nspw", type=int, default=None,
                   help="number of spectral windows (default 1, or one per --spw-chan-widths entry)")
    width = p.add_mutually_exclusive_group()
    width.add_argument("--chan-width", type=parse_hz, default=None, help="channel width (default 1MHz)")
    width.add_argument("--spw-width", type=parse_hz, default=None, help="bandwidth of each spw (sets the channel width)")
    width.add_argument("--spw-chan-widths", type=_widths_arg, default=None,
                       help="channel width of each spw, comma-separated, e.g. 1MHz,125kHz")
    p.add_argument("--spw-gap", type=parse_hz, default=0.0, help="gap between adjacent spws (default 0: contiguous)")
    p.add_argument("--ref-freq", type=parse_hz, default=1.4e9, help="centre of the band and of the source spectra (default 1.4GHz)")
    p.add_argument("--frame", choices=("TOPO", "LSRK"), default="TOPO", help="frequency frame of the spws (default TOPO)")
    p.add_argument("--descending", action="store_true",
                   help="store each spw's channels in decreasing frequency (a lower sideband)")
    p.add_argument("--fields", type=int, default=1, help="pointings; more than 1 makes a small mosaic (default 1)")
    p.add_argument("--hours", type=float, default=1.0, help="track length in hours, centred on transit (default 1)")
    p.add_argument("--integration", type=float, default=30.0, help="integration time in seconds (default 30)")
    p.add_argument("--noise", type=float, default=None, help="noise per visibility in Jy (0: none; default 0.005)")
    p.add_argument("--seed", type=int, default=42, help="random seed for the noise (default 42)")
    p.add_argument("--sources", default=None, help="JSON or YAML file with a list of sources (default: built-in sky)")
    p.add_argument("--targets", default=None,
                   help="JSON or YAML file with a list of targets (name, intents, offset_ra_deg, offset_dec_deg, "
                   "pointings, pointing_spacing_arcsec, flux_jy, sources): several sources with scan intents")
    p.add_argument("--flagged", default=None,
                   help="'all' flags every visibility; a target or field name flags only its rows")
    p.add_argument(
        "--line",
        nargs="?",
        const="default",
        default=None,
        type=_line_arg,
        help="add a spectral line source: no value for the default, a JSON/YAML file, or key=value pairs "
        "(peak_flux_jy, center_freq_hz, fwhm_hz, continuum_jy, offset_ra_arcsec, offset_dec_arcsec, name)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--json", action="store_true", help="print the result as JSON only")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    chan_width = args.chan_width
    if args.spw_width is not None:
        if args.nchan < 1:
            parser.error(f"--nchan {args.nchan}: need at least 1 channel")
        chan_width = args.spw_width / args.nchan
    nspw = args.nspw
    if nspw is None:
        nspw = len(args.spw_chan_widths) if args.spw_chan_widths is not None else 1

    kwargs = {
        "antennas": args.antennas,
        "nchan": args.nchan,
        "nspw": nspw,
        "ref_freq_hz": args.ref_freq,
        "fields": args.fields,
        "hours": args.hours,
        "integration_s": args.integration,
        "seed": args.seed,
        "sources": args.sources,
        "spectral_line": args.line,
        "overwrite": args.overwrite,
        "spw_gap_hz": args.spw_gap,
        "freq_frame": args.frame,
        "descending": args.descending,
        "array": args.array,
        "dec_deg": args.dec,
        "targets": args.targets,
        "flagged": args.flagged,
        "spw_chan_widths_hz": args.spw_chan_widths,
    }
    if chan_width is not None:
        kwargs["chan_width_hz"] = chan_width
    if args.noise is not None:
        kwargs["noise_jy"] = args.noise
    out = Path(args.output).expanduser().resolve()
    try:
        ensure_casa_runtime(log_dir=out.parent / "logs", log_name=f"simulate-{out.name}.log")
        if not args.json:
            print(f"simulating {out} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        result = simulate_ms(
            out, progress=None if args.json else (lambda text: print(f"  {text}", file=sys.stderr, flush=True)),
            **kwargs,
        )
        elapsed = time.monotonic() - t0
    except (SimulationError, FileExistsError, CasaRuntimeError) as exc:
        print(f"pclean simulate: error: {exc}", file=sys.stderr)
        return SimulateExit.BAD_INPUT
    if args.json:
        print(result.model_dump_json(indent=2))
        return SimulateExit.OK
    print(f"MeasurementSet  {result.ms}  ({result.nrows} rows, {result.nspw} spw x {result.nchan} channels, "
          f"{result.nfields} field(s)) in {elapsed:.1f} s")
    print(f"truth file      {result.truth}")
    print(f"component list  {result.componentlist}")
    print("suggested imaging:")
    print(f"  imsize={result.suggested_imsize} cell={result.suggested_cell} "
          f"(beam about {result.beam_estimate_arcsec:.1f} arcsec)")
    print(f"  pclean --vis {result.ms} --imagename sim --imsize {result.suggested_imsize} "
          f"--cell {result.suggested_cell}")
    return SimulateExit.OK


if __name__ == "__main__":
    sys.exit(main())
