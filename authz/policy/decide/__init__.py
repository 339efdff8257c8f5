"""What runs per request: the compiled, indexed policy set and the evaluator.

`compiler` holds `PolicySet` (`for_host`: a host to its `HostPolicy`, memoised) and `HostPolicy`
(`candidates`: the rule index), `rules` the compiled rules and their predicates, `context` the
per-check `RequestContext`, `evaluate` the decision order of the contract. The compile steps
(`compile_rule`, `PolicySet`'s constructor) live beside the compiled objects they make, so each
shape is defined once; nothing here reads a file or YAML. Depends on `language` only.
"""
