"""The ``droppick`` command line: ``main`` (train, compare, demo, inspect, eval, models), ``plan`` (plan,
recipes) and ``transfer`` (export, transfer, compare-transfer), with their shared ``args``."""

from .main import main

__all__ = ["main"]
