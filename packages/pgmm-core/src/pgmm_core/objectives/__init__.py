"""Training objectives: what a batch holds, the loss and its parts, which model parts, the evaluation.

The protocol and the types an objective returns are in :mod:`pgmm_core.objectives.base` (public API
for plugins); the built-in objectives are ``caption`` (BLIP-2 stage 2, :mod:`pgmm_core.objectives.caption`),
``vqa`` (:mod:`pgmm_core.objectives.vqa`) and ``instruct`` (:mod:`pgmm_core.objectives.instruct`).
"""
