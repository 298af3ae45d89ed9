"""The ``droppick`` command line: ``main`` (plan, train, compare, demo, inspect, eval, models, recipes)
and ``transfer`` (export, transfer, compare-transfer), with their shared ``args``."""

from .main import main

__all__ = ["main"]
