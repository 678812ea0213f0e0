"""Destination functions: a destination whose "vendor" is a Python function in a worker
process (:mod:`headwater.functions`); the engine batches, retries and records as usual."""

from headwater.destinations.function.client import FunctionDestination

__all__ = ["FunctionDestination"]
