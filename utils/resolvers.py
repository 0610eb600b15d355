"""Config resolvers (``${df.<name>:...}``) for data facts that YAML interpolation cannot compute by itself.

Registered on import; ``experiments.build`` and ``main.py`` import this module, so every composed config can use
them.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def default_lags(freq_or_name: str) -> list[int]:
    """TimeGrad's lag set for a pandas frequency (``H``, ``B``, ``30min`` …) or for a known GluonTS benchmark name."""
    from datasets.timeseries.features import default_lags as lags_for
    from datasets.timeseries.sources import GLUONTS_SPECS

    spec = GLUONTS_SPECS.get(str(freq_or_name))
    return lags_for(spec.freq if spec is not None else str(freq_or_name))


def gluonts_prediction_length(name: str) -> int:
    """The benchmark's prediction length (e.g. 30 for ``exchange_rate_nips``)."""
    from datasets.timeseries.sources import GLUONTS_SPECS

    if name not in GLUONTS_SPECS:
        raise ValueError(f"unknown GluonTS data set dataset.name={name!r}; known: {sorted(GLUONTS_SPECS)}")
    return GLUONTS_SPECS[name].prediction_length


def multiply(*factors: int) -> int:
    """``${df.mul:2,${algorithm.frame_stack}}``: a product of integers (e.g. frames of a whole number of tokens)."""
    product = 1
    for factor in factors:
        product *= int(factor)
    return product


def register() -> None:
    resolvers = (
        ("df.default_lags", default_lags),
        ("df.prediction_length", gluonts_prediction_length),
        ("df.mul", multiply),
    )
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register()
