"""A griffe extension for `make docs`: the names a package module imports on first use.

`keras_at.data` keeps `import keras_at` free of TensorFlow by importing its public names in a
module `__getattr__`, from a dict `_NAMES = {"load": "loader", ...}` (name -> submodule).
Griffe reads code without running it, so it cannot follow `__getattr__`; this extension reads
that dict from the module's source and adds each name as an alias of `<module>.<submodule>.<name>`,
so that the API reference documents `keras_at.data.load` under the path users import.
"""

from __future__ import annotations

import ast

import griffe

LAZY_TABLE = "_NAMES"


def lazy_names(node: ast.Module) -> dict[str, str]:
    """`{name: submodule}` of the module's `_NAMES = {...}` literal, or {} without one."""
    for statement in node.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            if any(isinstance(t, ast.Name) and t.id == LAZY_TABLE for t in targets):
                return ast.literal_eval(statement.value)
    return {}


class LazyNames(griffe.Extension):
    def on_module_members(self, *, node, mod: griffe.Module, **kwargs) -> None:
        if not isinstance(node, ast.Module):
            return
        for name, submodule in lazy_names(node).items():
            if name not in mod.members:
                mod.set_member(name, griffe.Alias(name, f"{mod.path}.{submodule}.{name}"))
