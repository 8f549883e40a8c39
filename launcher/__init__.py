"""Placement and launching: Ray placement groups reserve a gang of ranks, mpirun starts them.

Runs in the driver / launcher process, never inside a rank.
"""
