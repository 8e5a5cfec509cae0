"""The dashboard: server-rendered pages (Jinja2), no script from elsewhere."""
