"""Looking at the warehouse in a browser: `enrich browse` (a local web app) and `enrich report` (one
self-contained HTML file). Read-only on the warehouse; never imports Prefect.

    library.py   a materialised snapshot of the warehouse views and every query the pages run (search seam)
    thumbs.py    thumbnails made locally with Pillow, cached by content hash under $ENRICH_HOME/thumbs/
    charts.py    bar charts as inline SVG, drawn on the server (no JavaScript, no CDN)
    pages.py     the Jinja2 templates (autoescaped: model output is untrusted) and what they are given
    app.py       the Starlette app: token, Host check, CSP, routes
    report.py    `enrich report`: the same pages as one file, thumbnails as data: URIs
"""
