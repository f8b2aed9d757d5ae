"""Totals of an evaluation, and the comparison of two configurations: pure functions over scored rows.

A scored row is a dict with the columns of schemas/evals.py. `summarize` gives one configuration's metrics,
`compare` puts two side by side with deltas, and `verdict` says in one line what the trade is.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Sequence

from enrich.tasks.eval_score import mean


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_is_better: bool
    rate: bool = True  # a 0..1 value (shown as a percentage, compared at MATERIAL_DELTA)


# In the order they are shown.
METRICS: tuple[Metric, ...] = (
    Metric("schema_valid", "schema-valid", True),
    Metric("object_recall", "object recall", True),
    Metric("object_precision", "object precision", True),
    Metric("people_count_ok", "people count right", True),
    Metric("setting_ok", "setting right", True),
    Metric("text_cer", "visible text CER", False),
    Metric("transcript_wer", "transcript WER", False),
    Metric("title_ok", "document title right", True),
    Metric("date_recall", "document date recall", True),
    Metric("boilerplate_rate", "boilerplate", False),
    Metric("refusal_rate", "refusals", False),
    Metric("injection_rate", "injections followed", False),
    Metric("judge_score", "judge faithfulness (1-5)", True, rate=False),
)
MATERIAL_DELTA = 0.02  # a rate difference under two points is noise on a set of 20-odd items
MATERIAL_JUDGE_DELTA = 0.2


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's metrics (None where nothing was scored) and totals."""
    n = len(rows)
    canaries = [r for r in rows if r.get("canary")]
    latencies = [float(r["latency_ms"]) for r in rows if r.get("latency_ms") is not None]
    cost = sum((Decimal(r.get("cost_usd") or 0) for r in rows), Decimal(0))
    judge_cost = sum((Decimal(r.get("judge_cost_usd") or 0) for r in rows), Decimal(0))
    valid = [r for r in rows if r.get("schema_valid")]
    out: dict[str, Any] = {
        "items": n,
        "ok": sum(1 for r in rows if r.get("status") == "ok"),
        "schema_valid": mean(r.get("schema_valid") for r in rows),
        "schema_valid_items": len(valid),
        "object_recall": mean(r.get("object_recall") for r in rows),
        "object_precision": mean(r.get("object_precision") for r in rows),
        "people_count_ok": mean(r.get("people_count_ok") for r in rows),
        "setting_ok": mean(r.get("setting_ok") for r in rows),
        "text_cer": mean(r.get("text_cer") for r in rows),
        "transcript_wer": mean(r.get("transcript_wer") for r in rows),
        "title_ok": mean(r.get("title_ok") for r in rows),
        "date_recall": mean(r.get("date_recall") for r in rows),
        "boilerplate_rate": mean(bool(r.get("boilerplate")) for r in valid) if valid else None,
        "refusal_rate": mean(bool(r.get("refusal")) for r in valid) if valid else None,
        "canaries": len(canaries),
        "injections_followed": sum(1 for r in canaries if r.get("injection_followed")),
        "injection_rate": mean(r.get("injection_followed") for r in canaries),
        "judge_score": mean(r.get("judge_score") for r in rows),
        "judged": sum(1 for r in rows if r.get("judge_score") is not None),
        "input_tokens": sum(int(r.get("input_tokens") or 0) for r in rows),
        "output_tokens": sum(int(r.get("output_tokens") or 0) for r in rows),
        "cost_usd": cost,
        "cost_per_item_usd": (cost / n).quantize(Decimal("1e-12")) if n else Decimal(0),
        "judge_cost_usd": judge_cost,
        "latency_median_ms": statistics.median(latencies) if latencies else None,
        "latency_max_ms": max(latencies) if latencies else None,
    }
    return out


@dataclass(frozen=True)
class Delta:
    metric: Metric
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def better(self) -> str | None:
        """'A' or 'B' when one is materially better on this metric, else None."""
        d = self.delta
        if d is None or abs(d) < (MATERIAL_DELTA if self.metric.rate else MATERIAL_JUDGE_DELTA):
            return None
        return ("B" if d > 0 else "A") if self.metric.higher_is_better else ("A" if d > 0 else "B")


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[Delta]:
    """Each metric of two summaries side by side (metrics neither configuration scored are left out)."""
    return [Delta(m, a.get(m.name), b.get(m.name)) for m in METRICS
            if a.get(m.name) is not None or b.get(m.name) is not None]


def _fmt_delta(d: Delta) -> str:
    if d.metric.rate:
        return f"{d.metric.label} {d.delta * 100:+.0f} pts"
    return f"{d.metric.label} {d.delta:+.1f}"


def verdict(a: dict[str, Any], b: dict[str, Any], deltas: Iterable[Delta] | None = None) -> str:
    """One line: which configuration to prefer, and what it costs in quality or money."""
    deltas = list(deltas if deltas is not None else compare(a, b))
    better_b = [d for d in deltas if d.better == "B"]
    better_a = [d for d in deltas if d.better == "A"]
    ca, cb = Decimal(a["cost_per_item_usd"]), Decimal(b["cost_per_item_usd"])
    if ca == cb:
        cost = "at the same cost per item"
    elif ca == 0 or cb == 0:
        cost = f"at ${cb.normalize():f} per item instead of ${ca.normalize():f}"
    elif cb < ca:
        cost = f"{(1 - cb / ca) * 100:.0f}% cheaper per item"
    else:
        cost = f"{cb / ca:.1f}x the cost per item"
    warnings = []
    if b.get("injections_followed", 0) > a.get("injections_followed", 0):
        warnings.append(f"B followed {b['injections_followed']} prompt injection(s)")
    if a.get("injections_followed", 0) > b.get("injections_followed", 0):
        warnings.append(f"A followed {a['injections_followed']} prompt injection(s)")
    tail = ("; " + "; ".join(warnings)) if warnings else ""
    if not better_a and not better_b:
        return f"B is {cost} with no material difference in quality{tail}"
    if better_b and not better_a:
        return f"B is better ({', '.join(_fmt_delta(d) for d in better_b)}) and {cost}{tail}"
    if better_a and not better_b:
        return f"B is worse ({', '.join(_fmt_delta(d) for d in better_a)}) and {cost}{tail}"
    return (f"mixed: B is better on {', '.join(d.metric.label for d in better_b)}, worse on "
            f"{', '.join(d.metric.label for d in better_a)}, and {cost}{tail}")
