"""pgmm-serve: ``python -m pgmm_core serve --run RUN`` — an HTTP API and a web page for a trained run.

* :mod:`pgmm_serve.app` — the FastAPI application (:func:`create_app`);
* :mod:`pgmm_serve.batcher` — gathers requests that arrive together into one ``generate`` call;
* :mod:`pgmm_serve.engine` — the model side: captioning (and questions, where the run's
  ``Assistant`` is available), run in one worker thread;
* :mod:`pgmm_serve.inputs` — request bodies, generation limits and uploaded images, checked before
  anything reaches the model.

Importing this package is cheap (no torch, no FastAPI): the command line imports it to list commands.
"""

from __future__ import annotations

__version__ = "0.1.0"
