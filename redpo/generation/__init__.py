"""Stages 01-02: prompts, the generation loops, the call cache, arms and their diversity (notebooks 01, 02)."""
