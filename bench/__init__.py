"""Benchmarks: ``python -m bench`` (``make bench``) prints one table of ratios.

Every figure is compared with a baseline measured in the same run on the same
machine (raw plyvel, bare trio channels), because machines here are noisy.
"""
