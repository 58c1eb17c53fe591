"""Evaluation of the reconstruction methods against baselines (`adacsc evaluate`)."""
