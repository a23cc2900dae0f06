"""FastAPI dependencies enforcing API keys (when any key is configured). Memory only, but for
a key the cache does not know, which is looked for in the database once (server/auth.py)."""

from __future__ import annotations

from fastapi import Request

from server.errors import PermissionDenied, Unauthorized

__all__ = ["require_admin", "require_experiment_access", "require_fine_tune",
           "require_inference"]

_READS = ("GET", "HEAD")


async def _scope(request: Request) -> str | None:
    """None when no keys are configured (loopback-only mode), else the key's scope."""
    keys = request.app.state.keys
    if not keys.any_active():
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("You didn't provide an API key. Send it as "
                           "'Authorization: Bearer YOUR_KEY'.", code="missing_api_key")
    found = await keys.lookup_fresh(token.strip())
    if found is None:
        raise Unauthorized("Incorrect API key provided.")
    key_id, scope = found
    # Who called: the request log records it, and feedback may only judge a key's own requests.
    request.state.api_key_id = key_id
    request.state.is_admin = scope == "admin"
    return scope


async def require_inference(request: Request) -> None:
    if await _scope(request) == "analyst":
        raise PermissionDenied("This key has the 'analyst' scope: it reads experiments, their "
                               "results and exports (/admin/experiments) and aliases "
                               "(/admin/aliases), nothing else.")


async def require_admin(request: Request) -> None:
    scope = await _scope(request)
    if scope is not None and scope != "admin":
        raise PermissionDenied(f"This key has the '{scope}' scope; admin routes need an "
                               "'admin' key.")


async def require_experiment_access(request: Request) -> None:
    """Admin keys do anything here; analyst keys read (experiments, results, the page, the
    export, aliases and their history)."""
    scope = await _scope(request)
    if scope is None or scope == "admin" or (scope == "analyst" and request.method in _READS):
        return
    if scope == "analyst":
        raise PermissionDenied("This key has the 'analyst' scope: it can read experiments, "
                               "results and aliases but not change them; that needs an "
                               "'admin' key.")
    raise PermissionDenied("This key has the 'inference' scope; experiment and alias routes "
                           "need an 'analyst' key (read) or an 'admin' key.")


async def require_fine_tune(request: Request) -> None:
    """Files and fine-tuning jobs: 'fine-tune' and 'admin' keys (each sees its own files and
    jobs; admin keys see all)."""
    scope = await _scope(request)
    if scope is not None and scope not in ("fine-tune", "admin"):
        raise PermissionDenied(f"This key has the '{scope}' scope; files and fine-tuning jobs "
                               "need a 'fine-tune' key or an 'admin' key.")
