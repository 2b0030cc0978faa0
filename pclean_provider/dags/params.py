"""The trigger form of a pipeline DAG, and one run's settings resolved from it.

The form's fields are the run conf keys that ``settings_for_run`` understands (every key of
``pipeline.conf_policy.CONF_KEYS``), each defaulting to the template's value, so the form shows what
a run will use; it adds titles, descriptions and choices so that a rerun from the UI needs no
knowledge of the YAML. The template's values pass the conf policy as they are (it judges only what a
run changed), so submitting the form untouched is always allowed.
"""

from __future__ import annotations

from airflow.sdk import Param, get_current_context
from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.config import list_presets
from pclean_provider.config.cluster import CLUSTER_TYPES, CONF_SETTABLE_FIELDS
from pclean_provider.pipeline.conf_policy import CONNECTION_CHOICE
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, TemplateError
from pclean_provider.pipeline.run_settings import RunSettings, settings_for_run


def _preset_names() -> list[str]:
    try:
        return sorted(list_presets())
    except Exception:  # noqa: BLE001 - a broken preset directory must not hide the DAGs
        return []


def _cluster_choices(t: PipelineTemplate) -> str:
    choices = [t.cluster.type or CONNECTION_CHOICE, *t.cluster.conf_types]
    return " or ".join(dict.fromkeys(choices))


def trigger_form(t: PipelineTemplate) -> dict[str, Param]:
    presets = _preset_names()
    default_preset = t.preset or "none"
    return {
        "vis": Param(None, type=["null", "string"], title="MeasurementSet (vis)",
                     description="Path of one MeasurementSet to image instead of scanning the landing area, "
                                 "inside the pipeline's data roots and written out in full (no ~ or $VARS). "
                                 "Empty: take every complete MS in the landing area."),
        "preset": Param(default_preset, type="string", enum=["none", *[p for p in presets if p != "none"]],
                        title="Imaging preset",
                        description="A packaged preset (or one from $PCLEAN_PRESETS_DIR); the template's "
                                    "overrides and yours are applied on top."),
        "overrides": Param(dict(t.overrides), type="object", title="Imaging parameter overrides",
                           description="Any tclean parameter, on top of the preset. Shown: the template's "
                                       'values; change or add entries, e.g. {"nchan": 16, "niter": 0}. An entry '
                                       "left out keeps the template's value."),
        "work_dir": Param(None, type=["null", "string"], title="Work directory",
                          description="Where this run's products are made (default from the template); "
                                      "inside the pipeline's data roots."),
        "archive_dir": Param(None, type=["null", "string"], title="Archive directory",
                             description="Where accepted products are published (default from the template); "
                                         "inside the pipeline's data roots."),
        "cluster": Param(t.cluster.type or CONNECTION_CHOICE, type="string",
                         enum=[CONNECTION_CHOICE, *CLUSTER_TYPES], title="Dask cluster type",
                         description=f"connection: the type of connection {t.cluster.connection_id} (local "
                                     "when it does not exist); local: workers on the Airflow machine; slurm: "
                                     "workers as SLURM jobs; address: an existing scheduler. A run may choose "
                                     f"only {_cluster_choices(t)}; the rest of the cluster comes from the "
                                     "connection and the template."),
        "cluster_options": Param(dict(t.cluster.options), type="object", title="Cluster options",
                                 description="Shown: the template's cluster options. A run may change the "
                                             "cluster's size, within the template's limits: "
                                             f"{', '.join(CONF_SETTABLE_FIELDS)}; "
                                             f'e.g. {{"nworkers": {min(4, t.cluster.conf_limits.max_nworkers)}}}.'),
        "cluster_connection_id": Param(t.cluster.connection_id, type=["null", "string"],
                                       title="Cluster connection",
                                       description="The Airflow connection (type pclean_dask) the cluster comes "
                                                   "from; set in the template (cluster.connection_id), shown "
                                                   "here, not changeable by a run."),
        "redo": Param(False, type="boolean", title="Redo already imaged MSs",
                      description="Image MSs of the landing area again even if the ledger says they were done."),
        "qa_min_score": Param(t.qa.gate_min_score, type="number", minimum=0, maximum=1, title="QA gate",
                              description="Products scoring below this go to review instead of the archive; "
                                          f"a run may raise it, never set it below {t.qa.floor()}."),
        "qa_thresholds": Param(dict(t.qa.thresholds), type="object", title="QA thresholds",
                               description="The thresholds pclean qa scores against; set in the template "
                                           "(qa.thresholds), shown here, not changeable by a run (move the "
                                           "gate with qa_min_score)."),
    }


def run_settings(t: PipelineTemplate) -> RunSettings:
    """The running task's settings: its template under its DAG run's params, judged by
    pipeline.conf_policy; conf it may not set fails the task at once (no retry can help)."""
    ctx = get_current_context()
    try:
        return settings_for_run(t, dict(ctx["params"]), ctx["run_id"])
    except (TemplateError, ValueError) as exc:
        raise AirflowFailException(f"run conf: {exc}") from exc
