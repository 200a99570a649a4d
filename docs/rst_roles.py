"""A griffe extension for the documentation site: docstrings write cross-references the
Sphinx way (:class:`gflow.Trajectory`, :func:`simulate`, ``code``); in Markdown they become
code spans, linked where the name is documented on the site (mkdocs-autorefs)."""

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


class RstRoles(griffe.Extension):
    def on_object(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(lambda m: f"`{m.group(1)}`", obj.docstring.value)
