"""Tests of launch/: the TPU scripts and the Colab notebook."""
