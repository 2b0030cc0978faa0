"""The provider's ``[pclean]`` section of Airflow's configuration, and its bridge to ``PCLEAN_*`` variables.

The layers below Airflow (pipeline/, casa/, compute/, engine/, config/) and the ``pclean`` CLI read
their site settings from ``PCLEAN_*`` environment variables, because they run without Airflow (the
CLI, Dask workers, SLURM jobs). A site running Airflow sets the same things the Airflow way
(``[pclean] data_root = /data`` in airflow.cfg, or ``AIRFLOW__PCLEAN__DATA_ROOT``):
:func:`apply_airflow_config` exports each option that is set as its variable, in every Airflow
component (the DAG factory and the plugin call it), so the lower layers and the ``pclean``
subprocesses that tasks start see one setting.

A ``PCLEAN_*`` variable already in the environment wins over the ``[pclean]`` option: it is the
more specific setting (one process, one container), and the only one the CLI outside Airflow knows.

:data:`OPTIONS` is the one table: get_provider_info builds the ``config`` metadata from it, so
``airflow config list`` documents exactly what is exported.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

SECTION = "pclean"
#: The release that introduced the ``[pclean]`` section.
SECTION_ADDED = "0.1.0"


@dataclass(frozen=True)
class Option:
    """One ``[pclean]`` option and the ``PCLEAN_*`` variable it becomes."""

    name: str
    env: str
    description: str
    example: str | None = None
    type: str = "string"  # "string" or "boolean": what Airflow's schema and `config list` show


OPTIONS: tuple[Option, ...] = (
    Option("data_root", "PCLEAN_DATA_ROOT",
           "Folder that the pipeline templates' relative paths (landing, quarantine, work, archive, "
           "review and notification areas) resolve against. Empty: ~/pclean-data of the user running "
           "Airflow.", "/data/pclean"),
    Option("pipelines_dir", "PCLEAN_PIPELINES_DIR",
           "Folder of the site's pipeline templates (*.yaml), one DAG each. It replaces the packaged "
           "set rather than adding to it. Empty: the packaged templates.", "/etc/pclean/pipelines"),
    Option("presets_dir", "PCLEAN_PRESETS_DIR",
           "Folders of the site's imaging presets, separated by ':' (os.pathsep), searched before the "
           "packaged presets (a site preset of the same name wins). Empty: the packaged presets only.",
           "/etc/pclean/presets"),
    Option("notifications_dir", "PCLEAN_NOTIFICATIONS_DIR",
           "Folder for notification files (JSON) of callers that name no folder of their own; a "
           "pipeline template's notifications_dir wins. Empty: no such fallback.",
           "/data/pclean/notifications"),
    Option("casa_home", "PCLEAN_CASA_HOME",
           "Folder for the generated CASA site config and the default CASA log folder; a shared path "
           "when Dask workers run on other machines. Empty: ~/.cache/pclean_provider/casa.",
           "/shared/pclean/casa"),
    Option("casa_log_dir", "PCLEAN_CASA_LOG_DIR",
           "Folder for the per-process CASA logs. Empty: the logs folder in casa_home.",
           "/var/log/pclean/casa"),
    Option("casa_python", "PCLEAN_CASA_PYTHON",
           "The Python of a CASA environment on the Airflow worker's machine (one with the provider's casa "
           "extra): the `pclean` steps that tasks start (ingest, plan, QA, archive) and the local cluster hosts "
           "(their Dask workers and imaging) run with it, so the Airflow workers, like the scheduler, need no "
           "CASA of their own. Checked at a task's first use: a missing file, one that is not executable, or a "
           "Python that cannot import casatools fails the task naming this setting. Empty: the Airflow "
           "worker's own Python, which then needs the casa extra.", "/opt/pclean-casa/bin/python"),
    Option("measures_path", "PCLEAN_MEASURES_PATH",
           "A site copy of CASA's measures data (a folder holding geodetic/ and ephemerides/), kept "
           "current with `pclean measures update` where the network allows or copied from a site "
           "that does. It wins over the site's CASA configuration. Empty: the site's CASA configuration "
           "decides, else the measures of the installed casadata package (offline, as old as that package).",
           "/shared/casa/measures"),
    Option("site_casa_config", "PCLEAN_SITE_CASA_CONFIG",
           "The site's own CASA configuration file (casasiteconfig.py) that pclean's generated CASA "
           "configuration runs first, so the site's settings stay. Empty: $CASASITECONFIG, else "
           "/opt/casa/casasiteconfig.py or /home/casa/casasiteconfig.py where one exists.",
           "/opt/casa/casasiteconfig.py"),
    Option("sbatch_template", "PCLEAN_SBATCH_TEMPLATE",
           "A site's coordinator job template for `pclean submit` (a copy of the packaged "
           "coordinator.sbatch). Empty: the packaged template.", "/etc/pclean/coordinator.sbatch"),
    Option("pipelines_unscheduled", "PCLEAN_PIPELINES_UNSCHEDULED",
           "True: the pipeline DAGs get no cron schedule, so only triggered runs and, where a template "
           "watches its landing area, runs that arriving data start (tests, demos).",
           None, "boolean"),
    Option("qa_gate_minimum", "PCLEAN_QA_GATE_MINIMUM",
           "The lowest QA gate of every pipeline: a template's qa.gate_min_score or gate_floor below it is "
           "refused, and no run's conf may set its gate below it, so no product QA scores lower is ever "
           "archived. Lowering it (tests, commissioning) lets error-band products into the archive and is "
           "logged by every process that loads a template. Empty: 0.33, the top of QA's 'error' band.",
           "0.33"),
    Option("allow_plaintext_dask", "PCLEAN_ALLOW_PLAINTEXT_DASK",
           "True: Airflow's tasks and triggers, and the pclean commands, may talk to a Dask scheduler without "
           "TLS (a tcp:// address). Off, such an address is refused, naming this setting: without TLS anyone "
           "who reaches the scheduler's port can run code on the cluster and in the processes that talk to it. "
           "Only for a network that only trusted machines reach; every connection made under it is logged as "
           "a warning. A connection, a pipeline template or a run's conf cannot set it. Empty: False.",
           None, "boolean"),
)


def provider_config() -> dict[str, Any]:
    """The ``config`` entry of get_provider_info (Airflow's provider schema)."""
    options = {
        o.name: {
            "description": f"{o.description} Exported as ${o.env}, which wins when already set.",
            "version_added": SECTION_ADDED,
            "type": o.type,
            "example": o.example,
            # Empty means unset: the lower layer's own default applies, which a string cannot name
            # (the packaged folders move with the installation).
            "default": "False" if o.type == "boolean" else "",
        }
        for o in OPTIONS
    }
    return {SECTION: {"description": "Site settings of the pclean provider. Each option is exported to "
                                     "the environment variable named in its description for the "
                                     "pclean layers and the `pclean` commands that tasks start; a "
                                     "variable already set wins.",
                      "options": options}}


def _airflow_conf():
    # Imported here so that importing this module (get_provider_info does) stays cheap. The Task SDK's
    # parser first, as Airflow's providers do: a worker may have the SDK without Airflow core.
    try:
        from airflow.sdk.configuration import conf
    except ImportError:
        from airflow.configuration import conf
    return conf


def option_value(option: Option, conf: Any = None) -> str | None:
    """The option's value as its variable would hold it, or None when it is not set (or empty/false)."""
    conf = conf if conf is not None else _airflow_conf()
    if option.type == "boolean":
        # The lower layer reads "set at all" as true, so false is left unexported, not exported as "False".
        return "1" if conf.getboolean(SECTION, option.name, fallback=False) else None
    value = conf.get(SECTION, option.name, fallback=None)
    return value.strip() or None if isinstance(value, str) else None


def apply_airflow_config(conf: Any = None, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Export each ``[pclean]`` option that is set as its ``PCLEAN_*`` variable, unless that variable
    is already set (it wins). Returns what it exported. Calling it again changes nothing."""
    environ = os.environ if environ is None else environ
    exported: dict[str, str] = {}
    for option in OPTIONS:
        if environ.get(option.env):
            continue
        value = option_value(option, conf)
        if value is not None:
            environ[option.env] = value
            exported[option.env] = value
    return exported
