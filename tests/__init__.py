"""The test suite, a package mirroring optical_jax: tests/<layer>/test_<module>.py.

Each folder is a package, so test modules of one name in two layers do not collide,
and the shared helpers import by their package path (`from tests import defaults`).
"""
