"""prepare: one validated imaging config per (MS, target) of the night's plans, before any cluster
starts; it also publishes the run's resolved settings (address file, cluster overrides) for the
cluster tasks. An MS the plan found nothing to image in is said (a notification, the ledger) and
left out; a night with nothing at all to image skips the cluster and stays green."""

from __future__ import annotations

import json
from pathlib import Path

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from pclean_provider.config import ConfigError, load_config
from pclean_provider.dags.notifiers import send
from pclean_provider.dags.params import run_settings
from pclean_provider.names import HASH_SEPARATOR, injective_name, short_hash
from pclean_provider.pipeline.conf_paths import RunConfRefused, outlier_snapshot
from pclean_provider.pipeline.conf_policy import allowed_roots, work_roots
from pclean_provider.pipeline.ingest import (
    MsChangedError,
    record_imaged,
    verify_against_metadata,
    write_json_atomic,
)
from pclean_provider.pipeline.notify import NotifierEvent, notify_not_imaged
from pclean_provider.pipeline.pipeline_template import PipelineTemplate, data_root_dir

RUN_XCOM = "run"  # prepare pushes the run's resolved settings under this key


def run_setting(name: str) -> str:
    """A template that renders to one of the run settings prepare pushed."""
    return "{{ ti.xcom_pull(task_ids='prepare', key='" + RUN_XCOM + "')['" + name + "'] }}"


def prepare_task(t: PipelineTemplate):
    @task(task_id="prepare", retries=0)
    def prepare(accepted: list[dict], planned: dict) -> list[dict]:
        """One validated imaging config per (MS, target) of the plan, before any cluster starts."""
        ctx = get_current_context()
        s = run_settings(t)
        items = []
        not_imaged = []
        for ms in accepted:
            # The MS must still be the one ingest checked (a redo copied over it would be imaged half).
            verify_ms_unchanged(ms)
            info = planned.get(str(Path(ms["vis"]).resolve())) or planned.get(ms["vis"]) or {}
            if "plan" not in info:
                reason = f"could not be planned: {info.get('error', 'the plan task returned nothing for it')}"
                notify_not_imaged(t.dag_id, s.run_id, ms["name"], reason, directory=s.notifications_dir)
                not_imaged.append(f"{ms['name']}: {reason}")
                continue
            plan = json.loads(Path(info["plan"]).read_text())
            for skipped in plan["skipped"]:
                print(f"{ms['name']}: not imaging {skipped['label']}: {skipped['reason']}")
            if not plan["targets"]:
                reason = "; ".join(f"{x['label']}: {x['reason']}" for x in plan["skipped"]) or "no field to image"
                notify_not_imaged(t.dag_id, s.run_id, ms["name"], reason, directory=s.notifications_dir)
                # Recorded like an imaged MS, so the next night does not plan it again (redo does).
                record_imaged(Path(s.ledger_dir), ms["name"], {"route": "not_imaged", "reason": reason,
                                                               "run_id": s.run_id})
                not_imaged.append(f"{ms['name']}: {reason}")
                continue
            items.extend(_target_items(t, s, ms, plan))
        if not_imaged:
            send(t, NotifierEvent.NOT_IMAGED, ctx)
        ctx["ti"].xcom_push(key=RUN_XCOM, value={
            "address_file": str(Path(s.run_dir) / "cluster" / "scheduler.address"),
            "cluster_overrides": s.cluster_overrides(),
            "run_dir": s.run_dir,
        })
        if not items:
            # Nothing for a cluster to do: the cluster and the per-MS paths are skipped, the run stays green.
            raise AirflowSkipException("nothing to image: " + " | ".join(not_imaged))
        for item in items:
            print(f"{item['label']}: {item['imagename']}")
        return items

    return prepare


