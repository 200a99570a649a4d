"""Figures drawn from results datasets (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["curves"]


def curves(ds, var: str, *, panel: str | None = None, hue: str, style: str | None = None,
           logx: bool = True, logy: bool = True, title: str = "", ylabel: str | None = None,
           caption: str = ""):
    """One panel per value of ``panel``, one line per ``hue`` (and linestyle per ``style``)
    of ``ds[var]`` against time. Time 0 is dropped on a log time axis."""
    panels = list(ds[panel].values) if panel else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False,
                             sharey=True)
    styles = ["-", "--", ":", "-."]
    t = np.asarray(ds["time"].values)
    for ax, p in zip(axes[0], panels, strict=True):
        sub = ds if p is None else ds.sel({panel: p})
        svals = list(sub[style].values) if style else [None]
        for si, s in enumerate(svals):
            sub2 = sub if s is None else sub.sel({style: s})
            for h in sub2[hue].values:
                y = np.asarray(sub2[var].sel({hue: h}).values)
                keep = (t > 0) if logx else np.ones_like(t, bool)
                if logy:
                    keep &= y > 0
                label = f"{h}" if s is None else f"{h} ({s})"
                ax.plot(t[keep], y[keep], styles[si % len(styles)], label=label)
        ax.set_xscale("log" if logx else "linear")
        ax.set_yscale("log" if logy else "linear")
        ax.set_xlabel("time t (discrete: step x lr)")
        ax.set_ylabel(ylabel or var)
        ax.set_title(f"{panel} = {p}" if p is not None else title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    if caption:
        fig.text(0.5, -0.02, caption, ha="center", va="top", fontsize=8, wrap=True)
    fig.tight_layout()
    return fig
