from . import log  # noqa: F401 - the package logger's handlers, before any module logs
