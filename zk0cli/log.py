"""The package logger. Lazy ``%s`` arguments only; the CLI decides what the user sees."""

import logging

from zk0cli.constants import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)
logger.addHandler(logging.NullHandler())
