"""Running a grid: claiming runs, executing them locally or on Slurm, and reporting their status.

Everything a run leaves beside the results contract lives in hidden folders of the results folder
(see :mod:`.layout`), which the analysis ignores because they hold no ``run.json``.
"""
