"""Analysis of a results grid: derived variables, mixed models, crossed bootstrap, verdict."""
