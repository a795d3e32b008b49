"""Token usage and its cost: the price table and how per-model sums become a `usage` object.

A `usage` object (jobs, sessions, offices, the /usage table) is

    {input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens,
     model, cost_usd, responses, models}

summed over model responses. `model` is the model when all of them used one, else null
(`models` has the sums per model). `cost_usd` is priced per model from the configured
table; if any response used a model the table does not name, `cost_usd` is null: a total
that leaves part out would be a guess.

Prices are USD per million tokens, for the Claude API's and OpenAI's standard (non-batch)
list prices. OpenAI charges nothing for writing its prompt cache (`cache_write` 0) and bills
cached input at the `cache_read` rate.
Not modelled (a total priced here is list price for what the transcript records): the
Batch API discount, fast mode, and prompt-length price bands (models that have them, such
as Claude Haiku 5.5, are left out of the defaults so that they price as null).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field

#: when the default prices below were taken, and from where
PRICES_TAKEN = ("2026-12-01, from the model pages of platform.claude.com; OpenAI's "
                "2026-12-07, from the model pages of developers.openai.com")

TOKEN_KINDS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation_input_tokens")


class ModelPrice(BaseModel):
    """USD per million tokens. `cache_write` is the 5-minute cache write; `cache_write_1h`
    the 1-hour one (default: twice the input price, as Anthropic prices it)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float = Field(ge=0)
    cache_write: float = Field(ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)

    def cost(self, sums: Mapping[str, int]) -> float:
        """The cost of `sums` (token counts; `cache_creation_1h_input_tokens` is the part of
        `cache_creation_input_tokens` written to the 1-hour cache)."""
        one_hour = sums.get("cache_creation_1h_input_tokens", 0)
        five_min = sums.get("cache_creation_input_tokens", 0) - one_hour
        write_1h = self.cache_write_1h if self.cache_write_1h is not None else 2 * self.input
        return (sums.get("input_tokens", 0) * self.input
                + sums.get("output_tokens", 0) * self.output
                + sums.get("cache_read_input_tokens", 0) * self.cache_read
                + five_min * self.cache_write + one_hour * write_1h) / 1_000_000


def _p(i: float, o: float, read: float, write: float, write_1h: float) -> ModelPrice:
    return ModelPrice(input=i, output=o, cache_read=read, cache_write=write,
                      cache_write_1h=write_1h)


#: list prices taken on PRICES_TAKEN; override or add with SEMO_MODEL_PRICES (JSON)
DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-opus-5-5": _p(4, 20, 0.20, 5, 8),
    "claude-opus-5": _p(5, 25, 0.50, 6.25, 10),
    "claude-opus-4-8": _p(5, 25, 0.50, 6.25, 10),
    "claude-opus-4-7": _p(5, 25, 0.50, 6.25, 10),
    "claude-opus-4-6": _p(5, 25, 0.50, 6.25, 10),
    "claude-opus-4-5": _p(5, 25, 0.50, 6.25, 10),
    "claude-opus-4-1": _p(15, 75, 1.50, 18.75, 30),
    "claude-opus-4": _p(15, 75, 1.50, 18.75, 30),
    "claude-sonnet-5": _p(2, 10, 0.20, 2.50, 4),
    "claude-haiku-4-5": _p(1, 5, 0.10, 1.25, 2),
    # OpenAI (Codex CLI): models without prompt-length price bands only, as above
    "gpt-5-codex": _p(1.25, 10, 0.125, 0, 0),
    "gpt-5": _p(1.25, 10, 0.125, 0, 0),
}

#: a dated snapshot id (`claude-haiku-4-5-20251001`) is priced as its model
_SNAPSHOT = re.compile(r"-\d{8}$")


def price_of(model: str | None, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of `model`: by its exact id, else by the id without a snapshot date."""
    if not model:
        return None
    found = prices.get(model)
    if found is None and _SNAPSHOT.search(model):
        found = prices.get(_SNAPSHOT.sub("", model))
    return found


def parse_prices(value: Any) -> dict[str, ModelPrice]:
    """SEMO_MODEL_PRICES: `{"model": {"input": 3, "output": 15, "cache_read": 0.3,
    "cache_write": 3.75}}` (USD per million tokens), merged over the defaults per model."""
    return {str(k): ModelPrice.model_validate(v) for k, v in (value or {}).items()}


def empty() -> dict[str, Any]:
    return {**{k: 0 for k in TOKEN_KINDS}, "model": None, "cost_usd": 0.0, "responses": 0,
            "models": {}}


def summarize(
    rows: Iterable[Mapping[str, Any]], prices: Mapping[str, ModelPrice]
) -> dict[str, Any]:
    """One usage object from per-model rows (`model`, the token sums, `responses`)."""
    out = empty()
    cost: float | None = 0.0
    for row in rows:
        model = row["model"]
        sums = {k: int(row.get(k) or 0) for k in
                (*TOKEN_KINDS, "cache_creation_1h_input_tokens")}
        price = price_of(model, prices)
        model_cost = round(price.cost(sums), 10) if price is not None else None
        out["models"][model] = {**{k: sums[k] for k in TOKEN_KINDS},
                                "responses": int(row.get("responses") or 0),
                                "cost_usd": model_cost}
        for k in TOKEN_KINDS:
            out[k] += sums[k]
        out["responses"] += int(row.get("responses") or 0)
        cost = None if cost is None or model_cost is None else cost + price.cost(sums)
    out["cost_usd"] = None if cost is None else round(cost, 10)
    if len(out["models"]) == 1:
        out["model"] = next(iter(out["models"]))
    return out


def summarize_by(rows: Iterable[Mapping[str, Any]], key: str,
                 prices: Mapping[str, ModelPrice]) -> dict[Any, dict[str, Any]]:
    """Usage objects per `row[key]`, from rows grouped by (key, model), in first-seen order."""
    grouped: dict[Any, list] = {}
    for row in rows:
        grouped.setdefault(row[key], []).append(row)
    return {k: summarize(v, prices) for k, v in grouped.items()}


def describe(usage: Mapping[str, Any] | None) -> str:
    """One line for people: `1,234 in · 567 out · 8,901 cache read · 234 cache write ·
    claude-opus-5-5 · $0.0192`."""
    if usage is None:
        return "not reported by this agent"
    parts = [f"{usage['input_tokens']:,} in", f"{usage['output_tokens']:,} out",
             f"{usage['cache_read_input_tokens']:,} cache read",
             f"{usage['cache_creation_input_tokens']:,} cache write"]
    models = list(usage.get("models") or {})
    if usage.get("model"):
        parts.append(usage["model"])
    elif models:
        parts.append(f"{len(models)} models")
    cost = usage.get("cost_usd")
    if cost is not None:
        parts.append(f"${cost:.4f}" if cost < 100 else f"${cost:,.2f}")
    else:
        unpriced = [m for m, u in (usage.get("models") or {}).items() if u.get("cost_usd") is None]
        parts.append(f"cost unknown (no price for {', '.join(unpriced)})")
    return " · ".join(parts)
