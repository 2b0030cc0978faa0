"""Provider metadata for Airflow's provider discovery (entry point ``apache_airflow_provider``).

Kept free of heavy imports: Airflow calls this in every process that lists providers. The
connection form is declared here (``conn-fields``, ``ui-field-behaviour``) rather than in hook
methods, so the UI can draw it without importing the hook. Only keys of Airflow's
provider_info.schema.json: Airflow takes the version from the installed package's metadata, so
there is no ``versions`` key.
"""

from pclean_provider.airflow_config import provider_config

INTEGRATION = "pclean (CASA imaging on Dask)"
CONN_TYPE = "pclean_dask"


def _text(label: str, description: str, default=None, **schema) -> dict:
    return {"label": label, "description": description,
            "schema": {"type": ["string", "null"], **({"default": default} if default is not None else {}),
                       **schema}}


def _integer(label: str, description: str, default=None, minimum: int = 1) -> dict:
    return {"label": label, "description": description,
            "schema": {"type": ["integer", "null"], "minimum": minimum,
                       **({"default": default} if default is not None else {})}}


CONN_FIELDS = {
    "cluster_type": {
        "label": "Cluster type",
        "description": "local: a Dask LocalCluster on the Airflow/cluster-host machine; slurm: workers as "
                       "SLURM jobs (dask-jobqueue); address: an existing scheduler (Host and Port).",
        "schema": {"type": "string", "enum": ["local", "slurm", "address"], "default": "local"},
    },
    "address_file": _text("Cluster host address file",
                          "File written by `pclean cluster up` / ClusterUpOperator; used when Host is empty."),
    "tls_directory": _text("Cluster certificate folder",
                           "Folder with the cluster's cluster.pem and cluster.key (mutual TLS) for a scheduler "
                           "given by Host and Port; a cluster host's address file names its own. A tcp:// "
                           "scheduler is refused unless [pclean] allow_plaintext_dask is set."),
    "nworkers": _integer("Workers", "Number of Dask workers (SLURM jobs); empty means the number of CPUs."),
    "threads_per_worker": _integer("Threads per worker", "Keep 1: CASA tools are not thread-safe.", 1),
    "memory_limit": _text("Worker memory limit", "Dask memory limit per worker; '0' switches Dask's memory "
                          "manager off (it cannot see casatools' allocations).", "0"),
    "local_directory": _text("Worker scratch directory", "Scratch folder of the Dask workers."),
    "worker_start_timeout": {"label": "Worker start timeout (s)",
                             "description": "Seconds to wait for the first worker before failing.",
                             "schema": {"type": ["number", "null"], "default": 300}},
    "slurm_queue": _text("SLURM partition", "--partition of the worker jobs."),
    "slurm_account": _text("SLURM account", "--account of the worker jobs."),
    "slurm_walltime": _text("SLURM wall time", "--time of each worker job.", "24:00:00"),
    "slurm_job_mem": _text("SLURM job memory", "--mem of each worker job.", "20GB"),
    "slurm_cores_per_job": _integer("SLURM CPUs per job", "--cpus-per-task of each worker job.", 1),
    "slurm_python": _text("Python on compute nodes", "Interpreter the worker jobs run (default: the cluster "
                          "host's, i.e. [pclean] casa_python, else the Airflow worker's)."),
    "slurm_local_directory": _text("Scratch on compute nodes", "Worker scratch folder on the compute nodes."),
    "slurm_log_directory": _text("SLURM log directory", "Folder for the worker jobs' stdout/stderr.", "logs"),
    "slurm_job_extra_directives": _text("Extra #SBATCH lines", "One directive per line.", format="multiline"),
    "slurm_job_script_prologue": _text("Job prologue", "Shell lines run before each worker (module load, "
                                       "conda activate), one per line.", format="multiline"),
}


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-pclean",
        "name": "pclean",
        "description": "Parallel CASA CLEAN imaging (cube and continuum) on Dask, locally or on SLURM.",
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://casadocs.readthedocs.io/en/stable/api/tt/casatasks.imaging.tclean.html",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": ["pclean_provider.hooks.dask"]}],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "pclean_provider.operators.cluster",
                    "pclean_provider.operators.cube",
                    "pclean_provider.operators.continuum",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["pclean_provider.triggers.dask", "pclean_provider.triggers.landing"],
            }
        ],
        "extra-links": ["pclean_provider.links.dask.DaskDashboardLink",
                        "pclean_provider.links.qa_report.QaReportLink",
                        "pclean_provider.links.qa_report.QaNightLink"],
        "notifications": ["pclean_provider.dags.notifiers.FileTaskFailureNotifier"],
        # The `airflow.plugins` entry point loads it too (Airflow's own providers declare both): the
        # entry point is what loads it while providers are discovered lazily, Airflow's default.
        "plugins": [
            {"name": "pclean", "plugin-class": "pclean_provider.plugins.plugin.PcleanPlugin"}
        ],
        "config": provider_config(),
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "pclean_provider.hooks.dask.PcleanDaskHook",
                "hook-name": "pclean Dask cluster",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "password"],
                    "relabeling": {"host": "Scheduler host (cluster type 'address')",
                                   "port": "Scheduler port"},
                    "placeholders": {"host": "tls://dask-scheduler.example.org", "port": "8786",
                                     "extra": '{"cluster_type": "slurm", "slurm_queue": "batch"}'},
                },
            }
        ],
    }
