"""`lmp-data ingest`: movie files -> shots -> per-shot audio -> language timeline -> frozen encoders -> store.

Modules mirror the steps: `shots`, `audio`, `language`, `encoders` (registry), `pipeline` (its decoder
thread: `decode`), `command`; `media.write_demo_media` generates real movie files for the demo and tests.
"""

from lmp_data.ingest.errors import IngestError, MediaError, SubtitleError, WeightsError

__all__ = ["IngestError", "MediaError", "SubtitleError", "WeightsError"]
