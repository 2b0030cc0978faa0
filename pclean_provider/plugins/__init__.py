"""Airflow plugins of the provider, loaded by every Airflow component through the `airflow.plugins` entry point."""
