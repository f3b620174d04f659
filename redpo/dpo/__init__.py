"""Stage 03: DPO preference pairs, the two LoRA adapters, and generation with them."""
