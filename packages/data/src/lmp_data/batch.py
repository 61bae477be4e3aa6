"""The window batch: the one structure `lmp_data` hands to `lmp_model`.

`ShotWindows` yields one window of `k` consecutive shots of one movie; `collate_windows` stacks N of
them into a dict of tensors (float32 unless noted). Padding is always zeros and always masked.
`ShotWindows.__getitems__` builds the same dict for a list of indices in one vectorised pass (what a
`DataLoader(ds, batch_size=N, collate_fn=collate_windows)` uses); `lmp_data.gather.WindowGather` makes
every batch, on whatever device the store's tensors live.

| key           | shape         | meaning                                                               |
|---------------|---------------|-----------------------------------------------------------------------|
| `video`       | [N, k, Dv]    | base video feature of each shot                                       |
| `audio`       | [N, k, Da]    | base audio feature of each shot                                       |
| `shot_mask`   | [N, k] bool   | True where the shot exists (False: padding past the end of the movie) |
| `text`        | [N, T, Dl]    | language tokens whose time span overlaps the window's time range, in order of span start; T = max in batch, at least 1 |
| `text_mask`   | [N, T] bool   | True for a real token                                                 |
| `token_shot`  | [N, T, k] bool| token t's span overlaps shot i of the window (a token may span several shots, or none if it lies in a gap between shots) |
| `start`       | [N] int64     | index of the window's first shot in its movie                         |
| `movie`       | list[str]     | movie id of each window                                               |

Overlap of a span [a, b] with a shot [c, d]: `a < d and b > c`; a zero-length span (a == b) overlaps
when `c <= a <= d`. A window's time range is [start of its first shot, end of its last real shot].
A modality the store does not have (`FeatureStore.modalities`, e.g. no audio in a MAD import) keeps its
keys with a feature width of 0: `audio` [N, k, 0]; without language `text` [N, 1, 0], `text_mask` and
`token_shot` all False. Models read only the modalities they were built for.
A single window item (`ShotWindows[i]`) has `video` [k, Dv], `audio` [k, Da], `shot_mask` [k],
`text` [T_i, Dl], `token_shot` [T_i, k], `start` int and `movie` str (no `text_mask`).
"""

MODALITIES = ("video", "audio", "text")
"""The three base-feature modalities, in the order the paper names them (video, audio, language); every
package takes them from here."""

DEFAULT_K = 30
"""Shots per window when nothing else says (the paper's k; its ablations use 10 and 60)."""

BATCH_KEYS = ("video", "audio", "shot_mask", "text", "text_mask", "token_shot", "start", "movie")
