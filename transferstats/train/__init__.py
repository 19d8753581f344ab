"""The three training phases (needs the ``[train]`` extra: torch, transformers, datasets).

Entry points for executors: :func:`transferstats.train.pipeline.run_intermediate` and
:func:`transferstats.train.pipeline.run_target`, each taking a job from :mod:`.jobs`.
"""
