"""attention-zoo: attention models across domains on one shared attention core.

``import zoo`` is cheap: the registry functions below import :mod:`zoo.hub` on first use, and the
hub imports a domain package only when one of its models is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["list_models", "create_model", "load_pretrained", "load_official", "save_pretrained", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .hub import create_model, list_models, load_official, load_pretrained, save_pretrained


def __getattr__(name: str) -> Any:
    if name in ("list_models", "create_model", "load_pretrained", "load_official", "save_pretrained"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
