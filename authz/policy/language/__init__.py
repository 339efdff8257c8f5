"""The policy language: what a policy file (and an API key file) may say.

Read and checked with every problem at FILE:LINE, and declared once so the validator, the
compiler, the JSON Schema and the export walk the same tables: the spec (`spec`, plain frozen
dataclasses), YAML with line numbers (`yaml_source`), value kinds and patterns (`kinds`,
`patterns`), the declarations of fields, conditions and sections (`fields`, `conditions`,
`sections*`), the validators (`check`, `validate_auth`, `validate_rules`, `limits_spec`,
`schema`), key files (`keyfile`) and the spec-to-spec expansion of trust domain aliases
(`aliases`). Nothing here imports `decide` or `load`, and nothing here does I/O: the loader
hands it text. The matchers of `patterns` and the compile steps of the declarations are what
the compiled rules of `decide` call per request; they sit beside the syntax they implement.
"""
