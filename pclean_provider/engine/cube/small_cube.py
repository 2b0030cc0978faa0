"""Whether a parallel cube is too small for a cluster: serial tclean's time, estimated before imaging.

A parallel cube on a cluster that the call starts itself pays that start (a local cluster and CASA
in every worker: 8.5-12 s on this project's 2-core machine in earlier runs, 2.4 s on 2026-12-07; a
SLURM job's start is longer) and every session's own set-up and Dask round trips (0.3-0.7 s dirty,
0.8-2.2 s cleaned on a kept cluster). A cube whose serial tclean takes a few seconds cannot win that
back: 10 channels of 128 px took 1.5 s dirty and 4.4 s cleaned serially, 10.6 s and 15.2 s with
`pclean(parallel=True, nworkers=2)` (bench/RESULTS.md, "The small-cube fixed cost"; 0.7 / 2.1 s
against 3.4 / 5.2 s on 2026-12-07). Such a cube is imaged in the caller's process instead (the exact
path of parallel=False).

The rule: on n workers a cluster saves at most `serial * (1 - 1/n)` (perfect scaling; measured
speedups are lower, so the rule leans to the cluster). The cube stays in this process when that is
less than the start-up the cluster costs: `in_process_below_s` (default 5 s: a local cluster's cold start measured
2.4 s on 2026-12-07, and a cube's sessions set up for about 1 s more; raise it where clusters start
slowly, e.g. SLURM jobs that queue) for a cluster still to be started, `WARM_START_S` for a live kept cluster (its sessions' set-up alone). n is the number of
sessions the cube would run in parallel (at most the workers): a cube that makes one session (a
mosaic that cannot split, a tabular spectral axis) gains nothing from a cluster.

Serial tclean's time is predicted from what is known before imaging (`estimate_serial_seconds`):
tclean's fixed cost per call, a cost per visibility (rows x channels of the selected data, gridded
for the PSF and the residual), and a cost per image pixel and channel (FFTs, normalisation, image
files). The constants were fitted to serial tclean dirty cubes on the project's 2-core machine with
`bench/small_cube_calibration.py` (2026-12-07; a fresh process per cube, CASA imported and the MS's
rows read before the clock, briggs 0.5, gridder standard; best of 2 and of 3 calls in two runs):

    MS: antennas, channels, hours at s (rows)   image   visibilities   measured s (run 1 / 2)   estimate s
    10, 10, 1 h at 30 s (5,400)                 128 px        54,000          0.83 / 0.76              0.71
    16, 16, 2 h at 10 s (86,400)                128 px     1,382,400          4.49 / 5.26              4.61
    10, 32, 1 h at 30 s (5,400)                 512 px       172,800          4.56 / 5.47              4.84
    12, 48, 1 h at 30 s (7,920)                 256 px       380,160          2.47 / 3.00              3.03
    10, 48, 3 h at 20 s (24,300)                256 px     1,166,400          4.46 / 5.62              5.31

Least squares of each run: 0.55 / 0.41 s set-up, 2.5e-6 / 3.2e-6 s per visibility, 4.0e-7 / 5.2e-7 s
per pixel and channel; the constants below are the means (run 1: 1-minute load 0.40 at start, 0.87
at the end; run 2 shared the machine with other work, 0.41 to 1.14). With them the bench's medium
cube (128 channels of 512 px, 15,840 rows) is estimated at 21.8 s dirty and 65.4 s cleaned: cleaned,
2 workers save up to 32.7 s, above the default 5 s, so it keeps the cluster (measured: serial 226 s,
1.96x on 2 workers); dirty (up to 10.9 s to save) too.

A cleaned cube takes several passes (PSF, residual, major cycles, restore): CLEANED_FACTOR times
the dirty cube, measured 3.0x / 3.0x on the 10-channel cube and 2.6x / 2.2x on the 48-channel 256-px
one (niter 200, threshold 20 mJy; 2.8-2.9x in bench_small_cube.py). A deep clean takes far more:
bench/sizes.py's small cube (32 channels of 256 px, 7,920 rows, cleaned to 10 mJy: 6,796 iterations)
took 17.5 s, 8.0x its estimated dirty cube, and the reads bench's shape a (48 channels of 256 px,
24,300 rows, 15,584 iterations in 23 major cycles) 41-141 s, 8-27x. How deep a clean goes is not
known before imaging, but its niter says what the user allows: above DEEP_NITER (a loose cap, the
threshold or nsigma meant to stop it) a cleaned cube counts DEEP_CLEANED_FACTOR. With 3x the small
cube was estimated at 6.5 s and imaged here (1.00x) where 2 workers gave 1.32x; with 8x it keeps the
cluster, while the shallow shapes above still stay here with any niter (their 205 iterations at a
threshold). A deep clean under-estimated even so is imaged here: never slower than serial tclean,
only without the cluster's gain; in_process_below_s=0 forces the cluster. Gridders other than the
standard ones (mosaic, w-projection, A-projection, faceting) compute convolution functions per
imager and cost more per visibility: SLOW_GRIDDER_FACTOR, from the 7-pointing mosaic cube of
bench/RESULTS.md (24 channels of 360 px, 144,000 rows: serial tclean dirty 83 s, where the standard
estimate is 11.9 s; its per-visibility part would have to be 8.1x). Being larger, the factor sends
such cubes to the cluster sooner, although the mosaic cube gained only 1.03-1.05x there.

Pure arithmetic: no CASA import (the caller reads the figures from the plan and the preflight).
"""

