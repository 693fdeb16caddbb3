"""Evaluation: a metric registry with bootstrap confidence intervals and subgroup breakdowns, suites and gates.

:mod:`.metrics` is the maths (reusing scikit-learn and MONAI); the suites and release gates build on it.
"""
