"""pgmm-serve's plugin: registers the ``serve`` command (import-cheap: names ``module:attr`` strings only)."""

from __future__ import annotations

from pgmm_core.hookspecs import hookimpl


@hookimpl
def pgmm_register_commands(registrar):
    registrar.add("serve", help="serve a trained run over HTTP: JSON API, streamed answers and a web page",
                  configure="pgmm_serve.command:configure", run="pgmm_serve.command:run")
