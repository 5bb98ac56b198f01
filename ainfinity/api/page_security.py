"""Security headers for the HTML pages the app serves (dashboard, Swagger UI, ReDoc).

The pages load scripts and styles from this origin only, so a strict Content-Security-Policy
costs nothing and turns any injected markup into inert text.
"""

from __future__ import annotations

import base64
import hashlib
import re

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(
    *,
    script_hashes: tuple[str, ...] = (),
    inline_styles: bool = False,
    workers: bool = False,
) -> str:
    """A same-origin-only policy; `script_hashes` allow exactly those inline scripts.

    `inline_styles` is for third-party UIs that inject `<style>` elements at run time
    (ReDoc's styled-components); our own dashboard never needs it.
    """
    scripts = " ".join(["'self'", *(f"'{digest}'" for digest in script_hashes)])
    styles = "'self' 'unsafe-inline'" if inline_styles else "'self'"
    directives = [
        "default-src 'none'",
        f"script-src {scripts}",
        f"style-src {styles}",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    if workers:
        directives.append("worker-src 'self' blob:")
    return "; ".join(directives)


def inline_script_hashes(html: str) -> tuple[str, ...]:
    """CSP `sha256-...` sources for each inline `<script>` of a page we did not write."""
    return tuple(
        "sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        for body in _INLINE_SCRIPT.findall(html)
    )


def page_headers(csp: str, *, cache_control: str = "no-cache") -> dict[str, str]:
    """Headers for an HTML page: its CSP, no sniffing, no framing, no referrer."""
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": cache_control,
    }
