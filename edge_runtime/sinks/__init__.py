"""Where results go. Every sink is a :class:`~edge_runtime.sinks.base.Sink`: a context manager whose
``emit(result)`` gets each :class:`~edge_runtime.records.Result` with its record filled in, and whose
``close()`` flushes.

* :mod:`edge_runtime.sinks.files`: JSON Lines / CSV record writers, and reading them back to resume.
* :mod:`edge_runtime.sinks.images`: annotated frames, per-label copies of input files, a preview window.

A new sink (MQTT, OPC UA, a web page) is a module here that derives from ``Sink`` and writes
``result.record``, plus the line in :func:`edge_runtime.cli.run` that enters it.
"""
