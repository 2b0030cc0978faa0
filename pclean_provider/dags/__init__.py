"""The DAG factory: the nightly pipeline DAGs built from the pipeline templates.

A site's DAG folder needs one file that does ``globals().update(build_dags())``.
"""

from pclean_provider.dags.builder import build_dag, build_dags

__all__ = ["build_dag", "build_dags"]
