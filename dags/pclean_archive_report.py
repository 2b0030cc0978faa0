"""Airflow DAG: a report over the products the pclean pipelines archive (scheduled on their assets)."""
from pclean_provider.dags.report import build_report_dag

dag = build_report_dag()
