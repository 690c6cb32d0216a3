"""Sub-commands of the ``mitp`` CLI, one module each (see mitp.app.cli)."""
