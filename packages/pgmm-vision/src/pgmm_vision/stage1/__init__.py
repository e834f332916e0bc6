"""BLIP-2 stage 1: Q-Former pretraining (ITC, ITM, ITG) and its zero-shot image-text retrieval evaluation."""
