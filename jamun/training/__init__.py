"""Pieces of the trainer (:mod:`jamun.train`): checkpoint state, distributed helpers, reports."""
