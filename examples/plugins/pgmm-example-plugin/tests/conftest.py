"""Test settings of the example plugin.

``pgmm_core.testing.pytest_plugin`` is pgmm's opt-in pytest plugin: a private cache for tiny
checkpoints, the installed pgmm plugins in the report header, and the ``pgmm_host`` and
``pgmm_tiny_config`` fixtures.
"""

pytest_plugins = ["pgmm_core.testing.pytest_plugin"]
