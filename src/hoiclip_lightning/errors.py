"""Exception families raised by hoiclip-lightning.

One exception type per kind of failure, so callers can catch precisely:

* :class:`DatasetNotFoundError` -- a dataset root or one of its required files is missing.
* :class:`AnnotationError` -- an annotation record is malformed; the message names file, record, field.
* :class:`ConfigurationError` -- a constructor or config value is outside its accepted set.
* :class:`CheckpointError` -- a checkpoint or embedding file does not fit the model it is loaded into.
"""

from __future__ import annotations


class HOICLIPError(Exception):
    """Base class of every error raised by this library."""


class DatasetNotFoundError(HOICLIPError, FileNotFoundError):
    """A dataset root, annotation file or image is missing."""


class AnnotationError(HOICLIPError, ValueError):
    """An annotation record is malformed (the message names the file, the record and the field)."""


class ConfigurationError(HOICLIPError, ValueError):
    """A configuration value is invalid (the message lists the accepted values)."""


class CheckpointError(HOICLIPError, ValueError):
    """A checkpoint or embedding file does not match the model or vocabulary it is loaded into."""
