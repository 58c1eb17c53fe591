"""Numerical MR building blocks on numpy arrays: FFTs, noise, coil maps, oversampling."""
