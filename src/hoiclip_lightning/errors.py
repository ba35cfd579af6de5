"""Exception families raised by hoiclip-lightning.

One exception type per kind of failure, so callers can catch precisely:

* :class:`DatasetNotFoundError` -- a dataset root or one of its required files is missing.
* :class:`AnnotationError` -- an annotation record is malformed; the message names file, record, field.
* :class:`ConfigurationError` -- a constructor or config value is outside its accepted set.
* :class:`CheckpointError` -- a checkpoint or embedding file does not fit the model it is loaded into.
* :class:`CheckpointNotFoundError` -- a checkpoint asked for (``--ckpt_path last``) does not exist.
* :class:`NonFiniteLossError` -- training met a NaN/inf (batch, outputs, loss, gradients or a checkpoint to write).
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


class CheckpointNotFoundError(HOICLIPError, FileNotFoundError):
    """A checkpoint that a run asked for does not exist (``--ckpt_path last`` with no ``last.ckpt``).

    The message names the folders searched.
    """


class NonFiniteLossError(HOICLIPError, RuntimeError):
    """Training met a NaN or infinite value: in a batch, the model outputs, the loss or the gradients.

    The message names the step, the images of the batch and (when the
    :class:`~hoiclip_lightning.callbacks.NonFiniteLossCheckpoint` guard ran) the checkpoint holding the
    last finite state. Also raised instead of writing a checkpoint whose weights or optimizer state are
    not finite.
    """
