"""Airflow DAG: keep the site copy of CASA's measures data current (weekly)."""
from pclean_provider.dags.measures import build_measures_dag

dag = build_measures_dag()
