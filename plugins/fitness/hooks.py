"""The fitness plugin's Herald hooks."""

from __future__ import annotations

from datetime import timedelta

from engine import Config, EventType, hookimpl
from engine import non_negative

from .rules import FitnessRules, FitnessState
from .schemas import LAUNCH_SCHEMA, PROGRAM_SCHEMA, validate_program_event

#: The Herald plugin API this plugin is written for (a Herald offering another refuses it).
HERALD_API = "1"


def rules_from(config: Config) -> FitnessRules:
    """The rules with this configuration's thresholds."""
    return FitnessRules(
        congratulate_after=timedelta(minutes=config.plugin_setting("fitness", "congratulate_minutes", 30, non_negative(float))),
        nudge_after=timedelta(minutes=config.plugin_setting("fitness", "nudge_minutes", 10, non_negative(float))),
    )


@hookimpl
def herald_state_type() -> type:
    return FitnessState


@hookimpl
def herald_event_types(config: Config) -> list[EventType]:
    rules = rules_from(config)
    program = dict(validate=validate_program_event, schema=PROGRAM_SCHEMA)
    return [
        EventType("app_launch", rules.app_launch, aliases=("APP_LAUNCH",), schema=LAUNCH_SCHEMA,
                  description="The user opened the app; starts the nudge countdown."),
        EventType("training_program_started", rules.program_started, aliases=("TRAINING_PROGRAM_STARTED",),
                  description="A program began; cancels the nudge.", **program),
        EventType("training_program_finished", rules.program_finished, aliases=("TRAINING_PROGRAM_FINISHED",),
                  description="A program ended; congratulates if it lasted more than 30 minutes.", **program),
        EventType("training_program_cancelled", rules.program_cancelled, aliases=("TRAINING_PROGRAM_CANCELLED",),
                  description="A program was abandoned; it never counts.", **program),
    ]


@hookimpl
def herald_timer_handler(config: Config):
    return rules_from(config).on_timer
