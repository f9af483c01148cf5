"""HTML pages rendered from the Jinja2 templates in ``redrep/templates``.

Provisional home of :func:`render_page` for the clones, dynamics and compare
pages; the shared layout (``base.html``) gives every page the same style
sheet. Pages are single self-contained files: images go in as data URIs (the
``data_uri`` filter), the style sheet is inline, nothing is fetched.
"""

from __future__ import annotations

import functools

from . import __version__


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    from .report import fmt_number, image_data_uri

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("redrep", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_number
    env.filters["data_uri"] = image_data_uri
    env.globals["version"] = __version__
    return env


def render_page(template: str, **context) -> str:
    """Render ``templates/<template>`` with ``context``; text is HTML-escaped unless marked safe.

    Uses :func:`redrep.report.render_page` (the shared layout) where the report module has it.
    """
    from . import report

    shared = getattr(report, "render_page", None)
    if shared is not None:
        return shared(template, **context)
    return _environment().get_template(template).render(**context)