from __future__ import annotations

from dataclasses import dataclass

# Fitted to serial tclean dirty cubes (the means of two runs, see the table above).
SET_UP_S = 0.48
PER_VISIBILITY_S = 2.9e-6
PER_PIXEL_CHANNEL_S = 4.6e-7
# A cleaned cube against the same dirty cube (measured 2.2-3.0x on shallow cleans, see above).
CLEANED_FACTOR = 3.0
# A cleaned cube whose niter is above DEEP_NITER (a loose cap: measured 8-27x on two deep cleans).
DEEP_NITER = 1000
DEEP_CLEANED_FACTOR = 8.0
# Gridders whose per-visibility cost the fit above measured; any other costs SLOW_GRIDDER_FACTOR more
# per visibility (8.1x measured on the 7-pointing mosaic cube).
STANDARD_GRIDDERS = ("standard", "gridft", "ft")
SLOW_GRIDDER_FACTOR = 8.0
# A live kept cluster: no start-up, but every session's set-up and the loop's Dask round trips
# (measured 0.3-0.7 s dirty, 0.8-2.2 s cleaned on the 10-channel cube).
WARM_START_S = 2.0


@dataclass(frozen=True)
class CubeWork:
    """What serial tclean's time depends on, known before imaging."""

    nchan: int  # channels of the cube (the CASA-defined grid)
    nx: int
    ny: int
    visibilities: float  # rows x channels of the selected data, summed over the MSs
    cleaned: bool  # niter > 0
    gridder: str = "standard"
    niter: int = 0  # above DEEP_NITER a cleaned cube is taken for a deep clean

    @property
    def deep(self) -> bool:
        return self.cleaned and self.niter > DEEP_NITER

    def describe(self) -> str:
        kind = (f"cleaned, niter {self.niter} (deep)" if self.deep else "cleaned") if self.cleaned else "dirty"
        return (f"{self.nchan} channels of {self.nx}x{self.ny} px, {self.visibilities:,.0f} visibilities, "
                f"{kind}, gridder {self.gridder}")


def estimate_serial_seconds(work: CubeWork) -> float:
    """Serial tclean's seconds for `work` on this project's reference machine (see the module's table)."""
    gridding = PER_VISIBILITY_S * max(work.visibilities, 0.0)
    if work.gridder not in STANDARD_GRIDDERS:
        gridding *= SLOW_GRIDDER_FACTOR
    planes = PER_PIXEL_CHANNEL_S * max(work.nchan, 1) * max(work.nx, 1) * max(work.ny, 1)
    dirty = SET_UP_S + gridding + planes
    if not work.cleaned:
        return dirty
    return dirty * (DEEP_CLEANED_FACTOR if work.deep else CLEANED_FACTOR)


@dataclass(frozen=True)
class Choice:
    """Cluster or this process, with the figures that decided it."""

    in_process: bool
    estimated_serial_s: float
    saved_s: float  # the most a cluster could save: estimated_serial_s * (1 - 1/nworkers)
    start_up_s: float  # what the cluster would cost first
    nworkers: int  # sessions that would run side by side
    warm: bool  # a live kept cluster


def choose(estimated_serial_s: float, nworkers: int, in_process_below_s: float, warm: bool = False) -> Choice:
    """In this process when the cluster's best saving is under its start-up cost.

    `in_process_below_s` is the start-up of a cluster still to be started; 0 always chooses the
    cluster. With a live kept cluster (`warm`) the cost is WARM_START_S (never more than
    in_process_below_s).
    """
    n = max(int(nworkers), 1)
    saved = max(estimated_serial_s, 0.0) * (1.0 - 1.0 / n)
    start_up = min(in_process_below_s, WARM_START_S) if warm else in_process_below_s
    in_process = in_process_below_s > 0 and saved < start_up
    return Choice(in_process=in_process, estimated_serial_s=estimated_serial_s, saved_s=saved,
                  start_up_s=start_up, nworkers=n, warm=warm)


def explain(choice: Choice, work: CubeWork) -> str:
    """The log line (and the result's in_process_reason) of a cube kept in this process."""
    cost = ("the kept cluster's per-call session set-up" if choice.warm
            else "starting the cluster and CASA in its workers (in_process_below_s)")
    sessions = (f"{choice.nworkers} workers" if choice.nworkers > 1
                else "one session (the cube does not split)")
    return (f"imaged in this process, not on the cluster: serial tclean is estimated at "
            f"{choice.estimated_serial_s:.1f} s ({work.describe()}), so {sessions} could save at most "
            f"{choice.saved_s:.1f} s, less than the {choice.start_up_s:.0f} s of {cost}; "
            "set in_process_below_s=0 to use the cluster anyway")
