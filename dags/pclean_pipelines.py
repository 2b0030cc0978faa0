"""Airflow DAGs of the pclean pipelines, one per pipeline template (built by pclean_provider.dags)."""
from pclean_provider.dags import build_dags

globals().update(build_dags())
