"""The built-in steps, one thin module each; the engine finds them through the ``chain.steps`` entry points."""
