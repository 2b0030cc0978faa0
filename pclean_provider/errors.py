"""What "the input is wrong" means everywhere in the project, and how to recognise it.

A wrong parameter, a missing or broken MeasurementSet, a selection that matches nothing: running
the same work again cannot help, so the Airflow operators fail such a task at once instead of
retrying it, and the command line prints the message without a traceback. Every error class of
the project that means this derives from :class:`PcleanInputError`.

An error raised on a Dask worker reaches the Airflow side either as the exception itself (a
client's ``future.result()`` unpickles it) or, when only the scheduler was asked, as the names of
its class and of every base class (its *lineage*): the class alone, by name, could only be judged
by importing the module that defines it, which may be a CASA module the Airflow worker must not
load. Standard library only and no project imports, so every layer can use this module.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable

__all__ = ["PcleanInputError", "error_lineage", "is_input_error", "lineage_of_pickled_error", "unpickled_error"]


class PcleanInputError(ValueError):
    """The caller's input is wrong; the message names the parameter and the fix.

    A ValueError too, so that a caller's ``except ValueError`` catches it.
    """


_INPUT_ERROR_NAME = f"{PcleanInputError.__module__}.{PcleanInputError.__qualname__}"


def error_lineage(error: BaseException | type[BaseException]) -> list[str]:
    """``module.QualName`` of the error's class and of every base class, the class itself first.

    Plain strings, so it can cross a process boundary (a scheduler reply, a trigger event) as JSON.
    """
    cls = error if isinstance(error, type) else type(error)
    return [f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]


def unpickled_error(data: bytes) -> BaseException | None:
    """A pickled exception (as Dask keeps a failed task's), or None if unreadable.

    Unpickling imports the module that defines the class, so call this where that is harmless
    (on the Dask scheduler), never in an Airflow worker. None when the class cannot be imported
    there (a scheduler without this package).
    """
    try:
        # Bytes that this project's own workers sent to its own scheduler, not outside input.
        error = pickle.loads(data)
    except Exception:
        return None
    return error if isinstance(error, BaseException) else None


def lineage_of_pickled_error(data: bytes) -> list[str] | None:
    """The lineage of a pickled exception, or None if unreadable (see :func:`unpickled_error`):
    an error whose class cannot be imported counts as not an input error."""
    error = unpickled_error(data)
    return None if error is None else error_lineage(error)


def is_input_error(error: BaseException | type[BaseException] | Iterable[str] | None) -> bool:
    """Whether an error means "the input is wrong" (retrying cannot help).

    ``error`` is an exception, an exception class, or a lineage from :func:`error_lineage` /
    :func:`lineage_of_pickled_error`. None (nothing known about the error) gives False.
    """
    if error is None:
        return False
    if isinstance(error, BaseException):
        return isinstance(error, PcleanInputError)
    if isinstance(error, type):
        return issubclass(error, PcleanInputError)
    if isinstance(error, str):
        raise TypeError("is_input_error takes a lineage (a list of 'module.QualName'), not one name; "
                        "a class name alone cannot tell, see pclean_provider.errors")
    return _INPUT_ERROR_NAME in error
