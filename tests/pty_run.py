"""Run a command on a pseudo-terminal and return what it printed there: for the tests of live progress bars
(`lmp-pretrain`, `lmp-bench`, the sweeps), which draw only when stderr is a terminal.

Import it with `sys.path.insert(0, str(Path(__file__).resolve().parents[1]))` from a test folder.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_on_a_terminal(
    cmd: Sequence[str],
    *,
    cwd: str | Path,
    env: Mapping[str, str],
    size: tuple[int, int] | None = None,
    timeout: float = 600,
) -> tuple[int, str]:
    """(exit status, everything written to the terminal) of `cmd` with stdin, stdout and stderr on one
    pseudo-terminal of `size` (rows, columns; None: unsized). A command silent for `timeout` seconds is
    killed."""
    master, slave = pty.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=dict(env), stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            if not select.select([master], [], [], timeout)[0]:
                proc.kill()
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(timeout=60)
    finally:
        os.close(master)
    return rc, b"".join(chunks).decode("utf-8", "replace")
