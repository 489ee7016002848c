"""Routing: teams, presence, assignment, SLA policies, calendars, priority and escalation."""
