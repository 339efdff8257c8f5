"""Policy files to the set in force, off the request path.

`loader` finds and reads the files (a directory, a ConfigMap mount, key files, JWKS files),
validates them with `language` and compiles them with `decide`; `building` keeps a big build
from stalling the serving thread (GC paused and frozen, GIL switch interval); `store` holds the
set in force, replaced whole. Depends on `language` and `decide`; nothing imports it back
except the package's public API.
"""
