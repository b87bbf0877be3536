"""What the benchmark scripts share: a vocabulary for realistic record text, and JSON-line output.

The scripts run as ``python bench/NAME.py``, so this module is imported by its plain name.
"""

from __future__ import annotations

import json
from typing import Any

WORDS = [
    "bread",
    "sourdough",
    "flour",
    "rye",
    "oven",
    "yeast",
    "crust",
    "bike",
    "repair",
    "chain",
    "wheel",
    "brake",
    "tyre",
    "saddle",
    "gear",
    "book",
    "shop",
    "novel",
    "poetry",
    "history",
    "map",
    "guide",
    "recipe",
    "price",
    "list",
    "catalogue",
    "ebook",
    "howto",
    "tutorial",
    "bakery",
    "market",
    "town",
    "cheese",
    "coffee",
    "roast",
    "bean",
    "wood",
    "craft",
    "knit",
    "yarn",
    "garden",
    "seed",
    "compost",
    "solar",
    "panel",
    "battery",
    "lamp",
    "workshop",
    "tool",
    "hinge",
    "paint",
    "varnish",
    "café",
    "crème",
    "brûlée",
    "straße",
]


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    """One JSON line ``{"name", "value", "unit", ...}``, printed at once (runs are long)."""
    line: dict[str, Any] = {"name": name, "value": round(value, 3), "unit": unit, **extra}
    print(json.dumps(line), flush=True)
