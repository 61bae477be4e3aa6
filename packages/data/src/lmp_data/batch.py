"""The window batch: the one structure `lmp_data` hands to `lmp_model`.

`ShotWindows` yields one window of `k` consecutive shots of one movie; `collate_windows` stacks N of
them into a dict of tensors (float32 unless noted). Padding is always zeros and always masked.

| key           | shape         | meaning                                                               |
|---------------|---------------|-----------------------------------------------------------------------|
| `video`       | [N, k, Dv]    | base video feature of each shot                                       |
| `audio`       | [N, k, Da]    | base audio feature of each shot                                       |
| `shot_mask`   | [N, k] bool   | True where the shot exists (False: padding past the end of the movie) |
| `text`        | [N, T, Dl]    | language tokens whose time span overlaps the window; T = max in batch, at least 1 |
| `text_mask`   | [N, T] bool   | True for a real token                                                 |
| `token_shot`  | [N, T, k] bool| token t's span overlaps shot i of the window (a token may span several shots) |
| `start`       | [N] int64     | index of the window's first shot in its movie                         |
| `movie`       | list[str]     | movie id of each window                                               |
"""

BATCH_KEYS = ("video", "audio", "shot_mask", "text", "text_mask", "token_shot", "start", "movie")
