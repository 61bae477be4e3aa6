"""The papers' numbers and orderings for the tables the sweeps reproduce, in one place, and the verdict.

`TABLES[table]` (table = the sweep's name: losses, seq_len, features, recipes) holds, per row label of
the sweep, the paper's group averages (Content ↑, Metadata ↑: top-1 %; User ↓: MSE; None where the
paper has no such row), the pairs of rows whose order the paper's numbers claim (a above b), and the
base-features row the other rows should beat. Used by the sweep's parent run Description
(`comparison_markdown`), by experiments/make_results.py (docs/results.md) and by the ablation scripts.

Margins are z = Δ / sqrt(s_a²/n_a + s_b²/n_b), the difference of two rows' seed means in standard errors
of that difference (s: the seeds' sample std; positive: the paper's way). With one seed there is no
spread and the margin is given as Δ.

Sources: /work/shared/papers/long-range-multimodal-pretraining.md (LMP: Tables 1-3), movies2scenes.md
(M2S: Table 2, LVU test set, "Ours", group averages of the per-task numbers), hierarchical-ssl-movies.md
(HSSL: Table 5, the scene pathway alone); docs/results.md lists them beside our runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GROUPS = (("content", "Content ↑", 1), ("metadata", "Metadata ↑", 1), ("user", "User ↓", -1))
"""(column, header, sign): sign +1 when higher is better, -1 when lower is."""

BASE = "No pretraining: base features"
RANDOM = "No pretraining: frozen random init"
SCRATCH = "No pretraining: scratch (supervised)"
NO_PRETRAIN_ROWS = (BASE, RANDOM, SCRATCH)

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class PaperTable:
    title: str
    paper: dict[str, Triple | None]
    """Row label (as the sweep names it) -> the paper's (Content, Metadata, User); None: not a paper row."""
    pairs: list[tuple[str, str]]
    """(a, b): the paper puts row a above row b."""
    claim: str
    base: str | None = None
    """The base-features row: do the other rows beat it, and by how many standard errors?"""
    source: str = ""

    def key_of(self, label: str) -> str:
        """The paper row of a sweep row label: the label itself, else the one paper row whose name is the
        label's part before " (" (compare_recipes.py's "M2S (shot → movie → scene, ...)" -> "M2S")."""
        if label in self.paper:
            return label
        short = [k for k in self.paper if k == label.split(" (")[0]]
        return short[0] if len(short) == 1 else label

    def rows(self, summary_rows) -> dict[str, dict]:
        """Summary rows keyed by paper row."""
        return {self.key_of(r["variant"]): r for r in summary_rows}


_LMP_FULL: Triple = (60.53, 57.67, 1.16)
_LOSS_ROWS = ("w/o L_intra", "w/o L_inter", "w/o L_cross")

TABLES: dict[str, PaperTable] = {
    "losses": PaperTable(
        title="Table 1. Pretraining losses",
        paper={
            BASE: None,
            RANDOM: None,
            SCRATCH: (44.87, 32.47, 3.19),
            "w/o L_intra": (60.13, 55.92, 1.23),
            "w/o L_inter": (52.74, 44.86, 1.82),
            "w/o L_cross": (59.36, 54.71, 1.34),
            "All three": _LMP_FULL,
        },
        # full > each removed loss > no pretraining (the paper's row: scratch), and full above every
        # no-pretraining row (base features and frozen random init too)
        pairs=[("All three", v) for v in _LOSS_ROWS]
        + [(v, SCRATCH) for v in _LOSS_ROWS]
        + [("All three", v) for v in NO_PRETRAIN_ROWS],
        claim="full > each removed loss > no pretraining (scratch); full > every no-pretraining row",
        base=BASE,
        source="LMP paper, Table 1 (its no-pretraining row is the architecture trained from scratch per task)",
    ),
    "seq_len": PaperTable(
        title="Table 2. Pretraining sequence length k",
        paper={"k = 10": (59.77, 56.45, 1.20), "k = 30": _LMP_FULL, "k = 60": (61.36, 58.12, 1.14)},
        pairs=[("k = 60", "k = 30"), ("k = 30", "k = 10")],
        claim="k = 60 > k = 30 > k = 10",
        source="LMP paper, Table 2",
    ),
    "features": PaperTable(
        title="Table 3. Features given to the probe (one pretrained model)",
        paper={
            "v_base": (48.43, 45.40, 2.01),
            "v_base + a_base": (51.03, 51.20, 1.91),
            "v_ctx": (56.50, 53.68, 1.82),
            "v_ctx + a_ctx": (59.43, 55.75, 1.39),
            "v_ctx + a_ctx + v_cross_a": _LMP_FULL,
        },
        pairs=[
            ("v_ctx + a_ctx + v_cross_a", "v_ctx + a_ctx"),
            ("v_ctx + a_ctx", "v_ctx"),
            ("v_ctx", "v_base + a_base"),
            ("v_base + a_base", "v_base"),
        ],
        claim="contextual + cross-modal > contextual > base",
        base="v_base + a_base",
        source="LMP paper, Table 3",
    ),
    "recipes": PaperTable(
        title="Pretraining recipes under one protocol",
        paper={
            BASE: None,
            RANDOM: None,
            SCRATCH: (44.87, 32.47, 3.19),
            "LMP": _LMP_FULL,
            "M2S": (60.53, 59.58, 1.49),
            "HSSL": (40.81, 37.43, 2.51),
        },
        pairs=[("LMP", "HSSL"), ("M2S", "HSSL"), ("LMP", SCRATCH), ("M2S", SCRATCH)],
        claim="LMP, M2S > HSSL; LMP, M2S > no pretraining (scratch)",
        base=BASE,
        source=(
            "each paper's own numbers: LMP Table 1 (scratch and 'All three'), M2S Table 2 (LVU test set, "
            "'Ours', group averages of the per-task numbers), HSSL Table 5 (scene pathway alone); different "
            "backbones, data and protocols per paper"
        ),
    ),
}


