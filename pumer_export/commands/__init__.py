"""Sub-commands of ``pumer-export`` (one module each, see :mod:`pumer_export.cli`)."""
