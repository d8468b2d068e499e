"""The package logger. Lazy ``%s`` arguments only; the CLI decides what the user sees."""

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zk0cli.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())

# Loggers of libraries whose warnings are noise for zk0 users: LeRobot prints a long
# traceback when torchcodec is installed without system FFmpeg libraries and then falls
# back to PyAV, which zk0 selects explicitly anyway (data.video_backend = "pyav").
# absl: dp-accounting notes each RDP order it excludes ("failed to converge"), per epsilon
_NOISY = {"lerobot.utils.import_utils": logging.ERROR, "absl": logging.ERROR}


def quiet_libraries() -> None:
    """Silence known-harmless third-party warnings and progress bars (idempotent)."""
    for name, level in _NOISY.items():
        logging.getLogger(name).setLevel(level)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message="Cannot enable progress bars")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def is_verbose() -> bool:
    """Whether the user asked for library output (``zk0 -v``: the zk0 logger at DEBUG)."""
    return logger.getEffectiveLevel() <= logging.DEBUG


@contextmanager
def native_stderr_to(path: Path | None) -> Iterator[None]:
    """Send what C libraries write to file descriptor 2 into ``path`` (appended).

    Encoders such as SVT-AV1 (``Svt[info]`` banners) and FFmpeg's muxer (``[mp4 @ 0x...]``
    lines) write straight to fd 2, below Python's ``sys.stderr``; only redirecting the
    descriptor moves them. Python-level stderr is flushed before and after.

    Args:
        path: Log file to append to; ``None`` (or ``zk0 -v``) leaves fd 2 alone.
    """
    if path is None or is_verbose():
        yield
        return
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


class _LogWriter:
    """A text stream whose complete lines become INFO records of the zk0 logger.

    INFO reaches the log files; the console shows it only with ``zk0 -v``.
    """

    def __init__(self, source: str) -> None:
        self.source, self._buf = source, ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():
                logger.info("%s: %s", self.source, line)
        return len(text)

    def flush(self) -> None:
        if self._buf.strip():
            logger.info("%s: %s", self.source, self._buf)
        self._buf = ""


@contextmanager
def library_prints(source: str) -> Iterator[None]:
    """Turn a library's ``print()`` output into log lines (log files; the console with ``-v``).

    LeRobot prints "Reducing the number of VLM layers ..." and "Loading weights from
    local directory" on every policy build; they belong in the log, not on the console.

    Args:
        source: Name prefixed to each line (e.g. ``"lerobot"``).
    """
    import contextlib

    writer = _LogWriter(source)
    with contextlib.redirect_stdout(writer):  # type: ignore[type-var]
        try:
            yield
        finally:
            writer.flush()
