"""Figures drawn from results datasets (matplotlib): the scaffolds every experiment's figures
are built from. The backend is the caller's (inline in a notebook); ``gflow`` on the command
line draws with Agg.

- :func:`curves`: a variable against time, one panel per value of a dim, one line per another;
- :func:`panels`: a figure with a row (or grid) of axes; :func:`grid`: n axes wrapped in rows;
- :func:`variables`: several variables against time, a panel each, one line per a dim's value;
- :func:`lines`: one line per value of a dim against time, on a given axis;
- :func:`over_time`: one line against time, keeping what a log time axis can show;
- :func:`style`: scales, labels, grid and legend of an axis, in one call;
- :func:`band`: the median over seeds with their range; :func:`cdf`: an empirical CDF;
- :func:`scaling`: points on log axes with their fitted log-log slope and a reference law;
- :func:`laws`: one panel per fitted threshold law (:func:`gflow.stats.draw`);
- :func:`sweep_summary`: a sweep's scalar summary values over its swept parameter;
- :func:`caption`: the setup and citation under a figure, its title over it.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["band", "bands", "caption", "cdf", "curves", "grid", "laws", "lines", "over_time",
           "panels", "scaling", "style", "sweep_summary", "variables"]


def lines(ax, ds, var: str, hue: str, *, time: str = "time", reduce=None, fmt="-",
          label=None, positive: bool = False, log_t: bool = True, colors: bool = False):
    """One line of ``ds[var]`` against time per value of the dim ``hue``: ``time`` names
    the time coordinate, or a variable holding each line's own times; ``reduce`` maps each
    line's values (e.g. a max over neurons); ``fmt`` and ``label`` may be callables of the
    hue value; ``colors`` gives the i-th line colour ``C{i}``. Points as :func:`over_time`;
    a hue value with no finite point (e.g. a width another part of a merged dataset ran) gets
    no line and no legend entry."""
    for i, h in enumerate(ds[hue].values):
        sub = ds.sel({hue: h})
        y = np.asarray(sub[var].values, dtype=float)
        if not np.isfinite(y).any():
            continue
        over_time(ax, sub[time].values, y if reduce is None else reduce(y),
                  label(h) if callable(label) else f"{h}", fmt(h) if callable(fmt) else fmt,
                  positive=positive, log_t=log_t, **({"color": f"C{i}"} if colors else {}))


def curves(ds, var: str, *, panel: str | None = None, hue: str, style: str | None = None,
           logx: bool = True, logy: bool = True, title: str = "", ylabel: str | None = None,
           caption: str = "", xlabel="time t (discrete: step x lr)"):
    """One panel per value of ``panel``, one line per ``hue`` (labelled "``hue`` value"; a
    linestyle per ``style``) of ``ds[var]`` against time. Time 0 is dropped on a log time
    axis; a log axis spanning less than a decade gets plain tick labels. ``xlabel`` may be a
    callable of the panel's value (e.g. to say "step x lr" only for discrete dynamics).
    ``ds`` may be ``{panel value: Dataset}`` (groups on their own time axes, e.g. one per
    dynamics): one panel per group."""
    panels = list(ds) if isinstance(ds, dict) else list(ds[panel].values) if panel else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False,
                             sharey=True)
    styles = ["-", "--", ":", "-."]
    for ax, p in zip(axes[0], panels, strict=True):
        sub = ds[p] if isinstance(ds, dict) else ds if p is None else ds.sel({panel: p})
        svals = list(sub[style].values) if style else [None]
        for si, s in enumerate(svals):
            lines(ax, sub if s is None else sub.sel({style: s}), var, hue,
                  fmt=styles[si % len(styles)], positive=logy, log_t=logx,
                  label=lambda h, s=s: f"{hue} {h}" + ("" if s is None else f" ({s})"))
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel(xlabel(p) if callable(xlabel) else xlabel)
        ax.set_ylabel(ylabel or var)
        ax.set_title(f"{panel} = {p}" if p is not None else title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    lo, hi = axes[0][0].get_ylim()
    if logy and 0 < lo and hi < 10 * lo:  # within a decade: 4.3, 4.4, ... not 4.3 x 10^0
        from matplotlib.ticker import FormatStrFormatter

        for ax in axes[0]:
            for axis_ in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis_(FormatStrFormatter("%.4g"))
    if title:
        fig.suptitle(title)
    if caption:
        fig.text(0.5, -0.02, caption, ha="center", va="top", fontsize=8, wrap=True)
    fig.tight_layout()
    return fig


def panels(n: int, *, size=(5.0, 4.0), nrows: int = 1, **kw):
    """``(fig, axes)``: ``nrows x n`` axes of ``size`` inches each; ``axes`` is the row
    (1-d) for ``nrows=1``, else the 2-d grid. ``kw`` goes to ``plt.subplots``."""
    fig, axes = plt.subplots(nrows, n, figsize=(size[0] * n, size[1] * nrows), squeeze=False,
                             **kw)
    return fig, (axes[0] if nrows == 1 else axes)


def grid(n: int, *, cols: int, size=(5.0, 4.0)):
    """``(fig, axes)``: ``n`` axes of ``size`` inches, ``cols`` to a row (fewer if ``n`` is
    smaller); the unused places of the last row are hidden, ``axes`` lists the ``n``."""
    cols = min(n, cols)
    fig, rows = panels(cols, size=size, nrows=-(-n // cols))
    axes = list(np.ravel(rows))
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def over_time(ax, t, y, label=None, fmt: str = "-", *, positive: bool = False,
              log_t: bool = True, **kw):
    """Plot ``y`` against time ``t`` where both are finite, ``t > 0`` (unless ``log_t`` is
    False) and ``y > 0`` (with ``positive``): what the axes can show. ``kw`` goes to
    ``ax.plot``."""
    t, y = np.asarray(t, float), np.asarray(y, float)
    keep = np.isfinite(t) & np.isfinite(y) & ((t > 0) if log_t else True) \
        & ((y > 0) if positive else True)
    return ax.plot(t[keep], y[keep], fmt, label=label, **kw)


def _scale(setter, scale: str):
    if scale == "log2":
        setter("log", base=2)
    else:
        setter(scale)


def style(ax, *, xlabel: str | None = None, ylabel: str | None = None,
          title: str | None = None, x: str = "linear", y: str = "linear",
          legend: float | None = 7, grid: bool = True):
    """Scales (``"linear"``, ``"log"``, ``"log2"``, ``"symlog"``), labels and title of
    ``ax``, a light grid on every tick and a legend of font size ``legend`` (``None``:
    none; also none when nothing is labelled). Returns ``ax``."""
    _scale(ax.set_xscale, x)
    _scale(ax.set_yscale, y)
    for text, setter in ((xlabel, ax.set_xlabel), (ylabel, ax.set_ylabel),
                         (title, ax.set_title)):
        if text is not None:
            setter(text)
    if grid:
        ax.grid(True, which="both", alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend)
    return ax


def caption(fig, text: str = "", *, title: str | None = None, fontsize: float = 7,
            title_size: float | None = None):
    """``text`` (setup, citation) centred under ``fig`` and ``title`` over it, then the
    figure laid out. Returns ``fig``."""
    if title is not None:
        fig.suptitle(title, fontsize=title_size)
    if text:
        fig.text(0.5, -0.02, text, ha="center", va="top", fontsize=fontsize, wrap=True)
    fig.tight_layout()
    return fig


def band(ax, x, values, *, label=None, color=None, fmt: str = "o-"):
    """The median of ``values`` ``(seeds, x)`` over seeds against ``x``, shaded between
    their smallest and largest."""
    v = np.asarray(values, float)
    ax.plot(x, np.median(v, axis=0), fmt, color=color, label=label)
    ax.fill_between(x, np.min(v, axis=0), np.max(v, axis=0), color=color, alpha=0.2)


def bands(ax, x, series: dict, *, fmt="o-", min_points: int = 1):
    """One :func:`band` per entry ``{label: values (seeds, x)}`` of ``series``, in colour
    ``C{i}`` for the i-th entry, over the ``x`` at which every seed is finite (an entry
    with fewer than ``min_points`` such ``x`` is skipped, its colour kept); ``fmt`` is a
    format or a ``{label: format}`` dict."""
    x = np.asarray(x)
    for i, (label, values) in enumerate(series.items()):
        v = np.asarray(values, float)
        ok = np.all(np.isfinite(v), axis=0)
        if ok.sum() >= min_points:
            band(ax, x[ok], v[:, ok], label=str(label), color=f"C{i}",
                 fmt=fmt.get(label, "o-") if isinstance(fmt, dict) else fmt)


def scaling(ax, x, y, *, label: str, color=None, exponent: float | None = None,
            reference: str = "reference exponent"):
    """Points ``y(x)`` labelled with their fitted log-log slope
    (:func:`gflow.stats.loglog_slope`) and, with ``exponent``, the law ``y ~ x^exponent``
    through the first finite point (dotted) over the range of ``x``."""
    from .stats import loglog_slope

    x, y = np.asarray(x, float), np.asarray(y, float)
    ax.plot(x, y, "o-", color=color, label=f"{label}: fitted slope {loglog_slope(x, y):.2f}")
    ok = np.isfinite(y)
    if exponent is not None and ok.any():
        xs = np.array([x.min(), x.max()])
        ax.plot(xs, y[ok][0] * (xs / x[ok][0]) ** exponent, ":", color=color,
                label=f"{label}: {reference} {exponent:g}")


def variables(ds, names, *, hue: str, time: str = "time", label=None, hlines=None,
              ylabel=None, title: str = ""):
    """One panel per variable of ``names`` against time (log axis), two panels per row,
    one line per value of the dim ``hue`` (:func:`lines`, coloured in order, the legend on
    the first panel; ``label`` a callable of the value); ``hlines`` = ``{name: y}`` draws a
    reference line at ``y`` on that panel; ``ylabel`` a callable of the name (default: the
    name); ``title`` over the figure."""
    fig, axes = grid(len(names), cols=2, size=(4.8, 3.6))
    for i, (ax, name) in enumerate(zip(axes, names, strict=True)):
        lines(ax, ds, name, hue, time=time, colors=True, label=label)
        if name in (hlines or {}):
            ax.axhline(hlines[name], color="k", lw=0.8)
        style(ax, x="log", xlabel="time t", ylabel=ylabel(name) if ylabel else name,
              legend=7 if i == 0 else None)
    return caption(fig, title=title)


def sweep_summary(summary: dict, *, max_panels: int = 6) -> dict:
    """``{"sweep_summary": figure}`` for a CLI sweep's summary (``summary["sweep"]`` the
    axes, every other key nested lists over them): each key holding one number per point
    (up to ``max_panels`` of them, in order) against the first swept setting other than
    ``seed`` with numeric values (log axis if all positive and spanning a decade), one line
    per value of the other axes (NaN: a point without the value). ``{}`` when nothing can
    be drawn (e.g. a sweep over seeds alone)."""
    axes = dict(summary.get("sweep") or {})
    xs = [k for k, v in axes.items() if k != "seed" and len(v) > 1 and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in v)]
    if not xs:
        return {}
    x, shape = xs[0], tuple(len(v) for v in axes.values())
    keys = []
    for key, val in summary.items():
        try:
            arr = np.asarray(val, dtype=float)
        except (TypeError, ValueError):
            continue
        if key != "sweep" and arr.shape == shape and np.isfinite(arr).any():
            keys.append((key, np.moveaxis(arr, list(axes).index(x), -1)))
    if not keys:
        return {}
    keys, xv = keys[:max_panels], np.asarray(axes[x], float)
    others = [k for k in axes if k != x]
    fig, ax_list = grid(len(keys), cols=3, size=(4.4, 3.4))
    combos = list(itertools.product(*(range(len(axes[k])) for k in others)))
    for i, (ax, (key, arr)) in enumerate(zip(ax_list, keys, strict=True)):
        for c in combos:
            label = ", ".join(f"{k} {axes[k][j]}" for k, j in zip(others, c, strict=True))
            ax.plot(xv, arr[c], "o-", label=label or None)
        log = bool(np.all(xv > 0) and xv.max() >= 10 * xv.min())
        style(ax, x="log" if log else "linear", xlabel=x, title=key,
              legend=7 if i == 0 and others else None)
    return {"sweep_summary": caption(fig, title=f"summary values over {x} (one point per run)")}


def laws(laws: dict, *, xlabel: str, title: str, x: str = "log", legend: str = "{} needed"):
    """One panel per ``{name: PowerLaw}`` (e.g. :func:`gflow.stats.threshold_law`): points,
    intervals, censored points and the fit (:func:`gflow.stats.draw`) on log-log axes, the
    y label ``legend`` formatted with the name; ``title`` goes over the figure."""
    from .stats import draw

    fig, axes = panels(len(laws), size=(5.2, 4))
    for ax, (name, law) in zip(axes, laws.items(), strict=True):
        draw(ax, law, label=legend.format(name))
        style(ax, x=x, y="log", xlabel=xlabel, ylabel=legend.format(name), legend=None)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # the fit's
    return caption(fig, title=title)  # long label (exponent, interval, flags) below the axes


def cdf(ax, values, *, label=None, **kw):
    """The empirical distribution function of the finite ``values``."""
    v = np.asarray(values, float).ravel()
    v = np.sort(v[np.isfinite(v)])
    return ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label, **kw)
