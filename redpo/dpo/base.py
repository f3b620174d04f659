"""The generator the DPO adapters sit on: a private copy to train, and the name to load it by again.

PEFT injects LoRA layers *in place*, and the model cache shares one object with every other caller, so training
and evaluation each get a copy loaded fresh after ``clear_model_cache()``.
"""

from __future__ import annotations

from redpo.config import Profile
from redpo.generation.arms import prepare_generator
from redpo.generation.smoke_fit import fitted_tiny_llama_info
from redpo.models.load import clear_model_cache
from redpo.models.registry import LoadedModel


def fresh_generator(profile: Profile) -> LoadedModel:
    """A private copy of the profile's generator: training mutates it, so the shared cache must not hold it."""
    clear_model_cache()
    loaded = prepare_generator(profile)
    clear_model_cache()
    return loaded


def base_model_name(profile: Profile) -> str:
    """What ``load_causal_lm`` needs to rebuild the generator: the fitted tiny model's dir on smoke, else the
    profile's model name."""
    if profile.generator.fit.steps > 0:
        return str(fitted_tiny_llama_info(profile).path)
    return profile.generator.model

