"""Exceptions of the ``model`` package: one root, subclasses that name what went wrong."""

from __future__ import annotations


class ModelError(Exception):
    """Root of every error raised by :mod:`model`."""


class ConfigError(ModelError, ValueError):
    """A configuration is invalid or inconsistent (e.g. image size not a multiple of 8·2^k)."""


class DatasetError(ModelError):
    """A dataset folder is missing, an image is unreadable, or a mask does not match its image."""


class ArtefactError(ModelError):
    """A model directory is missing files, is corrupt, mismatched, or would need unpickling."""
