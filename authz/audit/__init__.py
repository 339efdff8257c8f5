"""Offline audits of the decision log: usage (what traffic used) and replay (what a candidate
policy set would have decided). Both use the service's own compiled set and evaluator."""
