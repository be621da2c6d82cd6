"""jamun: walk-jump accelerated molecular ensembles with universal noise, as a workflow."""

__version__ = "0.1.0"
