"""A run's metrics on disk: long-format CSV, TensorBoard scalars, summary JSON, accuracy plot."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from types import TracebackType
from typing import IO, Any

CSV_NAME = "metrics.csv"
CSV_HEADER: tuple[str, ...] = ("step", "wall_seconds", "metric", "value")
SUMMARY_NAME = "summary.json"
PLOT_NAME = "accuracy.png"
DEFAULT_PLOT_METRICS: tuple[str, ...] = ("accuracy/honest_mean", "accuracy/attacker_mean")


class RunRecorder:
    """Writes one run's scalars to `out_dir`: `metrics.csv` (one row per step and metric, header
    `step,wall_seconds,metric,value`), TensorBoard event files, `summary.json` and a plot.

    The CSV is flushed after every `log` so a killed run keeps every row it logged. An existing
    `metrics.csv` with the same header is appended to (a resumed run); `history` only returns what
    this recorder logged. `write_summary` and `plot` also work after `close`.
    """

    def __init__(self, out_dir: Path, *, tensorboard: bool = True) -> None:
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"run folder {out_dir} exists and is not a directory")
        csv_path = out_dir / CSV_NAME
        if csv_path.exists() and csv_path.stat().st_size > 0:
            with csv_path.open(newline="") as f:
                found = next(csv.reader(f), [])
            if tuple(found) != CSV_HEADER:
                raise ValueError(
                    f"{csv_path} exists with header {','.join(found)!r}, "
                    f"expected {','.join(CSV_HEADER)!r}; use a new run folder"
                )
            new_file = False
        else:
            new_file = True
        # Import before creating anything so a missing tensorboard leaves no half-made folder.
        writer_cls = _summary_writer_class() if tensorboard else None

        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.csv_path = csv_path
        self._csv_file: IO[str] | None = csv_path.open("a", newline="")
        self._csv = csv.writer(self._csv_file)
        if new_file:
            self._csv.writerow(CSV_HEADER)
            self._csv_file.flush()
        self._tb: Any = writer_cls(log_dir=str(out_dir)) if writer_cls is not None else None
        self._history: dict[str, list[tuple[int, float]]] = {}

    @property
    def closed(self) -> bool:
        return self._csv_file is None

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric logged so far, in first-logged order."""
        return tuple(self._history)

    def log(
        self, step: int, scalars: Mapping[str, float], *, wall_seconds: float | None = None
    ) -> None:
        """Record `scalars` at `step`; `wall_seconds` is time since the run started, if known.

        Non-finite values are recorded as they are: a NaN loss is a result, not a mistake.
        """
        if self._csv_file is None:
            raise RuntimeError(f"RunRecorder for {self.out_dir} is closed")
        if isinstance(step, bool) or not isinstance(step, Integral) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if not isinstance(scalars, Mapping):
            raise ValueError(f"scalars must be a mapping of name -> number, got {type(scalars)}")
        if wall_seconds is not None and (
            isinstance(wall_seconds, bool)
            or not isinstance(wall_seconds, Real)
            or not math.isfinite(wall_seconds)
            or wall_seconds < 0
        ):
            raise ValueError(f"wall_seconds must be a finite number >= 0, got {wall_seconds!r}")
        rows: list[tuple[str, float]] = []
        for name, value in scalars.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"metric name must be a non-empty str, got {name!r}")
            if isinstance(value, bool) or not isinstance(value, Real):
                raise ValueError(f"metric {name!r}: value must be a number, got {value!r}")
            rows.append((name, float(value)))

        step = int(step)
        wall = "" if wall_seconds is None else repr(float(wall_seconds))
        for name, value in rows:
            self._csv.writerow((step, wall, name, repr(value)))
            self._history.setdefault(name, []).append((step, value))
            if self._tb is not None:
                self._tb.add_scalar(name, value, global_step=step)
        self._csv_file.flush()
        if self._tb is not None:
            self._tb.flush()

    def history(self, metric: str) -> list[tuple[int, float]]:
        """(step, value) pairs logged for `metric` by this recorder, in logging order."""
        if metric not in self._history:
            known = ", ".join(self._history) or "none yet"
            raise KeyError(f"metric {metric!r} was never logged; logged metrics: {known}")
        return list(self._history[metric])

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write `summary` to `out_dir/summary.json` (indented, sorted keys) and return the path.

        numpy scalars and paths are converted; any other non-JSON value raises TypeError before
        the file is touched. The file is replaced atomically, so readers never see half of it.
        """
        if not isinstance(summary, Mapping):
            raise ValueError(f"summary must be a mapping, got {type(summary).__name__}")
        text = json.dumps(summary, indent=2, sort_keys=True, default=_json_default) + "\n"
        path = self.out_dir / SUMMARY_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def plot(
        self,
        path: Path | None = None,
        metrics: Sequence[str] = DEFAULT_PLOT_METRICS,
        *,
        title: str = "Test accuracy",
        ylabel: str = "test accuracy",
        ylim: tuple[float, float] | None = (0.0, 1.0),
    ) -> Path:
        """Draw one line per logged metric in `metrics` against the step ("round") and save a PNG.

        For a metric `<prefix>_mean` whose `<prefix>_min` and `<prefix>_max` were also logged
        (e.g. `accuracy/honest_min`, `accuracy/honest_max`), the min..max band is shaded. Metrics
        in `metrics` that were never logged are skipped (the default names the attackers' mean,
        which a run without attackers does not log); if none was logged this raises ValueError.
        Default path: `out_dir/accuracy.png`.
        """
        if isinstance(metrics, str):
            raise ValueError("metrics must be a sequence of metric names, not one str")
        present = [m for m in metrics if m in self._history]
        if not present:
            raise ValueError(
                f"nothing to plot: none of {list(metrics)} was logged; "
                f"logged metrics: {', '.join(self._history) or 'none yet'}"
            )
        if ylim is not None and not ylim[0] < ylim[1]:
            raise ValueError(f"ylim must be (low, high) with low < high, got {ylim!r}")
        path = self.out_dir / PLOT_NAME if path is None else Path(path)

        # Figure + Agg canvas directly: no pyplot global state and no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(7.0, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for metric in present:
            steps, values = zip(*sorted(self._history[metric]), strict=True)
            (line,) = ax.plot(steps, values, label=_label(metric))
            band = self._band(metric)
            if band is not None:
                band_steps, lows, highs = band
                ax.fill_between(
                    band_steps,
                    lows,
                    highs,
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                    label=f"{_label(metric).removesuffix(' mean')} min..max",
                )
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        return path

    def close(self) -> None:
        """Flush and close the CSV and TensorBoard writers; calling it again does nothing."""
        if self._csv_file is None:
            return
        self._csv_file.close()
        self._csv_file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _band(self, metric: str) -> tuple[list[int], list[float], list[float]] | None:
        if not metric.endswith("_mean"):
            return None
        prefix = metric.removesuffix("_mean")
        lows = dict(self._history.get(prefix + "_min", []))
        highs = dict(self._history.get(prefix + "_max", []))
        steps = sorted(lows.keys() & highs.keys())
        if not steps:
            return None
        return steps, [lows[s] for s in steps], [highs[s] for s in steps]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render `rows` as an aligned plain-text table with a header and a dashed rule.

    Floats show 3 decimals, None shows "-"; a column whose values are all numbers is
    right-aligned, any other left-aligned. A row missing a column raises ValueError.
    """
    if isinstance(columns, str) or not columns:
        raise ValueError("columns must be a non-empty sequence of column names")
    if len(set(columns)) != len(columns):
        raise ValueError(f"columns has duplicates: {list(columns)}")
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"row #{i} has no value for column(s) {missing}")

    cells = [[_cell(row[c]) for c in columns] for row in rows]
    numeric = [
        all(_is_number(row[c]) or row[c] is None for row in rows) and len(rows) > 0 for c in columns
    ]
    widths = [max([len(c), *(len(r[j]) for r in cells)]) for j, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _summary_writer_class() -> Any:
    # Lazy: tensorboard pulls in a lot and CSV-only runs do not need it.
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    # numpy scalars and 0-d arrays/tensors expose .item(); converting avoids importing numpy.
    item = getattr(obj, "item", None)
    if callable(item) and getattr(obj, "ndim", None) == 0:
        return item()
    raise TypeError(f"summary value of type {type(obj).__name__} is not JSON serialisable")


def _label(metric: str) -> str:
    return metric.rsplit("/", 1)[-1].replace("_", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, Real):
        return str(value)
    if isinstance(value, Integral):
        return str(int(value))
    return f"{float(value):.3f}"


TRACE_NAME = "aggregations.csv"
TRACE_HEADER: tuple[str, ...] = ("round", "receiver", "sender", "measure", "value")


class TraceWriter:
    """Appends the nodes' aggregation trace (`experiment.trace`) to `aggregations.csv` in long
    format, one row per aggregated model and measure (`weight`, `reputation` and what the rule
    measured: dfl_guard's `distance`, `probe_rise`, `probe_limit`, ...).

    `collect` reads each node from where it was last read, so rows are written once, and all
    the rows of a node rebuilt since (a new trace epoch); the file is flushed after each call,
    so a killed run keeps what it collected. Sender -1 is a creator missing from the node's
    directory.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / TRACE_NAME
        new_file = not (self.path.exists() and self.path.stat().st_size > 0)
        self._file: IO[str] = self.path.open("a", newline="")
        self._writer = csv.writer(self._file)
        if new_file:
            self._writer.writerow(TRACE_HEADER)
            self._file.flush()
        self.cursors: dict[int, tuple[str, int]] = {}
        self.rows = 0

    def collect(self, net: Any) -> int:
        """Write the rows the nodes of `net` (anything with `trace(cursors)`) gathered since the
        last call; returns how many aggregated models they cover."""
        models = 0
        for node, (epoch, total, rows) in sorted(net.trace(self.cursors).items()):
            self.cursors[node] = (epoch, total)
            for row in rows:
                head = (int(row["round"]), int(row["receiver"]), int(row["sender"]))
                for measure, value in row.items():
                    if measure not in ("round", "receiver", "sender"):
                        self._writer.writerow((*head, measure, _csv_float(value)))
            models += len(rows)
        self._file.flush()
        self.rows += models
        return models

    def close(self) -> None:
        self._file.close()


def _csv_float(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))
