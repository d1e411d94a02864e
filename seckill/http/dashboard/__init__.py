"""The operators' live page, ``GET /dashboard`` (docs/API.md §5): static files only.

``index.html``, ``dashboard.css`` and ``dashboard.js`` ship in the wheel as
package data and are served by :mod:`seckill.routes.dashboard`. The page holds
no data: it reads the admin API (with the token the operator gives it) and
``/metrics`` from the gateway that served it. No CDN, no external fetch.
"""
