"""``edge-bench``: latency, throughput, memory and accuracy of every exported format, side by side.

Modules, one job each: :mod:`.cli` (command line), :mod:`.runner` (the run, typed entry point ``run``),
:mod:`.artifacts` (what to measure, accuracy from the export report), :mod:`.inputs` (fixed images and
video), :mod:`.worker` (one process per measurement), :mod:`.measure` (latency, throughput, memory, end to
end), :mod:`.gemm` (fp32/int8 matrix-multiply rates), :mod:`.flops` (FLOPs counted from the graph),
:mod:`.table` (markdown), :mod:`.chart` (PNG).
"""
