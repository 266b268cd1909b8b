"""Named model specs: the models Prism learns, by name.

Adding a spec is one module with a :class:`~models.specs.base.ModelSpec`
subclass (and its :class:`~models.specs.algebra.SummaryAlgebra` subclass)
plus one line in ``_REGISTRY`` below; the contract suite in
``tests/unit/models/test_specs_contract.py`` then runs over it automatically.

Examples
--------
>>> get_spec("fraud-linear").task
'fraud'
>>> SPEC_NAMES
('fraud-linear', 'iot-gauss', 'iot-hst')
"""

from __future__ import annotations

from models.errors import UnknownSpecError
from models.specs.base import ModelSpec
from models.specs.fraud_linear import FraudLinear
from models.specs.iot_gauss import IotGauss
from models.specs.iot_hst import IotHST

__all__ = ["SPEC_NAMES", "ModelSpec", "get_spec", "specs_for_task"]

_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec for spec in (FraudLinear(), IotGauss(), IotHST())
}

SPEC_NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``.

    Raises
    ------
    UnknownSpecError
        With the list of known names, so a typo in a setting is obvious.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError) as e:
        raise UnknownSpecError(
            f"unknown model spec {name!r}; known specs: {', '.join(SPEC_NAMES)}"
        ) from e


def specs_for_task(task: str) -> tuple[str, ...]:
    """Names of the specs that serve ``task`` ("fraud" or "iot")."""
    return tuple(n for n in SPEC_NAMES if _REGISTRY[n].task == task)