def _target_items(t: PipelineTemplate, s, ms: dict, plan: dict) -> list[dict]:
    # Injective, unlike sanitising alone: 'a b.ms' and 'a_b.ms' must not share a product folder,
    # an archive id or a review folder (names.injective_name).
    stem = injective_name(Path(ms["name"]).stem)
    suffix = "cube" if t.kind == "cube" else "cont"
    multi = len(plan["targets"]) > 1
    items = []
    for target in plan["targets"]:
        # An MS with one target keeps the names it always had; several targets each get their own folder.
        slug = injective_name(target["slug"])
        product_dir = Path(s.run_dir) / stem
        base = stem
        if multi:
            product_dir = product_dir / slug
            base = f"{stem}.{slug}"
        imagename = product_dir / f"{base}.{suffix}"
        overrides = {**s.overrides, **target["parameters"], "vis": ms["vis"], "imagename": str(imagename)}
        label = f"{ms['name']} {target['label']}" if multi else ms["name"]
        if overrides.get("outlierfile"):
            product_dir.mkdir(parents=True, exist_ok=True)
            overrides["outlierfile"] = _checked_outlier_copy(t, label, overrides["outlierfile"], product_dir)
        try:
            cfg = load_config(presets=[s.preset] if s.preset else [], overrides=overrides)
        except (ConfigError, ValueError) as exc:
            raise AirflowFailException(f"imaging parameters for {label}: {exc}") from exc
        if t.kind == "cube" and not cfg.is_cube:
            raise AirflowFailException(f"{t.dag_id} makes cubes, but specmode={cfg.to_flat().get('specmode')!r}; "
                                       "set overrides.specmode to 'cube' (or use the continuum pipeline)")
        if t.kind == "continuum" and cfg.is_cube:
            raise AirflowFailException(f"{t.dag_id} makes continuum images, but specmode is a cube mode; "
                                       "set overrides.specmode to 'mfs'")
        timeout_s, timeout_how = _imaging_timeout(t, cfg, ms, target)
        product_dir.mkdir(parents=True, exist_ok=True)
        plan_path = write_json_atomic(product_dir / "plan.json", {
            "ms": plan["ms"], "kind": plan["kind"], "telescope": plan["telescope"], **target})
        items.append({**ms, "imagename": str(imagename), "product_dir": str(product_dir),
                      "overrides": overrides, "presets": [s.preset] if s.preset else [],
                      # No truth file: one lying beside the MS came with the landing area, which
                      # must not steer QA; a simulator's truth is given to `pclean qa --truth` explicitly.
                      "config_json": cfg.model_dump_json(),
                      "label": label, "target": target["label"], "plan_path": str(plan_path),
                      "imaging_timeout_s": timeout_s, "imaging_timeout": timeout_how,
                      "product_id": _product_id(stem, slug, t.kind, ms["name"], target["slug"], multi),
                      "review_folder": stem + (f"/{slug}" if multi else "")})
    return items


def _product_id(stem: str, slug: str, kind: str, ms_name: str, target_slug: str, multi: bool) -> str:
    """The archive id of one (MS, target). An MS with one target keeps ``<stem>_<kind>``. With several,
    the readable ``<stem>_<slug>_<kind>`` alone could equal another MS's id (MS 'a' with target 'b'
    and MS 'a_b'), so it ends in ``+`` and a hash of the exact MS name and target: a single-target
    id ends in the kind, never in a hash."""
    if not multi:
        return f"{stem}_{kind}"
    return f"{stem}_{slug}_{kind}{HASH_SEPARATOR}{short_hash(json.dumps([ms_name, target_slug]))}"


def _imaging_timeout(t: PipelineTemplate, cfg, ms: dict, target: dict) -> tuple[float, str]:
    """The bound of this target's imaging (pipeline.imaging_timeout), from its image, its channels (the
    target's spws in ingest's metadata when nchan is all) and the MS's size."""
    meta: dict = {}
    if ms.get("metadata_path"):
        try:
            meta = json.loads(Path(ms["metadata_path"]).read_text())
        except (OSError, ValueError):
            meta = {}  # the size then counts only the image: the bound is still there, a little shorter
    nx, ny = cfg.image.shape()
    nchan = 1
    if cfg.is_cube:
        spws = set(target.get("spws") or [])
        nchan = cfg.spectral.nchan if cfg.spectral.nchan > 0 else sum(
            int(s.get("nchan") or 0) for s in meta.get("spws") or [] if not spws or s.get("id") in spws)
    return t.imaging_timeout.bound(nx, ny, nchan, float(meta.get("size_bytes") or 0))


def _checked_outlier_copy(t: PipelineTemplate, label: str, path: str, product_dir: Path) -> str:
    """The outlier file the imaging reads: the named file's text, its paths judged (image names in the work
    roots, what it reads in the data roots) and copied into the product folder, so that a change to the
    original after this check reaches nothing."""
    root = data_root_dir()
    try:
        return outlier_snapshot(path, allowed_roots(t, root), work_roots(t, root), root,
                                product_dir / "outlierfile.txt")
    except RunConfRefused as exc:
        raise AirflowFailException(f"imaging parameters for {label}: {exc}") from exc


def verify_ms_unchanged(ms: dict) -> None:
    if ms.get("metadata_path"):
        try:
            verify_against_metadata(ms["vis"], ms["metadata_path"], "imaging")
        except MsChangedError as exc:
            raise AirflowFailException(str(exc)) from exc
