"""Where did my event go: debugger, ingest flow counts, Event Delivery, trace, diagnose."""
