"""Tools for policy authors: the JSON Schema, lint rules, policy tests and the explain tracer.

Everything here sits on top of the public objects of `authz.policy`; none of it runs on the
request path. The commands in `authz.commands` do the printing and the file I/O.
"""
