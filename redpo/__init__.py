"""redpo: a reproducible companion to Li, Dai & Li (ACL 2025), *Generating Diverse Training Samples for
Relation Extraction with Large Language Models* (arXiv 2505.23108)."""

from redpo.config import Profile, load_profile
from redpo.core.sample import RESample

__all__ = ["Profile", "RESample", "load_profile"]
__version__ = "0.1.0"
