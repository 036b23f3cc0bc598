"""One router per resource: search, clips, training sets, health."""
