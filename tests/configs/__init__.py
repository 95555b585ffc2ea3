"""Tests of the configs/ files: they load, lock, check, and run."""
