"""Reactors: followers of the ledger that act on the outside world.

The builder, the dyno manager and the router table arrive with the build and run issues.
"""
