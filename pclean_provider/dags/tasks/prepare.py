"""prepare: one validated imaging config per accepted MS, before any cluster starts; it also
publishes the run's resolved settings (address file, cluster overrides) for the cluster tasks."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from pclean_provider.dags.params import run_settings
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, safe_name

RUN_XCOM = "run"  # prepare pushes the run's resolved settings under this key


def run_setting(name: str) -> str:
    """A template that renders to one of the run settings prepare pushed."""
    return "{{ ti.xcom_pull(task_ids='prepare', key='" + RUN_XCOM + "')['" + name + "'] }}"


def prepare_task(t: PipelineTemplate):
    @task(task_id="prepare", retries=0)
    def prepare(accepted: list[dict]) -> list[dict]:
        """One imaging config per MS, validated before any cluster starts."""
        from pclean_provider.config import ConfigError, load_config

        s = run_settings(t)
        items = []
        for ms in accepted:
            # The MS must still be the one ingest checked (a redo copied over it would be imaged half).
            verify_ms_unchanged(ms)
            stem = Path(ms["name"]).stem
            product_dir = Path(s.run_dir) / safe_name(stem)
            imagename = product_dir / f"{stem}.{'cube' if t.kind == 'cube' else 'cont'}"
            overrides = {**s.overrides, "vis": ms["vis"], "imagename": str(imagename)}
            try:
                cfg = load_config(presets=[s.preset] if s.preset else [], overrides=overrides)
            except (ConfigError, ValueError) as exc:
                raise AirflowFailException(f"imaging parameters for {ms['name']}: {exc}") from exc
            if t.kind == "cube" and not cfg.is_cube:
                raise AirflowFailException(f"{t.dag_id} makes cubes, but specmode={cfg.to_flat().get('specmode')!r}; "
                                           "set overrides.specmode to 'cube' (or use the continuum pipeline)")
            if t.kind == "continuum" and cfg.is_cube:
                raise AirflowFailException(f"{t.dag_id} makes continuum images, but specmode is a cube mode; "
                                           "set overrides.specmode to 'mfs'")
            product_dir.mkdir(parents=True, exist_ok=True)
            items.append({**ms, "imagename": str(imagename), "product_dir": str(product_dir),
                          "overrides": overrides, "presets": [s.preset] if s.preset else [],
                          "config_json": cfg.model_dump_json(), "truth": _truth_beside(ms["vis"])})
        get_current_context()["ti"].xcom_push(key=RUN_XCOM, value={
            "address_file": str(Path(s.run_dir) / "cluster" / "scheduler.address"),
            "cluster_overrides": s.cluster_overrides(),
            "run_dir": s.run_dir,
        })
        return items

    return prepare


def verify_ms_unchanged(ms: dict) -> None:
    from pclean_provider.pipeline.ingest import MsChangedError, verify_against_metadata

    if ms.get("metadata_path"):
        try:
            verify_against_metadata(ms["vis"], ms["metadata_path"], "imaging")
        except MsChangedError as exc:
            raise AirflowFailException(str(exc)) from exc


def _truth_beside(vis: str) -> str | None:
    """The simulator's truth file next to a simulated MS, so QA can check recovered sources."""
    ms = Path(vis)
    for candidate in (ms.with_name(ms.name + ".truth.json"), ms.with_suffix(".truth.json")):
        if candidate.exists():
            return str(candidate)
    return None
