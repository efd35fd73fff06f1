"""Executors for scale-out, each behind the batch runner's executor seam.

``pocketbatch.executors.ray`` (the ``[ray]`` extra) runs items on a Ray cluster;
:func:`open_shared_executors` gives the batches of one long-running process (the
server) their executors, sharing what is costly to start (a Ray connection and
its actors). Nothing here is imported by ``import pocketbatch``.
"""

from pocketbatch.executors._shared import SharedExecutors, open_shared_executors

__all__ = ("SharedExecutors", "open_shared_executors")
