"""Cross-plant test sets that the export checks read: GC10-DET (:mod:`~export.datasets.gc10`, VOC xml in
:mod:`~export.datasets.voc`, annotated crops in :mod:`~export.datasets.crops`) and X-SDD
(:mod:`~export.datasets.xsdd`); class tables and NEU mappings in :mod:`~export.datasets.classes`.
"""
