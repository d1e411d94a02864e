"""The operators' live page, ``GET /dashboard`` (docs/API.md §5): static files only.

``index.html``, ``dashboard.css`` and the page's ES modules (``main.js``, the
entry, and the ``*.js`` it imports, flat in this folder, no build step) ship in
the wheel as package data and are served by :mod:`seckill.http.routes.dashboard`.
The page holds no data: it reads the admin API (sales, limits, stats) of the
gateway that served it, with the token the operator gives it. No CDN, no
external fetch.
"""
