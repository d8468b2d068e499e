"""The package logger. Lazy ``%s`` arguments only; the CLI decides what the user sees."""

import logging
import os
import warnings

from zk0cli.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())

# Loggers of libraries whose warnings are noise for zk0 users: LeRobot prints a long
# traceback when torchcodec is installed without system FFmpeg libraries and then falls
# back to PyAV, which zk0 selects explicitly anyway (data.video_backend = "pyav").
_NOISY = {"lerobot.utils.import_utils": logging.ERROR}


def quiet_libraries() -> None:
    """Silence known-harmless third-party warnings and progress bars (idempotent)."""
    for name, level in _NOISY.items():
        logging.getLogger(name).setLevel(level)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message="Cannot enable progress bars")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
