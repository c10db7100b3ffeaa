"""Rollguard's built-in use cases, registered under the entry-point group ``rollguard.usecases``
exactly as a team's own package would be (see docs/usecases.md). Nothing outside these packages
names their columns."""
