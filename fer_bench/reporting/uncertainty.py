"""When an answer should say it is unsure: the calibrated top class too weak, or the top two too close.

Two thresholds, chosen on labelled development sets (never a test split): an answer is *confident*
when its top probability is at least `top` and leads the runner-up by at least `margin`, otherwise
*uncertain* ("uncertain: sad 31 % or neutral 31 %"). The rule that picks them is fixed in advance:
the pair that leaves the most answers confident while the confident ones are right at least
TARGET_ACCURACY of the time, each development set weighing the same (a small set counts as much as
a large one).
"""

from __future__ import annotations

import numpy as np

TARGET_ACCURACY = 0.85
GRID = np.round(np.arange(0.0, 0.81, 0.05), 2)


def top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's highest and second-highest probability."""
    ordered = np.sort(probs, axis=1)
    return ordered[:, -1], ordered[:, -2]


def is_confident(probs: np.ndarray, top: float, margin: float) -> np.ndarray:
    """Rows whose top probability reaches `top` and leads the runner-up by `margin` (float tolerance)."""
    first, second = top_two(probs)
    return (first >= top - 1e-9) & (first - second >= margin - 1e-9)


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(values * weights) / np.sum(weights)) if np.sum(weights) > 0 else float("nan")


def fit_thresholds(sets: dict[str, tuple[np.ndarray, np.ndarray]], target: float = TARGET_ACCURACY) -> dict:
    """The (top, margin) pair of the rule above from {name: (calibrated probabilities, labels)}, with what
    it does on each set: the share of answers left confident and how often confident and uncertain
    answers are right."""
    probs = np.concatenate([p for p, _ in sets.values()])
    right = np.concatenate([p.argmax(axis=1) == y for p, y in sets.values()])
    weights = np.concatenate([np.full(len(y), 1 / len(y)) for _, y in sets.values()])
    best = None
    for top in GRID:
        for margin in GRID:
            confident = is_confident(probs, top, margin)
            coverage = _weighted(confident, weights)
            accuracy = _weighted(right[confident], weights[confident]) if confident.any() else 0.0
            if accuracy >= target and (best is None or coverage > best[0]):
                best = (coverage, float(top), float(margin))
    if best is None:  # no pair reaches the target: say so, and flag nothing rather than everything
        top, margin, reached = 0.0, 0.0, False
    else:
        _, top, margin = best
        reached = True
    per_set = {}
    for name, (p, y) in sets.items():
        confident, ok = is_confident(p, top, margin), p.argmax(axis=1) == y
        per_set[name] = {"images": int(len(y)), "confident_share": float(confident.mean()),
                         "accuracy_confident": float(ok[confident].mean()) if confident.any() else None,
                         "accuracy_uncertain": float(ok[~confident].mean()) if (~confident).any() else None,
                         "accuracy_all": float(ok.mean())}
    return {"top": top, "margin": margin, "target_accuracy": target, "target_reached": reached,
            "rule": (f"confident when the calibrated top class has at least {top:.0%} and leads the runner-up by "
                     f"at least {margin:.0%} (the pair that leaves the most answers confident while those are right "
                     f">= {target:.0%} of the time, development sets weighted equally)"),
            "sets": per_set}


def plot_confidence(sets: dict[str, tuple[np.ndarray, np.ndarray]], chosen: dict, path) -> None:
    """Accuracy of the answers left confident against the share left confident, per development set,
    as the margin grows (top held at the chosen value); the chosen margin marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import save_figure

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, (p, y) in sets.items():
        ok = p.argmax(axis=1) == y
        masks = [is_confident(p, chosen["top"], m) for m in GRID]
        points = [(mask.mean(), ok[mask].mean()) for mask in masks if mask.any()]
        line, = ax.plot(*zip(*points), marker=".", label=name)
        mark = is_confident(p, chosen["top"], chosen["margin"])
        if mark.any():
            ax.plot(mark.mean(), ok[mark].mean(), "o", ms=9, mfc="none", color=line.get_color())
    ax.axhline(chosen["target_accuracy"], color="grey", ls="--", lw=1)
    ax.set_xlabel("share of answers given as confident")
    ax.set_ylabel("accuracy of the confident answers")
    ax.set_title(f"uncertain below top {chosen['top']:.0%} or margin {chosen['margin']:.0%} (circles)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(path, fig, dpi=110)
    plt.close(fig)
