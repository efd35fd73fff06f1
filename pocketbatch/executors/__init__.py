"""Executors for scale-out, each behind the batch runner's executor seam.

``pocketbatch.executors.ray`` (the ``[ray]`` extra) runs items on a Ray cluster.
Nothing here is imported by ``import pocketbatch``.
"""
