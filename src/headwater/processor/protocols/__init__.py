"""Protocols: tracking plans (Segment's JSON Schema rules) and their enforcement.

    plans.py           the workspace's ``tracking_plans``: typed models, checked at load
    schema.py          a rule's JSON Schema: checked, compiled once, its errors as violations
    enforcer.py        one plan applied to events: pass, omit, block, forward
    segment_import.py  a plan exported from Segment (Public API or Config API) as workspace YAML

The protocols store (blocked events, violation counts) is ``processor/protocols_store.py``.
"""

from headwater.processor.protocols.enforcer import (
    UNPLANNED_EVENT,
    UNPLANNED_PROPERTY,
    BlockReason,
    PlanEnforcer,
    PlanVerdict,
)
from headwater.processor.protocols.plans import (
    Enforcement,
    PlanRule,
    TrackingPlanConfig,
    check_tracking_plans,
)
from headwater.processor.protocols.schema import (
    ADDITIONAL_PROPERTY,
    INVALID_TYPE,
    INVALID_VALUE,
    REQUIRED,
    UNKNOWN,
    Violation,
)

__all__ = [
    "ADDITIONAL_PROPERTY",
    "INVALID_TYPE",
    "INVALID_VALUE",
    "REQUIRED",
    "UNKNOWN",
    "UNPLANNED_EVENT",
    "UNPLANNED_PROPERTY",
    "BlockReason",
    "Enforcement",
    "PlanEnforcer",
    "PlanRule",
    "PlanVerdict",
    "TrackingPlanConfig",
    "Violation",
    "check_tracking_plans",
]