def paper_numbers(table: str) -> dict[str, Triple | None]:
    """The paper's rows of `table` (row label -> (Content, Metadata, User) or None); {} if unknown."""
    spec = TABLES.get(table)
    return dict(spec.paper) if spec else {}


# ---------------------------------------------------------------------------------------------- margins
def z_margin(a: dict, b: dict, g: str, sign: int) -> float | None:
    """(a better than b) in standard errors of the difference; None if a value is missing; ±inf when
    neither row has a seed spread (one seed) and they differ."""
    ma, mb = a.get(f"{g}_mean"), b.get(f"{g}_mean")
    if ma is None or mb is None:
        return None
    na, nb = max(a.get("seeds_ok") or 1, 1), max(b.get("seeds_ok") or 1, 1)
    se = math.sqrt((a.get(f"{g}_std") or 0.0) ** 2 / na + (b.get(f"{g}_std") or 0.0) ** 2 / nb)
    diff = sign * (ma - mb)
    if se == 0:
        return math.inf if diff > 0 else (-math.inf if diff < 0 else 0.0)
    return diff / se


def z_text(z: float) -> str:
    return f"z = {z:+.1f}" if math.isfinite(z) else "z undefined: no seed spread"


def _margin(a: dict, b: dict, g: str, sign: int) -> str:
    """ "z = +1.2", or "Δ = +0.50, no seed spread" when the standard error is zero (one seed)."""
    z = z_margin(a, b, g, sign)
    if z is None:
        return "n/a"
    if math.isfinite(z):
        return f"z = {z:+.1f}"
    d = 3 if g == "user" else 2
    return f"Δ = {sign * (a[f'{g}_mean'] - b[f'{g}_mean']):+.{d}f}, no seed spread"


def _rank(a: dict, b: dict, g: str, sign: int) -> tuple[float, float]:
    """Sort key of "a ahead of b": the margin in standard errors, then the raw difference."""
    z = z_margin(a, b, g, sign)
    if z is None:
        return (-math.inf, 0.0)
    return (z, sign * (a[f"{g}_mean"] - b[f"{g}_mean"]))


def _mean(row: dict, g: str) -> float | None:
    v = row.get(f"{g}_mean")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


# --------------------------------------------------------------------------------------------- verdicts
def verdict(table: str, rows: dict[str, dict]) -> str:
    """The long verdict (docs/results.md): does the paper's ordering hold, per group, every broken pair."""
    spec = TABLES[table]
    parts, held, total = [], 0, 0
    for g, header, sign in GROUPS:
        zs, broken = [], []
        for a, b in spec.pairs:
            if a not in rows or b not in rows:
                continue
            z = z_margin(rows[a], rows[b], g, sign)
            if z is None:
                continue
            total += 1
            zs.append(z)
            if z > 0:
                held += 1
            else:
                broken.append(
                    f"{a} {rows[a][f'{g}_mean']:.3g} vs {b} {rows[b][f'{g}_mean']:.3g} (z = {z:+.1f})"
                )
        if not zs:
            continue
        name = header.split()[0]
        if broken:
            parts.append(f"{name} breaks it at " + "; ".join(broken))
        else:
            parts.append(f"{name} holds with the smallest margin {z_text(min(zs))}")
    if total == 0:
        return f"**Ordering ({spec.claim}):** not checkable (rows missing or failed)."
    state = "holds" if held == total else ("does not hold" if held == 0 else "holds only in part")
    return (
        f"**Ordering ({spec.claim}) {state}:** {held} of {total} pairwise comparisons go the paper's way; "
        + "; ".join(parts)
        + "."
    )


