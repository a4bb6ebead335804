"""Small charts as SVG text, with no plotting library: a bar chart whose bars and labels are
plain elements, so any browser (and the Dagster UI, as a markdown image) shows it."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from xml.sax.saxutils import escape

BAR_FILL = "#4f6bed"
SLOT = 100  # horizontal room of one bar and its label
BAR = 60
PLOT_HEIGHT = 120  # the tallest bar
TOP = 8
BOTTOM = 24  # the labels below the plot


def bar_chart_svg(bars: Sequence[tuple[str, int]]) -> str:
    """An SVG bar chart of `bars` (label, value >= 0): one `rect` per bar in the group
    `bars`, in order, its height proportional to its value (a zero is a flat bar), and below
    each its label and value (`draft: 3`).

    Kept small on purpose: the Dagster UI shows markdown metadata inline only up to 1000
    characters (more goes behind a "Show Markdown" button), and five bars fit.
    """
    width = SLOT * max(len(bars), 2) + 8
    base = TOP + PLOT_HEIGHT
    top_value = max((v for _, v in bars), default=0) or 1
    rects, labels = [], []
    for i, (label, value) in enumerate(bars):
        x = 4 + SLOT * i + (SLOT - BAR) // 2
        h = round(PLOT_HEIGHT * max(value, 0) / top_value)
        rects.append(f'<rect x="{x}" y="{base - h}" width="{BAR}" height="{h}"/>')
        labels.append(f'<text x="{x + BAR // 2}" y="{base + 16}">{escape(label)}: {value}</text>')
    # The white ground keeps the black text readable on the UI's dark theme.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{base + BOTTOM}" '
        f'font-family="sans-serif" font-size="12" text-anchor="middle">'
        f'<rect width="100%" height="100%" fill="#fff"/>'
        f'<g id="bars" fill="{BAR_FILL}">{"".join(rects)}</g>'
        f'<path d="M2 {base}H{width - 2}" stroke="#888"/>{"".join(labels)}</svg>'
    )


def markdown_image(alt: str, svg: str) -> str:
    """Markdown showing `svg` inline: an image whose source is a base64 data URI (the Dagster
    UI's markdown allows `data:` image sources)."""
    encoded = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f"![{alt}](data:image/svg+xml;base64,{encoded})"
