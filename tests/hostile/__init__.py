"""Hostile input and faults: property tests, attack corpora, wire fuzzing, fault injection."""
