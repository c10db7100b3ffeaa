"""Shared computation below pipeline, registry_guard and monitoring: reading the warehouse, feature
snapshots, production predictions, task-type metrics. Pure or store-reading code only; it imports
core (``rollguard``) and nothing above it. See docs/design.md ("Layers")."""
