"""Small SVG charts for the admin UI, drawn on the server: no JavaScript, nothing to download."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

# Distinguishable colours, repeated when there are more categories than colours.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#d62728")


def stacked_bars(days: list[str], series: dict[str, list[int]], *, width: int = 760, height: int = 220) -> Markup:
    """One bar per day, stacked by category: the category mix over time (drift shows as colours shifting)."""
    if not days:
        return Markup('<p class="muted">No tickets yet.</p>')
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top = max(totals) or 1
    left, bottom, legend = 36, 24, 150
    plot_w, plot_h = width - left - legend, height - bottom - 8
    bar_w = plot_w / len(days)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="Tickets per day by category">',
             f'<text x="0" y="12" font-size="11" fill="#5b6475">{top}</text>',
             f'<text x="0" y="{height - bottom}" font-size="11" fill="#5b6475">0</text>']
    for i, day in enumerate(days):
        y = float(height - bottom)
        for n, (category, values) in enumerate(series.items()):
            h = values[i] / top * plot_h
            if h:
                y -= h
                parts.append(f'<rect x="{left + i * bar_w + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                             f'height="{h:.1f}" fill="{PALETTE[n % len(PALETTE)]}"><title>{escape(day)} '
                             f'{escape(category)}: {values[i]}</title></rect>')
        if i % max(1, len(days) // 6) == 0:
            parts.append(f'<text x="{left + i * bar_w:.1f}" y="{height - 6}" font-size="10" fill="#5b6475">'
                         f'{escape(day[5:])}</text>')
    for n, category in enumerate(series):
        y = 14 + n * 16
        parts.append(f'<rect x="{width - legend + 10}" y="{y - 9}" width="10" height="10" '
                     f'fill="{PALETTE[n % len(PALETTE)]}"/><text x="{width - legend + 26}" y="{y}" '
                     f'font-size="11">{escape(category)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def heatmap(labels: list[str], matrix: list[list[int]], *, cell: int = 22) -> Markup:
    """A confusion matrix: rows are the true category, columns the predicted one; darker is more."""
    n = len(labels)
    margin = 8 + 7 * max((len(label) for label in labels), default=0)
    size = margin + n * cell
    top = max((max(row) for row in matrix), default=0) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" '
             f'aria-label="Confusion matrix">']
    for i, label in enumerate(labels):
        parts.append(f'<text x="{margin - 4}" y="{margin + i * cell + cell * 0.7:.1f}" font-size="11" '
                     f'text-anchor="end">{escape(label)}</text>')
        parts.append(f'<text transform="translate({margin + i * cell + cell * 0.7:.1f},{margin - 4}) rotate(-60)" '
                     f'font-size="11">{escape(label)}</text>')
        for j, value in enumerate(matrix[i]):
            shade = value / top
            colour = "#2f855a" if i == j else "#c53030"
            parts.append(f'<rect x="{margin + j * cell}" y="{margin + i * cell}" width="{cell - 1}" '
                         f'height="{cell - 1}" fill="{colour}" fill-opacity="{0.08 + 0.92 * shade:.2f}">'
                         f'<title>true {escape(label)}, predicted {escape(labels[j])}: {value}</title></rect>')
    parts.append("</svg>")
    return Markup("".join(parts))
