"""Altair charts of training runs and sweeps, built from plain lists and dicts.

Nothing here calls Streamlit: each function returns a chart for a page to draw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd

# Runs are told apart by colour; train and test by line style.
RUN_COLOR = alt.Color(
    "run:N",
    title="run",
    scale=alt.Scale(scheme="category10"),
    legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=400),
)
SPLIT_DASH = alt.StrokeDash(
    "split:N",
    title="split",
    scale=alt.Scale(domain=["train", "test"], range=[[4, 3], [1, 0]]),
    legend=alt.Legend(orient="bottom"),
)

# Loss curves spanning more than this factor are drawn on a log axis.
LOG_LOSS_RATIO = 1000


def loss_chart(losses: Mapping[str, Sequence[Sequence[float]]]) -> alt.Chart:
    """Training loss against step, one line per run (label -> [[step, loss], ...])."""
    rows = [
        {"run": label, "step": int(step), "loss": float(loss)}
        for label, points in losses.items()
        for step, loss in points
    ]
    frame = pd.DataFrame(rows, columns=["run", "step", "loss"])
    return (
        alt.Chart(frame, title="Training loss")
        .mark_line()
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("loss:Q", title="loss", scale=loss_scale(frame["loss"])),
            color=RUN_COLOR,
            tooltip=["run", "step", alt.Tooltip("loss:Q", format=".3f")],
        )
    )


def loss_scale(losses: pd.Series) -> alt.Scale:
    """Linear, or log when one run blew up: a loss of 1e20 flattens every other."""
    positive = losses[losses > 0]
    if len(positive) and positive.max() > LOG_LOSS_RATIO * positive.min():
        return alt.Scale(type="log")
    return alt.Scale(zero=False)


def accuracy_chart(epochs: Mapping[str, Sequence[Mapping]]) -> alt.Chart:
    """Train and test accuracy after each epoch, per run (label -> EpochDone dicts)."""
    rows = [
        {"run": label, "epoch": e["epoch"], "split": split, "accuracy": e[key]}
        for label, done in epochs.items()
        for e in done
        for split, key in (("train", "train_accuracy"), ("test", "test_accuracy"))
    ]
    frame = pd.DataFrame(rows, columns=["run", "epoch", "split", "accuracy"])
    return (
        alt.Chart(frame, title="Accuracy after each epoch (%)")
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("accuracy:Q", title="accuracy (%)", scale=alt.Scale(zero=False)),
            color=RUN_COLOR,
            strokeDash=SPLIT_DASH,
            tooltip=["run", "epoch", "split", alt.Tooltip("accuracy:Q", format=".2f")],
        )
    )


def per_class_chart(per_class: Mapping[str, Mapping[str, float]]) -> alt.Chart:
    """Test accuracy per class, the runs' bars side by side (label -> class -> %)."""
    rows = [
        {"run": label, "class": name, "accuracy": value}
        for label, classes in per_class.items()
        for name, value in classes.items()
    ]
    frame = pd.DataFrame(rows, columns=["run", "class", "accuracy"])
    order = list(next(iter(per_class.values()), {}))
    return (
        alt.Chart(frame, title="Test accuracy per class (%)")
        .mark_bar()
        .encode(
            x=alt.X("class:N", title="class", sort=order),
            xOffset=alt.XOffset("run:N"),
            y=alt.Y(
                "accuracy:Q", title="accuracy (%)", scale=alt.Scale(domain=[0, 100])
            ),
            color=RUN_COLOR,
            tooltip=["run", "class", alt.Tooltip("accuracy:Q", format=".1f")],
        )
    )


def _matrix_frame(matrix: Sequence[Sequence[float]], classes: Sequence[str]):
    return pd.DataFrame(
        [
            {"true": classes[i], "predicted": classes[j], "count": value}
            for i, row in enumerate(matrix)
            for j, value in enumerate(row)
        ],
        columns=["true", "predicted", "count"],
    )


def _heatmap(frame: pd.DataFrame, title: str, color: alt.Color, classes) -> alt.Chart:
    axis = alt.Axis(labelOverlap=False)
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:N", title="predicted class", sort=list(classes), axis=axis),
        y=alt.Y("true:N", title="true class", sort=list(classes), axis=axis),
    )
    cells = base.mark_rect().encode(color=color, tooltip=["true", "predicted", "count"])
    # Dark cells get white numbers, so every count stays readable.
    dark = frame["count"].abs().max() / 2 if len(frame) else 0
    text = base.mark_text(fontSize=10).encode(
        text="count:Q",
        color=alt.condition(
            f"abs(datum.count) > {dark}", alt.value("white"), alt.value("black")
        ),
    )
    return (cells + text).properties(title=title, width=360, height=360)


def confusion_chart(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str
) -> alt.Chart:
    """Counts of test images by true class (rows) and predicted class (columns)."""
    color = alt.Color("count:Q", title="images", scale=alt.Scale(scheme="blues"))
    return _heatmap(_matrix_frame(matrix, classes), title, color, classes)


