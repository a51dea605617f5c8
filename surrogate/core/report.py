"""Human-facing output: the metrics table and figures."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from surrogate.core.store import atomic_path


def metric_row(method: str, metric: str, value: float, ci: tuple[float, float] | None = None, unit: str = "1",
               **extra: Any) -> dict[str, Any]:
    """One row of metrics.json: the same shape for every family and for benchmarks/results/*.json."""
    r = {"method": method, "metric": metric, "value": float(value), "unit": unit}
    if ci is not None:
        r["ci_low"], r["ci_high"] = float(ci[0]), float(ci[1])
    r.update(extra)
    return r


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_table(metrics: dict[str, Any], metric_names: list[str] | None = None) -> str:
    """Methods down, metrics across; a 95% interval is shown as value [low, high]."""
    rows = metrics.get("rows", [])
    methods = list(dict.fromkeys(r["method"] for r in rows))
    names = metric_names or list(dict.fromkeys(r["metric"] for r in rows))
    cell: dict[tuple[str, str], str] = {}
    for r in rows:
        text = _fmt(r["value"])
        if r.get("ci_low") is not None:
            text += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        cell[r["method"], r["metric"]] = text
    names = [n for n in names if any((m, n) in cell for m in methods)]
    header = ["method", *names]
    body = [[m, *[cell.get((m, n), "-") for n in names]] for m in methods if any((m, n) in cell for n in names)]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def metrics_list(rows: list[dict[str, Any]]) -> str:
    """One line per row (method, metric, value [interval], unit): for metrics too many to pivot."""
    lines = []
    for r in rows:
        text = _fmt(r["value"])
        if r.get("ci_low") is not None:
            text += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        extra = f"  (vs {r['versus']})" if r.get("versus") else ""
        unit = "" if r.get("unit", "1") == "1" else f" {r['unit']}"
        lines.append(f"  {r['method']:<22} {r['metric']:<34} {text}{unit}{extra}")
    return "\n".join(lines)


def save_figure(fig, path: str | Path, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
