"""Fitness: congratulate long trainings, nudge users who open the app and don't train.

Seed 001. The rules are pure functions in :mod:`.rules`; :mod:`.hooks` wires
them into Herald; :mod:`.schemas` describes the accepted event shapes.
"""

from .rules import FitnessRules, FitnessState, Run

__all__ = ["FitnessRules", "FitnessState", "Run"]
