"""Training objectives: what a batch holds, the loss and its parts, which model parts, the evaluation.

The protocol and the types an objective returns are in :mod:`pgmm_core.objectives.base` (public API
for plugins); the built-in ``caption`` objective (BLIP-2 stage 2) is :mod:`pgmm_core.objectives.caption`.
"""
