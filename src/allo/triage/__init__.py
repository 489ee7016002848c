"""Triage: what each inbound message is (language, sentiment, intents, urgency, spam, PII)."""
