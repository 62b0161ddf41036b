"""Where results go. Every sink is a :class:`~edge_runtime.sinks.base.Sink`: a context manager whose
``emit(result)`` gets each :class:`~edge_runtime.records.Result` with its record filled in, and whose
``close()`` flushes.

* :mod:`edge_runtime.sinks.files`: JSON Lines / CSV record writers, and reading them back to resume.
* :mod:`edge_runtime.sinks.images`: annotated frames, per-label copies of input files, a preview window.
* :mod:`edge_runtime.sinks.mqtt`: every record to an MQTT broker, with status, alarms and a bounded queue.
* :mod:`edge_runtime.sinks.opcua`: the latest result, counters and status as OPC UA nodes.
* :mod:`edge_runtime.sinks.web`: the operator page, ``/status.json``, ``/metrics`` and ``/healthz``.

A new sink is a module here that derives from ``Sink`` and writes ``result.record``, plus the line in
:func:`edge_runtime.cli.run` that enters it.
"""