def ordering_counts(table: str, rows: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """Per group: (pairs that go the paper's way, pairs checkable)."""
    out = {}
    for g, _, sign in GROUPS:
        zs = [z_margin(rows[a], rows[b], g, sign) for a, b in TABLES[table].pairs if a in rows and b in rows]
        zs = [z for z in zs if z is not None]
        out[g] = (sum(z > 0 for z in zs), len(zs))
    return out


def base_line(table: str, rows: dict[str, dict]) -> str | None:
    """Per group: how many pretrained rows beat the base features, and the best (else the closest) one
    with its margin. No-pretraining rows are not counted."""
    base = TABLES[table].base
    if base is None or base not in rows or all(_mean(rows[base], g) is None for g, _, _ in GROUPS):
        return None
    others = [r for r in rows if r != base and r not in NO_PRETRAIN_ROWS]
    parts = []
    for g, header, sign in GROUPS:
        scored = [r for r in others if z_margin(rows[r], rows[base], g, sign) is not None]
        if not scored:
            continue
        ahead = [r for r in scored if z_margin(rows[r], rows[base], g, sign) > 0]
        best = max(scored, key=lambda r: _rank(rows[r], rows[base], g, sign))
        word = "best" if ahead else "closest"
        parts.append(
            f"{header.split()[0]} {len(ahead)}/{len(scored)} ({word} {best}, "
            f"{_margin(rows[best], rows[base], g, sign)})"
        )
    if not parts:
        return None
    return f"rows ahead of {base.removeprefix('No pretraining: ')}: " + ", ".join(parts)


def one_line_verdict(table: str, rows: dict[str, dict]) -> str:
    """One line: how much of the paper's ordering holds, per group, and which rows beat the base features
    by how many standard errors."""
    spec = TABLES[table]
    counts = ordering_counts(table, rows)
    held = sum(h for h, _ in counts.values())
    total = sum(n for _, n in counts.values())
    if total == 0:
        head = "the paper's ordering is not checkable (rows missing or failed)"
    else:
        state = "holds" if held == total else ("does not hold" if held == 0 else "holds in part")
        per = ", ".join(f"{h.split()[0]} {counts[g][0]}/{counts[g][1]}" for g, h, _ in GROUPS if counts[g][1])
        head = f"the paper's ordering {state}, {held} of {total} pairs ({per})"
    base = base_line(table, rows)
    return f"**Verdict:** {head}" + (f"; {base}" if base else "") + f". (Ordering: {spec.claim}.)"


# --------------------------------------------------------------------------------------------- markdown
def _cell(row: dict | None, g: str) -> str:
    if row is None:
        return "not run"
    m = _mean(row, g)
    if m is None:
        return "failed"
    d = 3 if g == "user" else 2
    return f"{m:.{d}f} ± {(row.get(f'{g}_std') or 0.0):.{d}f}"


def comparison_markdown(
    table: str, summary_rows: list[dict], chart: str | None = None, pairs: bool = True
) -> str | None:
    """The sweep's rows beside the paper's (ours and theirs side by side per group), the one-line verdict
    first (MLflow shows the first lines of a Description before "Show more"), the chart, then every
    ordered pair with its margin. None when `table` has no paper numbers here.

    summary_rows: table.summarize()'s rows (variant, {g}_mean, {g}_std, seeds_ok, seeds).
    chart: a URL or path of the bar chart image, embedded below the table. pairs: False leaves out the
    pair-by-pair list."""
    spec = TABLES.get(table)
    if spec is None:
        return None
    rows = spec.rows(summary_rows)  # by paper row; shown under the sweep's own labels
    label = {spec.key_of(r["variant"]): r["variant"] for r in summary_rows}
    order = list(rows) + [v for v in spec.paper if v not in rows]
    lines = [one_line_verdict(table, rows), ""]
    head = ["Row"] + [f"{h} {who}" for _, h, _ in GROUPS for who in ("ours", "paper")] + ["Seeds"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in order:
        r = rows.get(v)
        theirs = spec.paper.get(v)
        cells = [label.get(v, v)]
        for i, (g, _, _) in enumerate(GROUPS):
            cells += [_cell(r, g), "—" if theirs is None else f"{theirs[i]:.2f}"]
        cells.append(f"{r['seeds_ok']}/{r['seeds']}" if r is not None else "0")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Paper: {spec.source}, on LVU. Ours: the demo benchmark of this sweep (or the store it was given); "
        "compare orderings, not values. Margins: z = Δ / sqrt(s_a²/n_a + s_b²/n_b), positive = the paper's way.",
    ]
    if chart:
        lines += ["", f"![bar chart: {spec.title}]({chart})"]
    if not pairs:
        return "\n".join(lines) + "\n"
    lines += ["", f"#### The paper's ordering, pair by pair ({spec.claim})", ""]
    for g, header, sign in GROUPS:
        cells = []
        for a, b in spec.pairs:
            if a in rows and b in rows and z_margin(rows[a], rows[b], g, sign) is not None:
                ok = z_margin(rows[a], rows[b], g, sign) > 0
                cells.append(f"{a} > {b}: {'✓' if ok else '✗'} {_margin(rows[a], rows[b], g, sign)}")
        if cells:
            lines.append(f"- **{header}**: " + "; ".join(cells))
    return "\n".join(lines) + "\n"
