"""The processor stage: what happens to an event between the log and a destination's queue."""
