"""The task bodies of the pipeline DAGs that are not provider operators: each builds a task for one
pipeline template; the heavy ones run `pclean <subcommand>` in a subprocess."""