def difference_matrix(
    a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]
) -> list[list[int]]:
    """b minus a, cell by cell: positive where run b put more images."""
    return [[vb - va for va, vb in zip(ra, rb)] for ra, rb in zip(a, b)]


def difference_chart(
    a: Sequence[Sequence[int]],
    b: Sequence[Sequence[int]],
    classes: Sequence[str],
    title: str,
) -> alt.Chart:
    """The confusion of b minus that of a; on the diagonal, positive is better."""
    diff = difference_matrix(a, b)
    bound = max((abs(v) for row in diff for v in row), default=0) or 1
    scale = alt.Scale(scheme="redblue", domain=[-bound, bound])
    color = alt.Color("count:Q", title="b - a", scale=scale)
    return _heatmap(_matrix_frame(diff, classes), title, color, classes)


def _points_frame(points: Sequence) -> pd.DataFrame:
    """PointSummary-like objects to rows with the mean ± std error bar ends."""
    return pd.DataFrame(
        [
            {
                "point": str(p.label),
                "x": p.x,
                "mean": p.mean,
                "low": p.mean - p.std,
                "high": p.mean + p.std,
                "std": p.std,
                "n": p.n,
            }
            for p in points
        ],
        columns=["point", "x", "mean", "low", "high", "std", "n"],
    )


def _seeds_frame(points: Sequence) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"point": str(p.label), "x": p.x, "accuracy": value}
            for p in points
            for value in p.values
        ],
        columns=["point", "x", "accuracy"],
    )


TOOLTIP = [
    "point",
    alt.Tooltip("mean:Q", format=".2f", title="mean test accuracy (%)"),
    alt.Tooltip("std:Q", format=".2f", title="std over seeds"),
    alt.Tooltip("n:Q", title="seeds"),
]
ACCURACY = alt.Y("mean:Q", title="test accuracy (%)", scale=alt.Scale(zero=False))


def sweep_line_chart(points: Sequence, x_title: str, log_x: bool = True) -> alt.Chart:
    """Mean test accuracy against x, error bars of ± one std, every seed a dot."""
    xs = [p.x for p in points]
    scale = alt.Scale(
        type="log" if log_x else "linear",
        domain=[min(xs), max(xs)],
        nice=False,
        padding=24,
    )
    x = alt.X("x:Q", title=x_title, scale=scale)
    frame = _points_frame(points)
    line = (
        alt.Chart(frame).mark_line(point=True).encode(x=x, y=ACCURACY, tooltip=TOOLTIP)
    )
    whiskers = (
        alt.Chart(frame)
        .mark_errorbar(ticks=True)
        .encode(x=x, y=alt.Y("low:Q", title="test accuracy (%)"), y2="high:Q")
    )
    seeds = alt.Chart(_seeds_frame(points)).mark_circle(opacity=0.4, size=25)
    seeds = seeds.encode(x=x, y="accuracy:Q", tooltip=["point", "accuracy"])
    return (whiskers + line + seeds).properties(title=f"Test accuracy vs {x_title}")


def sweep_bar_chart(points: Sequence, x_title: str) -> alt.Chart:
    """One bar per point (its label), error bars of ± one std, every seed a dot."""
    frame = _points_frame(points)
    x = alt.X("point:N", title=x_title, sort=None, axis=alt.Axis(labelAngle=0))
    y = alt.Y("mean:Q", title="test accuracy (%)")
    bars = alt.Chart(frame).mark_bar(opacity=0.8).encode(x=x, y=y, tooltip=TOOLTIP)
    # A rule and two short ticks: errorbar's own ticks would span the whole bar.
    whisker = alt.Chart(frame).encode(x=x)
    whiskers = (
        whisker.mark_rule(color="black").encode(y="low:Q", y2="high:Q")
        + whisker.mark_tick(color="black", size=16, thickness=1.5).encode(y="low:Q")
        + whisker.mark_tick(color="black", size=16, thickness=1.5).encode(y="high:Q")
    )
    seeds = alt.Chart(_seeds_frame(points)).mark_circle(color="black", opacity=0.5)
    seeds = seeds.encode(x=x, y="accuracy:Q", tooltip=["point", "accuracy"])
    return (bars + whiskers + seeds).properties(title=f"Test accuracy by {x_title}")


def noise_band(low: float, high: float, mean: float, label: str) -> alt.Chart:
    """A horizontal band from low to high across the whole chart, a rule at mean."""
    frame = pd.DataFrame([{"low": low, "high": high, "mean": mean, "what": label}])
    base = alt.Chart(frame)
    band = base.mark_rect(opacity=0.15, color="gray").encode(
        x=alt.value(0),
        x2=alt.value("width"),
        y="low:Q",
        y2="high:Q",
        tooltip=[
            "what",
            alt.Tooltip("low:Q", format=".2f"),
            alt.Tooltip("high:Q", format=".2f"),
        ],
    )
    rule = base.mark_rule(color="gray", strokeDash=[4, 4]).encode(y="mean:Q")
    return band + rule
