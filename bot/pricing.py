"""What an image costs, in credits, held as integer thousandths so sums never drift."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

MILLI = 1000
SIZES = ("1:1", "2:3", "3:2", "1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("auto", "low", "medium", "high")
PRICED_QUALITIES = ("low", "medium", "high")

# Credits per image for gpt-image-1.5 (EvoLink's pricing table), by quality and by shape:
# "square" is 1:1 / 1024x1024, "tall_or_wide" is 2:3, 3:2, 1024x1536 and 1536x1024.
GPT_IMAGE_15_PRICES: dict[str, dict[str, str]] = {
    "low": {"square": "0.509", "tall_or_wide": "0.749"},
    "medium": {"square": "1.958", "tall_or_wide": "2.879"},
    "high": {"square": "7.657", "tall_or_wide": "11.256"},
}


def to_milli(credits: Decimal | float | str | int) -> int:
    """Credits to thousandths, rounding up so an estimate never falls short."""
    return int((Decimal(str(credits)) * MILLI).to_integral_value(rounding=ROUND_CEILING))


def format_credits(milli: int) -> str:
    """Thousandths to a display string with no float noise: 1958 -> '1.958', 20000 -> '20'."""
    text = f"{Decimal(milli) / MILLI:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def shape_of(size: str) -> str:
    return "square" if size in ("1:1", "1024x1024") else "tall_or_wide"


@dataclass(frozen=True)
class PriceTable:
    """Prices per model; `auto` quality is estimated at the highest price for the size."""

    prices: dict[str, dict[str, dict[str, int]]]

    @classmethod
    def default(cls, extra_json: str = "") -> PriceTable:
        """The built-in table, plus other models' prices given as JSON in the same shape."""
        raw: dict[str, dict[str, dict[str, str]]] = {"gpt-image-1.5": GPT_IMAGE_15_PRICES}
        if extra_json.strip():
            raw.update(json.loads(extra_json))
        return cls(
            {
                model: {
                    quality: {shape: to_milli(price) for shape, price in shapes.items()}
                    for quality, shapes in table.items()
                }
                for model, table in raw.items()
            }
        )

    def estimate(self, model: str, quality: str, size: str) -> int:
        """The thousandths of a credit to reserve for one image."""
        table = self.prices.get(model) or self.prices["gpt-image-1.5"]
        shape = shape_of(size)
        if quality in table:
            return table[quality][shape]
        return max(prices[shape] for prices in table.values())
