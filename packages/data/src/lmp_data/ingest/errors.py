"""Errors of the ingest steps: each names the file (or movie) and what was expected."""

from __future__ import annotations

from pathlib import Path


class IngestError(Exception):
    """A movie could not be ingested; `path` names the offending file."""

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class MediaError(IngestError):
    """A video/audio file cannot be opened or decoded."""


class SubtitleError(IngestError):
    """A subtitle or audio-description file cannot be read or parsed."""


class WeightsError(IngestError, FileNotFoundError):
    """An encoder weight file (or folder) named in the config is missing or unreadable."""
