"""transferstats: does intermediate-task diversity make zero-shot cross-lingual transfer more robust
than intermediate data volume? Runs the three-phase training grid and analyses it."""

__version__ = "0.1.0"
